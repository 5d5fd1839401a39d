"""The mixture plan as pure arithmetic: counts, interleave, reader runs, cycling rules."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from lerobot_stream_loader.mix.elastic import remaining_reader_plan
from lerobot_stream_loader.mix.plan import (
    SourceEpisodes,
    interleave_prefix,
    plan_reader,
    reader_ranges,
    source_counts,
    source_segments,
)
from lerobot_stream_loader.plan.elastic import ElasticState


def _frames(segments: tuple[np.ndarray, ...]) -> list[tuple[int, int]]:
    return [(int(e), f) for e, a, b in zip(*segments[:3], strict=True) for f in range(int(a), int(b))]


def test_source_counts_are_exact_and_proportional() -> None:
    assert source_counts(np.array([0.5, 0.3, 0.2]), 101).tolist() == [51, 30, 20]
    assert source_counts(np.array([1.0, 1.0, 1.0]), 100).tolist() == [34, 33, 33]
    assert source_counts(np.array([0.0, 2.0]), 7).tolist() == [0, 7]
    rng = np.random.default_rng(1)
    for _ in range(50):
        w = rng.random(5)
        total = int(rng.integers(1, 10_000))
        counts = source_counts(w, total)
        assert counts.sum() == total
        assert np.all(np.abs(counts - w / w.sum() * total) < 1)


def test_interleave_prefix_matches_the_sorted_sequence() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        counts = rng.integers(0, 30, int(rng.integers(1, 6)))
        if counts.sum() == 0:
            continue
        order = sorted((Fraction(2 * j + 1, 2 * int(c)), i) for i, c in enumerate(counts) for j in range(int(c)))
        for position in range(int(counts.sum()) + 1):
            want = np.bincount([i for _, i in order[:position]], minlength=len(counts))
            assert interleave_prefix(counts, position).tolist() == want.tolist()


def test_interleave_prefix_is_exact_for_large_counts() -> None:
    counts = np.array([10**9 + 7, 3 * 10**8 + 1, 12345])
    total = int(counts.sum())
    for position in (1, 12_345_678, total // 2, total - 1):
        got = interleave_prefix(counts, position)
        assert got.sum() == position
        assert np.all(np.abs(got - position * counts / total) <= 1)


@pytest.mark.parametrize(("total", "world", "workers", "drop_last"), [(100, 2, 2, False), (101, 2, 3, False),
                                                                     (101, 4, 1, True), (7, 3, 2, False)])
def test_reader_runs_give_every_rank_the_same_count(total: int, world: int, workers: int, drop_last: bool) -> None:
    per_rank = []
    covered: Counter[int] = Counter()
    for rank in range(world):
        n = 0
        for worker in range(workers):
            for lo, hi in reader_ranges(total, world_size=world, rank=rank, num_workers=workers,
                                        worker_id=worker, drop_last=drop_last):
                n += hi - lo
                covered.update(range(lo, hi))
        per_rank.append(n)
    assert len(set(per_rank)) == 1
    if drop_last:
        assert per_rank[0] == total // world and max(covered.values()) == 1
    else:
        assert set(covered) == set(range(total)) and sum(covered.values()) - total < world


def test_cycling_covers_every_frame_before_repeating() -> None:
    source = SourceEpisodes(np.array([0, 3, 4, 9]), np.array([5, 3, 7, 2]))
    for shuffle in (False, True):
        frames = _frames(source_segments(source, number=0, count=40, lo=0, hi=40, seed=1, epoch=0, shuffle=shuffle))
        assert len(frames) == 40
        for p in range(2):
            assert len(set(frames[17 * p:17 * (p + 1)])) == 17, "one full pass before any repeat"
        assert set(frames[34:]) <= set(frames[:17]) and len(set(frames[34:])) == 6


def test_fewer_samples_than_frames_are_distinct_and_change_with_the_epoch() -> None:
    source = SourceEpisodes(np.arange(10), np.full(10, 6))
    for shuffle in (False, True):
        subsets = []
        for epoch in range(3):
            frames = _frames(source_segments(source, number=0, count=20, lo=0, hi=20, seed=0, epoch=epoch,
                                             shuffle=shuffle))
            assert len(frames) == len(set(frames)) == 20
            subsets.append(frozenset(frames))
        assert len(set(subsets)) == 3


def test_readers_split_each_source_into_disjoint_runs() -> None:
    sources = [SourceEpisodes(np.arange(6), np.array([10, 12, 9, 11, 10, 8])),
               SourceEpisodes(np.arange(4), np.array([7, 9, 8, 6]))]
    counts = source_counts(np.array([60.0, 30.0]), 90)
    seen: Counter[tuple[int, int, int]] = Counter()
    lengths = []
    for rank in range(2):
        for worker in range(2):
            plan = plan_reader(sources, counts, pool_sizes=[3, 2], shuffle_buffers=[16, 8], seed=0, epoch=0,
                               rank=rank, world_size=2, worker_id=worker, num_workers=2, shuffle=True,
                               drop_last=False)
            lengths.append(len(plan))
            for i, sub in enumerate(plan.plans):
                assert sub is not None and len(sub) == int((plan.source_of == i).sum())
                seen.update((i, int(e), int(f)) for e, f in zip(sub.episode_index, sub.frame_index, strict=True))
    assert sorted(lengths) == [22, 22, 23, 23]
    assert max(seen.values()) == 1 and sum(seen.values()) == 90


def test_skip_resumes_each_source_where_it_was() -> None:
    sources = [SourceEpisodes(np.arange(5), np.full(5, 8)), SourceEpisodes(np.arange(3), np.full(3, 5))]
    counts = source_counts(np.array([0.6, 0.4]), 50)
    plan = plan_reader(sources, counts, pool_sizes=[2, 2], shuffle_buffers=[8, 8], seed=3, epoch=1, rank=0,
                       world_size=1, worker_id=0, num_workers=1, shuffle=True, drop_last=False)

    def walk(p):  # (source, episode, frame) in order
        pos = [0] * len(p.plans)
        out = []
        for s in p.source_of.tolist():
            sub = p.plans[s]
            out.append((s, int(sub.episode_index[pos[s]]), int(sub.frame_index[pos[s]])))
            pos[s] += 1
        return out

    full = walk(plan)
    assert walk(plan.skip(17)) == full[17:]


def _samples(plan) -> list[tuple[int, int, int]]:
    """(source, episode, frame) of a reader plan, in yield order."""
    cursor = [0] * len(plan.plans)
    out = []
    for i in plan.source_of.tolist():
        sub = plan.plans[i]
        out.append((i, int(sub.episode_index[cursor[i]]), int(sub.frame_index[cursor[i]])))
        cursor[i] += 1
    return out


@pytest.mark.parametrize("old,new", [((2, 2), (3, 1)), ((1, 1), (2, 2)), ((3, 2), (2, 3)), ((2, 1), (1, 1))])
def test_elastic_rest_of_a_mixture_epoch_is_read_once_by_the_new_readers(old, new) -> None:
    sources = [SourceEpisodes(np.arange(7), np.array([10, 12, 9, 11, 10, 8, 13])),
               SourceEpisodes(np.arange(4), np.array([7, 9, 8, 6])),
               SourceEpisodes(np.arange(3), np.array([5, 6, 4]))]
    counts = source_counts(np.array([0.5, 0.3, 0.2]), 101)
    options = dict(pool_sizes=[3, 2, 2], shuffle_buffers=[16, 8, 8], seed=4, shuffle=True, drop_last=False)
    (world0, workers0), (world1, workers1) = old, new
    consumed = [5 + 3 * w for w in range(workers0)]  # worker slot w yielded the same count on every rank
    epoch: Counter = Counter()
    seen: Counter = Counter()
    for rank in range(world0):
        for worker in range(workers0):
            samples = _samples(plan_reader(sources, counts, epoch=2, rank=rank, world_size=world0,
                                           worker_id=worker, num_workers=workers0, **options))
            epoch.update(samples)
            seen.update(samples[:consumed[worker]])
    state = ElasticState(epoch=2, world_size=world0, num_workers=workers0, consumed=tuple(consumed),
                         fingerprint="-")
    per_rank = []
    for rank in range(world1):
        mine = 0
        for worker in range(workers1):
            plan = remaining_reader_plan(sources, counts, state, rank=rank, world_size=world1, worker_id=worker,
                                         num_workers=workers1, **options)
            samples = _samples(plan)
            mine += len(samples)
            seen.update(samples)
        per_rank.append(mine)
    assert set(seen) == set(epoch), "no sample of the epoch skipped"
    assert sum((seen - epoch).values()) < world1, "at most one repeat per new rank"
    assert max(per_rank) == min(per_rank), "every new rank yields the same count"


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_cycled_source_finishes_each_pass_within_a_reader_before_repeating(shuffle: bool) -> None:
    """540 frames asked for 600 times: one reader yields all 540 before any repeats, and every frame
    comes once or twice; with two readers, each reader's own draws hold a pass before the next."""
    lengths = np.array([60, 90, 30, 120, 45, 75, 50, 70])  # 540 frames
    source = SourceEpisodes(np.arange(len(lengths)), lengths)
    counts = np.array([600])

    def draws(workers: int, worker: int) -> list[tuple[int, int]]:
        plan = plan_reader([source], counts, pool_sizes=[3], shuffle_buffers=[32], seed=2, epoch=0, rank=0,
                           world_size=1, worker_id=worker, num_workers=workers, shuffle=shuffle, drop_last=False)
        p = plan.plans[0]
        return list(zip(p.episode_index.tolist(), p.frame_index.tolist(), strict=True))

    one = draws(1, 0)
    assert len(one) == 600 and len(set(one[:540])) == 540
    assert set(Counter(one).values()) <= {1, 2}
    both = draws(2, 0) + draws(2, 1)
    assert sorted(Counter(both).values()) == sorted(Counter(one).values())
    for worker in range(2):
        mine = draws(2, worker)
        (lo, hi), = reader_ranges(600, world_size=1, rank=0, num_workers=2, worker_id=worker, drop_last=False)
        first_pass = _frames(source_segments(source, number=0, count=600, lo=lo, hi=min(hi, 540), seed=2,
                                             epoch=0, shuffle=shuffle))
        assert set(mine[:len(first_pass)]) == set(first_pass)  # this reader's first pass comes first
