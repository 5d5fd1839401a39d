"""Mixture plan: which source, episode and frame each (rank, worker) reader yields, and in what order.

A pure, deterministic function of the sources' episode lists and of (weights, samples_per_epoch,
seed, epoch, rank, world_size, worker_id, num_workers, shuffle, drop_last, pool sizes).

Counts. Source i gets ``c_i`` of the epoch's ``N`` samples: ``floor(w_i N)`` plus one for the
sources with the largest remainders (ties: lower index), so the total is exactly ``N``.

A source's samples in an epoch. Its selected frames (``F`` of them) are read in passes: without
shuffle, an endless repetition of the dataset order of which epoch e takes positions
``[e c, (e + 1) c)``; with shuffle, pass p of epoch e is a random order of the episodes
(seeded by seed, epoch, source, p) and the epoch takes positions ``[0, c)``. Either way every frame
is read once before any repeats when ``c > F``, and ``c < F`` gives distinct frames, a different
subset each epoch (whole episodes in random order with shuffle; the next stretch without).

Interleave. The epoch is one sequence in which the j-th sample of source i sits at key
``(j + 1/2) / c_i`` (sorted, ties by source): the Sainte-Lague order, where any run of L
consecutive samples holds ``L c_i / N`` samples of source i, within one. Rank r takes the r-th of
``world_size`` equal consecutive runs (``ceil(N / world_size)`` samples, the last run wrapping to
the start of the epoch; ``floor`` with drop_last), split between its workers into runs that differ
by at most one sample. So every rank yields the same count, every reader holds each source in
proportion, and readers read disjoint frames unless a source is cycled. Within a reader the
sources interleave in that order (with shuffle, jittered by less than one step per source), and
each source's frames are ordered as a single dataset's are (:func:`plan.order_segments`: in order,
or decoded as runs from a pool of open episodes and mixed through a buffer of decoded samples).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..plan.shard import ShardPlan, concatenate, order_segments, plan_rng, rank_share

_PLAN_VERSION = 2  # raised whenever the same settings give another order: old states are refused


def source_counts(weights: np.ndarray, total: int) -> np.ndarray:
    """Samples per source: ``weights`` (normalised) times ``total``, largest remainders rounded up."""
    share = np.asarray(weights, dtype=np.float64) / float(np.sum(weights)) * total
    counts = np.floor(share).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        order = np.lexsort((np.arange(len(share)), -(share - counts)))
        counts[order[:short]] += 1
    return counts


def interleave_prefix(counts: np.ndarray, position: int) -> np.ndarray:
    """Samples of each source among the first ``position`` of the epoch's interleave (module doc).

    Exact integer arithmetic: keys ``(2j + 1) / (2 c_i)`` are compared on a grid of step ``2**-k``
    finer than the smallest gap between two distinct keys, found by bisection.
    """
    sizes = [int(c) for c in counts]
    total = sum(sizes)
    if not 0 <= position <= total:
        raise ValueError(f"position {position} is outside the epoch's {total} samples")
    if position in (0, total):
        return np.asarray(sizes if position else [0] * len(sizes), dtype=np.int64)
    k = (2 * max(sizes) ** 2).bit_length() + 2
    grid = 1 << k

    def at_most(m: int) -> list[int]:  # per source: samples whose key is <= m / grid
        return [min(c, max(0, (2 * c * m - grid) // (2 * grid) + 1)) if c else 0 for c in sizes]

    lo, hi = 0, grid  # at_most(lo) < position <= at_most(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sum(at_most(mid)) >= position:
            hi = mid
        else:
            lo = mid
    below, upto = at_most(lo), at_most(hi)
    need = position - sum(below)
    out = []
    for b, u in zip(below, upto, strict=True):  # the keys tied at the position's key, by source
        extra = min(u - b, need)
        need -= extra
        out.append(b + extra)
    return np.asarray(out, dtype=np.int64)


def reader_ranges(total: int, *, world_size: int, rank: int, num_workers: int, worker_id: int,
                  drop_last: bool) -> list[tuple[int, int]]:
    """This reader's runs ``[lo, hi)`` of the epoch's interleave (two when it wraps to the start)."""
    per_rank = rank_share(total, world_size, drop_last)
    base, extra = divmod(per_rank, num_workers)
    lo = rank * per_rank + worker_id * base + min(worker_id, extra)
    hi = lo + base + (worker_id < extra)
    if hi <= total:
        return [(lo, hi)]
    if lo >= total:
        return [(lo - total, hi - total)]
    return [(lo, total), (0, hi - total)]


def samples_per_rank(total: int, world_size: int, drop_last: bool) -> int:
    """What ``len(mixture)`` reports: samples each rank yields per epoch (any worker count)."""
    return rank_share(total, world_size, drop_last)


@dataclass(frozen=True)
class SourceEpisodes:
    """One source as the planner sees it: selected episode indices and their lengths (dataset order)."""

    index: np.ndarray
    length: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.length.sum())


def source_segments(source: SourceEpisodes, *, number: int, count: int, lo: int, hi: int, seed: int,
                    epoch: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(episode, start, stop, pass) of positions ``[lo, hi)`` of source ``number``'s ``count`` samples of
    the epoch; ``pass`` numbers the passes over the source's frames that the positions fall in."""
    frames = source.frames
    base = 0 if shuffle else epoch * count
    a, b = base + lo, base + hi
    parts = []
    for p in range(a // frames, (b - 1) // frames + 1) if b > a else ():
        order = plan_rng(seed, epoch, 3, number, p).permutation(len(source.index)) if shuffle \
            else np.arange(len(source.index))
        length = source.length[order]
        ends = np.cumsum(length)
        x0, x1 = max(a, p * frames) - p * frames, min(b, (p + 1) * frames) - p * frames
        k0 = int(np.searchsorted(ends, x0, side="right"))
        k1 = int(np.searchsorted(ends, x1 - 1, side="right"))
        starts = ends[k0:k1 + 1] - length[k0:k1 + 1]
        seg_start = np.zeros(k1 + 1 - k0, dtype=np.int64)
        seg_stop = length[k0:k1 + 1].astype(np.int64)
        seg_start[0] = x0 - starts[0]
        seg_stop[-1] = x1 - starts[-1]
        parts.append((source.index[order[k0:k1 + 1]], seg_start, seg_stop, np.full(k1 + 1 - k0, p)))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    episode, start, stop, passes = (np.concatenate(x) for x in zip(*parts, strict=True))
    return episode, start, stop, passes


@dataclass(frozen=True)
class ReaderPlan:
    """One reader's epoch: ``source_of[k]`` is the source of its k-th sample, and ``plans[i]`` orders
    source i's samples (None when it has none here). ``start`` samples were skipped (resume)."""

    source_of: np.ndarray
    plans: list[ShardPlan | None]
    start: int = 0

    def __len__(self) -> int:
        return len(self.source_of)

    def skip(self, k: int) -> ReaderPlan:
        """The plan without its first k samples: each source's plan skips its share of them."""
        if not 0 <= k <= len(self):
            raise ValueError(f"cannot skip {k} samples of a plan of {len(self)}")
        taken = np.bincount(self.source_of[:k], minlength=len(self.plans))
        plans = [None if p is None else p.skip(int(n)) for p, n in zip(self.plans, taken, strict=True)]
        return ReaderPlan(self.source_of[k:], plans, self.start + k)


def plan_reader(sources: list[SourceEpisodes], counts: np.ndarray, *, pool_sizes: list[int],
                shuffle_buffers: list[int], seed: int,
                epoch: int, rank: int, world_size: int, worker_id: int, num_workers: int, shuffle: bool,
                drop_last: bool) -> ReaderPlan:
    """The plan of reader (rank, worker_id) for ``epoch`` (``num_workers >= 1``)."""
    total = int(counts.sum())
    ranges = reader_ranges(total, world_size=world_size, rank=rank, num_workers=num_workers,
                           worker_id=worker_id, drop_last=drop_last)
    segments: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in sources]
    runs = []
    for lo, hi in ranges:  # a wrapped second run follows the first
        first, last = interleave_prefix(counts, lo), interleave_prefix(counts, hi)
        keys, owners = [], []
        for i, (a, b) in enumerate(zip(first.tolist(), last.tolist(), strict=True)):
            if b > a:
                segments[i].append(source_segments(sources[i], number=i, count=int(counts[i]), lo=a, hi=b,
                                                   seed=seed, epoch=epoch, shuffle=shuffle))
                keys.append((np.arange(a, b) + 0.5) / counts[i])
                owners.append(np.full(b - a, i, dtype=np.int64))
        if keys:
            key, owner = np.concatenate(keys), np.concatenate(owners)
            if shuffle:  # less than one step per source: proportions stay, the pattern varies
                key = key + plan_rng(seed, epoch, 4, rank, worker_id, lo).random(len(key)) / counts[owner]
            runs.append(owner[np.lexsort((owner, key))])
    source_of = np.concatenate(runs) if runs else np.zeros(0, dtype=np.int64)
    plans: list[ShardPlan | None] = []
    for i, parts in enumerate(segments):
        if not parts:
            plans.append(None)
            continue
        episode, start, stop, passes = (np.concatenate(x) for x in zip(*parts, strict=True))
        rng = plan_rng(seed, epoch, 5, i, rank, worker_id) if shuffle else None
        # each pass over the source's frames in this reader ends before the next one begins
        cuts = np.flatnonzero(np.diff(passes) != 0) + 1
        plans.append(concatenate([order_segments(e, a, b, pool_size=pool_sizes[i], shuffle_buffer=shuffle_buffers[i],
                                                 rng=rng)
                                  for e, a, b in zip(np.split(episode, cuts), np.split(start, cuts),
                                                     np.split(stop, cuts), strict=True)]))
    return ReaderPlan(source_of, plans)


def fingerprint(sources: list[SourceEpisodes], counts: np.ndarray, *, world_size: int, num_workers: int,
                seed: int, shuffle: bool, drop_last: bool, pool_sizes: list[int],
                shuffle_buffers: list[int]) -> str:
    """A short hash of everything a reader's plan depends on except epoch, rank and worker."""
    digest = hashlib.sha256()
    settings = (_PLAN_VERSION, world_size, num_workers, seed, shuffle, drop_last, tuple(pool_sizes),
                tuple(shuffle_buffers), tuple(int(c) for c in counts))
    digest.update(repr(settings).encode())
    for source in sources:
        digest.update(np.stack([source.index, source.length]).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]
