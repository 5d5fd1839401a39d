"""Output file layout: which episodes go to which (chunk, file), and the metadata files around them.

Aligned layout: data, every camera's video and meta/episodes of an episode share one
(chunk, file) location, numbered 0, 1, 2 ... and rolled over to a new chunk folder every
``chunks_size`` files, as LeRobot numbers its files.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..meta.dataset_meta import INFO_PATH, STATS_PATH, DatasetMeta
from ..meta.files import DEFAULT_CHUNKS_SIZE, EPISODES_PATH, TASKS_PATH


@dataclass(frozen=True)
class FileGroup:
    """Consecutive output episodes stored together in one (chunk, file) location."""

    chunk: int
    file: int
    episodes: tuple[int, ...]

    def data_path(self, info: dict[str, Any]) -> str:
        return info["data_path"].format(chunk_index=self.chunk, file_index=self.file)

    def video_path(self, info: dict[str, Any], key: str) -> str:
        return info["video_path"].format(video_key=key, chunk_index=self.chunk, file_index=self.file)

    def episodes_path(self) -> str:
        return EPISODES_PATH.format(chunk_index=self.chunk, file_index=self.file)


def chunks_size(info: dict[str, Any]) -> int:
    """Files per chunk folder."""
    return int(info.get("chunks_size") or DEFAULT_CHUNKS_SIZE)


def make_groups(runs: list[list[int]], info: dict[str, Any]) -> list[FileGroup]:
    """Number consecutive runs of episodes as files 0, 1, ... rolling over chunk folders."""
    size = chunks_size(info)
    return [FileGroup(*divmod(n, size), tuple(run)) for n, run in enumerate(runs)]


def group_of(groups: list[FileGroup]) -> dict[int, FileGroup]:
    """Output episode -> its group."""
    return {ep: g for g in groups for ep in g.episodes}


def write_json(path: Path, value: Any) -> None:
    """Pretty JSON, written to a temporary file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=4, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_parquet(path: Path, table: pa.Table, row_groups: list[int] | None = None) -> None:
    """Write ``table``; ``row_groups`` gives the rows of each row group (one per episode).

    Only columns that are not floating point are dictionary-encoded: a float column (actions,
    states) has as many values as rows, where a dictionary only adds work and bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dictionary = [field.name for field in table.schema if not _floating(field.type)]
    with pq.ParquetWriter(path, table.schema, use_dictionary=dictionary) as writer:
        if row_groups is None:
            writer.write_table(table)
            return
        start = 0
        for rows in row_groups:
            writer.write_table(table.slice(start, rows), row_group_size=max(rows, 1))
            start += rows


def _floating(kind: pa.DataType) -> bool:
    """A float type, or a list or fixed-size list of one."""
    while pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    return pa.types.is_floating(kind)


def set_column(table: pa.Table, name: str, values: list[Any]) -> pa.Table:
    """Replace (keeping its type) or append a column."""
    where = table.schema.get_field_index(name)
    if where < 0:
        kind = pa.float64() if name.endswith("_timestamp") else pa.int64()
        return table.append_column(pa.field(name, kind), pa.array(values, kind))
    field = table.schema.field(where)
    return table.set_column(where, field, pa.array(values, field.type))


def write_episode_tables(out: Path, table: pa.Table, groups: list[FileGroup]) -> None:
    """meta/episodes: one file per group, rows in episode order, its own location recorded."""
    index = {ep: pos for pos, ep in enumerate(table.column("episode_index").to_pylist())}
    where = group_of(groups)
    episodes = table.column("episode_index").to_pylist()
    table = set_column(table, "meta/episodes/chunk_index", [where[e].chunk for e in episodes])
    table = set_column(table, "meta/episodes/file_index", [where[e].file for e in episodes])

    def write(group: FileGroup) -> None:
        rows = table.take(pa.array([index[e] for e in group.episodes], pa.int64()))
        write_parquet(out / group.episodes_path(), rows)

    with ThreadPoolExecutor(min(len(groups), os.cpu_count() or 1) or 1) as pool:  # arrow writes off the GIL
        list(pool.map(write, groups))


def copy_meta_files(meta: DatasetMeta, out: Path, *, stats: bool = True) -> None:
    """tasks.parquet (and stats.json unless ``stats=False``) as they are in the source."""
    for relative in (TASKS_PATH, STATS_PATH) if stats else (TASKS_PATH,):
        url = meta.url(relative)
        if meta.fs.exists(url):
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_bytes(meta.fs.cat_file(url))


def finish_info(info: dict[str, Any], groups: list[FileGroup]) -> dict[str, Any]:
    """info.json of the output: ``data_files`` listed (sorted), everything else as given."""
    out = dict(info)
    out["data_files"] = sorted(g.data_path(info) for g in groups)
    return out


def write_info(out: Path, info: dict[str, Any]) -> None:
    write_json(out / INFO_PATH, info)
