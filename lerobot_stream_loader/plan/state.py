"""Checkpoint format of a reader's place in its plan: a few integers and a fingerprint of the plan."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .shard import PlanEpisode, PlanEpisodes, as_plan_episodes

PLAN_VERSION = 5  # raised whenever the same settings give another order: old states are refused


def fingerprint(
    episodes: PlanEpisodes | Sequence[PlanEpisode],
    *,
    world_size: int,
    num_workers: int,
    seed: int,
    shuffle: bool,
    drop_last: bool,
    pool_size: int,
    shuffle_buffer: int,
) -> str:
    """A short hash of everything a plan depends on except epoch, rank and worker."""
    arrays = as_plan_episodes(episodes)
    digest = hashlib.sha256()
    settings = (PLAN_VERSION, world_size, max(num_workers, 1), seed, shuffle, drop_last, pool_size, shuffle_buffer)
    digest.update(repr(settings).encode())
    for column in (arrays.index, arrays.length, arrays.file_group, arrays.video_group):
        digest.update(np.ascontiguousarray(column, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class PlanState:
    """Where one reader is: epoch, samples of its plan consumed, what the plan was built from, and the
    episodes it skipped in this epoch so far (``{"episode_index", "cause"}``, plus ``"source"`` in a
    mixture; see :func:`skipped_episodes`)."""

    epoch: int
    consumed: int
    rank: int
    world_size: int
    worker_id: int
    num_workers: int
    fingerprint: str
    skipped: tuple[dict[str, Any], ...] = ()
    stats: dict[str, Any] = field(default_factory=dict, compare=False)  # counters of the pass (not resumed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": [dict(s) for s in self.skipped]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PlanState:
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = sorted(set(required) - set(state))
        if missing:
            raise ValueError(f"plan state is missing {missing}; got keys {sorted(state)}")
        values = {name: state[name] for name in cls.__dataclass_fields__ if name in state}
        values["skipped"] = tuple(dict(s) for s in values.get("skipped", ()))
        return cls(**values)

    def check(
        self, *, rank: int, world_size: int, worker_id: int, num_workers: int, fingerprint: str
    ) -> None:
        """Raise ValueError unless this state was saved by the same reader of the same plan."""
        saved = (self.world_size, max(self.num_workers, 1))
        now = (world_size, max(num_workers, 1))
        if saved != now:
            raise ValueError(
                f"plan state was saved with world_size={saved[0]}, num_workers={saved[1]} but this run has "
                f"world_size={now[0]}, num_workers={now[1]}. Resume with the same world size and worker "
                "count, or load lerobot_stream_loader.plan.elastic.elastic_state(<the saved loader state>) into the "
                "dataset (and not into the DataLoader) to spread the rest of the epoch over the new readers"
            )
        if (self.rank, self.worker_id) != (rank, worker_id):
            raise ValueError(
                f"plan state belongs to rank {self.rank} worker {self.worker_id}, "
                f"not rank {rank} worker {worker_id}"
            )
        if self.fingerprint != fingerprint:
            raise ValueError(
                "plan state was saved for a different plan (seed, shuffle, drop_last, pool_size, shuffle_buffer, "
                "episode list or the library's planner version differ): fingerprint "
                f"{self.fingerprint} != {fingerprint}"
            )


def skipped_episodes(state: Any) -> list[dict[str, Any]]:
    """The episodes skipped in the current epoch (``on_bad_episode="skip"``) that a checkpoint records:
    of a dataset's ``state_dict()``, or of a whole ``StatefulDataLoader`` / ``StreamingDataLoader``
    state (every worker's), each once: ``[{"episode_index": N, "cause": "..."}, ...]`` (with
    ``"source"`` for a mixture's)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if "fingerprint" in value and isinstance(value.get("skipped"), list | tuple):
                for entry in value["skipped"]:
                    out.setdefault((entry.get("source"), entry["episode_index"]), dict(entry))
                return
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list | tuple):
            for inner in value:
                walk(inner)

    walk(state)
    return [out[key] for key in sorted(out, key=lambda k: (k[0] is not None, k[0] or 0, k[1]))]
