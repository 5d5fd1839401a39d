"""One worker's mixture stream: each source's stream of items, interleaved as the plan says.

The sources share the worker's resources: one :class:`FetchCache` (one byte budget, one set of
fetch threads, one in-flight limit) keyed by (source, episode), and one decoder LRU keyed by
(source, episode, camera). Each source keeps its own reader, file indexes and item options.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import numpy as np

from ..fetch.assembly import EpisodeAssembler, EpisodeData
from ..fetch.bad_episodes import BadEpisodes
from ..fetch.episode_cache import FetchCache
from ..fetch.file_indexes import IndexCaches
from ..items.decode import DecoderKey, DecoderLRU, EpisodeVideoDecoder
from ..stream import WorkerResources, WorkerStream
from .plan import ReaderPlan


class SourceCacheView:
    """Source ``number``'s episodes in the mixture's shared cache."""

    def __init__(self, cache: FetchCache[tuple[int, int]], number: int) -> None:
        self.cache, self.number = cache, number

    def prefetch(self, episode: int) -> None:
        self.cache.prefetch((self.number, episode))

    def get(self, episode: int) -> EpisodeData:
        return self.cache.get((self.number, episode))

    def release(self, episode: int) -> None:
        self.cache.release((self.number, episode))


class SourceDecoderView:
    """Source ``number``'s decoders in the mixture's shared decoder LRU (the DecoderLRU interface)."""

    def __init__(self, lru: DecoderLRU, number: int) -> None:
        self.lru, self.number = lru, number

    def get(self, key: DecoderKey, open_decoder: Callable[[], EpisodeVideoDecoder]) -> EpisodeVideoDecoder:
        return self.lru.get((self.number, key), open_decoder)

    def discard(self, predicate: Callable[[DecoderKey], bool]) -> None:
        self.lru.discard(lambda key: key[0] == self.number and predicate(key[1]))

    def clear(self) -> None:
        self.lru.discard(lambda key: key[0] == self.number)

    def keys(self) -> list[DecoderKey]:
        return [key[1] for key in self.lru.keys() if key[0] == self.number]

    def __len__(self) -> int:
        return len(self.keys())


class MixtureResources:
    """What one process keeps across epochs: each source's reader, file indexes and episode assembler,
    opened on first use (from the fetch threads: sources open in parallel, each once); the parsed
    MP4 indexes and parquet footers of all sources share one bounded cache."""

    def __init__(self, open_source: Callable[[int, IndexCaches], WorkerResources], tolerances: list[float]) -> None:
        self.pid = os.getpid()
        self.open_source = open_source
        self.index_caches = IndexCaches()
        self.tolerances = tolerances
        self.sources: dict[int, tuple[WorkerResources, EpisodeAssembler]] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def assembler(self, number: int) -> EpisodeAssembler:
        """Source ``number``'s episode assembler, its reader opened now if needed."""
        opened = self.sources.get(number)
        if opened is None:
            with self._lock:
                lock = self._locks.setdefault(number, threading.Lock())
            with lock:
                opened = self.sources.get(number)
                if opened is None:
                    res = self.open_source(number, self.index_caches)
                    opened = self.sources[number] = (res, EpisodeAssembler(
                        res.meta, res.reader, indexes=res.indexes, tolerance_s=self.tolerances[number]))
        return opened[1]

    def fetch(self, key: tuple[int, int]) -> EpisodeData:
        """Episode ``key[1]`` of source ``key[0]`` (the shared cache's fetch function)."""
        return self.assembler(key[0])(key[1])

    def close(self) -> None:
        for resources, _ in self.sources.values():
            resources.close()
        self.sources.clear()

    def io_counters(self) -> dict[str, int]:
        """Storage counters of every source opened in this process, summed."""
        out: dict[str, int] = {}
        for resources, _ in list(self.sources.values()):
            for name, value in resources.io_counters().items():
                out[name] = out.get(name, 0) + value
        return out


class MixtureSettings(TypedDict):
    """A mixture's options for :class:`MixtureStream` (its ``settings``, passed as keywords)."""

    cache_bytes: int
    fetch_threads: int
    prefetch_depth: int
    prefetch: list[int]
    decoders: int


class MixtureStream:
    """Iterates a reader's plan: ``(source number, item)`` in the plan's order."""

    def __init__(self, plan: ReaderPlan, resources: MixtureResources, builders: list[Any], *,
                 cache_bytes: int, fetch_threads: int, prefetch_depth: int, prefetch: list[int],
                 decoders: int, bad: list[BadEpisodes] | None = None) -> None:
        """``bad``: each source's policy on bad episodes (default: raise)."""
        self.plan = plan
        self.cache = FetchCache(resources.fetch, budget_bytes=cache_bytes,
                                prefetch_depth=prefetch_depth, threads=fetch_threads)
        self.decoders = DecoderLRU(decoders)
        self.streams: dict[int, WorkerStream] = {}
        for i, source_plan in enumerate(plan.plans):
            if source_plan is None:
                continue
            builder = builders[i](SourceDecoderView(self.decoders, i))
            # no resources: they only serve a stream's own cache; the sources open theirs on first fetch
            self.streams[i] = WorkerStream(None, source_plan, builder, prefetch=prefetch[i],  # type: ignore[arg-type]
                                           cache=SourceCacheView(self.cache, i),
                                           bad=bad[i] if bad is not None else None)

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        self._prefetch_first_episodes()
        items = {i: iter(stream) for i, stream in self.streams.items()}
        for number in self.plan.source_of.tolist():
            yield number, next(items[number])

    def _prefetch_first_episodes(self) -> None:
        """Queue every source's first episode, in the order the sources first appear: a stream asks for
        its episodes only when it is first read, and the first batches read many sources."""
        _, first = np.unique(self.plan.source_of, return_index=True)
        for number in self.plan.source_of[np.sort(first)].tolist():
            plan = self.plan.plans[number]
            if plan is not None and len(plan):
                segment = int(plan.segment[int(np.argmin(plan.decode_rank))])
                self.cache.prefetch((number, int(plan.admit_episodes[segment])))

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
        self.cache.close()
        self.decoders.clear()
