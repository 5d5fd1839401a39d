"""Per-file structure a worker needs before it can fetch an episode: MP4 sample tables and parquet
footers. Each is built once per file (concurrent requests for one file wait for one build) and kept
in a bounded least-recently-used table (MP4 indexes by bytes, footers by count), so a worker's
memory does not grow with the number of files it has opened. MP4 indexes come from the dataset's
sidecar (:class:`~lerobot_stream_loader.fetch.sidecar.SidecarLookup`) when it has a fresh entry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from ..errors import FetchError
from ..mp4 import Mp4FormatError, Mp4Index, index_mp4
from ..parquet.ranges import ParquetFooter, read_footer
from ..storage import RangeReader
from .sidecar import SidecarLookup

T = TypeVar("T")
DEFAULT_INDEX_BYTES = 64 << 20
DEFAULT_FOOTERS = 256


def index_bytes(index: Mp4Index) -> int:
    """Memory held by an MP4 index's arrays."""
    return sum(value.nbytes for value in vars(index).values() if isinstance(value, np.ndarray))


class _Lru(Generic[T]):
    """Values by key, least recently used first; evicted beyond ``limit`` (by ``weigh``), keeping one."""

    def __init__(self, limit: int, weigh: Callable[[T], int]) -> None:
        self.limit, self.weigh = limit, weigh
        self.items: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self.total = 0

    def get(self, key: str) -> T | None:
        found = self.items.get(key)
        if found is None:
            return None
        self.items.move_to_end(key)
        return found[0]

    def put(self, key: str, value: T) -> None:
        weight = self.weigh(value)
        self.items[key] = (value, weight)
        self.total += weight
        while self.total > self.limit and len(self.items) > 1:
            _, (_, dropped) = self.items.popitem(last=False)
            self.total -= dropped


class IndexCaches:
    """The bounded LRUs of parsed MP4 indexes (by bytes) and parquet footers (by count). A worker
    has one per dataset; a mixture's sources share one, so many sources do not multiply the bound."""

    def __init__(self, max_index_bytes: int = DEFAULT_INDEX_BYTES, max_footers: int = DEFAULT_FOOTERS) -> None:
        self.mp4: _Lru[Mp4Index] = _Lru(max_index_bytes, lambda index: index_bytes(index))
        self.footers: _Lru[ParquetFooter] = _Lru(max_footers, lambda _: 1)
        self.guard = threading.Lock()


class FileIndexes:
    """MP4 indexes and parquet footers of one dataset, read through ``reader`` on first use and kept
    in ``caches`` (its own by default)."""

    def __init__(self, reader: RangeReader, *, root: str, sidecar: SidecarLookup | None = None,
                 max_index_bytes: int = DEFAULT_INDEX_BYTES, max_footers: int = DEFAULT_FOOTERS,
                 caches: IndexCaches | None = None) -> None:
        self._reader = reader
        self._root = root
        self._sidecar = sidecar
        caches = caches or IndexCaches(max_index_bytes, max_footers)
        self._mp4, self._footers, self._guard = caches.mp4, caches.footers, caches.guard
        self._locks: dict[str, threading.Lock] = {}

    @property
    def held_index_bytes(self) -> int:
        """Bytes of the MP4 indexes held now (of every dataset sharing the caches)."""
        with self._guard:
            return self._mp4.total

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
        read = lambda offset, length: self._reader.read(path, offset, length)  # noqa: E731
        if self._sidecar is not None:
            try:
                index = self._sidecar.index(path, size, read)
            except FetchError as exc:
                raise FetchError(f"{self._root}/{path}: reading the end of the MP4 failed: {exc}") from exc
            if index is not None:
                return index
        try:
            return index_mp4(read, size=size, name=f"{self._root}/{path}")
        except Mp4FormatError:
            raise
        except FetchError as exc:
            raise FetchError(f"{self._root}/{path}: reading the MP4 sample table failed: {exc}") from exc

    def _once(self, table: _Lru[T], path: str, build: Callable[[], T]) -> T:
        key = f"{self._root}/{path}"  # caches shared by several datasets: keyed by the full name
        with self._guard:
            value = table.get(key)
            if value is not None:
                return value
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                value = table.get(key)
            if value is None:
                value = build()
                with self._guard:
                    table.put(key, value)
                    self._locks.pop(key, None)
            return value
