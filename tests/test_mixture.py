"""MixedStreamingLeRobot end to end on real sample datasets with different cameras, fps and codecs."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from lerobot_stream_loader import MixedStreamingLeRobot, StreamingDataLoader, StreamingLeRobot
from lerobot_stream_loader.mix import budget
from lerobot_stream_loader.plan.sizing import MAX_AUTO_DECODERS, auto_shuffle_buffer
from lerobot_stream_loader.synthetic.checks import read_frame_index

CAM0, CAM1, SIDE = "observation.images.cam0", "observation.images.cam1", "observation.images.side"


@pytest.fixture(scope="module")
def roots(make_sample) -> dict[str, Path]:
    """a: AV1, 2 cameras, 30 fps; b: H.264 with B-frames, 1 camera, 15 fps; c: AV1, 1 camera, 10 fps."""
    return {
        "a": make_sample(episodes=5, cameras=2, fps=30, frames_per_episode=(8, 14), episodes_per_video_file=2,
                         size=(64, 48), seed=51),
        "b": make_sample(episodes=4, cameras=1, fps=15, frames_per_episode=(6, 12), codec="h264", bframes=True,
                         gop=6, size=(64, 48), seed=52),
        "c": make_sample(episodes=3, cameras=1, fps=10, frames_per_episode=(6, 10), size=(64, 48), seed=53),
    }


def _sources(roots: dict[str, Path], **options) -> list[StreamingLeRobot]:
    return [StreamingLeRobot(roots[name], return_uint8=True, **options) for name in "abc"]


def _key(item: dict) -> tuple[int, int, int]:
    return int(item["dataset_index"]), int(item["episode_index"]), int(item["frame_index"])


@pytest.mark.timeout(120)
def test_proportions_and_interleaving_within_every_batch(roots) -> None:
    mix = MixedStreamingLeRobot(_sources(roots), weights=[0.5, 0.3, 0.2], samples_per_epoch=400, seed=1)
    assert len(mix) == 400
    counts = Counter()
    for batch in DataLoader(mix, batch_size=20):
        per_batch = Counter(batch["dataset_index"].tolist())
        assert batch["dataset_index"].dtype == torch.int64
        for source, want in enumerate((10, 6, 4)):
            assert abs(per_batch[source] - want) <= 2, per_batch
        counts.update(per_batch)
    total = sum(counts.values())
    assert total == 400
    for source, weight in enumerate((0.5, 0.3, 0.2)):
        assert abs(counts[source] / total - weight) <= 0.02


@pytest.mark.timeout(180)
def test_every_item_equals_its_sources_own_item(roots) -> None:
    windows = {"a": {"action": [-1 / 30, 0.0, 1 / 30]}, "b": {"action": [-1 / 15, 0.0, 1 / 15]},
               "c": {"action": [-0.1, 0.0, 0.1]}}
    sources = [StreamingLeRobot(roots[n], return_uint8=True, delta_timestamps=windows[n]) for n in "abc"]
    alone = [{(int(i["episode_index"]), int(i["frame_index"])): i for i in s} for s in sources]
    mix = MixedStreamingLeRobot(sources, weights=[0.4, 0.4, 0.2], samples_per_epoch=150, seed=3)
    seen = 0
    for item in mix:
        own = alone[int(item["dataset_index"])][(int(item["episode_index"]), int(item["frame_index"]))]
        assert set(item) == (set(own) - {CAM1}) | {"dataset_index"}
        for key, value in item.items():
            if key == "dataset_index":
                continue
            assert torch.equal(value, own[key]) if isinstance(value, torch.Tensor) else value == own[key], key
        assert read_frame_index(item[CAM0]) == int(item["index"])
        seen += 1
    assert seen == 150


@pytest.mark.timeout(120)
def test_rename_intersection_and_union(roots) -> None:
    a = StreamingLeRobot(roots["a"], return_uint8=True)
    c = StreamingLeRobot(roots["c"], return_uint8=True, rename={CAM0: SIDE})
    inter = MixedStreamingLeRobot([a, c], samples_per_epoch=40)
    assert SIDE not in inter.meta.features and CAM0 not in inter.meta.features
    assert all(k not in item for item in inter for k in (CAM0, CAM1, SIDE))
    union = MixedStreamingLeRobot([a, c], samples_per_epoch=40, features="union", seed=2)
    assert {CAM0, CAM1, SIDE} <= set(union.meta.features)
    batches = list(DataLoader(union, batch_size=8))
    for batch in batches:
        from_c = batch["dataset_index"] == 1
        assert torch.equal(batch[f"{CAM0}_is_missing"], from_c) and torch.equal(batch[f"{SIDE}_is_missing"], ~from_c)
        assert not batch[CAM0][from_c].any() and not batch[SIDE][~from_c].any()
        assert batch[SIDE][from_c].float().mean() > 0
        assert "action_is_missing" not in batch


@pytest.mark.timeout(120)
def test_cycling_and_subsets(roots) -> None:
    c = StreamingLeRobot(roots["c"], return_uint8=True)
    frames = c.meta.total_frames
    big = MixedStreamingLeRobot([c], samples_per_epoch=2 * frames + 5, seed=4)
    seen = Counter(_key(i) for i in big)
    assert len(seen) == frames and set(seen.values()) == {2, 3} and sum(seen.values()) == 2 * frames + 5
    small = MixedStreamingLeRobot([c], samples_per_epoch=frames // 2, seed=4)
    subsets = []
    for epoch in range(2):
        small.set_epoch(epoch)
        keys = [_key(i) for i in small]
        assert len(keys) == len(set(keys)) == frames // 2
        subsets.append(set(keys))
    assert subsets[0] != subsets[1]


@pytest.mark.timeout(240)
def test_two_ranks_two_workers(roots) -> None:
    per_rank = []
    for rank in range(2):
        mix = MixedStreamingLeRobot(_sources(roots), rank=rank, world_size=2, seed=5)
        keys = [_key(item) for batch in DataLoader(mix, batch_size=6, num_workers=2, collate_fn=lambda b: b)
                for item in batch]
        assert len(keys) == len(mix)
        per_rank.append(keys)
    total = sum(s.meta.total_frames for s in _sources(roots))
    assert len(per_rank[0]) == len(per_rank[1]) == -(-total // 2)
    together = per_rank[0] + per_rank[1]
    assert len(set(together)) == total, "every frame once (weights by size: no cycling)"


@pytest.mark.timeout(240)
def test_exact_resume_with_stateful_dataloader(roots) -> None:
    def loader() -> StatefulDataLoader:
        mix = MixedStreamingLeRobot(_sources(roots), weights=[0.5, 0.25, 0.25], samples_per_epoch=96, seed=6)
        return StatefulDataLoader(mix, batch_size=8, num_workers=2)

    full = [b["index"].tolist() + b["dataset_index"].tolist() for b in loader()]
    first = loader()
    it = iter(first)
    head = [(lambda b: b["index"].tolist() + b["dataset_index"].tolist())(next(it)) for _ in range(5)]
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [b["index"].tolist() + b["dataset_index"].tolist() for b in resumed]
    assert head + tail == full


@pytest.mark.timeout(120)
def test_set_epoch_changes_the_draws_deterministically(roots) -> None:
    def keys(epoch: int) -> list:
        mix = MixedStreamingLeRobot(_sources(roots), samples_per_epoch=60, seed=7)
        mix.set_epoch(epoch)
        return [_key(i) for i in mix]

    assert keys(1) == keys(1)
    assert keys(0) != keys(1)


def test_stats_are_aggregated_by_frames(roots) -> None:
    sources = _sources(roots)
    mix = MixedStreamingLeRobot(sources, weights=[1, 1, 1])
    counts = np.array([s.meta.stats["action"]["count"][0] for s in sources], dtype=np.float64)
    means = np.array([s.meta.stats["action"]["mean"] for s in sources])
    stds = np.array([s.meta.stats["action"]["std"] for s in sources])
    mean = (means * counts[:, None]).sum(0) / counts.sum()
    std = np.sqrt(((stds**2 + (means - mean) ** 2) * counts[:, None]).sum(0) / counts.sum())
    got = mix.meta.stats["action"]
    np.testing.assert_allclose(got["mean"], mean)
    np.testing.assert_allclose(got["std"], std)
    assert got["count"].tolist() == [counts.sum()]
    np.testing.assert_allclose(got["min"], np.min([s.meta.stats["action"]["min"] for s in sources], axis=0))
    assert set(mix.meta.stats) <= set(mix.meta.features)


def test_bad_inputs_fail_clearly(roots, make_sample) -> None:
    sources = _sources(roots)
    with pytest.raises(ValueError, match="at least one source"):
        MixedStreamingLeRobot([])
    with pytest.raises(ValueError, match="finite and >= 0"):
        MixedStreamingLeRobot(sources, weights=[0.5, -0.1, 0.6])
    with pytest.raises(ValueError, match="all zero"):
        MixedStreamingLeRobot(sources, weights=[0, 0, 0])
    with pytest.raises(ValueError, match="2 weights for 3 sources"):
        MixedStreamingLeRobot(sources, weights=[1, 1])
    with pytest.raises(ValueError, match="samples_per_epoch"):
        MixedStreamingLeRobot(sources, samples_per_epoch=0)
    with pytest.raises(ValueError, match="features must be one of"):
        MixedStreamingLeRobot(sources, features="all")
    with pytest.raises(TypeError, match="not a StreamingLeRobot"):
        MixedStreamingLeRobot([str(roots["a"])])
    with pytest.raises(ValueError, match="source 1 .* rank=0, world_size=2"):
        MixedStreamingLeRobot([sources[0], StreamingLeRobot(roots["b"], rank=0, world_size=2)])
    wide = StreamingLeRobot(make_sample(episodes=2, cameras=1, frames_per_episode=(6, 8), size=(96, 72), seed=54),
                            return_uint8=True)
    with pytest.raises(ValueError, match=rf"'{CAM0}': source 0 \(.*\): \[3, 48, 64\] uint8, source 1 \(.*\): "
                                         r"\[3, 72, 96\] uint8"):
        MixedStreamingLeRobot([sources[0], wide])
    windowed = StreamingLeRobot(roots["b"], return_uint8=True, delta_timestamps={"action": [0.0, 1 / 15]})
    with pytest.raises(ValueError, match=r"'action': source 0 .*\[6\] float32, source 1 .*\[2, 6\] float32"):
        MixedStreamingLeRobot([sources[0], windowed])


@pytest.mark.timeout(120)
def test_many_sources_share_one_budget_and_one_set_of_fetch_threads(roots) -> None:
    sources = [StreamingLeRobot(roots["abc"[i % 3]], return_uint8=True) for i in range(30)]
    sizes = budget.episode_bytes(sources)
    cache_bytes = int(max(sizes) * 40)
    mix = MixedStreamingLeRobot(sources, samples_per_epoch=120, fetch_threads=2, cache_bytes=cache_bytes)
    assert min(mix.pool_sizes) >= 1 and mix.decoders <= MAX_AUTO_DECODERS
    assert sum(mix.shuffle_buffers) <= 30 + auto_shuffle_buffer(sources[0].meta.source)
    assert sum(p * b for p, b in zip(mix.pool_sizes, sizes, strict=True)) <= cache_bytes
    fetchers = set()
    for _item in mix:
        fetchers |= {t.name for t in threading.enumerate() if t.name.startswith("episode-fetch")}
        assert len([t for t in threading.enumerate() if t.name.startswith("range-fetch")]) <= 30
    assert 1 <= len(fetchers) <= 2
    mix.close()


@pytest.mark.timeout(120)
def test_sources_share_one_decoder_lru(roots, monkeypatch) -> None:
    from lerobot_stream_loader import dataset as dataset_module
    from lerobot_stream_loader.items.decode import DecoderLRU
    from lerobot_stream_loader.mix import stream as mix_stream

    made: list[DecoderLRU] = []
    peak = [0]

    class Recording(DecoderLRU):
        def __init__(self, capacity: int) -> None:
            super().__init__(capacity)
            made.append(self)

        def get(self, key, open_decoder):
            decoder = super().get(key, open_decoder)
            peak[0] = max(peak[0], len(self))
            return decoder

    monkeypatch.setattr(mix_stream, "DecoderLRU", Recording)
    monkeypatch.setattr(dataset_module, "DecoderLRU", Recording)
    mix = MixedStreamingLeRobot(_sources(roots), samples_per_epoch=60, decoders=2)
    made.clear()
    assert len(list(mix)) == 60
    assert len(made) == 1 and peak[0] == 2, "one LRU for the worker, never more than `decoders` open"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("old,new", [((2, 2), (1, 1)), ((1, 1), (2, 2)), ((1, 2), (1, 2))])
def test_resume_on_another_world_size_or_worker_count(roots, old, new) -> None:
    """StreamingDataLoader.load_state_dict of one rank's checkpoint: the rest of the epoch once over the
    new readers (the same shape resumes exactly)."""
    (world0, workers0), (world1, workers1) = old, new
    seen: list[tuple[int, int, int]] = []
    states = []
    for rank in range(world0):
        mix = MixedStreamingLeRobot(_sources(roots), rank=rank, world_size=world0, seed=7)
        loader = StreamingDataLoader(mix, batch_size=4, num_workers=workers0, collate_fn=lambda b: b)
        it = iter(loader)
        seen += [_key(item) for _ in range(3) for item in next(it)]
        states.append(loader.state_dict())
        del it, loader
    for rank in range(world1):
        mix = MixedStreamingLeRobot(_sources(roots), rank=rank, world_size=world1, seed=7)
        loader = StreamingDataLoader(mix, batch_size=4, num_workers=workers1, collate_fn=lambda b: b)
        loader.load_state_dict(states[0])
        seen += [_key(item) for batch in loader for item in batch]
    total = sum(s.meta.total_frames for s in _sources(roots))
    counts = Counter(seen)
    assert len(counts) == total, "no frame skipped (weights by size: every frame once per epoch)"
    repeats = sum(c - 1 for c in counts.values())
    assert repeats < world1 + world0, "at most one repeat per new rank, plus the old last rank's evening out"
    if (world0, workers0) == (world1, workers1):
        assert repeats == 0, "the same shape resumes exactly"


def test_a_plain_mixture_state_on_another_shape_says_how_to_resume(roots) -> None:
    mix = MixedStreamingLeRobot(_sources(roots), seed=7)
    it = iter(mix)
    next(it)
    state = mix.state_dict()
    again = MixedStreamingLeRobot(_sources(roots), seed=7, rank=0, world_size=2)
    again.load_state_dict(state)
    with pytest.raises(ValueError, match="elastic_state"):
        next(iter(again))


def test_sources_share_one_bounded_cache_of_parsed_indexes(roots):
    """Many sources must not multiply the index bound: one cache of MP4 indexes and footers per worker."""
    sources = [StreamingLeRobot(roots[name], return_uint8=True) for name in "abcab"]
    mix = MixedStreamingLeRobot(sources, samples_per_epoch=60, seed=4)
    assert len(list(mix)) == 60
    caches = mix._resources.index_caches
    opened = {number: res.indexes for number, (res, _) in mix._resources.sources.items()}
    assert sorted(opened) == [0, 1, 2, 3, 4]
    assert all(ix.held_index_bytes == caches.mp4.total > 0 for ix in opened.values())  # one cache behind all
    assert caches.mp4.total <= caches.mp4.limit
    path = sources[0].meta.video_files[0]
    assert opened[0].mp4(path) is opened[3].mp4(path)  # a dataset given twice shares its entries
