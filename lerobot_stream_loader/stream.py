"""One worker's stream: walk its shard plan, keep the planned episodes fetched ahead, build items.

Samples are decoded in the plan's decode order -- runs of consecutive samples of one episode,
each camera decoding the run's frames in one forward pass -- into a buffer of built items, and
yielded from it in plan order. The plan bounds the buffer (``shuffle_buffer`` + one run with
shuffle; one run without). Episodes are fetched in the order they are first decoded,
``prefetch`` ahead of the open ones; an episode leaves (its bytes become evictable, its decoders
close) right after its last run.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, cast

import numpy as np
from torch.utils.data import get_worker_info

from .fetch.disk_cache import DiskCachedReader, EpisodeDiskCache
from .fetch.episode_cache import EpisodeCache, EpisodeData
from .fetch.file_indexes import FileIndexes, IndexCaches
from .fetch.sidecar import SidecarLookup
from .fetch.worker_exit import watch as watch_for_worker_exit
from .items.builder import ItemBuilder
from .items.decode import DecoderKey
from .items.episode import EpisodeItems
from .meta.dataset_meta import DatasetMeta
from .plan.shard import ShardPlan
from .storage import RangeReader
from .storage.local_cache import dataset_cache_dir
from .storage.paths import is_local


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


START_JITTER_S = 0.25  # a remote reader's first request waits up to this long (seconds)


class ResourceSettings(TypedDict):
    """A dataset's options for :meth:`WorkerResources.open` (its ``settings``, passed as keywords)."""

    cache_bytes: int
    prefetch_episodes: int
    fetch_threads: int
    cache_dir: str | os.PathLike[str] | None
    disk_cache_bytes: int

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
    def open(cls, meta: DatasetMeta, *, cache_bytes: int, prefetch_episodes: int,
             fetch_threads: int, cache_dir: str | os.PathLike[str] | None = None,
             disk_cache_bytes: int = 0, index_caches: IndexCaches | None = None,
             reader_options: dict[str, Any] | None = None) -> WorkerResources:
        """Open the reader of ``meta.location`` for this process (``cache_dir``: the machine's cache
        folder; with ``disk_cache_bytes`` episode fetches go through its disk cache of episode bytes);
        in a DataLoader worker, also start the watch that ends it promptly when the DataLoader shuts
        down; ``index_caches``: MP4 indexes and footers kept with other datasets' (a mixture's
        sources); ``reader_options`` override the location's."""
        watch_for_worker_exit()
        if not is_local(meta.root) and get_worker_info() is not None:
            time.sleep(random.uniform(0.0, START_JITTER_S))  # thousands of readers starting together spread out
        reader: RangeReader = meta.location.open_reader(**(reader_options or {}))
        indexes = FileIndexes(reader, root=meta.root, sidecar=SidecarLookup(meta.root, reader, cache_dir),
                              caches=index_caches)
        if disk_cache_bytes:
            folder = dataset_cache_dir(meta.root, cache_dir) / "episodes"
            reader = DiskCachedReader(reader, EpisodeDiskCache(folder, disk_cache_bytes))
        return cls(os.getpid(), meta, reader, indexes, cache_bytes,
                   prefetch_episodes, fetch_threads)

    def close(self) -> None:
        self.reader.close()


class EpisodeSource(Protocol):
    """What a stream needs of a cache: episodes by index, fetched ahead, released after use."""

    def prefetch(self, episode: int) -> None: ...

    def get(self, episode: int) -> EpisodeData: ...

    def release(self, episode: int) -> None: ...


def decode_runs(plan: ShardPlan) -> list[tuple[int, np.ndarray]]:
    """(segment, positions) of the plan's samples in decode order, in runs of at most
    ``plan.run_length`` consecutive decode ranks of one segment (frames increase within a run)."""
    order = np.lexsort((np.arange(len(plan)), plan.decode_rank))
    segments, ranks = plan.segment[order], plan.decode_rank[order]
    cuts = np.flatnonzero((np.diff(segments) != 0) | (np.diff(ranks) != 1)) + 1
    runs = []
    for chunk in np.split(order, cuts):
        for lo in range(0, len(chunk), plan.run_length):
            part = chunk[lo:lo + plan.run_length]
            runs.append((int(plan.segment[part[0]]), part))
    return runs


def _of_episode(episode: int) -> Callable[[DecoderKey], bool]:
    """Whether a decoder's key, (episode, camera), is one of ``episode``'s."""
    return lambda key: key[0] == episode


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
            prefetch_depth=resources.prefetch_episodes, threads=resources.fetch_threads,
            tolerance_s=builder.tolerance_s)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan, cache, builder = self.plan, self.cache, self.builder
        runs = decode_runs(plan)
        admit = plan.admit_episodes.tolist()
        opened = [int(r[0]) for r in runs]
        first_run: dict[int, int] = {}
        last_run: dict[int, int] = {}
        for r, segment in enumerate(opened):
            first_run.setdefault(segment, r)
            last_run[segment] = r
        fetch_order = list(first_run)  # segments by first decode
        fetch_from = [first_run[segment] for segment in fetch_order]
        frames = plan.frame_index
        buffer: dict[int, dict[str, Any]] = {}
        in_use: dict[int, EpisodeItems] = {}
        next_fetch = next_run = 0
        for k in range(len(plan)):
            while k not in buffer:
                segment, positions = runs[next_run]
                ahead = min(len(fetch_order), bisect.bisect_right(fetch_from, next_run) + self.prefetch)
                while next_fetch < ahead:
                    cache.prefetch(admit[fetch_order[next_fetch]])
                    next_fetch += 1
                episode = admit[segment]
                items = in_use.get(segment)
                if items is None:
                    items = in_use[segment] = EpisodeItems(cache.get(episode), builder.meta)
                for pos, item in zip(positions.tolist(), builder.items(items, frames[positions]), strict=True):
                    buffer[pos] = item
                if next_run == last_run[segment]:
                    del in_use[segment]
                    cache.release(episode)
                    builder.decoders.discard(_of_episode(episode))
                    return_freed_memory()
                next_run += 1
            yield builder.finish(buffer.pop(k))

    def close(self) -> None:
        if self._owns_cache:
            cast(EpisodeCache, self.cache).close()  # its own cache is the EpisodeCache made in __init__
        self.builder.decoders.clear()
