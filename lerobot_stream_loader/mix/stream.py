"""One worker's mixture stream: each source's stream of items, interleaved as the plan says.

The sources share the worker's resources: one :class:`FetchCache` (one byte budget, one set of
fetch threads, one in-flight limit) keyed by (source, episode), and one decoder LRU keyed by
(source, episode, camera). Each source keeps its own reader, file indexes and item options.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..decode import DecoderLRU, EpisodeVideoDecoder
from ..episode_assembly import EpisodeAssembler, EpisodeData
from ..episode_cache import FetchCache
from ..stream import WorkerResources, WorkerStream
from .plan import ReaderPlan


class SourceCacheView:
    """Source ``number``'s episodes in the mixture's shared cache."""

    def __init__(self, cache: FetchCache, number: int) -> None:
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

    def get(self, key: Hashable, open_decoder: Callable[[], EpisodeVideoDecoder]) -> EpisodeVideoDecoder:
        return self.lru.get((self.number, key), open_decoder)

    def discard(self, predicate: Callable[[Hashable], bool]) -> None:
        self.lru.discard(lambda key: key[0] == self.number and predicate(key[1]))  # type: ignore[index]

    def clear(self) -> None:
        self.lru.discard(lambda key: key[0] == self.number)  # type: ignore[index]

    def keys(self) -> list[Hashable]:
        return [key[1] for key in self.lru.keys() if key[0] == self.number]  # type: ignore[index]

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class MixtureResources:
    """What one process keeps across epochs: each source's reader and file indexes, opened on first use."""

    pid: int
    open_source: Callable[[int], WorkerResources]
    sources: dict[int, WorkerResources] = field(default_factory=dict)

    def source(self, number: int) -> WorkerResources:
        if number not in self.sources:
            self.sources[number] = self.open_source(number)
        return self.sources[number]

    def close(self) -> None:
        for resources in self.sources.values():
            resources.close()
        self.sources.clear()


def new_resources(open_source: Callable[[int], WorkerResources]) -> MixtureResources:
    return MixtureResources(os.getpid(), open_source)


class MixtureStream:
    """Iterates a reader's plan: ``(source number, item)`` in the plan's order."""

    def __init__(self, plan: ReaderPlan, resources: MixtureResources, builders: list[Any], *,
                 cache_bytes: int, fetch_threads: int, prefetch_depth: int, prefetch: list[int],
                 decoders: int) -> None:
        self.plan = plan
        numbers = [i for i, p in enumerate(plan.plans) if p is not None]
        self.decoders = DecoderLRU(decoders)
        built = {i: builders[i](SourceDecoderView(self.decoders, i)) for i in numbers}
        assemblers: dict[int, EpisodeAssembler] = {}
        for i in numbers:
            res = resources.source(i)
            assemblers[i] = EpisodeAssembler(res.meta, res.reader, indexes=res.indexes,
                                             tolerance_s=built[i].tolerance_s)
        self.cache = FetchCache(lambda key: assemblers[key[0]](key[1]),  # type: ignore[index]
                                budget_bytes=cache_bytes, prefetch_depth=prefetch_depth, threads=fetch_threads)
        self.streams: dict[int, WorkerStream] = {}
        for i in numbers:
            self.streams[i] = WorkerStream(resources.source(i), plan.plans[i], built[i],  # type: ignore[arg-type]
                                           prefetch=prefetch[i], cache=SourceCacheView(self.cache, i))

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        items = {i: iter(stream) for i, stream in self.streams.items()}
        for number in self.plan.source_of.tolist():
            yield number, next(items[number])

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
        self.cache.close()
        self.decoders.clear()
