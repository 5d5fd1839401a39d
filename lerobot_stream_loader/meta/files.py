"""Whole-file reads of a dataset's ``meta/`` files: the episodes table (found by probing its
deterministic file names, never by listing) and the tasks, with errors that name the file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DatasetFormatError
from ..parquet.whole_file import read_parquet_bytes
from ..storage import RangeReader
from .cache import entry_version
from .episode_table import streaming_columns

TASKS_PATH = "meta/tasks.parquet"
MAX_JSON_BYTES = 64 << 20
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_CHUNKS_SIZE = 1000


class MetaFiles:
    """Whole-file reads of metadata files with errors that name the file."""

    def __init__(self, root: str, reader: RangeReader) -> None:
        self.root, self.reader = root, reader
        self.read_paths: list[str] = []

    def file_version(self, relative: str) -> tuple[str, int, str | None]:
        """(path, size, ETag) of a file now (size -1 when it is missing)."""
        try:
            return relative, self.reader.size(relative), self.reader.etag(relative)
        except FileNotFoundError:
            return relative, -1, None

    def exists(self, relative: str, track: bool = True) -> bool:
        if track and relative not in self.read_paths:
            self.read_paths.append(relative)  # a file that appears later makes a cached copy stale
        try:
            self.reader.size(relative)
            return True
        except FileNotFoundError:
            return False

    def version(self, relative: str) -> str | None:
        """Cache version of a file from its size and ETag (None when missing or without an ETag)."""
        try:
            return entry_version(self.reader.size(relative), self.reader.etag(relative))
        except FileNotFoundError:
            return None

    def bytes(self, relative: str) -> bytes:
        if relative not in self.read_paths:
            self.read_paths.append(relative)
        try:
            size = self.reader.size(relative)
            return self.reader.read(relative, 0, size) if size else b""
        except FileNotFoundError as exc:
            raise DatasetFormatError(f"{self.root}/{relative}: file not found") from exc

    def json(self, relative: str) -> dict[str, Any]:
        if self.exists(relative) and self.reader.size(relative) > MAX_JSON_BYTES:
            raise DatasetFormatError(f"{self.root}/{relative}: {self.reader.size(relative)} bytes, more than "
                                     f"the {MAX_JSON_BYTES >> 20} MiB a metadata JSON file may have")
        raw = self.bytes(relative)
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetFormatError(f"{self.root}/{relative}: not valid JSON ({exc})") from exc
        except RecursionError:
            raise DatasetFormatError(f"{self.root}/{relative}: JSON nested too deeply") from None
        if not isinstance(value, dict):
            raise DatasetFormatError(f"{self.root}/{relative}: expected a JSON object, got "
                                     f"{type(value).__name__}")
        return value

    def parquet(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        raw = self.bytes(relative)
        try:
            return read_parquet_bytes(raw, columns)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:  # ValueError: footer check, bad UTF-8 names
            raise DatasetFormatError(f"{self.root}/{relative}: not a readable parquet file ({exc})") from exc


def read_episodes(reader: MetaFiles, info: dict[str, Any], all_columns: bool) -> pa.Table:
    """All meta/episodes files, found by probing their names in order (no listing); only the
    columns streaming needs unless ``all_columns``."""
    chunks_size = int(info.get("chunks_size") or DEFAULT_CHUNKS_SIZE)
    keys = [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]
    columns = None if all_columns else [*streaming_columns(keys), "tasks"]
    tables: list[pa.Table] = []
    chunk, file = 0, 0
    while True:
        path = EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        if not reader.exists(path):
            break
        tables.append(reader.parquet(path, columns))
        file += 1
        if file >= chunks_size:
            chunk, file = chunk + 1, 0
    if not tables:
        raise DatasetFormatError(
            f"{reader.root}/{EPISODES_PATH.format(chunk_index=0, file_index=0)}: file not found "
            "(the episodes table is required)")
    table = _concat(tables, reader.root)
    order = np.argsort(np.asarray(table.column("episode_index").to_numpy()
                                  if "episode_index" in table.column_names else []), kind="stable")
    return table.take(pa.array(order)) if len(order) else table


def _concat(tables: Sequence[pa.Table], root: str) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as exc:
        raise DatasetFormatError(f"{root}/meta/episodes: files disagree on their columns ({exc})") from exc


def read_tasks(reader: MetaFiles) -> dict[int, str]:
    """task_index -> task string. The task string is the table's (pandas index) string column."""
    table = reader.parquet(TASKS_PATH)
    where = f"{reader.root}/{TASKS_PATH}"
    if "task_index" not in table.column_names:
        raise DatasetFormatError(f"{where}: missing column 'task_index'")
    text_columns = [name for name in table.column_names
                    if name != "task_index" and str(table.schema.field(name).type) in ("string", "large_string")]
    preferred = [n for n in text_columns if n in ("task", "__index_level_0__")] or text_columns
    if not preferred:
        raise DatasetFormatError(f"{where}: no task string column (expected the task text as index)")
    indices = table.column("task_index").to_pylist()
    texts = table.column(preferred[0]).to_pylist()
    if any(not isinstance(i, int) for i in indices):
        raise DatasetFormatError(f"{where}: 'task_index' must be integers")
    return dict(zip(indices, texts, strict=True))

