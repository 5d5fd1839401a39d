"""Sample plan: which (episode, frame) samples each (rank, worker) reader yields, and in what order.

Everything here is pure arithmetic on arrays: a deterministic function of the episodes (index,
length, file groups) and of (seed, epoch, rank, world_size, worker_id, num_workers, shuffle,
drop_last, pool_size). Random draws use ``numpy.random.Generator(PCG64)`` seeded from integer
tuples, so every machine computes the same plan (for a given numpy version).

Sequence. The episodes are laid out in one sequence of ``F`` frames: dataset order, or with
``shuffle`` the data files in a random order, within each the groups of episodes sharing the same
video files in a random order, and their episodes in a random order.

Ranks. Rank r owns the frames ``[r * F // world_size, (r + 1) * F // world_size)`` of the sequence,
so rank runs differ by at most one frame. Every rank yields exactly ``N = ceil(F / world_size)``
samples (``drop_last=True``: ``floor``): :func:`samples_per_rank`, what ``len(dataset)`` reports.
It depends only on the episodes, ``world_size`` and ``drop_last``: not on the worker count, not on
the epoch. A rank one frame short repeats one sample (padding), one frame over drops its last
frame, so at most ``world_size`` samples per epoch are repeated or dropped.

Workers. Worker w of W yields the samples ``[w * N // W, (w + 1) * N // W)`` of its rank's run:
the same count on every rank, so DDP sees the same batches everywhere. Cuts fall at exact frame
positions; an episode a cut goes through is split there and each part is read by its own reader
(each reader holds at most two partial episodes). Padding copies the reader's own last planned
sample (the rank's first frame for a reader with no frame of its own).

Order. ``shuffle=False``: the shard's episodes in dataset order, frames in order.
``shuffle=True``: a resident pool of at most ``pool_size`` episodes; each next sample is drawn
uniformly at random, without replacement, from the frames still unread in the pool; an episode
leaves once all its frames are drawn, and the next planned episode is admitted as soon as fewer
episodes than the pool's capacity are resident. This is simulated exactly as an exponential race
(each pool frame fires after an Exp(1) delay from its episode's admission; memorylessness makes
each next firing uniform over the unread pool frames): O(samples log samples). Warm-up: at race
time t the capacity is ``min(pool_size, floor(exp(t * ln(pool_size) / life)))``, where ``life`` is
the mean over the first pool_size episodes of ``H(L) ~ ln L + 0.5772``, the expected lifetime (the
maximum of L Exp(1) delays). It grows with the draw rate (the unread resident frames), so new
episodes enter at a steady pace in draws: a first batch of 32 needs the first few episodes (1 to 3
on average at 20+ frames each), not the whole pool; the pool is full from t = life on.
The capacity depends only on lengths, not on the delays, so each draw stays exactly uniform over
the resident frames.

Resume. A reader's position is a count of consumed samples; resuming is ``ShardPlan.skip(consumed)``,
a slice (the checkpoint format lives in :mod:`lerobot_stream_loader.plan_state`).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

DEFAULT_POOL_SIZE = 256


@dataclass(frozen=True)
class PlanEpisode:
    """One episode as the planner sees it: index, frame count, and a locality key (its files)."""

    index: int
    length: int
    locality: Hashable = ()


@dataclass(frozen=True)
class PlanEpisodes:
    """The planner's input as arrays: per episode its index, length, data-file group and file group
    (episodes sharing every file). Groups are integer ids; only equality matters."""

    index: np.ndarray
    length: np.ndarray
    file_group: np.ndarray
    video_group: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def _first_seen_ids(keys: np.ndarray) -> np.ndarray:
    """Ids 0, 1, ... numbered in order of first appearance of each distinct row of ``keys``."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def as_plan_episodes(episodes: PlanEpisodes | Sequence[PlanEpisode]) -> PlanEpisodes:
    """``PlanEpisodes`` from a list of :class:`PlanEpisode` (a tuple locality key's first item is its
    data file); arrays are passed through."""
    if isinstance(episodes, PlanEpisodes):
        return episodes
    ids: dict[Hashable, int] = {}
    primary: dict[Hashable, int] = {}
    whole = [ids.setdefault(ep.locality, len(ids)) for ep in episodes]
    first = [primary.setdefault(ep.locality[0] if isinstance(ep.locality, tuple) and ep.locality
                                else ep.locality, len(primary)) for ep in episodes]
    return PlanEpisodes(np.array([ep.index for ep in episodes], dtype=np.int64),
                        np.array([ep.length for ep in episodes], dtype=np.int64),
                        np.array(first, dtype=np.int64), np.array(whole, dtype=np.int64))


def group_episodes(index: np.ndarray, length: np.ndarray, data_file: np.ndarray,
                   files: np.ndarray) -> PlanEpisodes:
    """``PlanEpisodes`` from columns: ``data_file`` one id per episode, ``files`` one row of ids per
    episode naming every file it reads (its data file and MP4s)."""
    return PlanEpisodes(np.asarray(index, dtype=np.int64), np.asarray(length, dtype=np.int64),
                        _first_seen_ids(np.asarray(data_file)), _first_seen_ids(np.asarray(files)))


def plan_episodes(episodes: Iterable[Any]) -> list[PlanEpisode]:
    """Planner episodes from ``EpisodeMeta``-like objects; locality = (data file, video files)."""
    return [
        PlanEpisode(
            int(ep.index),
            int(ep.length),
            (ep.data_path, tuple(ep.videos[key].path for key in sorted(ep.videos))),
        )
        for ep in episodes
    ]


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([k % 2**64 for k in key])))


@dataclass(frozen=True)
class Assignment:
    """Episode segments of all shards (shard s = rank * W + worker), in sequence order; shard s is
    ``bounds[s]:bounds[s + 1]`` and yields ``targets[s]`` samples (its frames, padded or cut)."""

    episode: np.ndarray  # episode index of each segment
    start: np.ndarray  # first frame of the segment within its episode
    stop: np.ndarray  # end (exclusive) of the segment within its episode
    bounds: np.ndarray  # [S + 1] segment offsets per shard
    targets: np.ndarray  # [S] samples each shard yields

    @property
    def num_shards(self) -> int:
        return len(self.bounds) - 1

    def frames_per_shard(self) -> np.ndarray:
        """Frames of every shard, shape [S]."""
        frames = np.concatenate([[0], np.cumsum(self.stop - self.start)])
        return frames[self.bounds[1:]] - frames[self.bounds[:-1]]

    def shard(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(episode, start, stop) of shard s's segments, in planned (admission) order."""
        lo, hi = self.bounds[s], self.bounds[s + 1]
        return self.episode[lo:hi], self.start[lo:hi], self.stop[lo:hi]


def _check_episodes(episodes: PlanEpisodes, num_shards: int) -> None:
    if len(episodes) == 0:
        raise ValueError("cannot plan an empty episode list (is the `episodes` subset empty?)")
    index, length = episodes.index, episodes.length
    if (length < 1).any():
        bad = index[length < 1].tolist()[:10]
        raise ValueError(f"episodes {bad} have no frames; they cannot be planned")
    if len(np.unique(index)) != len(index):
        raise ValueError("episode indices passed to the planner must be unique")
    if int(length.sum()) < num_shards:
        raise ValueError(
            f"the selected episodes hold {int(length.sum())} frames, fewer than the {num_shards} readers "
            "(world_size * num_workers); use fewer workers"
        )


def _random_ranks(group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rank per group id (ids 0..n-1), returned per element of ``group``."""
    count = int(group.max()) + 1 if len(group) else 0
    return np.argsort(rng.permutation(count))[group]


def _sequence_order(episodes: PlanEpisodes, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Positions into ``episodes``: dataset order, or a random order that keeps files together.

    With shuffle, the data files are placed in random order, within each the groups sharing every
    file (the same video files), then the episodes.
    """
    if not shuffle:
        return np.arange(len(episodes))
    rng = _rng(seed, epoch, 0)
    noise = rng.random(len(episodes))
    return np.lexsort((noise, _random_ranks(episodes.video_group, rng), _random_ranks(episodes.file_group, rng)))


def _shard_ranges(total: int, world_size: int, workers: int, drop_last: bool) -> tuple[np.ndarray, ...]:
    """Per shard: [start, stop) of its frames in the sequence, and the samples it yields."""
    per_rank = total // world_size if drop_last else -(-total // world_size)
    rank_start = np.arange(world_size, dtype=np.int64) * total // world_size
    rank_stop = np.arange(1, world_size + 1, dtype=np.int64) * total // world_size
    cut = np.arange(workers + 1, dtype=np.int64) * per_rank // workers
    lo = rank_start[:, None] + cut[None, :-1]
    hi = rank_start[:, None] + cut[None, 1:]
    start = np.minimum(lo, rank_stop[:, None]).reshape(-1)
    stop = np.minimum(hi, rank_stop[:, None]).reshape(-1)
    targets = np.tile(np.diff(cut), world_size)
    return start, stop, targets


def assign_shards(episodes: PlanEpisodes | Sequence[PlanEpisode], *, world_size: int, num_workers: int,
                  seed: int = 0, epoch: int = 0, shuffle: bool = False, drop_last: bool = False) -> Assignment:
    """Cut the episode sequence into ``world_size * num_workers`` readers' runs (module doc)."""
    episodes = as_plan_episodes(episodes)
    workers = max(int(num_workers), 1)
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    _check_episodes(episodes, world_size * workers)
    order = _sequence_order(episodes, seed, epoch, shuffle)
    index, length = episodes.index[order], episodes.length[order]
    edges = np.concatenate([[0], np.cumsum(length)])
    start, stop, targets = _shard_ranges(int(edges[-1]), world_size, workers, drop_last)
    pieces = np.union1d(edges, np.concatenate([start, stop]))
    piece_start, piece_stop = pieces[:-1], pieces[1:]
    shard = np.searchsorted(start, piece_start, side="right") - 1
    inside = (shard >= 0) & (piece_start < stop[np.maximum(shard, 0)])
    piece_start, piece_stop, shard = piece_start[inside], piece_stop[inside], shard[inside]
    owner = np.searchsorted(edges, piece_start, side="right") - 1
    bounds = np.searchsorted(shard, np.arange(len(start) + 1), side="left")
    return Assignment(index[owner], piece_start - edges[owner], piece_stop - edges[owner],
                      bounds.astype(np.int64), targets)


def _normalise(rank: int, world_size: int, worker_id: int, num_workers: int) -> int:
    workers = max(int(num_workers), 1)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if not 0 <= worker_id < workers:
        raise ValueError(f"worker_id {worker_id} is outside num_workers {num_workers}")
    return workers


def samples_per_rank(episodes: PlanEpisodes | Sequence[PlanEpisode], *, world_size: int,
                     drop_last: bool = False) -> int:
    """Samples each rank yields per epoch, all its workers together (``len(dataset)``):
    ``ceil(F / world_size)``, or ``floor`` with ``drop_last``; the same every epoch, for any worker count."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    total = int(as_plan_episodes(episodes).length.sum())
    return total // world_size if drop_last else -(-total // world_size)


@dataclass(frozen=True)
class ShardPlan:
    """The ordered samples of one reader for one epoch.

    Position k yields frame ``frame_index[k]`` (0-based within the episode) of episode
    ``episode_index[k]``. ``admit_episodes`` lists the shard's episodes in admission order: fetch
    them in that order. ``segment[k]`` is the admission number of sample k's episode; episode i is
    first read at ``first_pos[i]`` and can be evicted after ``last_pos[i]``. Sample k only needs
    episodes with admission number < ``pool`` + (number of episodes whose ``last_pos`` < k), where
    pool is ``pool_size`` with shuffle and 1 without. Episode i is in the pool from position
    ``resident_from[i]`` on (<= ``first_pos[i]``; 0 if resident at ``start``), during the warm-up
    later than that rule allows. The last ``num_padded`` samples are padding.
    Positions are relative to ``start`` (the number of samples skipped on resume). An episode that
    a cut split (see the module doc) appears on two adjacent shards, each reading its own frames.
    """

    episode_index: np.ndarray
    frame_index: np.ndarray
    segment: np.ndarray
    admit_episodes: np.ndarray
    first_pos: np.ndarray
    last_pos: np.ndarray
    resident_from: np.ndarray
    num_padded: int
    start: int = 0

    def __len__(self) -> int:
        return len(self.episode_index)

    def skip(self, k: int) -> ShardPlan:
        """The plan without its first k samples (resume): a slice, nothing replayed."""
        if not 0 <= k <= len(self):
            raise ValueError(f"cannot skip {k} samples of a plan of {len(self)}")
        resident = np.maximum(self.resident_from - k, 0)
        return _finish(self.episode_index[k:], self.frame_index[k:], self.segment[k:], self.admit_episodes,
                       resident, min(self.num_padded, len(self) - k), self.start + k)


def _finish(episode: np.ndarray, frame: np.ndarray, segment: np.ndarray, admit: np.ndarray,
            resident: np.ndarray, padded: int, start: int) -> ShardPlan:
    """Drop segments without samples, renumber them, and compute first/last positions."""
    n = len(episode)
    first = np.full(len(admit), n, dtype=np.int64)
    last = np.full(len(admit), -1, dtype=np.int64)
    pos = np.arange(n, dtype=np.int64)
    np.minimum.at(first, segment, pos)
    np.maximum.at(last, segment, pos)
    present = last >= 0
    renumber = np.cumsum(present) - 1
    kept = (admit, first, last, resident)
    return ShardPlan(episode, frame, renumber[segment], *(a[present] for a in kept), padded, start)


def _capacity_times(lengths: np.ndarray, pool_size: int) -> np.ndarray:
    """Race times at which the pool's capacity reaches 1, 2, ... (the warm-up of the module doc)."""
    warm = lengths[:pool_size].astype(np.float64)
    life = float(np.mean(np.log(warm) + np.euler_gamma + 0.5 / warm - 1 / (12 * warm**2)))
    return life * np.log1p(np.arange(len(warm))) / np.log(max(pool_size, 2))


def _pool_order(lengths: np.ndarray, pool_size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pool draw order (flat sample numbers, segment-major) and the draws before each admission."""
    starts = np.cumsum(lengths) - lengths
    delay = rng.standard_exponential(int(lengths.sum()))
    longest = np.maximum.reduceat(delay, starts)
    opens = _capacity_times(lengths, pool_size).tolist()
    admitted = np.zeros(len(lengths))
    leaving: list[float] = []
    now, capacity = 0.0, 0
    for i, life in enumerate(longest.tolist()):
        while True:
            while leaving and leaving[0] <= now:
                heapq.heappop(leaving)
            while capacity < len(opens) and opens[capacity] <= now:
                capacity += 1
            if len(leaving) < capacity:
                break
            now = min(leaving[0], opens[capacity]) if capacity < len(opens) else leaving[0]
        admitted[i] = now
        heapq.heappush(leaving, now + life)
    fire = np.repeat(admitted, lengths) + delay
    order = np.argsort(fire, kind="stable")
    return order, np.searchsorted(fire[order], admitted, side="right")


def plan_shard(
    episodes: PlanEpisodes | Sequence[PlanEpisode],
    *,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    worker_id: int = 0,
    num_workers: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> ShardPlan:
    """The plan of reader (rank, worker_id) for ``epoch``; ``num_workers=0`` means one reader per rank."""
    workers = _normalise(rank, world_size, worker_id, num_workers)
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    shard = rank * workers + worker_id
    assignment = assign_shards(episodes, world_size=world_size, num_workers=workers, seed=seed, epoch=epoch,
                               shuffle=shuffle, drop_last=drop_last)
    target = int(assignment.targets[shard])
    seg_episode, seg_start, seg_stop = assignment.shard(shard)
    rng = _rng(seed, epoch, 1, shard) if shuffle else None
    if len(seg_episode) == 0:  # a reader with no frame of its own: padding only, the rank's first frame
        first = assignment.shard(rank * workers)
        plan = order_segments(first[0][:1], first[1][:1], first[1][:1] + 1, target=target, rng=rng)
        return replace(plan, num_padded=target)
    return order_segments(seg_episode, seg_start, seg_stop, target=target, pool_size=pool_size, rng=rng)


def order_segments(
    seg_episode: np.ndarray,
    seg_start: np.ndarray,
    seg_stop: np.ndarray,
    *,
    target: int | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    rng: np.random.Generator | None = None,
) -> ShardPlan:
    """One reader's plan over episode segments given in admission order (an episode may repeat).

    Frames ``seg_start[i]:seg_stop[i]`` of episode ``seg_episode[i]``; in order without ``rng``,
    else drawn from a resident pool of ``pool_size`` segments (see the module doc). ``target``
    samples (default: all): fewer cuts the plan short, more repeats its last samples.
    """
    lengths = seg_stop - seg_start
    n = int(lengths.sum())
    target = n if target is None else target
    take = np.arange(min(target, n))
    padded = max(target - n, 0)
    if padded:
        take = np.concatenate([take, np.arange(n - padded, n) % n])
    resident = np.cumsum(lengths) - lengths
    if rng is not None:
        order, resident = _pool_order(lengths, pool_size, rng)
        take = order[take]
    # take holds flat sample numbers: segment-major, frames in order within a segment
    segment = np.repeat(np.arange(len(lengths)), lengths)[take]
    frame = take - np.repeat(np.cumsum(lengths) - lengths - seg_start, lengths)[take]
    return _finish(seg_episode[segment], frame, segment, seg_episode, resident, padded, 0)
