"""Elastic resume: the rest of an interrupted epoch re-planned for another world size or worker count.

A checkpoint holds, per reader, how many samples of its plan it yielded. Under DDP every rank is
checkpointed at the same step, and worker slot w yields the same count on every rank, so one rank's
state (its workers' counts) tells every old reader's position. The unread samples of all old
readers, in old (rank, worker, position) order, form the rest of the epoch; it is cut among the new
readers exactly like a fresh epoch's frames (see :mod:`lerobot_stream_loader.plan.shard`): every new rank
yields ``ceil(rest / world_size)`` samples (``floor`` with ``drop_last``). Bound: no sample of the
epoch is read twice or skipped, except at most one repeat (or, with ``drop_last``, one drop) per new
rank, when the old ranks were checkpointed at the same step (otherwise the difference in steps times
the batch size is repeated or skipped). Later epochs use the new world size's own plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import numpy as np

from .shard import PlanEpisodes, ShardPlan, _finish, _shard_ranges, aligned_ranks, assign_shards, plan_shard
from .state import PlanState


@dataclass(frozen=True)
class ElasticState:
    """Every old reader's position: epoch, old world size and worker count, samples yielded per worker slot."""

    epoch: int
    world_size: int
    num_workers: int
    consumed: tuple[int, ...]
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "consumed": list(self.consumed)}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ElasticState:
        return cls(int(state["epoch"]), int(state["world_size"]), int(state["num_workers"]),
                   tuple(int(c) for c in state["consumed"]), str(state["fingerprint"]))


def elastic_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The resume state for :meth:`StreamingLeRobot.load_state_dict` on another world size or worker
    count, from one rank's ``StatefulDataLoader.state_dict()`` (any rank) or a dataset ``state_dict()``.

    Load it into the dataset before the DataLoader starts its workers, and do not load the old state
    into the new DataLoader (torchdata refuses another worker count).
    """
    snapshot = state.get("_snapshot")
    if snapshot is not None:
        raw = [w.get("dataset_state") for w in snapshot.get("_worker_snapshots", {}).values()]
    elif "dataset_state" in state:
        raw = [state["dataset_state"]]
    else:
        raw = [state]
    readers = [PlanState.from_dict(dict(r)) for r in raw if r]
    if not readers:
        raise ValueError("the state holds no reader position (was it saved by a StreamingLeRobot DataLoader?)")
    first = readers[0]
    workers = max(first.num_workers, 1)
    for r in readers:
        if (r.epoch, r.world_size, max(r.num_workers, 1), r.fingerprint) != (first.epoch, first.world_size,
                                                                            workers, first.fingerprint):
            raise ValueError("the readers of this state disagree on epoch, world size, worker count or plan")
    consumed = [0] * workers
    for r in readers:
        consumed[r.worker_id] = r.consumed
    return ElasticState(first.epoch, first.world_size, workers, tuple(consumed), first.fingerprint).to_dict()


class _EpochOptions(TypedDict):
    """What fixes an epoch's cut and plans besides the readers: passed as keywords to the planner."""

    seed: int
    epoch: int
    shuffle: bool
    drop_last: bool


def remaining_plan(episodes: PlanEpisodes, state: ElasticState, *, seed: int, shuffle: bool, drop_last: bool,
                   pool_size: int, shuffle_buffer: int, rank: int, world_size: int, worker_id: int,
                   num_workers: int) -> ShardPlan:
    """This new reader's share of what the old readers of ``state`` had not yet yielded in its epoch.

    Only the old readers whose unread samples this reader takes are re-planned (their counts come
    from the cut of the epoch), so the cost is this reader's share, not the whole epoch.
    """
    old_workers = max(state.num_workers, 1)
    options: _EpochOptions = dict(seed=seed, epoch=state.epoch, shuffle=shuffle, drop_last=drop_last)
    assignment = assign_shards(episodes, world_size=state.world_size, num_workers=old_workers, **options)
    real = np.minimum(assignment.frames_per_shard(), assignment.targets)  # samples that are not padding
    consumed = np.array([state.consumed[s % old_workers] for s in range(assignment.num_shards)], dtype=np.int64)
    unread = real - np.minimum(consumed, real)
    ends = np.cumsum(unread)
    take, padded = share_of_rest(int(ends[-1]) if len(ends) else 0, rank=rank, world_size=world_size,
                                 worker_id=worker_id, num_workers=num_workers, drop_last=drop_last)
    rest = UnreadRest()
    if not len(take):
        return rest.plan(take, 0)
    first = int(np.searchsorted(ends, int(take.min()), side="right"))
    last = int(np.searchsorted(ends, int(take.max()), side="right"))
    for shard in range(first, last + 1):
        if unread[shard] == 0:
            continue  # nothing left there (or a reader that held only padding)
        old = plan_shard(episodes, rank=shard // old_workers, world_size=state.world_size,
                         worker_id=shard % old_workers, num_workers=old_workers, pool_size=pool_size,
                         shuffle_buffer=shuffle_buffer, **options)
        if len(old) - old.num_padded != real[shard]:
            raise RuntimeError(f"old reader {shard}'s plan holds {len(old) - old.num_padded} samples, its cut "
                               f"{int(real[shard])}")
        rest.add(old, int(consumed[shard]), shard)
    return rest.plan(take - (int(ends[first - 1]) if first else 0), padded)


def share_of_rest(total: int, *, rank: int, world_size: int, worker_id: int, num_workers: int,
                  drop_last: bool) -> tuple[np.ndarray, int]:
    """Positions of the rest (``total`` samples in old reader order) that new reader (rank, worker_id)
    yields, cut like a fresh epoch; the last ``padded`` of them repeat samples to even out the ranks."""
    workers = max(num_workers, 1)
    start, stop, targets = _shard_ranges(total, world_size, workers, drop_last)
    me = rank * workers + worker_id
    take = np.arange(int(start[me]), int(stop[me]))
    padded = int(targets[me]) - len(take)
    if padded > 0 and total:  # own last samples again (the rank's first one for a reader with none)
        base = take if len(take) else np.array([int(start[rank * workers])])
        take = np.concatenate([take, base[np.arange(len(base) - padded, len(base)) % len(base)]])
    return take, max(padded, 0) if total else 0


class UnreadRest:
    """The samples old readers had not yet yielded, in old (reader, position) order, with what each
    reader's plan knew of them (episode admission, decode order), to re-plan them for new readers."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._run = 1

    def add(self, old: ShardPlan, consumed: int, reader: int) -> None:
        """The unread samples of an old reader's plan that had yielded ``consumed`` of them (padding excluded)."""
        real = len(old) - old.num_padded
        k = min(consumed, real)
        self._parts.append((old.episode_index[k:real], old.frame_index[k:real],
                            np.full(real - k, reader, dtype=np.int64), old.segment[k:real], old.decode_rank[k:real]))
        self._run = old.run_length

    def __len__(self) -> int:
        return sum(len(p[0]) for p in self._parts)

    def plan(self, take: np.ndarray, padded: int) -> ShardPlan:
        """A new reader's plan of the rest's samples at positions ``take`` (the last ``padded`` repeat
        others): episodes admitted as the old readers first met them, decoded in the old readers' order."""
        if not self._parts or not len(take):
            empty = np.zeros(0, dtype=np.int64)
            return _finish(empty, empty, empty, empty, empty, self._run, 0, 0)
        episode, frame, reader_of, segment, rank_in = (np.concatenate(c) for c in zip(*self._parts, strict=True))
        key = reader_of[take] * (int(segment.max()) + 1) + segment[take]
        _, first_seen, inverse = np.unique(key, return_index=True, return_inverse=True)
        admission = np.empty(len(first_seen), dtype=np.int64)
        admission[np.argsort(first_seen, kind="stable")] = np.arange(len(first_seen))
        new_segment = admission[inverse.reshape(-1)]
        admit = np.empty(len(first_seen), dtype=np.int64)
        admit[new_segment] = episode[take]
        order = reader_of[take] * (int(rank_in.max()) + 2) + rank_in[take]
        decode_rank = np.argsort(np.argsort(order, kind="stable"), kind="stable")
        if padded:
            decode_rank[len(take) - padded:] = len(take) - padded + np.arange(padded)
        return _finish(episode[take], frame[take], new_segment, admit,
                       aligned_ranks(decode_rank, new_segment, self._run), self._run, padded, 0)
