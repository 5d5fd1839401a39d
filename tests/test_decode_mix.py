"""Shuffled order: each frame decoded once and in order, mixing after decoding, bounded buffer, resume."""

from __future__ import annotations

import numpy as np
import pytest

from lerobot_stream_loader.plan.decode_order import decode_order, mixed_order, run_length
from lerobot_stream_loader.plan.shard import UNSHUFFLED_RUN, PlanEpisode, plan_shard
from lerobot_stream_loader.stream import decode_runs


def lengths_of(count: int, lo: int, hi: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi + 1, size=count)


def episodes_of(lengths: np.ndarray) -> list[PlanEpisode]:
    return [PlanEpisode(i, int(n), (f"data/{i // 10}", f"v/{i // 5}")) for i, n in enumerate(lengths)]


def uniform_distinct(lengths: np.ndarray, batch: int = 32) -> float:
    """Expected distinct episodes in a batch drawn uniformly (with replacement) from all frames."""
    p = lengths / lengths.sum()
    return float(np.sum(1 - (1 - p) ** batch))


def distinct_per_batch(episode: np.ndarray, batch: int = 32) -> np.ndarray:
    rows = episode[: len(episode) // batch * batch].reshape(-1, batch)
    return np.array([len(np.unique(r)) for r in rows])


@pytest.mark.parametrize("pool,buffer", [(1, 1), (3, 17), (8, 64), (32, 256)])
def test_decode_order_is_sequential_per_episode_with_pool_open(pool, buffer):
    lengths = lengths_of(40, 1, 50, seed=pool)
    run = run_length(pool, buffer)
    order = decode_order(lengths, pool, run, np.random.default_rng(1))
    assert np.array_equal(np.sort(order), np.arange(lengths.sum())), "every frame decoded exactly once"
    segment = np.repeat(np.arange(len(lengths)), lengths)[order]
    for s in range(len(lengths)):
        assert (np.diff(order[segment == s]) == 1).all(), "an episode's frames are decoded in order"
    first = np.array([np.flatnonzero(segment == s)[0] for s in range(len(lengths))])
    last = np.array([np.flatnonzero(segment == s)[-1] for s in range(len(lengths))])
    opened = np.searchsorted(np.sort(first), np.arange(len(order)), side="right")
    closed = np.searchsorted(np.sort(last), np.arange(len(order)), side="left")
    assert (opened - closed).max() <= pool


@pytest.mark.parametrize("pool,buffer", [(2, 8), (8, 64), (16, 145), (32, 512)])
def test_waiting_decoded_samples_stay_within_the_buffer(pool, buffer):
    """Replays the stream's decode-then-yield loop on the plan and counts the samples waiting."""
    episodes = episodes_of(lengths_of(60, 20, 120, seed=3))
    plan = plan_shard(episodes, shuffle=True, pool_size=pool, shuffle_buffer=buffer, seed=5)
    runs = decode_runs(plan)
    decoded: set[int] = set()
    waiting, next_run = 0, 0
    for k in range(len(plan)):
        while k not in decoded:
            decoded.update(runs[next_run][1].tolist())
            waiting = max(waiting, len(decoded))
            next_run += 1
        decoded.remove(k)
    assert waiting <= buffer + run_length(pool, buffer)
    print(f"pool={pool} buffer={buffer}: at most {waiting} decoded samples waiting")


def test_shuffle_is_exactly_once_and_deterministic():
    episodes = episodes_of(lengths_of(30, 5, 80, seed=2))
    for epoch in range(3):
        plans = [plan_shard(episodes, shuffle=True, seed=9, epoch=epoch, worker_id=w, num_workers=2,
                            pool_size=4, shuffle_buffer=40) for w in range(2)]
        again = [plan_shard(episodes, shuffle=True, seed=9, epoch=epoch, worker_id=w, num_workers=2,
                            pool_size=4, shuffle_buffer=40) for w in range(2)]
        for a, b in zip(plans, again, strict=True):
            assert np.array_equal(a.episode_index, b.episode_index) and np.array_equal(a.decode_rank, b.decode_rank)
        body = [(e, f) for p in plans for e, f in zip(p.episode_index[: len(p) - p.num_padded].tolist(),
                                                      p.frame_index[: len(p) - p.num_padded].tolist(), strict=True)]
        assert len(body) == len(set(body)) == sum(ep.length for ep in episodes)
    other = plan_shard(episodes, shuffle=True, seed=9, epoch=1, pool_size=4, shuffle_buffer=40)
    first = plan_shard(episodes, shuffle=True, seed=9, epoch=0, pool_size=4, shuffle_buffer=40)
    assert not np.array_equal(other.episode_index, first.episode_index)


def test_batches_mix_about_as_many_episodes_as_a_uniform_sampler():
    """A shard of many episodes: batches of 32 from 5 % into the epoch hold >= 0.8x the distinct
    episodes of a uniform random sampler over the shard, and the first batch is already mixed."""
    lengths = lengths_of(400, 100, 200, seed=4)
    expected = uniform_distinct(lengths)
    order, _ = mixed_order(lengths, 96, 256, np.random.default_rng(0))
    distinct = distinct_per_batch(np.repeat(np.arange(len(lengths)), lengths)[order])
    steady = distinct[int(0.05 * len(distinct)):].mean()
    print(f"distinct per batch {steady:.1f} vs uniform {expected:.1f}; first batch {distinct[0]}")
    assert steady >= 0.8 * expected
    assert distinct[0] >= 16


@pytest.mark.parametrize("seed", range(3))
def test_episodes_open_stay_the_pool_almost_to_the_end(seed):
    """A shard with more episodes than the pool (80 DROID-length episodes, 64 open): the episodes
    open stay near the pool size from the start to 95 % of the shard (slots dealt similar work end
    together), and batches near the end mix as many episodes as the early ones."""
    lengths = lengths_of(80, 150, 300, seed=seed)
    order, _ = mixed_order(lengths, 64, 518, np.random.default_rng(seed))
    decoded = decode_order(lengths, 64, run_length(64, 518), np.random.default_rng(seed))
    segment = np.repeat(np.arange(len(lengths)), lengths)[decoded]
    first = np.array([np.flatnonzero(segment == s)[0] for s in range(len(lengths))])
    last = np.array([np.flatnonzero(segment == s)[-1] for s in range(len(lengths))])
    steps = np.arange(int(0.02 * len(decoded)), int(0.95 * len(decoded)))
    open_ = np.searchsorted(np.sort(first), steps, side="right") - np.searchsorted(np.sort(last), steps, side="left")
    assert open_.min() >= 0.9 * 64, f"only {open_.min()} episodes open at step {steps[open_.argmin()]}"
    distinct = distinct_per_batch(np.repeat(np.arange(len(lengths)), lengths)[order])
    tenth = len(distinct) // 10
    assert distinct[-tenth:].mean() >= 0.9 * distinct[tenth:2 * tenth].mean()


def test_unshuffled_plan_decodes_in_yield_order():
    episodes = episodes_of(lengths_of(10, 5, 40))
    plan = plan_shard(episodes, shuffle=False, worker_id=1, num_workers=3)
    assert (np.diff(plan.decode_rank) > 0).all()  # decoded in position order
    assert all(len(positions) <= UNSHUFFLED_RUN for _, positions in decode_runs(plan))


def test_padding_is_decoded_last():
    episodes = episodes_of(np.array([50, 10, 9, 8]))
    plans = [plan_shard(episodes, shuffle=True, world_size=2, rank=r, pool_size=2, shuffle_buffer=8)
             for r in range(2)]
    plan = max(plans, key=lambda p: p.num_padded)
    assert plan.num_padded > 0
    body = len(plan) - plan.num_padded
    assert plan.decode_rank[body:].min() > plan.decode_rank[:body].max()
