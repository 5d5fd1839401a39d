"""Per-worker episode cache: fetches planned episodes ahead of use, under a byte budget.

:class:`FetchCache` is the cache itself: keys are fetched on its threads by a ``fetch(key)``
function (an :class:`~lerobot_stream_loader.fetch.assembly.EpisodeAssembler`, or one per source
of a mixture), at most ``prefetch_depth`` at once. Episodes in use are pinned; unpinned ones are
evicted least-recently-used once the budget is exceeded. Fetch errors reach the consumer of that
key only. :class:`EpisodeCache` is the cache of one dataset, keyed by episode index.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..meta.dataset_meta import DatasetMeta
from ..storage import RangeReader
from ..util.daemon_pool import DaemonPool
from .assembly import EpisodeAssembler, EpisodeData, EpisodeVideo
from .file_indexes import FileIndexes
from .frame_match import DEFAULT_TOLERANCE_S
from .worker_exit import wait_result

__all__ = ["DEFAULT_BUDGET_BYTES", "CacheStats", "EpisodeCache", "EpisodeData", "EpisodeVideo", "FetchCache"]

DEFAULT_BUDGET_BYTES = 512 << 20

K = TypeVar("K", bound=Hashable)  # what episodes are keyed by: an index, or (source, index) in a mixture


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


class FetchCache(Generic[K]):
    """Fetches, holds and hands out episodes (``fetch(key)`` results) for one worker."""

    def __init__(
        self,
        fetch: Callable[[K], EpisodeData],
        *,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        prefetch_depth: int = 4,
        threads: int = 4,
    ) -> None:
        if prefetch_depth < 1 or threads < 1:
            raise ValueError("prefetch_depth and threads must be >= 1")
        self._fetch = fetch
        self.budget_bytes = budget_bytes
        self.prefetch_depth = prefetch_depth
        self.stats = CacheStats()
        self._pool = DaemonPool(threads, "episode-fetch")
        self._lock = threading.RLock()  # done-callbacks of already-finished futures run under it
        self._ready: OrderedDict[K, EpisodeData] = OrderedDict()
        self._inflight: dict[K, Future[EpisodeData]] = {}
        self._queued: deque[K] = deque()
        self._pinned: set[K] = set()
        self._closed = False

    # -- public API -------------------------------------------------------------------------------
    def prefetch(self, episode: K) -> None:
        """Ask for ``episode`` to be fetched in the background (no-op when held or on its way)."""
        with self._lock:
            if self._closed or episode in self._ready or episode in self._inflight or episode in self._queued:
                return
            self._queued.append(episode)
            self._start_queued()

    def get(self, episode: K) -> EpisodeData:
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
            data = wait_result(future)
        except BaseException:
            with self._lock:
                self._pinned.discard(episode)
            raise
        finally:
            self.stats.wait_seconds += time.perf_counter() - start
        return data

    def release(self, episode: K) -> None:
        """The consumer is done with ``episode``: it may be evicted when space is needed."""
        with self._lock:
            self._pinned.discard(episode)
            self._evict()

    def close(self) -> None:
        """Cancel pending fetches, abandon running ones (never waits for storage), drop everything held."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queued.clear()
        self._pool.shutdown()
        with self._lock:
            self._ready.clear()
            self._inflight.clear()
            self.stats.bytes_held = 0

    def __enter__(self) -> FetchCache[K]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def held_episodes(self) -> list[K]:
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

    def _submit(self, episode: K) -> Future[EpisodeData]:
        future = self._pool.submit(self._fetch, episode)
        self._inflight[episode] = future
        future.add_done_callback(lambda f: self._on_done(episode, f))
        return future

    def _on_done(self, episode: K, future: Future[EpisodeData]) -> None:
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


class EpisodeCache(FetchCache[int]):
    """The cache of one dataset's episodes, keyed by episode index."""

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
        tolerance_s: float = DEFAULT_TOLERANCE_S,
    ) -> None:
        self.assembler = EpisodeAssembler(meta, reader, indexes=indexes, columns=columns, tolerance_s=tolerance_s)
        self.meta = meta
        super().__init__(self.assembler, budget_bytes=budget_bytes, prefetch_depth=prefetch_depth,
                         threads=threads)
