"""Elastic resume: the rest of an interrupted epoch over another world size or worker count."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from lerobot_stream_loader import StreamingDataLoader, StreamingLeRobot
from lerobot_stream_loader.plan.elastic import ElasticState, elastic_state, remaining_plan
from lerobot_stream_loader.plan.shard import group_episodes, plan_shard
from lerobot_stream_loader.plan.state import fingerprint

LENGTHS = np.random.default_rng(5).integers(10, 90, size=40)
EPISODES = group_episodes(np.arange(40), LENGTHS, np.arange(40) // 8, np.arange(40) // 4)
OPTIONS = dict(seed=3, shuffle=True, drop_last=False, pool_size=4, shuffle_buffer=16)


def _pairs(plan, real_only: bool = True) -> list[tuple[int, int]]:
    n = len(plan) - (plan.num_padded if real_only else 0)
    return list(zip(plan.episode_index[:n].tolist(), plan.frame_index[:n].tolist(), strict=True))


@pytest.mark.parametrize("old,new", [((2, 2), (3, 1)), ((1, 1), (2, 2)), ((3, 2), (2, 3)), ((2, 1), (1, 1))])
@pytest.mark.parametrize("consumed", [(0, 0, 0), (17, 9, 30), (10_000, 10_000, 10_000)])
def test_rest_of_the_epoch_once(old, new, consumed) -> None:
    (world0, workers0), (world1, workers1) = old, new
    state = ElasticState(2, world0, workers0, tuple(consumed[:workers0]),
                         fingerprint(EPISODES, world_size=world0, num_workers=workers0, seed=3, shuffle=True,
                                     drop_last=False, pool_size=4, shuffle_buffer=16))
    read: collections.Counter = collections.Counter()
    for r in range(world0):
        for w in range(workers0):
            plan = plan_shard(EPISODES, epoch=2, rank=r, world_size=world0, worker_id=w, num_workers=workers0,
                              **OPTIONS)
            read.update(_pairs(plan)[: consumed[w]])
    counts: dict[int, list[int]] = {}
    padded = 0
    for r in range(world1):
        for w in range(workers1):
            plan = remaining_plan(EPISODES, state, rank=r, world_size=world1, worker_id=w, num_workers=workers1,
                                  **OPTIONS)
            counts.setdefault(w, []).append(len(plan))
            padded += plan.num_padded
            read.update(_pairs(plan))
            assert np.array_equal(plan.admit_episodes[plan.segment], plan.episode_index)
    everything = {(e, f) for e, n in enumerate(LENGTHS.tolist()) for f in range(n)}
    assert set(read) == everything and max(read.values()) == 1, "no frame twice, none skipped"
    assert all(len(set(c)) == 1 for c in counts.values()), "equal counts per worker slot on every rank"
    assert padded < world1


@pytest.fixture(scope="module")
def small(make_sample) -> Path:
    return make_sample(episodes=5, cameras=1, frames_per_episode=(12, 20), size=(64, 48), seed=8)


def _indices(batches) -> list[int]:
    return [i for batch in batches for i in batch["index"].tolist()]


def _checkpoints(root: Path, loader_class, world: int, workers: int, *, seed: int,
                 batches: int) -> tuple[list[int], list[dict]]:
    """Every rank of ``world`` reads ``batches`` batches of 4, then checkpoints: (indices read, states)."""
    seen: list[int] = []
    states = []
    for rank in range(world):
        dataset = StreamingLeRobot(root, shuffle=True, seed=seed, rank=rank, world_size=world, return_uint8=True)
        loader = loader_class(dataset, batch_size=4, num_workers=workers)
        it = iter(loader)
        seen += _indices(next(it) for _ in range(batches))
        states.append(loader.state_dict())
        del it, loader
    return seen, states


@pytest.mark.timeout(240)
@pytest.mark.parametrize("old,new", [((2, 2), (3, 1)), ((1, 1), (2, 2))])
def test_stateful_dataloader_checkpoint_resumes_on_another_shape(small: Path, old, new) -> None:
    (world0, workers0), (world1, workers1) = old, new
    seen, states = _checkpoints(small, StatefulDataLoader, world0, workers0, seed=2, batches=3)
    total = StreamingLeRobot(small).meta.total_frames
    rest = total - len(seen)
    padded = []
    for rank in range(world1):
        dataset = StreamingLeRobot(small, shuffle=True, seed=2, rank=rank, world_size=world1, return_uint8=True)
        dataset.load_state_dict(elastic_state(states[min(rank, world0 - 1)]))
        got = _indices(DataLoader(dataset, batch_size=4, num_workers=workers1))
        assert len(got) == -(-rest // world1), "ceil(rest / world_size) per new rank"
        padded.append(len(got))
        seen += got
    counts = collections.Counter(seen)
    print(f"{old} -> {new}: {len(seen)} samples for {total} frames, per new rank {padded}")
    assert set(counts) == set(range(total)), "no frame skipped"
    assert sum(c - 1 for c in counts.values()) < world1, "at most one repeat per new rank"


def test_a_plain_state_on_another_shape_says_how_to_resume(small: Path) -> None:
    dataset = StreamingLeRobot(small, shuffle=True, seed=2)
    loader = StatefulDataLoader(dataset, batch_size=4, num_workers=0)
    it = iter(loader)
    next(it)
    state = loader.state_dict()["dataset_state"]
    again = StreamingLeRobot(small, shuffle=True, seed=2, rank=0, world_size=2)
    again.load_state_dict(state)
    with pytest.raises(ValueError, match="elastic_state"):
        next(iter(again))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("old,new", [((1, 2), (1, 1)), ((2, 0), (1, 2)), ((1, 1), (1, 1))])
def test_streaming_dataloader_resumes_a_checkpoint_on_any_shape(small: Path, old, new) -> None:
    """loader.load_state_dict of another worker count or world size resumes the rest of the epoch
    (torchdata's own loader ends in an AssertionError there); the same shape is torchdata's exact resume."""
    (world0, workers0), (world1, workers1) = old, new
    seen, states = _checkpoints(small, StreamingDataLoader, world0, workers0, seed=3, batches=2)
    total = StreamingLeRobot(small).meta.total_frames
    for rank in range(world1):
        dataset = StreamingLeRobot(small, shuffle=True, seed=3, rank=rank, world_size=world1, return_uint8=True)
        loader = StreamingDataLoader(dataset, batch_size=4, num_workers=workers1)
        loader.load_state_dict(states[0])
        seen += _indices(loader)
    counts = collections.Counter(seen)
    assert set(counts) == set(range(total)), "no frame skipped"
    assert sum(c - 1 for c in counts.values()) < world1, "at most one repeat per new rank"


def test_torchdata_refuses_what_streaming_dataloader_resumes(small: Path) -> None:
    dataset = StreamingLeRobot(small, shuffle=True, seed=3, return_uint8=True)
    loader = StreamingDataLoader(dataset, batch_size=4, num_workers=2)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    del it, loader
    plain = StatefulDataLoader(StreamingLeRobot(small, shuffle=True, seed=3, return_uint8=True), batch_size=4,
                               num_workers=1)
    plain.load_state_dict(state)
    with pytest.raises(AssertionError):  # why StreamingDataLoader exists
        next(iter(plain))


def test_streaming_dataloader_is_built_without_warnings(small: Path) -> None:
    dataset = StreamingLeRobot(small, return_uint8=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchdata's own constructor warns that torch.set_vital is deprecated
        StreamingDataLoader(dataset, batch_size=4, num_workers=0)
