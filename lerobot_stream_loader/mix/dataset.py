"""MixedStreamingLeRobot: several LeRobot datasets streamed as one, each seen as often as its weight says.

``DataLoader(MixedStreamingLeRobot([StreamingLeRobot(a), StreamingLeRobot(b)], weights=[0.7, 0.3]))``
yields the sources' own items (renamed, reduced to the mixture's keys, plus ``dataset_index``),
interleaved within every batch in proportion to the weights. The plan is
:mod:`lerobot_stream_loader.mix.plan`; the worker's resources are shared as
:mod:`lerobot_stream_loader.mix.budget` says.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from ..collate import StreamingCollate
from ..dataset import StreamingLeRobot
from ..elastic import ElasticState
from ..episode_cache import DEFAULT_BUDGET_BYTES
from ..file_indexes import IndexCaches
from ..meta_view import LeRobotMeta
from ..plan_state import PlanState
from ..process_local import ProcessLocal
from ..ranks import resolve_rank, resolve_worker
from ..sizing import MAX_AUTO_DECODERS
from ..stream import WorkerResources
from . import budget
from .elastic import remaining_reader_plan
from .plan import SourceEpisodes, fingerprint, plan_reader, samples_per_rank, source_counts
from .schema import Schema, source_spec
from .stats import mixture_stats
from .stream import MixtureResources, MixtureStream


@dataclass(frozen=True)
class MixtureMeta:
    """What a mixture is made of: the sources' metadata, the kept features (new names) and their stats."""

    sources: list[LeRobotMeta]  # each source's own meta
    features: dict[str, dict[str, Any]]
    stats: dict[str, dict[str, np.ndarray]]
    camera_keys: list[str]
    total_frames: int
    total_episodes: int


class MixedStreamingLeRobot(ProcessLocal, IterableDataset):
    """Stream a weighted mixture of :class:`StreamingLeRobot` sources.

    Args:
        sources: the datasets, each with its own options (episodes, delta_timestamps, rename,
            image_transforms, tolerance_s, backend, credentials). Their rank and world size must not
            be set, and their shuffle, seed, drop_last and resource options are not used: the
            mixture's apply.
        weights: share of each source in an epoch's samples (default: proportional to its frames).
        samples_per_epoch: samples of an epoch over all ranks (default: the sources' frames together).
        seed, shuffle: as for StreamingLeRobot; the epoch's draws depend only on (seed, epoch).
        rank, world_size, drop_last: as for StreamingLeRobot; every rank yields ``len(self)`` samples.
        features: ``"intersection"`` keeps the keys every source has; ``"union"`` keeps all, filling a
            missing key with zeros and setting ``<key>_is_missing``.
        pool_size: open episodes per worker with shuffle, all sources together (default: as many
            as fit in three quarters of ``cache_bytes``), at least one per source.
        shuffle_buffer: decoded samples per worker waiting to be mixed, all sources together (default:
            each source's share of the decoded-frame budget a single dataset gets).
        cache_bytes, prefetch_episodes, fetch_threads: the worker's byte budget, fetches in flight and
            fetch threads, shared by all sources.
        decoders: open decoders per worker, all sources together (default: enough for the open
            episodes, capped as for a single dataset).
    """

    def __init__(
        self,
        sources: Sequence[StreamingLeRobot],
        *,
        weights: Sequence[float] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        features: str = "intersection",
        pool_size: int | None = None,
        shuffle_buffer: int | None = None,
        cache_bytes: int = DEFAULT_BUDGET_BYTES,
        prefetch_episodes: int = 4,
        fetch_threads: int = 4,
        decoders: int | None = None,
    ) -> None:
        super().__init__()
        self.sources = _check_sources(sources)
        self._episodes = [_source_episodes(s) for s in self.sources]
        frames = np.array([e.frames for e in self._episodes], dtype=np.int64)
        self.weights = _check_weights(weights, frames)
        self.samples_per_epoch = _check_total(samples_per_epoch, int(frames.sum()))
        self.counts = source_counts(self.weights, self.samples_per_epoch)
        if (rank is None) != (world_size is None):
            raise ValueError(f"give both rank and world_size or neither (rank={rank}, world_size={world_size})")
        if any(v is not None and v < 1 for v in (pool_size, shuffle_buffer, decoders)) or cache_bytes < 1 \
                or prefetch_episodes < 1 or fetch_threads < 1:
            raise ValueError("pool_size, shuffle_buffer, cache_bytes, prefetch_episodes, fetch_threads, decoders "
                             "must be >= 1")
        names = [s.meta.root for s in self.sources]
        self.schema = Schema([source_spec(s) for s in self.sources], names, features)
        self.features = features
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self._rank, self._world_size = rank, world_size
        sizes = budget.episode_bytes(self.sources) if shuffle and pool_size is None else None
        self.pool_sizes = budget.pool_sizes(self.counts, shuffle=shuffle, pool_size=pool_size,
                                            cache_bytes=cache_bytes, sizes=sizes)
        self.shuffle_buffers = budget.shuffle_buffers(self.counts, self.sources, shuffle_buffer)
        resident = sum(p * max(1, len(s.meta.video_keys)) for p, s in zip(self.pool_sizes, self.sources,
                                                                           strict=True))
        self.decoders = decoders or min(MAX_AUTO_DECODERS, resident)
        self.settings = dict(cache_bytes=cache_bytes, fetch_threads=fetch_threads, prefetch_depth=prefetch_episodes,
                             prefetch=budget.prefetch_depths(self.counts, prefetch_episodes), decoders=self.decoders)
        self.meta = self._meta()
        self._epoch = multiprocessing.Value("q", 0, lock=False)
        self._consumed = 0
        self._loaded: PlanState | ElasticState | None = None
        self._resources: MixtureResources | None = None

    def _meta(self) -> MixtureMeta:
        kept: dict[str, dict[str, Any]] = {}
        for source in self.sources:
            for key, feature in source.rename.keys(source.meta.features).items():
                if key in self.schema.keys:
                    kept.setdefault(key, feature)
        stats = mixture_stats((s.rename.keys(s.meta.stats) for s in self.sources), kept)
        cameras = [k for k, f in kept.items() if f.get("dtype") in ("video", "image")]
        return MixtureMeta([s.meta for s in self.sources], kept, stats, cameras,
                           sum(e.frames for e in self._episodes), sum(len(e.index) for e in self._episodes))

    @property
    def collate_fn(self) -> StreamingCollate:
        """``default_collate``'s batches with fewer copies (see :mod:`~lerobot_stream_loader.collate`)."""
        return StreamingCollate(self._float_frame_keys())

    def _float_frame_keys(self) -> set[str]:
        """Float32 RGB video keys (new names) that every source holding them can leave uint8."""
        per_source = [{s.rename.name(k) for k in s._builder().float_frame_keys()} for s in self.sources]
        return {key for key, spec in self.schema.keys.items() if spec.dtype == torch.float32 and
                all(key in keys for keys, has in zip(per_source, self.schema.has, strict=True) if key in has)}

    def _defer_float_frames(self, keys: frozenset[str]) -> None:
        """In a worker whose collate converts these RGB video keys: the sources leave them uint8."""
        keys = frozenset(keys) & self._float_frame_keys()
        self.schema.collate_converts.update(keys)
        for source in self.sources:
            source._defer_float_frames(keys)

    # -- epochs, length and state ------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use the plan of ``epoch`` from the next iteration on (also in persistent workers)."""
        self._epoch.value = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        return resolve_rank(self._rank, self._world_size)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (the same on every rank, for any worker count)."""
        _, world = self._rank_world()
        return samples_per_rank(self.samples_per_epoch, world, self.drop_last)

    def _fingerprint(self, world: int, workers: int) -> str:
        return fingerprint(self._episodes, self.counts, world_size=world, num_workers=workers, seed=self.seed,
                           shuffle=self.shuffle, drop_last=self.drop_last, pool_sizes=self.pool_sizes,
                           shuffle_buffers=self.shuffle_buffers)

    def state_dict(self) -> dict[str, Any]:
        """Where this reader is in its plan: a few integers (for StatefulDataLoader)."""
        rank, world = self._rank_world()
        worker, workers = resolve_worker()
        return PlanState(epoch=self.epoch, consumed=self._consumed, rank=rank, world_size=world,
                         worker_id=worker, num_workers=workers,
                         fingerprint=self._fingerprint(world, workers)).to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration skips the samples already consumed.

        On another world size or worker count load :func:`~lerobot_stream_loader.elastic.elastic_state`
        of one rank's ``StatefulDataLoader`` state instead (or use
        :class:`~lerobot_stream_loader.StreamingDataLoader`): the rest of the interrupted epoch is
        spread over the new readers (:mod:`lerobot_stream_loader.mix.elastic`).
        """
        loaded = ElasticState.from_dict(state) if isinstance(state.get("consumed"), list | tuple) \
            else PlanState.from_dict(dict(state))
        self._loaded = loaded
        self.set_epoch(loaded.epoch)

    # -- iteration -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = self._rank_world()
        worker, workers = resolve_worker()
        options = dict(pool_sizes=self.pool_sizes, shuffle_buffers=self.shuffle_buffers, seed=self.seed,
                       rank=rank, world_size=world, worker_id=worker, num_workers=workers, shuffle=self.shuffle,
                       drop_last=self.drop_last)
        loaded, self._loaded = self._loaded, None
        skip = 0
        if isinstance(loaded, ElasticState) and loaded.epoch == self.epoch:  # later epochs: the new plan
            if loaded.fingerprint != self._fingerprint(loaded.world_size, loaded.num_workers):
                raise ValueError("the elastic state was saved for a different mixture plan (sources, weights, "
                                 "samples_per_epoch, seed, shuffle, drop_last or pool sizes differ)")
            plan = remaining_reader_plan(self._episodes, self.counts, loaded, **options)
        else:
            plan = plan_reader(self._episodes, self.counts, epoch=self.epoch, **options)
        if isinstance(loaded, PlanState):
            loaded.check(rank=rank, worker_id=worker, world_size=world, num_workers=workers,
                         fingerprint=self._fingerprint(world, workers))
            skip = loaded.consumed
        self._consumed = skip
        builders = [s._builder for s in self.sources]
        stream = MixtureStream(plan.skip(skip), self._worker_resources(), builders, **self.settings)
        try:
            for number, item in stream:
                self._consumed += 1
                yield self.schema.adapt(self.sources[number].rename.item(item), number)
        finally:
            stream.close()

    def _worker_resources(self) -> MixtureResources:
        if self._resources is None or self._resources.pid != os.getpid():
            self._resources = MixtureResources(partial(_open_source, self.sources),
                                               [s.tolerance_s for s in self.sources])
        return self._resources

    def __repr__(self) -> str:
        shown = ", ".join(f"{s.meta.root!r}: {int(c)}" for s, c in zip(self.sources, self.counts, strict=True))
        return (f"MixedStreamingLeRobot({{{shown}}}, samples_per_epoch={self.samples_per_epoch}, "
                f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})")


def _open_source(sources: Sequence[StreamingLeRobot], number: int, index_caches: IndexCaches) -> WorkerResources:
    """Source ``number``'s reader and indexes in this process, with its share of the reader threads
    (its parsed indexes in the caches all sources share)."""
    settings = dict(sources[number].settings)
    options = dict(settings["reader_options"])
    requested = options.pop("threads", None) or options.pop("max_workers", None)
    options["max_workers"] = budget.reader_threads(requested, len(sources))
    if budget.http_reader(sources[number].meta.root, settings["backend"]) and len(sources) > budget.READER_THREADS:
        options.setdefault("keepalive", False)  # connections in use only: not one idle per source
    settings["reader_options"] = options
    return WorkerResources.open(sources[number].meta.source, **settings, index_caches=index_caches)


def _check_sources(sources: Sequence[StreamingLeRobot]) -> list[StreamingLeRobot]:
    if isinstance(sources, (str, bytes, os.PathLike)) or not isinstance(sources, Sequence):
        raise TypeError(f"sources must be a list of StreamingLeRobot, got {type(sources).__name__}")
    if not sources:
        raise ValueError("MixedStreamingLeRobot needs at least one source; got an empty list")
    for i, source in enumerate(sources):
        if not isinstance(source, StreamingLeRobot):
            raise TypeError(f"source {i} is a {type(source).__name__}, not a StreamingLeRobot")
        if source._rank is not None or source._world_size is not None:
            raise ValueError(f"source {i} ({source.meta.root}) was given rank={source._rank}, "
                             f"world_size={source._world_size}; ranks belong to the mixture: pass them to "
                             "MixedStreamingLeRobot instead")
    return list(sources)


def _source_episodes(source: StreamingLeRobot) -> SourceEpisodes:
    index = np.asarray(source.episodes, dtype=np.int64)
    known = np.asarray(source.meta.episode_indices, dtype=np.int64)
    return SourceEpisodes(index, np.asarray(source.meta.lengths, dtype=np.int64)[np.searchsorted(known, index)])


def _check_weights(weights: Sequence[float] | None, frames: np.ndarray) -> np.ndarray:
    if weights is None:
        return frames / frames.sum()
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence | np.ndarray):
        raise TypeError(f"weights must be a list of numbers, got {type(weights).__name__}")
    values = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(values) != len(frames):
        raise ValueError(f"{len(values)} weights for {len(frames)} sources")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)}")
    if values.sum() <= 0:
        raise ValueError(f"weights are all zero ({list(weights)}): at least one source must have a weight > 0")
    return values / values.sum()


def _check_total(samples_per_epoch: int | None, frames: int) -> int:
    if samples_per_epoch is None:
        return frames
    if isinstance(samples_per_epoch, bool) or not isinstance(samples_per_epoch, int | np.integer) \
            or samples_per_epoch < 1:
        raise ValueError(f"samples_per_epoch must be a positive integer, got {samples_per_epoch!r}")
    return int(samples_per_epoch)
