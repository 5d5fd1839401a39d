"""Decoded parquet row groups that hold many episodes, kept for the next episodes read from them.

LeRobot writes one row group per episode, but other writers put many episodes (or a whole file) in
one row group. Parquet cannot read part of a row group by byte range without a page index, so such a
row group is fetched and decoded once, kept in a small byte-bounded LRU, and each episode's rows are
cut out of it: found by binary search when ``episode_index`` is sorted (the usual case), by a mask
otherwise. Row groups that hold a single episode (by their statistics) are never kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .ranges import ParquetFooter

DEFAULT_SHARED_BYTES = 64 << 20


@dataclass(frozen=True)
class GroupRows:
    """Decoded row groups and their ``episode_index`` column as int64."""

    table: pa.Table
    episodes: np.ndarray
    ordered: bool

    @classmethod
    def of(cls, table: pa.Table) -> GroupRows:
        episodes = np.asarray(table.column("episode_index").to_numpy(zero_copy_only=False), dtype=np.int64)
        return cls(table, episodes, bool(np.all(episodes[1:] >= episodes[:-1])))

    def rows(self, episode_index: int) -> pa.Table:
        """A copy of the rows of ``episode_index`` (the cached table stays the only holder of its buffers)."""
        if self.ordered:
            lo, hi = np.searchsorted(self.episodes, [episode_index, episode_index + 1])
            positions = np.arange(lo, hi)
        else:
            positions = np.flatnonzero(self.episodes == episode_index)
        return self.table.take(pa.array(positions, type=pa.int64()))


def holds_many_episodes(footer: ParquetFooter, row_groups: list[int]) -> bool:
    """Whether any of these row groups holds rows of several episodes (or has no statistics to tell)."""
    spans = (footer.episodes[rg] for rg in row_groups)
    return any(span is None or span[0] != span[1] for span in spans)


class SharedRowGroups:
    """A thread-safe LRU of :class:`GroupRows`, bounded by the decoded bytes it holds."""

    def __init__(self, budget_bytes: int = DEFAULT_SHARED_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[Hashable, GroupRows] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> GroupRows | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, rows: GroupRows) -> None:
        """Keep ``rows`` unless it alone exceeds the budget; evict the least recently used beyond it."""
        size = rows.table.nbytes
        if size > self.budget_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = rows
            self._bytes += size
            while self._bytes > self.budget_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.table.nbytes

    def __len__(self) -> int:
        return len(self._items)
