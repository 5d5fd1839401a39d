"""Metadata of a shuffled dataset: the episodes table in the new order and stats.json.

Numeric per-episode stats are carried over from the source rows, except those of the renumbered
columns (``index``, ``episode_index``), which are recomputed; image stats come from the encoder,
except where the frames stay the source's: a depth camera's (its re-encode is lossless) and every
camera's when videos are stream-copied, carried over too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..meta.dataset_meta import STATS_PATH, DatasetMeta
from ..meta.depth import depth_keys
from ..meta.stats import STAT_KEYS, aggregate, to_lists
from .layout import FileGroup, group_of, set_column, write_episode_tables, write_json
from .shuffle_tasks import RENUMBERED, EpisodeMove


def write_shuffled_meta(meta: DatasetMeta, moves: list[EpisodeMove], groups: list[FileGroup],
                        tasks: Mapping[str, object], outcomes: dict[str, dict[str, Any]],
                        info: dict[str, Any], out: Path, *, copied: bool = False) -> None:
    """meta/episodes files (one per group) and meta/stats.json (``copied``: videos were stream-copied)."""
    where_in_table = {episode: position for position, episode in enumerate(meta.episode_indices)}
    positions = [where_in_table[m.old] for m in moves]
    table = meta.episodes_table.take(pa.array(positions, pa.int64()))
    where = group_of(groups)
    new = [m.new for m in moves]
    table = set_column(table, "episode_index", new)
    table = set_column(table, "dataset_from_index", [m.new_from for m in moves])
    table = set_column(table, "dataset_to_index", [m.new_from + m.length for m in moves])
    table = set_column(table, "data/chunk_index", [where[e].chunk for e in new])
    table = set_column(table, "data/file_index", [where[e].file for e in new])
    per_episode: dict[str, list[dict[str, Any]]] = {}
    carried = set(meta.video_keys) if copied else set(depth_keys(meta.features))
    for number in range(len(groups)):
        for name in RENUMBERED:
            per_episode.setdefault(name, []).extend(s[name] for s in outcomes[f"{number}/data"]["stats"])
        for key in meta.video_keys:
            if key not in carried:  # the source's frames: their stats stay those of the source rows
                per_episode.setdefault(key, []).extend(outcomes[f"{number}/{key}"]["stats"])
    for key in meta.video_keys:
        bounds = [b for n in range(len(groups)) for b in outcomes[f"{n}/{key}"]["bounds"]]
        table = set_column(table, f"videos/{key}/chunk_index", [where[e].chunk for e in new])
        table = set_column(table, f"videos/{key}/file_index", [where[e].file for e in new])
        table = set_column(table, f"videos/{key}/from_timestamp", [b[0] for b in bounds])
        table = set_column(table, f"videos/{key}/to_timestamp", [b[1] for b in bounds])
    for name, stats in per_episode.items():
        for stat in STAT_KEYS:
            column = f"stats/{name}/{stat}"
            if column in table.column_names or name in meta.video_keys:
                table = set_column(table, column, [s[stat] for s in stats]) if column in table.column_names \
                    else table.append_column(column, pa.array([s[stat] for s in stats]))
    write_episode_tables(out, table, groups)
    write_json(out / STATS_PATH, _global_stats(meta, per_episode))


def _global_stats(meta: DatasetMeta, per_episode: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    stats = {name: dict(values) for name, values in meta.stats.items()}
    for name, episode_stats in per_episode.items():
        if name in meta.video_keys or name in stats:
            arrays = [{k: np.asarray(v) for k, v in s.items()} for s in episode_stats]
            stats[name] = to_lists(aggregate(arrays))
    return stats
