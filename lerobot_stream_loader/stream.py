"""One worker's stream: walk its shard plan, keep the planned episodes fetched ahead, build items.

Episodes are admitted in plan order: those resident at the current position (the shuffle pool,
which fills gradually at the start of an epoch; one episode without shuffle) plus ``prefetch``
more are asked of the cache ahead of use. An episode leaves (its bytes become evictable, its
decoders close) right after its last planned sample.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .episode_cache import EpisodeCache, EpisodeData
from .file_indexes import FileIndexes
from .index_sidecar import load_sidecar
from .items import EpisodeItems, ItemBuilder
from .meta import DatasetMeta
from .plan import ShardPlan
from .storage import RangeReader, open_root_reader


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def return_freed_memory() -> None:
    """Give memory freed by released episodes back to the OS (glibc otherwise keeps it, and a
    worker's RSS creeps up by about an episode's bytes per pass)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@dataclass
class WorkerResources:
    """What one process keeps across epochs: its range reader and the files' indexes."""

    pid: int
    meta: DatasetMeta
    reader: RangeReader
    indexes: FileIndexes
    cache_bytes: int
    prefetch_episodes: int
    fetch_threads: int

    @classmethod
    def open(cls, meta: DatasetMeta, *, backend: str, storage_options: dict[str, Any] | None,
             reader_options: dict[str, Any], cache_bytes: int, prefetch_episodes: int,
             fetch_threads: int, cache_dir: str | os.PathLike[str] | None = None) -> WorkerResources:
        """Open the reader of ``meta.root`` for this process (``cache_dir``: the machine's cache folder)."""
        reader = open_root_reader(meta.root, backend=backend, storage_options=storage_options,
                                  reader_options=reader_options)
        indexes = FileIndexes(reader, root=meta.root, sidecar=load_sidecar(meta, reader, cache_dir))
        return cls(os.getpid(), meta, reader, indexes, cache_bytes,
                   prefetch_episodes, fetch_threads)

    def close(self) -> None:
        self.reader.close()


class EpisodeSource(Protocol):
    """What a stream needs of a cache: episodes by index, fetched ahead, released after use."""

    def prefetch(self, episode: int) -> None: ...

    def get(self, episode: int) -> EpisodeData: ...

    def release(self, episode: int) -> None: ...


class WorkerStream:
    """Iterates the items of one shard plan."""

    def __init__(self, resources: WorkerResources, plan: ShardPlan, builder: ItemBuilder, *,
                 prefetch: int, cache: EpisodeSource | None = None) -> None:
        """``cache``: where episodes come from (default: a cache of this stream's own); a given one is
        not closed by :meth:`close` (a mixture's streams share one)."""
        self.plan = plan
        self.builder = builder
        self.prefetch = prefetch
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else EpisodeCache(
            resources.meta, resources.reader, indexes=resources.indexes, budget_bytes=resources.cache_bytes,
            prefetch_depth=resources.prefetch_episodes, threads=resources.fetch_threads)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan, cache = self.plan, self.cache
        admit = plan.admit_episodes.tolist()
        last_pos = plan.last_pos.tolist()
        segments = plan.segment.tolist()
        frames = plan.frame_index.tolist()
        # episodes resident at each position (the pool fills gradually), plus `prefetch` ahead
        resident = np.searchsorted(plan.resident_from, np.arange(len(segments)), side="right")
        limits = np.minimum(len(admit), resident + self.prefetch).tolist()
        in_use: dict[int, EpisodeItems] = {}
        next_admit = 0
        for k, segment in enumerate(segments):
            while next_admit < limits[k]:
                cache.prefetch(admit[next_admit])
                next_admit += 1
            episode = admit[segment]
            items = in_use.get(segment)
            if items is None:
                items = in_use[segment] = EpisodeItems(cache.get(episode), self.builder.meta)
            yield self.builder.item(items, frames[k])
            if k == last_pos[segment]:
                del in_use[segment]
                cache.release(episode)
                self.builder.decoders.discard(lambda key, ep=episode: key[0] == ep)
                return_freed_memory()

    def close(self) -> None:
        if self._owns_cache:
            self.cache.close()
        self.builder.decoders.clear()
