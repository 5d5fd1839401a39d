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

from .fetch.bad_episodes import BAD_DATA_ERRORS, BadEpisodes, TooManyBadEpisodes
from .fetch.disk_cache import DiskCachedReader, EpisodeDiskCache
from .fetch.episode_cache import EpisodeCache, EpisodeData
from .fetch.file_indexes import FileIndexes, IndexCaches
from .fetch.sidecar import SidecarLookup
from .fetch.worker_exit import WorkerStopped
from .fetch.worker_exit import watch as watch_for_worker_exit
from .items.builder import ItemBuilder
from .items.decode import DecoderKey
from .items.episode import EpisodeItems
from .items.item import Item
from .items.video import VideoCamera
from .meta.dataset_meta import DatasetMeta
from .plan.shard import ShardPlan
from .storage import RangeReader
from .storage.local_cache import dataset_cache_dir
from .storage.paths import is_local
from .util.stage_clock import clock


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

    def io_counters(self) -> dict[str, int]:
        """Storage counters of this process's reader so far (and its disk cache's, when it has one)."""
        return io_counters(self.reader)


def io_counters(reader: RangeReader) -> dict[str, int]:
    """A reader's counters a loader reports: bytes and range requests sent, retries, throttled answers;
    disk cache hits and misses when it reads through one."""
    stats = reader.stats.snapshot()
    out = {name: int(stats[name]) for name in ("fetched_bytes", "fetches", "retries", "throttled")}
    disk = getattr(reader, "disk_cache", None)
    if disk is not None:
        out["disk_cache_hits"], out["disk_cache_misses"] = disk.stats["hits"], disk.stats["misses"]
    return out


class EpisodeSource(Protocol):
    """What a stream needs of a cache: episodes by index, fetched ahead, released after use."""

    def prefetch(self, episode: int) -> None: ...

    def get(self, episode: int) -> EpisodeData: ...

    def release(self, episode: int) -> None: ...


def decode_runs(plan: ShardPlan) -> list[tuple[int, np.ndarray]]:
    """(segment, positions) of the plan's samples in decode order, in runs of consecutive samples of
    one segment (frames increase within a run) that share a block of ``plan.run_length`` decode ranks.

    Blocks of ranks, not of samples: a plan resumed after k samples (``plan.skip(k)`` keeps the decode
    ranks) is decoded in the same runs, less the samples already read, so whatever depends on the
    runs (which samples of an episode with a broken frame were read before the break) is the same."""
    order = np.lexsort((np.arange(len(plan)), plan.decode_rank))
    segments, blocks = plan.segment[order], plan.decode_rank[order] // plan.run_length
    cuts = np.flatnonzero((np.diff(segments) != 0) | (np.diff(blocks) != 0)) + 1
    return [(int(plan.segment[chunk[0]]), chunk) for chunk in np.split(order, cuts) if len(chunk)]


def _of_episode(episode: int) -> Callable[[DecoderKey], bool]:
    """Whether a decoder's key, (episode, camera), is one of ``episode``'s."""
    return lambda key: key[0] == episode


class WorkerStream:
    """Iterates the items of one shard plan.

    With ``bad`` skipping, a bad episode's samples are not read: each one is stood in for by the
    sample at the nearest later position whose episode is good (decoded ahead, as the plan's order
    allows), or, at the end of the plan, by the last good sample yielded. What stands in depends only
    on the plan and on which episodes are bad, and a resumed plan decodes in the same runs
    (:func:`decode_runs`), so the same defects give the same stream, also after a resume."""

    def __init__(self, resources: WorkerResources, plan: ShardPlan, builder: ItemBuilder, *,
                 prefetch: int, cache: EpisodeSource | None = None, bad: BadEpisodes | None = None) -> None:
        """``cache``: where episodes come from (default: a cache of this stream's own); a given one is
        not closed by :meth:`close` (a mixture's streams share one). ``bad``: the policy on bad
        episodes (default: raise)."""
        self.plan = plan
        self.builder = builder
        self.prefetch = prefetch
        self.bad = bad if bad is not None else BadEpisodes()
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else EpisodeCache(
            resources.meta, resources.reader, indexes=resources.indexes, budget_bytes=resources.cache_bytes,
            prefetch_depth=resources.prefetch_episodes, threads=resources.fetch_threads,
            tolerance_s=builder.tolerance_s)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        decoder = _RunDecoder(self)
        episode_of = self.plan.episode_index.tolist()
        found = self.bad.found
        last: dict[str, Any] | None = None
        stages = clock()
        for k in range(len(self.plan)):
            while k not in decoder.buffer and episode_of[k] not in found:
                decoder.next_run()
            if k in decoder.buffer:
                with stages.timed("decode"):  # the float conversion, image_transforms
                    last = self.builder.finish(decoder.buffer.pop(k))
                yield last
                continue
            stand_in = decoder.stand_in(k + 1, episode_of)
            stages.add("stand_ins")
            if stand_in is not None:
                yield self.builder.finish(Item(stand_in))
            elif last is not None:
                yield Item(last)
            else:
                raise TooManyBadEpisodes(f"{self.bad.where}: every episode of this reader is bad "
                                         f"({sorted(found)[:20]}): no sample to stand in for them")

    def close(self) -> None:
        if self._owns_cache:
            cast(EpisodeCache, self.cache).close()  # its own cache is the EpisodeCache made in __init__
        self.builder.decoders.clear()


class _RunDecoder:
    """A stream's decoding: runs of its plan in decode order into a buffer of built items, episodes
    fetched ahead and released after their last run; a bad episode's failure goes to the policy."""

    def __init__(self, stream: WorkerStream) -> None:
        plan = stream.plan
        self.stream = stream
        self.runs = decode_runs(plan)
        self.admit = plan.admit_episodes.tolist()
        opened = [int(r[0]) for r in self.runs]
        first_run: dict[int, int] = {}
        self.last_run: dict[int, int] = {}
        for r, segment in enumerate(opened):
            first_run.setdefault(segment, r)
            self.last_run[segment] = r
        self.fetch_order = list(first_run)  # segments by first decode
        self.fetch_from = [first_run[segment] for segment in self.fetch_order]
        self.buffer: dict[int, dict[str, Any]] = {}
        self.in_use: dict[int, EpisodeItems] = {}
        self.next_fetch = self.next = 0
        self.video_cameras = sum(isinstance(c, VideoCamera) for c in stream.builder.cameras.values())

    def next_run(self) -> None:
        """Decode the next run into the buffer (nothing for a bad episode's run)."""
        stream, cache, builder = self.stream, self.stream.cache, self.stream.builder
        segment, positions = self.runs[self.next]
        ahead = min(len(self.fetch_order), bisect.bisect_right(self.fetch_from, self.next) + stream.prefetch)
        while self.next_fetch < ahead:
            cache.prefetch(self.admit[self.fetch_order[self.next_fetch]])
            self.next_fetch += 1
        episode = self.admit[segment]
        stages = clock()
        if episode not in stream.bad.found:
            try:
                items = self.in_use.get(segment)
                if items is None:
                    with stages.timed("fetch_wait"):
                        data = cache.get(episode)
                    items = self.in_use[segment] = EpisodeItems(data, builder.meta)
                    if stream.bad.skipping:
                        check_rows(items, builder.tolerance_s, stream.bad.where)
                frames = stream.plan.frame_index[positions]
                with stages.timed("decode"):
                    built = builder.items(items, frames)
                stages.add("samples_decoded", len(frames))
                stages.add("frames_decoded", len(frames) * self.video_cameras)
                for pos, item in zip(positions.tolist(), built, strict=True):
                    self.buffer[pos] = item
            except WorkerStopped:
                raise
            except BAD_DATA_ERRORS as exc:
                stream.bad.failed(episode, exc)  # raises unless skipping
                self._forget(episode)
        if self.next == self.last_run[segment]:
            self.in_use.pop(segment, None)
            cache.release(episode)
            builder.decoders.discard(_of_episode(episode))
            return_freed_memory()
        self.next += 1

    def _forget(self, episode: int) -> None:
        """Drop a bad episode's samples waiting in the buffer (none of them is yielded)."""
        of = self.stream.plan.episode_index
        for pos in [p for p in self.buffer if of[p] == episode]:
            del self.buffer[pos]

    def stand_in(self, start: int, episode_of: list[int]) -> dict[str, Any] | None:
        """The buffered sample at the first position from ``start`` on whose episode is good (decoding
        ahead as needed), or None when no later sample is good."""
        found = self.stream.bad.found
        for j in range(start, len(episode_of)):
            while j not in self.buffer and episode_of[j] not in found:
                self.next_run()
            if j in self.buffer:
                return self.buffer[j]
        return None


def check_rows(items: EpisodeItems, tolerance_s: float, where: str) -> None:
    """Every row has its frame within ``tolerance_s`` in its own episode's part of each MP4 (raises as
    a camera would when the row is asked for: a skipped episode is found when it is fetched)."""
    data = items.data
    for key, video in data.videos.items():
        if video.row_frames is not None:
            video.row_frames.positions_of(None, tolerance_s,
                                          f"{where}: episode {data.episode.index}, camera {key} ({video.path})")
