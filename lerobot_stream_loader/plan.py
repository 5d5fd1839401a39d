"""Sample plan: which (episode, frame) samples each (rank, worker) reader yields, and in what order.

Everything here is a pure, deterministic function of the episode list and of
(seed, epoch, rank, world_size, worker_id, num_workers, shuffle, drop_last, pool_size). Random draws
use ``numpy.random.Generator(PCG64)`` seeded from integer tuples, so every machine computes the
same plan (for a given numpy version).

Shards. There are ``S = world_size * max(num_workers, 1)`` shards; shard ``rank * W + worker_id``
belongs to that reader. The episodes are laid out in one sequence -- dataset order, or with
``shuffle`` the data files in a random order, within each the groups of episodes sharing the same
video files in a random order, and their episodes in a random order -- and the sequence is cut
into S contiguous runs. Cut k goes to the episode boundary nearest to its ideal frame position
``k * total_frames / S`` when that boundary lies within ``SPLIT_TOLERANCE * total_frames / S``
frames of it; otherwise (an episode much longer than the tolerance straddles the ideal position)
the cut splits that episode there, and its two parts go to adjacent shards. So episodes shorter
than ``2 * SPLIT_TOLERANCE * total_frames / S`` frames are never split (the usual case: whole
episodes are the unit), every shard holds ``total_frames / S`` frames within +-25 %
(``2 * SPLIT_TOLERANCE``), no shard is empty even with fewer files or episodes than shards, and a
file's episodes stay together unless a cut falls inside it.

Equal counts. Let ``n[r, w]`` be the frames of shard (r, w). Every reader of worker slot w yields
exactly ``T[w] = max_r n[r, w]`` samples with ``drop_last=False`` (a shorter shard appends copies
of its own last ``T[w] - n[r, w]`` planned samples, cyclically if it holds fewer than that), or
``T[w] = min_r n[r, w]`` with ``drop_last=True`` (a longer shard stops after its first ``T[w]``
planned samples). So each slot has the same count on every rank, every rank yields
``sum_w T[w]`` samples (:func:`samples_per_rank`, what ``len(dataset)`` reports), and DDP sees the
same number of batches on every rank. The count depends on num_workers and, with ``shuffle``, on
the epoch (by at most a few episode lengths).

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
on average at 20+ frames each), not the whole pool; the pool is full from t = life on, as before.
The capacity depends only on lengths, not on the delays, so each draw stays exactly uniform over
the resident frames.

Resume. A reader's position is ``PlanState`` (a few integers and a fingerprint); resuming is
``ShardPlan.skip(consumed)``, a slice. A state saved under another world size, worker count, seed,
shuffle/drop_last/pool setting or episode list raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_POOL_SIZE = 256
SPLIT_TOLERANCE = 0.125
_PLAN_VERSION = 2


@dataclass(frozen=True)
class PlanEpisode:
    """One episode as the planner sees it: index, frame count, and a locality key (its files)."""

    index: int
    length: int
    locality: Hashable = ()


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
    """Episode segments of all shards, in sequence order; shard s is ``bounds[s]:bounds[s + 1]``."""

    episode: np.ndarray  # episode index of each segment
    start: np.ndarray  # first frame of the segment within its episode
    stop: np.ndarray  # end (exclusive) of the segment within its episode
    bounds: np.ndarray  # [S + 1] segment offsets per shard

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


def _check_episodes(episodes: Sequence[PlanEpisode], num_shards: int) -> tuple[np.ndarray, np.ndarray]:
    if not episodes:
        raise ValueError("cannot plan an empty episode list (is the `episodes` subset empty?)")
    index = np.array([ep.index for ep in episodes], dtype=np.int64)
    length = np.array([ep.length for ep in episodes], dtype=np.int64)
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
    return index, length


def _random_ranks(keys: list[Hashable], rng: np.random.Generator) -> np.ndarray:
    """A random rank per distinct key, returned per element of ``keys``."""
    ids: dict[Hashable, int] = {}
    group = np.array([ids.setdefault(key, len(ids)) for key in keys], dtype=np.int64)
    return np.argsort(rng.permutation(len(ids)))[group]


def _sequence_order(episodes: Sequence[PlanEpisode], seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Positions into ``episodes``: dataset order, or a random order that keeps files together.

    With shuffle, the first component of a tuple locality key (the data file) is placed in random
    order, within it the groups sharing the whole key (the same video files), then the episodes.
    """
    if not shuffle:
        return np.arange(len(episodes))
    rng = _rng(seed, epoch, 0)
    keys = [ep.locality for ep in episodes]
    primary = [key[0] if isinstance(key, tuple) and key else key for key in keys]
    return np.lexsort((rng.random(len(episodes)), _random_ranks(keys, rng), _random_ranks(primary, rng)))


def assign_shards(
    episodes: Sequence[PlanEpisode], num_shards: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = False
) -> Assignment:
    """Cut the episode sequence into ``num_shards`` contiguous runs of about equal frame counts."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    index, length = _check_episodes(episodes, num_shards)
    order = _sequence_order(episodes, seed, epoch, shuffle)
    index, length = index[order], length[order]
    edges = np.concatenate([[0], np.cumsum(length)])
    total = int(edges[-1])
    ideal = np.arange(1, num_shards) * (total / num_shards)
    after = np.searchsorted(edges, ideal, side="left")
    nearest = np.where(edges[after] - ideal <= ideal - edges[after - 1], edges[after], edges[after - 1])
    within = np.abs(nearest - ideal) <= SPLIT_TOLERANCE * total / num_shards
    cuts = np.where(within, nearest, np.floor(ideal + 0.5)).astype(np.int64)
    pieces = np.union1d(edges, cuts)
    piece_start, piece_stop = pieces[:-1], pieces[1:]
    owner = np.searchsorted(edges, piece_start, side="right") - 1
    shard = np.searchsorted(cuts, piece_start, side="right")
    bounds = np.searchsorted(shard, np.arange(num_shards + 1), side="left")
    return Assignment(
        index[owner], piece_start - edges[owner], piece_stop - edges[owner], bounds.astype(np.int64)
    )


def _normalise(rank: int, world_size: int, worker_id: int, num_workers: int) -> int:
    workers = max(int(num_workers), 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if not 0 <= worker_id < workers:
        raise ValueError(f"worker_id {worker_id} is outside num_workers {num_workers}")
    return workers


def slot_targets(assignment: Assignment, world_size: int, num_workers: int, drop_last: bool) -> np.ndarray:
    """Samples every reader of worker slot w yields, shape [W] (same on every rank)."""
    frames = assignment.frames_per_shard().reshape(world_size, max(num_workers, 1))
    return frames.min(axis=0) if drop_last else frames.max(axis=0)


def samples_per_rank(
    episodes: Sequence[PlanEpisode],
    *,
    world_size: int,
    num_workers: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
) -> int:
    """Samples each rank yields in this epoch (all its workers together): ``len(dataset)``."""
    workers = _normalise(0, world_size, 0, num_workers)
    assignment = assign_shards(episodes, world_size * workers, seed=seed, epoch=epoch, shuffle=shuffle)
    return int(slot_targets(assignment, world_size, workers, drop_last).sum())


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
    episodes: Sequence[PlanEpisode],
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
    assignment = assign_shards(episodes, world_size * workers, seed=seed, epoch=epoch, shuffle=shuffle)
    target = int(slot_targets(assignment, world_size, workers, drop_last)[worker_id])
    seg_episode, seg_start, seg_stop = assignment.shard(shard)
    rng = _rng(seed, epoch, 1, shard) if shuffle else None
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


def fingerprint(
    episodes: Sequence[PlanEpisode],
    *,
    world_size: int,
    num_workers: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    pool_size: int,
) -> str:
    """A short hash of everything a plan depends on except epoch, rank and worker."""
    digest = hashlib.sha256()
    settings = (_PLAN_VERSION, world_size, max(num_workers, 1), seed, shuffle, drop_last, pool_size)
    digest.update(repr(settings).encode())
    digest.update(np.array([(ep.index, ep.length) for ep in episodes], dtype=np.int64).tobytes())
    digest.update(repr([ep.locality for ep in episodes]).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class PlanState:
    """Where one reader is: epoch, samples of its plan consumed, and what the plan was built from."""

    epoch: int
    consumed: int
    rank: int
    world_size: int
    worker_id: int
    num_workers: int
    fingerprint: str

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PlanState:
        missing = sorted(set(cls.__dataclass_fields__) - set(state))
        if missing:
            raise ValueError(f"plan state is missing {missing}; got keys {sorted(state)}")
        return cls(**{name: state[name] for name in cls.__dataclass_fields__})

    def check(
        self, *, rank: int, world_size: int, worker_id: int, num_workers: int, fingerprint: str
    ) -> None:
        """Raise ValueError unless this state was saved by the same reader of the same plan."""
        saved = (self.world_size, max(self.num_workers, 1))
        now = (world_size, max(num_workers, 1))
        if saved != now:
            raise ValueError(
                f"plan state was saved with world_size={saved[0]}, num_workers={saved[1]} but this run has "
                f"world_size={now[0]}, num_workers={now[1]}; resuming would change the order. Resume with "
                "the same world size and worker count, or start a new epoch without loading the state"
            )
        if (self.rank, self.worker_id) != (rank, worker_id):
            raise ValueError(
                f"plan state belongs to rank {self.rank} worker {self.worker_id}, "
                f"not rank {rank} worker {worker_id}"
            )
        if self.fingerprint != fingerprint:
            raise ValueError(
                "plan state was saved for a different plan (seed, shuffle, drop_last, pool_size or "
                f"episode list differ): fingerprint {self.fingerprint} != {fingerprint}"
            )


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit, else torch.distributed, else RANK/WORLD_SIZE env, else (0, 1)."""
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"give both rank and world_size or neither (got rank={rank}, world_size={world_size})"
        )
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            rank, world_size = 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


def resolve_worker() -> tuple[int, int]:
    """(worker_id, num_workers) of the current DataLoader worker; (0, 1) in the main process."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)
