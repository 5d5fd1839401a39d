"""Sample plan: sharding, equal counts, order, resume state, rank resolution (shuffle order: test_decode_mix)."""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset

from lerobot_stream_loader.meta.dataset_meta import EpisodeMeta, VideoSpan
from lerobot_stream_loader.plan.ranks import resolve_rank, resolve_worker
from lerobot_stream_loader.plan.shard import (
    PlanEpisode,
    ShardPlan,
    as_plan_episodes,
    assign_shards,
    group_episodes,
    plan_episodes,
    plan_shard,
    samples_per_rank,
)
from lerobot_stream_loader.plan.state import PlanState, fingerprint


def make_episodes(count: int, lo: int, hi: int, per_file: int, seed: int = 0) -> list[PlanEpisode]:
    lengths = np.random.default_rng(seed).integers(lo, hi + 1, size=count)
    return [
        PlanEpisode(i, int(n), (f"data/file-{i // per_file}", f"v/file-{i // 3}"))
        for i, n in enumerate(lengths)
    ]


SMALL = make_episodes(7, 20, 40, per_file=4)  # like the sample datasets: 7 episodes, 2 data files
MEDIUM = make_episodes(60, 10, 90, per_file=8, seed=1)


def all_plans(episodes, world, workers, **kw) -> dict[tuple[int, int], ShardPlan]:
    return {
        (r, w): plan_shard(episodes, rank=r, world_size=world, worker_id=w, num_workers=workers, **kw)
        for r in range(world)
        for w in range(max(workers, 1))
    }


def pairs(plan: ShardPlan) -> list[tuple[int, int]]:
    return list(zip(plan.episode_index.tolist(), plan.frame_index.tolist(), strict=True))


@pytest.mark.parametrize("episodes", [SMALL, MEDIUM], ids=["small", "medium"])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("world,workers", [(w, k) for w in (1, 2, 3) for k in (0, 1, 2, 3)])
def test_every_frame_once_and_equal_counts(episodes, world, workers, shuffle, drop_last):
    plans = all_plans(episodes, world, workers, shuffle=shuffle, drop_last=drop_last, seed=3, epoch=1)
    slots = max(workers, 1)
    expected = samples_per_rank(episodes, world_size=world, drop_last=drop_last)
    total = sum(ep.length for ep in episodes)
    assert expected == (total // world if drop_last else -(-total // world))
    for w in range(slots):
        assert len({len(plans[r, w]) for r in range(world)}) == 1, "slot counts differ across ranks"
    for r in range(world):
        assert sum(len(plans[r, w]) for w in range(slots)) == expected
    everything = {(ep.index, f) for ep in episodes for f in range(ep.length)}
    seen: collections.Counter = collections.Counter()
    for plan in plans.values():
        own = pairs(plan)
        body = own[: len(own) - plan.num_padded]
        n = len(body)
        if n:
            assert own[n:] == [body[i % n] for i in range(n - plan.num_padded, n)], "pad = own last samples"
        seen.update(body)
    assert max(seen.values()) == 1
    padded = sum(p.num_padded for p in plans.values())
    if drop_last:
        assert set(seen) <= everything and padded == 0
        assert len(everything) - len(seen) < world, "at most one frame dropped per rank"
    else:
        assert set(seen) == everything and padded < world, "at most one sample repeated per rank"


@pytest.mark.parametrize("shuffle", [False, True])
def test_len_is_the_same_for_every_worker_count_and_epoch(shuffle):
    for world in (1, 2, 5):
        counts = {sum(len(plan_shard(MEDIUM, rank=0, world_size=world, worker_id=w, num_workers=workers,
                                     shuffle=shuffle, epoch=epoch))
                      for w in range(max(workers, 1)))
                  for workers in (0, 1, 3, 4) for epoch in (0, 1, 2)}
        assert counts == {samples_per_rank(MEDIUM, world_size=world)}


@hsettings(max_examples=40, deadline=None)
@given(count=st.integers(1, 400), lo=st.integers(1, 300), spread=st.integers(0, 400),
       world=st.integers(1, 64), workers=st.integers(0, 8), seed=st.integers(0, 3),
       shuffle=st.booleans(), drop_last=st.booleans())
def test_padding_and_split_bounds(count, lo, spread, world, workers, seed, shuffle, drop_last):
    """Property: repeated or dropped samples per epoch stay below world_size, every reader holds at most
    two partial episodes, and every frame is assigned once (all but < world_size with drop_last)."""
    lengths = np.random.default_rng(seed).integers(lo, lo + spread + 1, size=count)
    slots = max(workers, 1)
    if lengths.sum() < world * slots:
        return
    episodes = group_episodes(np.arange(count), lengths, np.arange(count) // 7, np.arange(count) // 3)
    assignment = assign_shards(episodes, world_size=world, num_workers=workers, seed=seed, shuffle=shuffle,
                               drop_last=drop_last)
    frames = assignment.frames_per_shard()
    waste = np.abs(assignment.targets - frames).sum()
    assert waste < world
    assert (assignment.targets.reshape(world, slots) == assignment.targets[:slots]).all()
    whole = lengths[np.searchsorted(np.arange(count), assignment.episode)]
    partial = (assignment.stop - assignment.start) < whole
    per_shard = np.add.reduceat(partial, assignment.bounds[:-1]) if len(partial) else np.zeros(0)
    nonempty = np.diff(assignment.bounds) > 0
    assert (per_shard[nonempty[: len(per_shard)]] <= 2).all()
    covered = np.zeros(int(lengths.sum()), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])[assignment.episode]
    for a, b, o in zip(assignment.start.tolist(), assignment.stop.tolist(), offsets.tolist()):
        covered[o + a:o + b] += 1
    assert covered.max() == 1 and len(covered) - covered.sum() < (world if drop_last else 1)


def test_waste_at_512_ranks_by_8_workers():
    """DROID-like: 100k episodes of 100-500 frames over 4,096 readers: < 0.5 % repeated or dropped."""
    lengths = np.random.default_rng(0).integers(100, 501, size=100_000)
    episodes = group_episodes(np.arange(len(lengths)), lengths, np.arange(len(lengths)) // 100,
                              np.arange(len(lengths)) // 100)
    for drop_last in (False, True):
        assignment = assign_shards(episodes, world_size=512, num_workers=8, shuffle=True, drop_last=drop_last)
        waste = np.abs(assignment.targets - assignment.frames_per_shard()).sum() / lengths.sum()
        split = len(assignment.episode) - len(lengths)
        print(f"drop_last={drop_last}: waste {waste:.2e} of the epoch, {split} episodes split")
        assert waste < 0.005 and split < 4096


def test_locality_distinct_files_per_shard():
    episodes = make_episodes(96, 20, 40, per_file=12)  # 8 data files, 12 episodes each
    for shuffle in (False, True):
        assignment = assign_shards(episodes, world_size=4, num_workers=1, seed=5, epoch=0, shuffle=shuffle)
        by_index = {ep.index: ep.locality[0] for ep in episodes}
        files = [len({by_index[e] for e in assignment.shard(s)[0].tolist()}) for s in range(4)]
        print(f"shuffle={shuffle}: distinct data files per shard {files}")
        assert max(files) <= 8 // 4 + 2


@pytest.mark.parametrize("episodes", [[PlanEpisode(i, 25, ("one-file",)) for i in range(4)], SMALL[:2]])
def test_fewer_files_or_episodes_than_shards_no_idle(episodes):
    plans = all_plans(episodes, 3, 3, shuffle=True)
    assert all(len(p) - p.num_padded > 0 for p in plans.values())
    body = collections.Counter(x for p in plans.values() for x in pairs(p)[: len(p) - p.num_padded])
    assert set(body) == {(ep.index, f) for ep in episodes for f in range(ep.length)}
    assert max(body.values()) == 1


def test_shuffle_false_is_dataset_order():
    plans = all_plans(MEDIUM, 2, 2, shuffle=False)
    joined = [
        x for key in sorted(plans) for x in pairs(plans[key])[: len(plans[key]) - plans[key].num_padded]
    ]
    assert joined == [(ep.index, f) for ep in MEDIUM for f in range(ep.length)]
    assert all(np.array_equal(p.first_pos, np.sort(p.first_pos)) for p in plans.values())
    assert all((np.diff(p.decode_rank) > 0).all() for p in plans.values())  # decoded in position order


def digest(plan: ShardPlan) -> str:
    parts = (plan.episode_index, plan.frame_index, plan.admit_episodes, plan.first_pos, plan.last_pos,
             plan.decode_rank)
    return hashlib.sha256(
        b"".join(np.ascontiguousarray(a, dtype=np.int64).tobytes() for a in parts)
    ).hexdigest()


@pytest.mark.timeout(120)
def test_deterministic_across_calls_and_processes():
    kw = dict(seed=11, epoch=4, rank=1, world_size=2, worker_id=1, num_workers=2, shuffle=True)
    first = digest(plan_shard(MEDIUM, **kw))
    assert digest(plan_shard(MEDIUM, **kw)) == first
    script = textwrap.dedent(
        f"""
        from tests.test_plan import MEDIUM, digest
        from lerobot_stream_loader.plan.shard import plan_shard
        print(digest(plan_shard(MEDIUM, **{kw!r})))
        """
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == first


def test_epoch_and_seed_change_order_only_with_shuffle():
    base = dict(rank=0, world_size=1, worker_id=0, num_workers=1)
    a = plan_shard(MEDIUM, shuffle=True, seed=0, epoch=0, **base)
    assert digest(plan_shard(MEDIUM, shuffle=True, seed=0, epoch=1, **base)) != digest(a)
    assert digest(plan_shard(MEDIUM, shuffle=True, seed=1, epoch=0, **base)) != digest(a)
    assert sorted(pairs(a)) == sorted(pairs(plan_shard(MEDIUM, shuffle=True, seed=0, epoch=1, **base)))
    fixed = plan_shard(MEDIUM, shuffle=False, seed=0, epoch=0, **base)
    assert digest(plan_shard(MEDIUM, shuffle=False, seed=9, epoch=5, **base)) == digest(fixed)
    sharded = [assign_shards(MEDIUM, world_size=4, num_workers=1, seed=0, epoch=e, shuffle=True).shard(0)[0].tolist()
               for e in range(3)]
    assert sharded[0] != sharded[1] != sharded[2], "assignment varies per epoch"


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_skip_is_the_tail(shuffle):
    plan = plan_shard(MEDIUM, shuffle=shuffle, pool_size=5, world_size=2, rank=1, seed=3)
    for k in (0, 1, 37, len(plan) // 2, len(plan) - 1, len(plan)):
        tail = plan.skip(k)
        assert tail.start == k and len(tail) == len(plan) - k
        assert np.array_equal(tail.episode_index, plan.episode_index[k:])
        assert np.array_equal(tail.frame_index, plan.frame_index[k:])
        assert np.array_equal(tail.admit_episodes, plan.admit_episodes[plan.last_pos >= k])
        assert np.array_equal(tail.decode_rank, plan.decode_rank[k:])
        assert np.array_equal(tail.admit_episodes[tail.segment], tail.episode_index)
    assert np.array_equal(plan.skip(10).skip(5).episode_index, plan.skip(15).episode_index)
    with pytest.raises(ValueError, match="cannot skip"):
        plan.skip(len(plan) + 1)


def settings(world: int = 2, workers: int = 3, seed: int = 0) -> dict:
    return dict(world_size=world, num_workers=workers, seed=seed, shuffle=True, drop_last=False, pool_size=16,
                shuffle_buffer=64)


def test_state_roundtrip_and_mismatch_errors():
    fp = fingerprint(MEDIUM, **settings())
    state = PlanState(epoch=2, consumed=17, rank=1, world_size=2, worker_id=0, num_workers=3, fingerprint=fp)
    saved = json.loads(json.dumps(state.to_dict()))
    assert len(json.dumps(saved)) < 1024
    restored = PlanState.from_dict(saved)
    assert restored == state
    restored.check(rank=1, world_size=2, worker_id=0, num_workers=3, fingerprint=fp)
    with pytest.raises(ValueError, match=r"world_size=2, num_workers=3 .* world_size=3, num_workers=3"):
        restored.check(
            rank=1, world_size=3, worker_id=0, num_workers=3, fingerprint=fingerprint(MEDIUM, **settings(3))
        )
    with pytest.raises(ValueError, match="num_workers=2"):
        restored.check(rank=1, world_size=2, worker_id=0, num_workers=2, fingerprint=fp)
    with pytest.raises(ValueError, match="rank 1 worker 0"):
        restored.check(rank=1, world_size=2, worker_id=2, num_workers=3, fingerprint=fp)
    with pytest.raises(ValueError, match="different plan"):
        restored.check(
            rank=1,
            world_size=2,
            worker_id=0,
            num_workers=3,
            fingerprint=fingerprint(MEDIUM, **settings(seed=1)),
        )
    assert fingerprint(MEDIUM[:-1], **settings()) != fp
    assert fingerprint(MEDIUM, **settings(workers=0)) == fingerprint(MEDIUM, **settings(workers=1))
    with pytest.raises(ValueError, match="missing"):
        PlanState.from_dict({"epoch": 1})


def test_invalid_arguments():
    with pytest.raises(ValueError, match="empty"):
        plan_shard([])
    with pytest.raises(ValueError, match="unique"):
        plan_shard([PlanEpisode(1, 5), PlanEpisode(1, 6)])
    with pytest.raises(ValueError, match=r"episodes \[4\] have no frames"):
        plan_shard([PlanEpisode(4, 0)])
    with pytest.raises(ValueError, match="fewer than the 9 readers"):
        plan_shard([PlanEpisode(0, 5)], world_size=3, num_workers=3)
    with pytest.raises(ValueError, match="outside world_size"):
        plan_shard(SMALL, rank=2, world_size=2)
    with pytest.raises(ValueError, match="outside num_workers"):
        plan_shard(SMALL, worker_id=1, num_workers=0)
    with pytest.raises(ValueError, match="pool_size"):
        plan_shard(SMALL, shuffle=True, pool_size=0)


def test_plan_episodes_from_metadata():
    span = VideoSpan("videos/cam0/chunk-000/file-001.mp4", 0.0, 1.0)
    ep = EpisodeMeta(3, 30, 100, 130, "data/chunk-000/file-000.parquet", ["t"], {"cam0": span})
    assert plan_episodes([ep]) == [PlanEpisode(3, 30, ("data/chunk-000/file-000.parquet", (span.path,)))]
    arrays = as_plan_episodes(MEDIUM)
    assert arrays.file_group.tolist() == [i // 8 for i in range(60)]
    seen: dict = {}
    assert arrays.video_group.tolist() == [seen.setdefault(ep.locality, len(seen)) for ep in MEDIUM]
    columns = group_episodes(arrays.index, arrays.length, np.arange(60) // 8,
                             np.stack([np.arange(60) // 8, np.arange(60) // 3], 1))
    assert columns.file_group.tolist() == arrays.file_group.tolist()
    assert columns.video_group.tolist() == arrays.video_group.tolist()


def test_resolve_rank(monkeypatch, tmp_path):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_rank() == (0, 1)
    assert resolve_rank(2, 4) == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert resolve_rank() == (1, 3)
    assert resolve_rank(0, 2) == (0, 2)
    with pytest.raises(ValueError, match="both rank and world_size"):
        resolve_rank(rank=1)
    with pytest.raises(ValueError, match="outside world_size"):
        resolve_rank(3, 3)


@pytest.mark.timeout(60)
def test_resolve_rank_prefers_torch_distributed(monkeypatch, tmp_path):
    import torch.distributed as dist

    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "9")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert resolve_rank() == (0, 1)
    finally:
        dist.destroy_process_group()


class _WorkerIds(IterableDataset):
    def __iter__(self):
        yield torch.tensor(resolve_worker())


@pytest.mark.timeout(120)
def test_resolve_worker():
    assert resolve_worker() == (0, 1)
    got = sorted(tuple(t.tolist()) for t in DataLoader(_WorkerIds(), batch_size=None, num_workers=2))
    assert got == [(0, 2), (1, 2)]
