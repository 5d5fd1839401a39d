"""The loader's part of a ``lerobot-stream train`` checkpoint, and the DataLoader handed to LeRobot's loop.

No LeRobot needed: the checkpoint file, the state of one process taken for another rank (exact resume
under DDP from the main process's state alone), and the StreamingDataLoader that stands in for the
training script's DataLoader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lerobot_stream_loader import StreamingDataLoader, StreamingLeRobot
from lerobot_stream_loader.batch.collate import StreamingCollate
from lerobot_stream_loader.train.checkpoint import (
    STATE_FILE,
    load_loader,
    save_loader,
    saved_world_size,
    state_for_rank,
)
from lerobot_stream_loader.train.hooks import TRAINING_STATE_DIR, TrainingHooks
from lerobot_stream_loader.train.mixture import TrainingMixture
from lerobot_stream_loader.train.options import LoaderOptions


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=5, cameras=1, frames_per_episode=(10, 16), size=(64, 48), seed=8)


def _batches(loader: StreamingDataLoader, count: int) -> list[list[int]]:
    out = []
    for batch in loader:
        out.append(batch["index"].tolist())
        if len(out) == count:
            break
    return out


def _loader(root: Path, rank: int, mixture: bool) -> StreamingDataLoader:
    if mixture:
        dataset: StreamingLeRobot | TrainingMixture = TrainingMixture(
            [StreamingLeRobot(root, return_uint8=True), StreamingLeRobot(root, return_uint8=True, episodes=[1, 3])],
            weights=[0.6, 0.4], seed=2, rank=rank, world_size=2)
    else:
        dataset = StreamingLeRobot(root, shuffle=True, seed=2, return_uint8=True, rank=rank, world_size=2)
    return StreamingDataLoader(dataset, batch_size=4, num_workers=2)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mixture", [False, True], ids=["dataset", "mixture"])
def test_the_main_process_state_resumes_every_rank_exactly(sample: Path, tmp_path: Path, mixture: bool) -> None:
    uninterrupted = _batches(_loader(sample, 1, mixture), 5)
    main = _loader(sample, 0, mixture)
    _batches(main, 2)
    save_loader(tmp_path, LoaderOptions({"cache_bytes": "1000000"}), main.state_dict())
    saved = load_loader(tmp_path)
    assert saved is not None and saved.options.stream == {"cache_bytes": "1000000"}
    assert saved_world_size(saved.loader_state) == 2
    resumed = _loader(sample, 1, mixture)
    resumed.load_state_dict(state_for_rank(saved.loader_state, 1))
    assert _batches(resumed, 3) == uninterrupted[2:]


def test_state_for_rank_rewrites_only_the_rank() -> None:
    state = {"_snapshot": {"_worker_snapshots": {
        "worker_0": {"dataset_state": {"epoch": 1, "consumed": 8, "rank": 0, "world_size": 2, "worker_id": 0}},
        "worker_1": {"dataset_state": {"epoch": 1, "consumed": 4, "rank": 0, "world_size": 2, "worker_id": 1}}}}}
    moved = state_for_rank(state, 1)
    readers = [w["dataset_state"] for w in moved["_snapshot"]["_worker_snapshots"].values()]
    assert [r["rank"] for r in readers] == [1, 1] and [r["consumed"] for r in readers] == [8, 4]
    assert state["_snapshot"]["_worker_snapshots"]["worker_0"]["dataset_state"]["rank"] == 0  # a copy
    single = {"_num_yielded": 2, "dataset_state": {"rank": 0, "world_size": 3, "consumed": 8}}
    assert state_for_rank(single, 2)["dataset_state"]["rank"] == 2 and saved_world_size(single) == 3


def test_a_checkpoint_without_loader_state_is_none_and_a_broken_one_an_error(tmp_path: Path) -> None:
    assert load_loader(tmp_path) is None
    (tmp_path / STATE_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a loader checkpoint"):
        load_loader(tmp_path)
    (tmp_path / STATE_FILE).write_text("{")
    with pytest.raises(ValueError, match="not a loader checkpoint"):
        load_loader(tmp_path)


def test_the_training_scripts_dataloader_becomes_a_streaming_one(sample: Path) -> None:
    dataset = StreamingLeRobot(sample, return_uint8=True)
    plain = DataLoader(dataset, batch_size=3, num_workers=2, prefetch_factor=4, persistent_workers=True,
                       multiprocessing_context="spawn", pin_memory=False, drop_last=False)
    hooks = TrainingHooks(LoaderOptions())
    loader = hooks.streaming_loader(plain)
    assert isinstance(loader, StreamingDataLoader) and hooks.loader is loader
    assert (loader.batch_size, loader.num_workers, loader.prefetch_factor) == (3, 2, 4)
    assert loader.persistent_workers and loader.multiprocessing_context is plain.multiprocessing_context
    assert isinstance(loader.collate_fn, StreamingCollate)

    def lerobots_collate(samples: list) -> dict:  # the script's own collate (language columns) is kept
        return torch.utils.data.default_collate(samples)

    kept = hooks.streaming_loader(DataLoader(dataset, batch_size=3, collate_fn=lerobots_collate))
    assert kept.collate_fn is lerobots_collate and kept.num_workers == 0


def test_a_checkpoint_gets_the_loader_state_beside_lerobots(sample: Path, tmp_path: Path) -> None:
    calls = []

    def save_checkpoint(checkpoint_dir: Path, step: int, **rest: object) -> None:
        calls.append(step)
        (checkpoint_dir / TRAINING_STATE_DIR).mkdir(parents=True)

    hooks = TrainingHooks(LoaderOptions({"backend": "http"}, {"weights": "[1,2]"}))
    hooks.loader = StreamingDataLoader(StreamingLeRobot(sample, return_uint8=True), batch_size=2)
    _batches(hooks.loader, 3)
    hooks.saving(save_checkpoint)(checkpoint_dir=tmp_path / "000003", step=3)
    assert calls == [3]
    saved = load_loader(tmp_path / "000003" / TRAINING_STATE_DIR)
    assert saved is not None and saved.options == LoaderOptions({"backend": "http"}, {"weights": "[1,2]"})
    assert saved.loader_state["dataset_state"]["consumed"] == 6
