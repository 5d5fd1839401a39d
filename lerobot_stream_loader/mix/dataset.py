"""MixedStreamingLeRobot: several LeRobot datasets streamed as one, each seen as often as its weight says.

``DataLoader(MixedStreamingLeRobot([StreamingLeRobot(a), StreamingLeRobot(b)], weights=[0.7, 0.3]))``
yields the sources' own items (renamed, reduced to the mixture's keys, plus ``dataset_index``),
interleaved within every batch in proportion to the weights. The plan is
:mod:`lerobot_stream_loader.mix.plan`; the worker's resources are shared as
:mod:`lerobot_stream_loader.mix.budget` says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..base import ReaderPlace, StreamingBase, check_resources
from ..dataset import StreamingLeRobot
from ..fetch.bad_episodes import BadEpisodes
from ..fetch.file_indexes import IndexCaches
from ..meta.depth import depth_keys
from ..meta.lerobot_view import LANGUAGE_COLUMNS, LeRobotMeta
from ..meta.stats import combine_datasets
from ..plan.elastic import ElasticState
from ..stream import WorkerResources
from . import budget
from .elastic import remaining_reader_plan
from .plan import ReaderPlan, SourceEpisodes, fingerprint, plan_reader, samples_per_rank, source_counts
from .schema import Schema, source_spec
from .stream import MixtureResources, MixtureSettings, MixtureStream

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass(frozen=True)
class MixtureMeta:
    """What a mixture is made of: the sources' metadata, the kept features (new names) and their stats."""

    sources: list[LeRobotMeta]  # each source's own meta
    features: dict[str, dict[str, Any]]
    stats: dict[str, dict[str, np.ndarray]]
    camera_keys: list[str]
    total_frames: int
    total_episodes: int

    # -- what LeRobot's training script and policy factories read, as LeRobotDatasetMetadata has it --------
    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "image"]

    @property
    def depth_keys(self) -> list[str]:
        """Kept cameras holding depth maps."""
        return depth_keys(self.features)

    @property
    def has_language_columns(self) -> bool:
        return any(column in self.features for column in LANGUAGE_COLUMNS)

    @property
    def fps(self) -> int | None:
        """The sources' frame rate; None when they differ (each source's windows use its own)."""
        rates = {s.fps for s in self.sources}
        return rates.pop() if len(rates) == 1 else None

    @property
    def robot_type(self) -> str | None:
        """The sources' robot type; None when they differ or record none."""
        kinds = {s.robot_type for s in self.sources}
        return kinds.pop() if len(kinds) == 1 else None

    @property
    def repo_id(self) -> str:
        """The sources' ids (:attr:`LeRobotMeta.repo_id`), comma-separated."""
        return ", ".join(s.repo_id for s in self.sources)

    @property
    def tasks(self) -> Any:
        """Every source's task strings once, as a pandas DataFrame indexed by the task with a ``task_index``
        column numbering them in this list (items keep their own source's ``task_index``)."""
        import pandas as pd

        texts = list(dict.fromkeys(t for s in self.sources for _, t in sorted(s.task_texts.items())))
        return pd.DataFrame({"task_index": np.arange(len(texts), dtype=np.int64)},
                            index=pd.Index(texts, name="task"))

    @property
    def total_tasks(self) -> int:
        return len({t for s in self.sources for t in s.task_texts.values()})


class MixedStreamingLeRobot(StreamingBase[ReaderPlan]):
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
        memory_budget: bytes one worker may hold, all sources together, split as for StreamingLeRobot
            (``mixture.memory``).
        cache_bytes, prefetch_episodes, fetch_threads: the worker's byte budget of fetched episodes
            (default: its share of ``memory_budget``), fetches in flight and fetch threads, shared by
            all sources.
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
        memory_budget: int | None = None,
        cache_bytes: int | None = None,
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
        check_resources(pool_size=pool_size, shuffle_buffer=shuffle_buffer, cache_bytes=cache_bytes,
                        prefetch_episodes=prefetch_episodes, fetch_threads=fetch_threads, decoders=decoders,
                        memory_budget=memory_budget)
        self.memory = budget.mixture_memory(self.sources, memory_budget, cache_bytes=cache_bytes,
                                            shuffle_buffer=shuffle_buffer, decoders=decoders)
        cache_bytes = self.memory.cache
        names = [s.meta.root for s in self.sources]
        self.schema = Schema([source_spec(s) for s in self.sources], names, features)
        self.features = features
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        sizes = budget.episode_bytes(self.sources) if shuffle and pool_size is None else None
        self.pool_sizes = budget.pool_sizes(self.counts, shuffle=shuffle, pool_size=pool_size,
                                            cache_bytes=cache_bytes, sizes=sizes)
        self.shuffle_buffers = budget.shuffle_buffers(self.counts, self.sources, shuffle_buffer, self.memory.decoded)
        self.decoders = decoders or budget.mixture_decoders(self.memory, self.sources, self.pool_sizes)
        self.settings: MixtureSettings = dict(
            cache_bytes=cache_bytes, fetch_threads=fetch_threads, prefetch_depth=prefetch_episodes,
            prefetch=budget.prefetch_depths(self.counts, prefetch_episodes), decoders=self.decoders)
        self.meta = self._meta()
        self._bad: list[BadEpisodes] = []  # each source's policy and findings in the current pass
        self._start(rank, world_size)

    def _meta(self) -> MixtureMeta:
        kept: dict[str, dict[str, Any]] = {}
        for source in self.sources:
            for key, feature in source.rename.keys(source.meta.features).items():
                if key in self.schema.keys:
                    kept.setdefault(key, feature)
        stats = combine_datasets((s.rename.keys(s.meta.stats) for s in self.sources), kept)
        cameras = [k for k, f in kept.items() if f.get("dtype") in ("video", "image")]
        return MixtureMeta([s.meta for s in self.sources], kept, stats, cameras,
                           sum(e.frames for e in self._episodes), sum(len(e.index) for e in self._episodes))

    def float_frame_keys(self) -> set[str]:
        """Float32 RGB video keys (new names) that every source holding them can leave uint8."""
        per_source = [s.float_frame_keys() for s in self.sources]
        return {key for key, spec in self.schema.keys.items() if spec.dtype == torch.float32 and
                all(key in keys for keys, has in zip(per_source, self.schema.has, strict=True) if key in has)}

    def defer_float_frames(self, keys: Iterable[str]) -> None:
        keys = frozenset(keys) & self.float_frame_keys()
        self.schema.collate_converts.update(keys)
        for source in self.sources:
            source.defer_float_frames(keys)

    # -- epochs, length and plans (the rest: StreamingBase) -------------------------------------------
    _plan_name = ("mixture plan (sources, weights, samples_per_epoch, seed, shuffle, drop_last or pool sizes "
                  "differ)")

    def _samples_per_rank(self, world: int) -> int:
        return samples_per_rank(self.samples_per_epoch, world, self.drop_last)

    def _skipped_now(self) -> list[dict[str, Any]]:
        return [{"source": i, "episode_index": e, "cause": c}
                for i, bad in enumerate(self._bad) for e, c in bad.found.items()]

    @property
    def skipped_episodes(self) -> list[dict[str, Any]]:
        """The episodes this process has skipped, per source: ``[{"source": i, "episode_index": N,
        "cause": "..."}]`` (workers': ``skipped_episodes(loader.state_dict())``)."""
        return [{"source": i, **e} for i, s in enumerate(self.sources) for e in s.skipped_episodes]

    def _fingerprint(self, world: int, workers: int) -> str:
        return fingerprint(self._episodes, self.counts, world_size=world, num_workers=workers, seed=self.seed,
                           shuffle=self.shuffle, drop_last=self.drop_last, pool_sizes=self.pool_sizes,
                           shuffle_buffers=self.shuffle_buffers)

    def _plan_options(self) -> dict[str, Any]:
        return dict(pool_sizes=self.pool_sizes, shuffle_buffers=self.shuffle_buffers, seed=self.seed,
                    shuffle=self.shuffle, drop_last=self.drop_last)

    def _fresh_plan(self, *, epoch: int, **place: Unpack[ReaderPlace]) -> ReaderPlan:
        return plan_reader(self._episodes, self.counts, epoch=epoch, **self._plan_options(), **place)

    def _elastic_plan(self, loaded: ElasticState, **place: Unpack[ReaderPlace]) -> ReaderPlan:
        return remaining_reader_plan(self._episodes, self.counts, loaded, **self._plan_options(), **place)

    # -- iteration -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan, _ = self._reader_plan()
        builders = [s._builder for s in self.sources]
        self._bad = [source._bad_episodes(len(p.admit_episodes) if p is not None else 0,
                                          [e for e in self._resumed_skipped if e.get("source") == i])
                     for i, (source, p) in enumerate(zip(self.sources, plan.plans, strict=True))]
        resources = self._worker_resources()
        stream = MixtureStream(plan, resources, builders, **self.settings, bad=self._bad)
        self._io_base, self._pass_cache = resources.io_counters(), stream.cache.stats
        yield from self._counted(stream, stream.close,
                                 lambda pair: self.schema.adapt(self.sources[pair[0]].rename.item(pair[1]), pair[0]))

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
    source = sources[number]
    location = source.meta.location
    given = location.reader_options
    overrides: dict[str, Any] = {"max_workers": budget.reader_threads(given.get("threads") or given.get("max_workers"),
                                                                      len(sources))}
    if budget.http_reader(location.root, location.backend) and len(sources) > budget.READER_THREADS \
            and "keepalive" not in given:
        overrides["keepalive"] = False  # connections in use only: not one idle per source
    return WorkerResources.open(source.meta.source, **source.settings, index_caches=index_caches,
                                reader_options=overrides)


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
