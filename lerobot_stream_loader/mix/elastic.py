"""Elastic resume of a mixture: the unread rest of an interrupted epoch re-planned for other readers.

As for one dataset (:mod:`lerobot_stream_loader.plan.elastic`): every old reader's plan is rebuilt, its
samples after the count it yielded are laid end to end in old (rank, worker) order, and that rest is
cut among the new readers like a fresh epoch (``ceil(rest / world_size)`` samples per rank, ``floor``
with drop_last). An old reader's samples interleave the sources in proportion, so every run of the
rest does too; each source's samples keep the decode order their old plan gave them. Bound: as for
one dataset (at most one repeat, or one drop with drop_last, per new rank, when the old ranks were
checkpointed at the same step); besides, the samples a last old rank repeated from the start of the
epoch to even out the ranks (fewer than ``world_size``) stay in the rest.
"""

from __future__ import annotations

import numpy as np

from ..plan.elastic import ElasticState, UnreadRest, share_of_rest
from ..plan.shard import ShardPlan
from .plan import ReaderPlan, SourceEpisodes, plan_reader, reader_ranges


def remaining_reader_plan(sources: list[SourceEpisodes], counts: np.ndarray, state: ElasticState, *,
                          pool_sizes: list[int], shuffle_buffers: list[int], seed: int, shuffle: bool,
                          drop_last: bool, rank: int, world_size: int, worker_id: int,
                          num_workers: int) -> ReaderPlan:
    """This new reader's share of what the old readers of ``state`` had not yet yielded in its epoch.

    Only the old readers whose unread samples this reader takes are re-planned (their counts come
    from the interleave's arithmetic), so the cost is this reader's share, not the whole epoch.
    """
    old_workers = max(state.num_workers, 1)
    readers = state.world_size * old_workers
    total = int(counts.sum())
    unread_counts = np.zeros(readers, dtype=np.int64)
    lengths = np.zeros(readers, dtype=np.int64)
    for reader in range(readers):
        runs = reader_ranges(total, world_size=state.world_size, rank=reader // old_workers,
                             num_workers=old_workers, worker_id=reader % old_workers, drop_last=drop_last)
        lengths[reader] = length = sum(hi - lo for lo, hi in runs)
        unread_counts[reader] = length - min(state.consumed[reader % old_workers], length)
    ends = np.cumsum(unread_counts)
    take, padded = share_of_rest(int(ends[-1]) if readers else 0, rank=rank, world_size=world_size,
                                 worker_id=worker_id, num_workers=num_workers, drop_last=drop_last)
    if not len(take):
        return ReaderPlan(np.zeros(0, dtype=np.int64), [None] * len(sources))
    first = int(np.searchsorted(ends, int(take.min()), side="right"))
    last = int(np.searchsorted(ends, int(take.max()), side="right"))
    offset = int(ends[first - 1]) if first else 0
    rests = [UnreadRest() for _ in sources]
    unread: list[np.ndarray] = []
    for reader in range(first, last + 1):
        old = plan_reader(sources, counts, pool_sizes=pool_sizes, shuffle_buffers=shuffle_buffers, seed=seed,
                          epoch=state.epoch, rank=reader // old_workers, world_size=state.world_size,
                          worker_id=reader % old_workers, num_workers=old_workers, shuffle=shuffle,
                          drop_last=drop_last)
        if len(old) != lengths[reader]:
            raise RuntimeError(f"old reader {reader}'s plan holds {len(old)} samples, its runs {int(lengths[reader])}")
        k = len(old) - int(unread_counts[reader])
        taken = np.bincount(old.source_of[:k], minlength=len(sources))
        unread.append(old.source_of[k:])
        for number, plan in enumerate(old.plans):
            if plan is not None:
                rests[number].add(plan, int(taken[number]), reader)
    source_of = np.concatenate(unread)
    within = np.zeros(len(source_of), dtype=np.int64)  # position of each sample in its source's rest
    for number in range(len(sources)):
        mine = source_of == number
        within[mine] = np.arange(int(mine.sum()))
    local = take - offset
    new_source_of = source_of[local]
    plans: list[ShardPlan | None] = []
    for number, rest in enumerate(rests):
        mine = new_source_of == number
        if not mine.any():
            plans.append(None)
            continue
        repeats = int(mine[len(take) - padded:].sum()) if padded else 0
        plans.append(rest.plan(within[local][mine], repeats))
    return ReaderPlan(new_source_of, plans)
