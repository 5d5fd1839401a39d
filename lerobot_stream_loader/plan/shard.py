"""Sample plan: which (episode, frame) samples each (rank, worker) reader yields, and in what order.

Everything here is pure arithmetic on arrays: a deterministic function of the episodes (index,
length, file groups) and of (seed, epoch, rank, world_size, worker_id, num_workers, shuffle,
drop_last, pool_size, shuffle_buffer). Random draws use ``numpy.random.Generator(PCG64)`` seeded
from integer tuples, so every machine computes the same plan (for a given numpy version).

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
``shuffle=True``: frames are decoded once, in order, as runs from ``pool_size`` open episodes and
mixed after decoding through a window of ``shuffle_buffer`` decoded samples
(:mod:`lerobot_stream_loader.plan.decode_order`); ``decode_rank[k]`` orders the decoding of the samples.

Resume. A reader's position is a count of consumed samples; resuming is ``ShardPlan.skip(consumed)``,
a slice (the checkpoint format lives in :mod:`lerobot_stream_loader.plan.state`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .decode_order import DEFAULT_SHUFFLE_BUFFER, mixed_order, run_length

DEFAULT_POOL_SIZE = 32
UNSHUFFLED_RUN = 32  # samples decoded per turn without shuffle


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


def plan_rng(*key: int) -> np.random.Generator:
    """The random generator of one decision of a plan, keyed by integers (seed, epoch, ...): the same
    on every machine."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([k % 2**64 for k in key])))


def rank_share(total: int, world_size: int, drop_last: bool) -> int:
    """Samples each rank yields of an epoch of ``total``: ``ceil(total / world_size)``, ``floor``
    with ``drop_last``."""
    return total // world_size if drop_last else -(-total // world_size)


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
    rng = plan_rng(seed, epoch, 0)
    noise = rng.random(len(episodes))
    return np.lexsort((noise, _random_ranks(episodes.video_group, rng), _random_ranks(episodes.file_group, rng)))


def _shard_ranges(total: int, world_size: int, workers: int, drop_last: bool) -> tuple[np.ndarray, ...]:
    """Per shard: [start, stop) of its frames in the sequence, and the samples it yields."""
    per_rank = rank_share(total, world_size, drop_last)
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
    return rank_share(int(as_plan_episodes(episodes).length.sum()), world_size, drop_last)


@dataclass(frozen=True)
class ShardPlan:
    """The ordered samples of one reader for one epoch.

    Position k yields frame ``frame_index[k]`` (0-based within the episode) of episode
    ``episode_index[k]``. ``admit_episodes`` lists the shard's episodes in admission order.
    ``segment[k]`` is the admission number of sample k's episode; episode i is first yielded at
    ``first_pos[i]`` and last at ``last_pos[i]``. Samples are decoded by increasing ``decode_rank``
    (ties in position order), at most ``run_length`` consecutive ranks of one episode at a time: in
    position order without shuffle, as runs of frames from the open episodes with shuffle (see
    :mod:`lerobot_stream_loader.plan.decode_order`). The last ``num_padded`` samples are padding (decoded
    last). Positions are relative to ``start`` (the number of samples skipped on resume). An
    episode that a cut split (see the module doc) appears on two adjacent shards, each reading its
    own frames.
    """

    episode_index: np.ndarray
    frame_index: np.ndarray
    segment: np.ndarray
    admit_episodes: np.ndarray
    first_pos: np.ndarray
    last_pos: np.ndarray
    decode_rank: np.ndarray
    run_length: int
    num_padded: int
    start: int = 0

    def __len__(self) -> int:
        return len(self.episode_index)

    def skip(self, k: int) -> ShardPlan:
        """The plan without its first k samples (resume): a slice, nothing replayed."""
        if not 0 <= k <= len(self):
            raise ValueError(f"cannot skip {k} samples of a plan of {len(self)}")
        return _finish(self.episode_index[k:], self.frame_index[k:], self.segment[k:], self.admit_episodes,
                       self.decode_rank[k:], self.run_length, min(self.num_padded, len(self) - k), self.start + k)


def _finish(episode: np.ndarray, frame: np.ndarray, segment: np.ndarray, admit: np.ndarray,
            decode_rank: np.ndarray, run: int, padded: int, start: int) -> ShardPlan:
    """Drop segments without samples, renumber them, and compute first/last positions."""
    n = len(episode)
    first = np.full(len(admit), n, dtype=np.int64)
    last = np.full(len(admit), -1, dtype=np.int64)
    pos = np.arange(n, dtype=np.int64)
    np.minimum.at(first, segment, pos)
    np.maximum.at(last, segment, pos)
    present = last >= 0
    renumber = np.cumsum(present) - 1
    return ShardPlan(episode, frame, renumber[segment], admit[present], first[present], last[present],
                     decode_rank, run, padded, start)


def concatenate(plans: list[ShardPlan]) -> ShardPlan:
    """One plan reading ``plans`` one after the other (each decoded and yielded before the next)."""
    if len(plans) == 1:
        return plans[0]
    run = plans[0].run_length
    segment_offsets = np.cumsum([0] + [len(p.admit_episodes) for p in plans[:-1]])
    ends = [(-(-(int(p.decode_rank.max()) + 1) // run) * run) if len(p) else 0 for p in plans]
    rank_offsets = np.cumsum([0] + ends[:-1])  # multiples of run: runs stay blocks of ranks
    return _finish(np.concatenate([p.episode_index for p in plans]), np.concatenate([p.frame_index for p in plans]),
                   np.concatenate([p.segment + o for p, o in zip(plans, segment_offsets, strict=True)]),
                   np.concatenate([p.admit_episodes for p in plans]),
                   np.concatenate([p.decode_rank + o for p, o in zip(plans, rank_offsets, strict=True)]),
                   run, 0, 0)


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
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> ShardPlan:
    """The plan of reader (rank, worker_id) for ``epoch``; ``num_workers=0`` means one reader per rank."""
    workers = _normalise(rank, world_size, worker_id, num_workers)
    if pool_size < 1 or shuffle_buffer < 1:
        raise ValueError(f"pool_size and shuffle_buffer must be >= 1, got {pool_size}, {shuffle_buffer}")
    shard = rank * workers + worker_id
    assignment = assign_shards(episodes, world_size=world_size, num_workers=workers, seed=seed, epoch=epoch,
                               shuffle=shuffle, drop_last=drop_last)
    target = int(assignment.targets[shard])
    seg_episode, seg_start, seg_stop = assignment.shard(shard)
    rng = plan_rng(seed, epoch, 1, shard) if shuffle else None
    if len(seg_episode) == 0:  # a reader with no frame of its own: padding only, the rank's first frame
        first = assignment.shard(rank * workers)
        plan = order_segments(first[0][:1], first[1][:1], first[1][:1] + 1, target=target, rng=rng)
        return replace(plan, num_padded=target)
    return order_segments(seg_episode, seg_start, seg_stop, target=target, pool_size=pool_size,
                          shuffle_buffer=shuffle_buffer, rng=rng)


def order_segments(
    seg_episode: np.ndarray,
    seg_start: np.ndarray,
    seg_stop: np.ndarray,
    *,
    target: int | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    rng: np.random.Generator | None = None,
) -> ShardPlan:
    """One reader's plan over episode segments given in admission order (an episode may repeat).

    Frames ``seg_start[i]:seg_stop[i]`` of episode ``seg_episode[i]``; in order without ``rng``,
    else decoded as runs from ``pool_size`` open segments and mixed through ``shuffle_buffer``
    decoded samples (see the module doc). ``target``
    samples (default: all): fewer cuts the plan short, more repeats its last samples.
    """
    lengths = seg_stop - seg_start
    n = int(lengths.sum())
    target = n if target is None else target
    take = np.arange(min(target, n))
    padded = max(target - n, 0)
    if padded:
        take = np.concatenate([take, np.arange(n - padded, n) % n])
    position, run = np.arange(n), UNSHUFFLED_RUN
    if rng is not None:
        run = run_length(pool_size, shuffle_buffer)
        order, position = mixed_order(lengths, pool_size, shuffle_buffer, rng)
        take = order[take]
    # take holds flat sample numbers: segment-major, frames in order within a segment
    decode_rank = position[take]
    decode_rank[len(take) - padded:] = n + np.arange(padded)  # padding is decoded last
    segment = np.repeat(np.arange(len(lengths)), lengths)[take]
    frame = take - np.repeat(np.cumsum(lengths) - lengths - seg_start, lengths)[take]
    return _finish(seg_episode[segment], frame, segment, seg_episode, aligned_ranks(decode_rank, segment, run),
                   run, padded, 0)


def aligned_ranks(rank: np.ndarray, segment: np.ndarray, run: int) -> np.ndarray:
    """The same decode order, numbered so that each decode run -- consecutive ranks of one segment,
    at most ``run`` of them -- starts at a multiple of ``run``: runs are then blocks of ranks, which a
    resumed plan (a slice that keeps its ranks) still decodes in the same groups."""
    if not len(rank):
        return rank
    order = np.lexsort((np.arange(len(rank)), rank))
    seg, ranks = segment[order], rank[order]
    chunk_start = np.r_[True, (np.diff(seg) != 0) | (np.diff(ranks) != 1)]
    within = np.arange(len(ranks)) - np.flatnonzero(chunk_start)[np.cumsum(chunk_start) - 1]
    run_id = np.cumsum(chunk_start | (within % run == 0)) - 1
    out = np.empty_like(rank)
    out[order] = run_id * run + within % run
    return out
