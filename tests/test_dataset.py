"""StreamingLeRobot end to end on real sample datasets: item equality, windows, sharding, resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import FrameMismatchError
from lerobot_stream_loader.synthetic.checks import expected_action, expected_state, read_frame_index
from tests.support.reference import ReferenceReader

CAMS = ["observation.images.cam0", "observation.images.cam1"]


@pytest.fixture(scope="module")
def av1(make_sample) -> Path:
    return make_sample(episodes=6, cameras=2, frames_per_episode=(6, 14), episodes_per_video_file=2,
                       stagger_cameras=True, episodes_per_data_file=4, size=(64, 48), seed=3)


@pytest.fixture(scope="module")
def h264(make_sample) -> Path:
    return make_sample(episodes=4, cameras=1, frames_per_episode=(20, 40), codec="h264", bframes=True,
                       gop=12, episodes_per_video_file=3, episodes_per_data_file=2, size=(64, 48), seed=5)


def _check_items(root: Path, items: list[dict], *, uint8: bool) -> None:
    ref = ReferenceReader(root)
    meta = ref.meta
    for item in items:
        i = int(item["index"])
        row = ref.row(i)
        assert int(item["episode_index"]) == row["episode_index"]
        assert int(item["frame_index"]) == row["frame_index"]
        assert item["timestamp"].dtype == torch.float32 and item["timestamp"].ndim == 0
        state = item["observation.state"]
        assert state.dtype == torch.float32
        np.testing.assert_array_equal(state.numpy(), expected_state(i, state.shape[0]))
        np.testing.assert_array_equal(item["action"].numpy(), expected_action(i, item["action"].shape[0]))
        assert item["task"] == meta.tasks[row["task_index"]]
        for key in meta.video_keys:
            frame = item[key]
            want = ref.frame(key, i)
            if uint8:
                assert frame.dtype == torch.uint8
                assert torch.equal(frame, want), f"frame {i} of {key} differs from a full-file decode"
            else:
                assert frame.dtype == torch.float32 and frame.shape == want.shape
                assert torch.equal(frame, want.float() / 255)
            assert read_frame_index(frame) == i


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["av1", "h264"])
def test_every_item_equals_reference(request, name: str) -> None:
    root = request.getfixturevalue(name)
    dataset = StreamingLeRobot(root, return_uint8=True)
    items = list(dataset)
    assert sorted(int(x["index"]) for x in items) == list(range(dataset.meta.total_frames))
    assert len(items) == len(dataset)
    _check_items(root, items, uint8=True)


@pytest.mark.timeout(120)
def test_float_frames_and_shuffle(av1: Path) -> None:
    dataset = StreamingLeRobot(av1, shuffle=True, seed=1, pool_size=3)
    items = list(dataset)
    indices = [int(x["index"]) for x in items]
    assert sorted(indices) == list(range(dataset.meta.total_frames))
    assert indices != sorted(indices)
    _check_items(av1, items[:20], uint8=False)
    again = [int(x["index"]) for x in StreamingLeRobot(av1, shuffle=True, seed=1, pool_size=3)]
    assert again == indices
    dataset.set_epoch(1)
    assert [int(x["index"]) for x in dataset] != indices


@pytest.mark.timeout(240)
def test_random_access_with_bframes_is_exact(h264: Path) -> None:
    """Shuffled draws seek back and forth inside long-GOP B-frame episodes."""
    items = list(StreamingLeRobot(h264, shuffle=True, seed=3, pool_size=2, return_uint8=True))
    assert [int(x["index"]) for x in items] != sorted(int(x["index"]) for x in items)
    _check_items(h264, items, uint8=True)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_covers_each_index_once(av1: Path, workers: int) -> None:
    dataset = StreamingLeRobot(av1, shuffle=True, seed=2, num_workers=workers, return_uint8=True)
    loader = DataLoader(dataset, batch_size=8, num_workers=workers)
    seen = Counter()
    for batch in loader:
        for i, frame in zip(batch["index"].tolist(), batch[CAMS[0]], strict=True):
            assert read_frame_index(frame) == i
            seen[i] += 1
    total = dataset.meta.total_frames
    assert set(seen) == set(range(total))
    assert sum(seen.values()) == len(dataset)
    padded = sum(seen.values()) - total
    assert padded >= 0 and all(c <= 2 for c in seen.values())


@pytest.mark.timeout(120)
def test_delta_windows_at_episode_edges(av1: Path) -> None:
    deltas = {CAMS[0]: [-2 / 30, 0.0, 1 / 30], "action": [0.0, 1 / 30, 2 / 30, 3 / 30]}
    dataset = StreamingLeRobot(av1, delta_timestamps=deltas, return_uint8=True, episodes=[0, 1])
    meta = dataset.meta
    for item in dataset:
        i, ep = int(item["index"]), meta.episode(int(item["episode_index"]))
        for key, offsets in ((CAMS[0], [-2, 0, 1]), ("action", [0, 1, 2, 3])):
            want = [min(max(i + o, ep.from_index), ep.to_index - 1) for o in offsets]
            pad = [not (ep.from_index <= i + o < ep.to_index) for o in offsets]
            assert item[f"{key}_is_pad"].tolist() == pad
            if key == "action":
                np.testing.assert_array_equal(item[key].numpy(), np.stack([expected_action(j, 6) for j in want]))
            else:
                assert item[key].shape[0] == 3
                assert [read_frame_index(f) for f in item[key]] == want
        assert item[CAMS[1]].ndim == 3


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("workers", "stop"), [(0, 1), (0, 7), (2, 3), (2, 8)])
def test_resume_yields_the_same_batches(av1: Path, workers: int, stop: int) -> None:
    def loader() -> StatefulDataLoader:
        ds = StreamingLeRobot(av1, shuffle=True, seed=7, pool_size=4, return_uint8=True)
        return StatefulDataLoader(ds, batch_size=4, num_workers=workers)

    full = [b["index"].tolist() for b in loader()]
    first = loader()
    it = iter(first)
    head = [next(it)["index"].tolist() for _ in range(stop)]
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [b["index"].tolist() for b in resumed]
    assert head + tail == full


def test_bad_arguments_fail_at_construction(av1: Path) -> None:
    with pytest.raises(ValueError, match="not features of this dataset"):
        StreamingLeRobot(av1, delta_timestamps={"observation.nope": [0.0]})
    with pytest.raises(ValueError, match=r"episodes \[99\] do not exist"):
        StreamingLeRobot(av1, episodes=[0, 99])


@pytest.mark.timeout(60)
def test_tolerance_is_checked(av1: Path) -> None:
    dataset = StreamingLeRobot(av1, episodes=[0], tolerance_s=1e-4)
    from lerobot_stream_loader.fetch.frame_match import match_frames

    with pytest.raises(FrameMismatchError, match="no frame within tolerance_s"):
        match_frames(np.array([0.0, 1 / 30]), np.array([0.5 / 30]), 1e-4, "episode 0, camera x")
    assert len(list(dataset)) == dataset.meta.episode(0).length


@pytest.mark.timeout(60)
def test_subset_is_honoured(av1: Path) -> None:
    dataset = StreamingLeRobot(av1, episodes=[1, 3])
    meta = dataset.meta
    wanted = set(range(meta.episode(1).from_index, meta.episode(1).to_index)) | set(
        range(meta.episode(3).from_index, meta.episode(3).to_index))
    assert {int(x["index"]) for x in dataset} == wanted


@pytest.mark.timeout(240)
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_follow_set_epoch(av1: Path, context: str) -> None:
    dataset = StreamingLeRobot(av1, shuffle=True, seed=5, num_workers=2, return_uint8=True)
    loader = DataLoader(dataset, batch_size=8, num_workers=2, persistent_workers=True,
                        multiprocessing_context=context)
    epochs = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        order = [i for batch in loader for i in batch["index"].tolist()]
        assert sorted(set(order)) == list(range(dataset.meta.total_frames))
        epochs.append(order)
    assert epochs[0] != epochs[1], "set_epoch must reach persistent workers"
    fresh = StreamingLeRobot(av1, shuffle=True, seed=5, num_workers=2)
    fresh.set_epoch(1)
    assert [i for b in DataLoader(fresh, batch_size=8, num_workers=2) for i in b["index"].tolist()] == epochs[1]


@pytest.mark.timeout(120)
def test_worker_errors_reach_the_main_process(av1: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(av1, root)
    dataset = StreamingLeRobot(root, num_workers=2)
    victim = dataset.meta.episode(dataset.meta.total_episodes - 1).videos[CAMS[1]].path
    (root / victim).unlink()
    with pytest.raises(Exception, match=victim.split("/")[-1]):
        for _ in DataLoader(dataset, batch_size=4, num_workers=2):
            pass


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("world", "workers"), [(2, 0), (3, 2)])
def test_ranks_split_the_dataset_with_equal_counts(av1: Path, world: int, workers: int) -> None:
    seen: list[list[int]] = []
    batches = []
    for rank in range(world):
        dataset = StreamingLeRobot(av1, shuffle=True, seed=9, rank=rank, world_size=world, num_workers=workers)
        loader = DataLoader(dataset, batch_size=4, num_workers=workers)
        indices = [b["index"].tolist() for b in loader]
        batches.append(len(indices))
        seen.append([i for b in indices for i in b])
        assert len(seen[-1]) == len(dataset)
    assert len(set(batches)) == 1 and len({len(s) for s in seen}) == 1
    total = StreamingLeRobot(av1).meta.total_frames
    assert set().union(*map(set, seen)) == set(range(total))
    assert sum(len(s) for s in seen) - total == sum(len(s) - len(set(s)) for s in seen) + sum(
        len(set(a) & set(b)) for i, a in enumerate(seen) for b in seen[i + 1:])


def test_single_offset_camera_window_is_squeezed_like_lerobot(av1: Path) -> None:
    dataset = StreamingLeRobot(av1, episodes=[0], return_uint8=True,
                               delta_timestamps={CAMS[0]: [0.0], "observation.state": [0.0]})
    item = next(iter(dataset))
    assert item[CAMS[0]].shape == (3, 48, 64) and item[f"{CAMS[0]}_is_pad"].tolist() == [False]
    assert item["observation.state"].shape == (1, 6)
