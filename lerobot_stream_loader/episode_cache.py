"""Per-worker episode cache: fetches planned episodes' bytes ahead of use, under a byte budget.

One episode = its parquet row group(s) + per camera the byte span of its samples inside the big
MP4, fetched with one coalesced ``read_many``. The cache turns those bytes into an
:class:`EpisodeData` (Arrow rows + per camera a synthesized mini-MP4). Episodes in use are pinned;
unpinned ones are evicted least-recently-used once the budget is exceeded. Fetch errors reach
the consumer of that episode only, named with dataset, episode, camera, file and byte range.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .errors import DatasetFormatError, FetchError, StreamLoaderError
from .file_indexes import FileIndexes
from .meta import DatasetMeta, EpisodeMeta
from .mp4 import Mp4FormatError, synthesize_mp4
from .parquet_ranges import read_episode_rows
from .storage import RangeReader

DEFAULT_BUDGET_BYTES = 512 << 20


@dataclass(frozen=True)
class EpisodeVideo:
    """One camera of one episode: a standalone mini-MP4, the source times of its frames (sorted) and
    the offset between the two timelines (source = mini + time_offset)."""

    key: str
    path: str
    mini_mp4: bytes
    presented: np.ndarray
    time_offset: float
    byte_range: tuple[int, int]


@dataclass(frozen=True)
class EpisodeData:
    """Everything needed to produce an episode's samples without further I/O."""

    episode: EpisodeMeta
    rows: pa.Table
    videos: dict[str, EpisodeVideo]
    nbytes: int


@dataclass
class CacheStats:
    """What the cache did: episodes fetched, hits, evictions, bytes held, seconds consumers waited."""

    fetched: int = 0
    hits: int = 0
    misses: int = 0
    evicted: int = 0
    failed: int = 0
    bytes_held: int = 0
    peak_bytes_held: int = 0
    wait_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class EpisodeCache:
    """Fetches, holds and hands out episodes of one dataset for one worker."""

    def __init__(
        self,
        meta: DatasetMeta,
        reader: RangeReader,
        *,
        indexes: FileIndexes | None = None,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        prefetch_depth: int = 4,
        threads: int = 4,
        columns: list[str] | None = None,
    ) -> None:
        if prefetch_depth < 1 or threads < 1:
            raise ValueError("prefetch_depth and threads must be >= 1")
        self.meta = meta
        self.reader = reader
        self.indexes = indexes or FileIndexes(reader, root=meta.root)
        self.budget_bytes = budget_bytes
        self.prefetch_depth = prefetch_depth
        self.columns = columns
        self.stats = CacheStats()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="episode-fetch")
        self._lock = threading.RLock()  # done-callbacks of already-finished futures run under it
        self._ready: OrderedDict[int, EpisodeData] = OrderedDict()
        self._inflight: dict[int, Future[EpisodeData]] = {}
        self._queued: deque[int] = deque()
        self._pinned: set[int] = set()
        self._closed = False

    # -- public API -------------------------------------------------------------------------------
    def prefetch(self, episode: int) -> None:
        """Ask for ``episode`` to be fetched in the background (no-op when held or on its way)."""
        with self._lock:
            if self._closed or episode in self._ready or episode in self._inflight or episode in self._queued:
                return
            self._queued.append(episode)
            self._start_queued()

    def get(self, episode: int) -> EpisodeData:
        """The episode's data, fetching it now if needed; pins it until :meth:`release`."""
        with self._lock:
            self._check_open()
            self._pinned.add(episode)
            data = self._ready.get(episode)
            if data is not None:
                self._ready.move_to_end(episode)
                self.stats.hits += 1
                return data
            future = self._inflight.get(episode)
            if future is None:
                if episode in self._queued:
                    self._queued.remove(episode)
                self.stats.misses += 1
                future = self._submit(episode)
        start = time.perf_counter()
        try:
            data = future.result()
        except BaseException:
            with self._lock:
                self._pinned.discard(episode)
            raise
        finally:
            self.stats.wait_seconds += time.perf_counter() - start
        return data

    def release(self, episode: int) -> None:
        """The consumer is done with ``episode``: it may be evicted when space is needed."""
        with self._lock:
            self._pinned.discard(episode)
            self._evict()

    def close(self) -> None:
        """Cancel pending fetches, wait for running ones, drop everything held."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queued.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._ready.clear()
            self._inflight.clear()
            self.stats.bytes_held = 0

    def __enter__(self) -> EpisodeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def held_episodes(self) -> list[int]:
        """Episodes whose bytes are held now (ready), least recently used first."""
        with self._lock:
            return list(self._ready)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    # -- internals (call with self._lock held) -----------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("EpisodeCache is closed")

    def _start_queued(self) -> None:
        while self._queued and len(self._inflight) < self.prefetch_depth and self._has_room():
            self._submit(self._queued.popleft())

    def _has_room(self) -> bool:
        return self.stats.bytes_held < self.budget_bytes or not self._ready

    def _submit(self, episode: int) -> Future[EpisodeData]:
        future = self._pool.submit(self._fetch, episode)
        self._inflight[episode] = future
        future.add_done_callback(lambda f, ep=episode: self._on_done(ep, f))
        return future

    def _on_done(self, episode: int, future: Future[EpisodeData]) -> None:
        with self._lock:
            self._inflight.pop(episode, None)
            if self._closed or future.cancelled():
                return
            if future.exception() is not None:
                self.stats.failed += 1
            else:
                data = future.result()
                self._ready[episode] = data
                self.stats.fetched += 1
                self.stats.bytes_held += data.nbytes
                self.stats.peak_bytes_held = max(self.stats.peak_bytes_held, self.stats.bytes_held)
                self._evict()
            self._start_queued()

    def _evict(self) -> None:
        for episode in list(self._ready):
            if self.stats.bytes_held <= self.budget_bytes:
                break
            if episode in self._pinned:
                continue
            data = self._ready.pop(episode)
            self.stats.bytes_held -= data.nbytes
            self.stats.evicted += 1

    # -- the fetch itself (runs on a pool thread) --------------------------------------------------
    def _fetch(self, episode_index: int) -> EpisodeData:
        episode = self.meta.episode(episode_index)
        where = f"{self.meta.root}: episode {episode_index}"
        try:
            footer = self.indexes.footer(episode.data_path)
        except StreamLoaderError as exc:
            raise type(exc)(f"{where}: data file {episode.data_path}: {exc}") from exc
        row_groups = footer.row_groups_for(episode_index)
        requests = [(episode.data_path, *footer.ranges[rg]) for rg in row_groups]
        spans = {}
        for key, video in episode.videos.items():
            try:
                index = self.indexes.mp4(video.path)
                span = index.span(video.from_timestamp, video.to_timestamp)
            except FetchError as exc:  # storage trouble stays a FetchError (FileNotFoundError when gone)
                raise type(exc)(f"{where}, camera {key}: {video.path}: {exc}") from exc
            except (StreamLoaderError, Mp4FormatError, ValueError) as exc:
                raise DatasetFormatError(f"{where}, camera {key}: {video.path}: {exc}") from exc
            spans[key] = (index, span)
            requests.append((video.path, span.byte_offset, span.byte_length))
        try:
            blobs = self.reader.read_many(requests)
        except FetchError as exc:
            ranges = ", ".join(f"{p} [{o}, {o + n})" for p, o, n in requests)
            raise FetchError(f"{where}: fetching {ranges} failed: {exc}") from exc
        rows = read_episode_rows(footer, dict(zip(row_groups, blobs, strict=False)), episode_index)
        if rows.num_rows != episode.length:
            raise DatasetFormatError(
                f"{where}: {episode.data_path} holds {rows.num_rows} rows of the episode, the episodes table "
                f"says {episode.length}")
        _check_row_positions(rows, episode, where)
        if self.columns is not None:
            rows = rows.select([c for c in self.columns if c in rows.column_names])
        videos = {}
        for (key, (index, span)), blob in zip(spans.items(), blobs[len(row_groups):], strict=True):
            path = episode.videos[key].path
            mini = synthesize_mp4(index, span, blob)
            presented = np.sort(index.pts[span.sample_lo:span.sample_hi]) / index.timescale
            videos[key] = EpisodeVideo(key, path, mini, presented, span.time_offset,
                                       (span.byte_offset, span.byte_offset + span.byte_length))
        nbytes = rows.nbytes + sum(len(v.mini_mp4) for v in videos.values())
        return EpisodeData(episode, rows, videos, nbytes)


def _check_row_positions(rows: pa.Table, episode: EpisodeMeta, where: str) -> None:
    """The rows' ``index`` and ``frame_index`` must be the episode's range in the episodes table."""
    for name, start in (("index", episode.from_index), ("frame_index", 0)):
        if name not in rows.column_names:
            continue
        values = np.asarray(rows.column(name).to_numpy(zero_copy_only=False), dtype=np.int64)
        wrong = np.flatnonzero(values != np.arange(start, start + episode.length))
        if len(wrong):
            k = int(wrong[0])
            raise DatasetFormatError(
                f"{where}: {episode.data_path}: column {name!r} is {int(values[k])} in row {k} of the episode, "
                f"the episodes table gives the episode [{start}, {start + episode.length})")
