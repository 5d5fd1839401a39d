"""Per-file structure a worker needs before it can fetch an episode: MP4 sample tables and parquet
footers. Each is built once per file (concurrent requests for one file wait for one build) and
kept for the worker's lifetime; MP4 indexes come from the dataset's sidecar when it has a fresh
entry for the file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from .errors import FetchError
from .index_sidecar import fresh_index
from .mp4 import Mp4FormatError, Mp4Index, SidecarEntry, index_mp4
from .parquet_ranges import ParquetFooter, read_footer
from .storage import RangeReader

T = TypeVar("T")


class FileIndexes:
    """MP4 indexes and parquet footers of one dataset, read through ``reader`` on first use."""

    def __init__(self, reader: RangeReader, *, root: str, sidecar: dict[str, SidecarEntry] | None = None):
        self._reader = reader
        self._root = root
        self._sidecar = sidecar or {}
        self._mp4: dict[str, Mp4Index] = {}
        self._footers: dict[str, ParquetFooter] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def mp4(self, path: str) -> Mp4Index:
        """The sample table of the MP4 at ``path``."""
        return self._once(self._mp4, path, lambda: self._index_mp4(path))

    def footer(self, path: str) -> ParquetFooter:
        """The footer (row group ranges) of the parquet file at ``path``."""
        return self._once(self._footers, path, lambda: read_footer(
            f"{self._root}/{path}", self._reader.size(path),
            lambda offset, length: self._reader.read(path, offset, length)))

    def _index_mp4(self, path: str) -> Mp4Index:
        size = self._reader.size(path)
        return fresh_index(self._sidecar, path, size, self._reader.etag(path), f"{self._root}/{path}",
                           lambda: self._build_mp4(path, size))

    def _build_mp4(self, path: str, size: int) -> Mp4Index:
        try:
            return index_mp4(lambda offset, length: self._reader.read(path, offset, length),
                             size=size, name=f"{self._root}/{path}")
        except Mp4FormatError:
            raise
        except FetchError as exc:
            raise FetchError(f"{self._root}/{path}: reading the MP4 sample table failed: {exc}") from exc

    def _once(self, table: dict[str, T], key: str, build: Callable[[], T]) -> T:
        value = table.get(key)
        if value is not None:
            return value
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            value = table.get(key)
            if value is None:
                value = build()
                table[key] = value
            return value
