"""Long runs on imperfect data: ``on_bad_episode="skip"`` skips bad episodes deterministically, keeps
every rank's count and every good frame, survives a resume; ``"raise"`` names the episode and the way
out; ``exclude_episodes`` leaves episodes out."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from lerobot_stream_loader import (
    MixedStreamingLeRobot,
    SkippedEpisodeWarning,
    StreamingDataLoader,
    StreamingLeRobot,
    TooManyBadEpisodes,
    skipped_episodes,
)
from lerobot_stream_loader.errors import StreamLoaderError
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.plan.shard import group_episodes, plan_shard
from lerobot_stream_loader.stream import decode_runs
from lerobot_stream_loader.synthetic.checks import expected_state, read_frame_index
from tests.support.defects import copy_dataset, delete_file, drop_rows, overwrite_episode_bytes, shift_rows

pytestmark = pytest.mark.timeout(300)

CAM = "observation.images.cam0"


@pytest.fixture(scope="module")
def good(make_sample) -> Path:
    return make_sample(episodes=10, cameras=1, frames_per_episode=(8, 12), codec="h264", gop=4,
                       episodes_per_video_file=2, episodes_per_data_file=5, size=(64, 48), seed=31)


@pytest.fixture(scope="module")
def broken(good: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[int]]:
    """Four bad episodes: rows moved into the next episode's frames (2), rows missing (5), an
    episode's video bytes overwritten (7), and an MP4 gone (episodes 8 and 9; a local missing file
    makes the constructor refuse the dataset, so it is planted on the HTTP copy only)."""
    root = copy_dataset(good, tmp_path_factory.mktemp("broken") / "data")
    fps = load_meta(root).fps
    bad = shift_rows(root, 2, 3 / fps, rows=slice(-3, None))
    bad |= drop_rows(root, 5)
    bad |= overwrite_episode_bytes(root, 7, CAM, seed=3)
    return root, bad


def _check_exact(items: list[dict]) -> None:
    for item in items:
        index = int(item["index"])
        assert read_frame_index(item[CAM]) == index
        state = item["observation.state"].numpy()
        np.testing.assert_array_equal(state, expected_state(index, state.shape[0]))


def _indices(items) -> list[int]:
    return [int(i) for item in items for i in item["index"].reshape(-1).tolist()]


def _skip(root: Path | str, **options) -> StreamingLeRobot:
    return StreamingLeRobot(root, return_uint8=True, on_bad_episode="skip", max_bad_fraction=1.0, **options)


def _frames_of(root: Path, episodes: set[int]) -> set[int]:
    meta = load_meta(root)
    return {i for e in meta.episodes if e.index in episodes for i in range(e.from_index, e.to_index)}


@pytest.mark.parametrize("shuffle", [False, True])
def test_skip_yields_exact_items_equal_counts_and_every_good_frame(broken, shuffle: bool) -> None:
    """2 ranks x 2 workers: each rank yields len(dataset) samples, every item is exact, every frame of
    every good episode comes out, and no frame of a bad one."""
    root, bad = broken
    seen: list[int] = []
    for rank in range(2):
        dataset = _skip(root, shuffle=shuffle, seed=5, rank=rank, world_size=2)
        loader = DataLoader(dataset, batch_size=None, num_workers=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedEpisodeWarning)
            items = list(loader)
        assert len(items) == len(dataset)
        _check_exact(items)
        seen += [int(item["index"]) for item in items]
    assert _frames_of(root, set(range(10)) - bad) <= set(seen)
    assert not set(seen) & _frames_of(root, bad)


def test_raise_names_the_episode_its_file_and_the_way_out(broken) -> None:
    root, _ = broken
    with pytest.raises(StreamLoaderError) as err:
        list(StreamingLeRobot(root, return_uint8=True, episodes=[7]))
    message = str(err.value)
    assert "episode 7" in message and "file-003.mp4" in message and "does not decode" in message
    assert 'on_bad_episode="skip"' in message and "exclude_episodes=[7]" in message


def test_each_skipped_episode_is_named_once_and_readable_from_the_loader_state(broken) -> None:
    root, bad = broken
    dataset = _skip(root)
    loader = StreamingDataLoader(dataset, batch_size=4, num_workers=0)
    with pytest.warns(SkippedEpisodeWarning) as record:
        for _ in range(2):  # a second pass: nobody is named again
            list(loader)
    named = Counter(int(str(w.message).split("skipping episode ")[1].split(":")[0]) for w in record)
    assert set(named) == bad and set(named.values()) == {1}
    assert {e["episode_index"] for e in dataset.skipped_episodes} == bad
    assert {e["episode_index"] for e in skipped_episodes(loader.state_dict())} == bad
    assert all("episode" in e["cause"] for e in skipped_episodes(loader.state_dict()))


def test_workers_report_their_skipped_episodes_through_the_loader_state(broken) -> None:
    root, bad = broken
    loader = StreamingDataLoader(_skip(root, shuffle=True), batch_size=4, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedEpisodeWarning)
        list(loader)
    assert {e["episode_index"] for e in skipped_episodes(loader.state_dict())} == bad


def test_the_skip_is_deterministic_and_survives_a_resume(broken) -> None:
    root, _ = broken

    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(_skip(root, shuffle=True, seed=2, pool_size=3, shuffle_buffer=8),
                                   batch_size=3, num_workers=2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedEpisodeWarning)
        whole = _indices(loader())
        assert _indices(loader()) == whole
        for stop in (3, 9):  # batches read before the checkpoint
            first = loader()
            it = iter(first)
            head = _indices([next(it) for _ in range(stop)])
            state = first.state_dict()
            resumed = loader()
            resumed.load_state_dict(state)
            assert head + _indices(resumed) == whole, stop


def test_too_many_bad_episodes_stop_the_run(broken) -> None:
    root, _ = broken
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedEpisodeWarning)
        with pytest.raises(TooManyBadEpisodes, match="max_bad_fraction"):
            list(StreamingLeRobot(root, return_uint8=True, on_bad_episode="skip"))  # default: 1 %
        one = StreamingLeRobot(root, return_uint8=True, on_bad_episode="skip", episodes=[0, 1, 2, 3])
        assert len(list(one)) == len(one)  # one bad episode is always skipped


def test_exclude_episodes_streams_the_rest_without_a_warning(broken) -> None:
    root, bad = broken
    dataset = StreamingLeRobot(root, return_uint8=True, exclude_episodes=sorted(bad))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        items = list(dataset)
    _check_exact(items)
    assert sorted(int(i["index"]) for i in items) == sorted(_frames_of(root, set(range(10)) - bad))
    with pytest.raises(ValueError, match=r"exclude_episodes \[42\] do not exist"):
        StreamingLeRobot(root, exclude_episodes=[42])
    with pytest.raises(ValueError, match="leaves no episode"):
        StreamingLeRobot(root, episodes=[2], exclude_episodes=[2])
    with pytest.raises(ValueError, match="on_bad_episode"):
        StreamingLeRobot(root, on_bad_episode="ignore")


def test_a_gone_mp4_behind_http_is_a_skipped_episode(good, nginx_factory, tmp_path) -> None:
    root = copy_dataset(good, tmp_path / "data")
    bad = delete_file(root, load_meta(root).episode(8).videos[CAM].path)
    server = nginx_factory(root)
    dataset = _skip(server.url, shuffle=True, pool_size=3, reader_options={"retries": 1, "backoff": 0.01})
    with pytest.warns(SkippedEpisodeWarning, match="episode 8"):
        items = list(dataset)
    assert len(items) == len(dataset)
    _check_exact(items)
    assert {e["episode_index"] for e in dataset.skipped_episodes} == bad


def test_decode_runs_of_a_resumed_plan_are_the_rest_of_the_same_runs() -> None:
    """Which samples of an episode with a broken frame are read before the break depends on the decode
    runs; a resumed plan decodes in the same runs (less what was read), so the stream is the same."""
    n = 12
    lengths = np.random.default_rng(0).integers(20, 90, n)
    groups = np.stack([np.zeros(n, dtype=np.int64), np.arange(n) // 3], 1)
    episodes = group_episodes(np.arange(n), lengths, groups, np.concatenate([groups, groups], 1))
    for shuffle in (False, True):
        plan = plan_shard(episodes, seed=1, shuffle=shuffle, pool_size=4, shuffle_buffer=40)
        runs = [chunk.tolist() for _, chunk in decode_runs(plan)]
        for k in (1, 57, len(plan) // 2):
            rest = [[int(p) + k for p in chunk] for _, chunk in decode_runs(plan.skip(k))]
            assert rest == [kept for kept in ([p for p in run if p >= k] for run in runs) if kept]


def test_a_mixture_skips_per_source(broken, good) -> None:
    """The broken source skips (its own on_bad_episode), the good one raises on nothing; counts hold."""
    root, bad = broken
    mix = MixedStreamingLeRobot([_skip(root), StreamingLeRobot(good, return_uint8=True)], seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedEpisodeWarning)
        items = list(mix)
    assert len(items) == len(mix)
    _check_exact(items)
    assert {(e["source"], e["episode_index"]) for e in mix.skipped_episodes} == {(0, e) for e in bad}
