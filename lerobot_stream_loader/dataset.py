"""StreamingLeRobot: a torch IterableDataset over a LeRobot v3.0 dataset, local or remote.

``DataLoader(StreamingLeRobot(source, ...), batch_size=..., num_workers=...)`` yields, for the
samples each (rank, worker) is planned to read, exactly what ``LeRobotDataset[i]`` returns.
Metadata is read once in the constructor; each worker opens its own reader, cache and decoders.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from .collate import StreamingCollate
from .credentials import hide_secrets, with_url_credentials
from .decode import DecoderLRU
from .elastic import ElasticState, remaining_plan
from .episode_cache import DEFAULT_BUDGET_BYTES
from .episode_files import check_episode_files
from .features.depth import (
    DEFAULT_DEPTH_UNIT,
    check_depth_features,
    check_unit,
    is_depth_feature,
)
from .items import ItemBuilder
from .meta import DatasetMeta, load_meta
from .meta_view import LeRobotMeta
from .paths import is_local
from .plan import PlanEpisodes, group_episodes, plan_shard, samples_per_rank
from .plan_state import PlanState, fingerprint
from .process_local import ProcessLocal
from .ranks import resolve_rank, resolve_worker
from .rename import KeyRenamer, stored_names
from .sizing import MAX_AUTO_DECODERS, auto_pool_size, auto_shuffle_buffer
from .storage import open_root_reader
from .stream import WorkerResources, WorkerStream
from .windows import DEFAULT_TOLERANCE_S, DeltaWindows


def check_image_size(image_size: Sequence[int] | None, meta: DatasetMeta) -> tuple[int, int] | None:
    """``image_size`` as (height, width), checked: two positive integers, and only RGB video cameras
    (depth maps and images stored in parquet are not resized: asking for it raises)."""
    if image_size is None:
        return None
    size = tuple(int(x) for x in image_size)
    if len(size) != 2 or min(size) < 1 or any(int(x) != x for x in image_size):
        raise ValueError(f"image_size must be (height, width), two positive integers; got {image_size!r}")
    others = [key for key, f in meta.features.items()
              if f.get("dtype") == "image" or (f.get("dtype") == "video" and is_depth_feature(f))]
    if others:
        raise ValueError(f"{meta.root}: image_size resizes RGB video cameras only; {others} are depth maps or "
                         "images stored in parquet, which are not resized (select other data or leave image_size)")
    return size[0], size[1]


def plan_input(meta: DatasetMeta, episodes: np.ndarray) -> PlanEpisodes:
    """The planner's arrays for the selected episodes: lengths and the files each one reads."""
    table = meta.episode_table
    pos = table.positions(episodes)
    files = table.file_keys()[pos]
    return group_episodes(table.index[pos], table.length[pos], files[:, :2], files)


class StreamingLeRobot(ProcessLocal, IterableDataset):
    """Stream a LeRobot v3.0 dataset frame-exactly into training.

    Args:
        source: local folder, ``hf://datasets/<user>/<name>``, ``s3://...``, ``https://...``, or a bare
            ``user/name`` (a Hub dataset).
        episodes: restrict to these episode indices.
        delta_timestamps: ``{key: [dt, ...]}``: windows of frames/values around each sample (a renamed
            key by either name).
        rename: ``{stored key: new key}``: items (and ``<key>_is_pad``) carry the new names.
        image_transforms: callable applied to every camera tensor of an item, depth maps excepted (as LeRobot).
        image_size: ``(height, width)``: RGB video frames are resized to that size as they are decoded,
            by ``torch.nn.functional.interpolate(frames, size, mode="bilinear", antialias=True)`` on the
            uint8 frames (what torchvision's ``Resize`` does with uint8 tensors); a few full-size frames
            exist at a time, collation, shuffle buffer and float conversion handle the small ones.
        return_uint8: RGB video frames as uint8 instead of float32 in [0, 1] (as in LeRobot, depth maps and
            images stored in parquet stay float32).
        depth_output_unit: unit of depth maps and of their stats, ``"mm"`` (LeRobot's default) or ``"m"``.
        tolerance_s: largest allowed distance between a requested and a decoded frame time.
        shuffle: random episode order per epoch; frames decoded once, in order, as runs from
            ``pool_size`` open episodes, and mixed after decoding (see ``shuffle_buffer``, docs/shuffle.md).
        seed: seed of the plan; with the epoch it fixes the order on every machine.
        rank, world_size: this process's place in distributed training (default: torch.distributed,
            else the RANK/WORLD_SIZE environment, else a single process).
        drop_last: balance ranks by dropping samples instead of repeating a few.
        backend: ``"auto"``, ``"http"`` or ``"fsspec"`` (see :func:`lerobot_stream_loader.storage.open_reader`).
        revision: Hub revision (branch, tag or commit) of a Hub dataset.
        num_workers: not needed (``len()`` does not depend on the worker count); when given, a
            DataLoader running another number of workers is reported with a warning.
        pool_size: episodes open (fetched, decoders positioned) at once when shuffling: what buys
            shuffle quality (docs/shuffle.md). Default: as many as fit in three quarters of
            ``cache_bytes`` (estimated from the MP4 sizes), 4..64.
        shuffle_buffer: decoded samples a worker holds when shuffling: a batch draws from about the
            last ``shuffle_buffer`` decoded samples (``run = shuffle_buffer // (2 * pool_size)``
            frames are decoded per turn). The decoded-frame budget of a worker is
            ``shuffle_buffer + run`` samples of uint8 frames (converted to float32 when yielded).
            Default: as many samples as fit in 256 MiB of uint8 frames, 32..4096 (145 for two 640x480
            cameras).
        cache_bytes: per-worker byte budget of fetched episodes.
        prefetch_episodes: episodes fetched ahead of the one being read.
        fetch_threads: per-worker threads that fetch episodes.
        decoders: open decoders kept per worker (one per resident episode and camera). Default: enough for
            the open pool, at most 128 (an open decoder holds a few frames: about 3 MB at 640x480).
        storage_options: fsspec options (credentials, endpoints) for metadata and the fsspec backend.
        cache_dir: this machine's cache folder (metadata of remote datasets, index sidecars), shared by
            every rank and worker; default ``$LEROBOT_STREAM_CACHE``, else ``~/.cache/lerobot_stream_loader``.
        disk_cache_bytes: keep fetched episode bytes in ``cache_dir`` (folder ``episodes/`` of the
            dataset), up to this many bytes for the whole machine, least recently used evicted: from
            the second epoch on, cached episodes are read from local disk, not the network. Entries are
            atomic and checksummed (a torn or corrupt one is fetched again). 0 (default): off.
        reader_options: extra keyword arguments for the range reader (timeouts, retries, coalescing).
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        episodes: Sequence[int] | None = None,
        delta_timestamps: Mapping[str, Sequence[float]] | None = None,
        rename: Mapping[str, str] | None = None,
        image_transforms: Callable[[torch.Tensor], torch.Tensor] | None = None,
        image_size: tuple[int, int] | None = None,
        return_uint8: bool = False,
        depth_output_unit: str = DEFAULT_DEPTH_UNIT,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        backend: str = "auto",
        revision: str | None = None,
        num_workers: int | None = None,
        pool_size: int | None = None,
        shuffle_buffer: int | None = None,
        cache_bytes: int = DEFAULT_BUDGET_BYTES,
        prefetch_episodes: int = 4,
        fetch_threads: int = 4,
        decoders: int | None = None,
        storage_options: dict[str, Any] | None = None,
        reader_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        disk_cache_bytes: int = 0,
    ) -> None:
        super().__init__()
        source, reader_options = with_url_credentials(os.fspath(source), reader_options)
        self.meta = LeRobotMeta(load_meta(source, revision=revision, storage_options=storage_options,
                                          backend=backend, reader_options=reader_options, cache_dir=cache_dir,
                                          check_files=False))
        self.episodes = self._select(episodes)
        self.rename = KeyRenamer(rename, self.meta.features, where=self.meta.root)
        delta_timestamps = stored_names(self.rename, delta_timestamps)
        if is_local(self.meta.root):  # only the selected episodes' files must be there
            check_episode_files(self.meta.source, self.episodes,
                                lambda path: os.path.isfile(os.path.join(self.meta.root, path)))
        self.windows = (DeltaWindows(delta_timestamps, fps=self.meta.fps, features=self.meta.features,
                                     tolerance_s=tolerance_s) if delta_timestamps else None)
        if (rank is None) != (world_size is None):
            raise ValueError(f"give both rank and world_size or neither (rank={rank}, world_size={world_size})")
        if disk_cache_bytes < 0:
            raise ValueError(f"disk_cache_bytes must be >= 0 (0: no disk cache), got {disk_cache_bytes}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if (pool_size is not None and pool_size < 1) or (shuffle_buffer is not None and shuffle_buffer < 1) \
                or cache_bytes < 1 or prefetch_episodes < 1 or fetch_threads < 1 \
                or (decoders is not None and decoders < 1):
            raise ValueError("pool_size, shuffle_buffer, cache_bytes, prefetch_episodes, fetch_threads, decoders "
                             "must be >= 1")
        self.depth_output_unit = check_unit(depth_output_unit)
        check_depth_features(self.meta.root, self.meta.features)
        self.meta.rescale_depth_stats(self.depth_output_unit)
        self.image_transforms = image_transforms
        self.image_size = check_image_size(image_size, self.meta.source)
        self.return_uint8 = return_uint8
        self.tolerance_s = tolerance_s
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self._rank, self._world_size = rank, world_size
        self.num_workers = num_workers
        if pool_size is None and not shuffle:
            pool_size = 1  # without shuffle one episode at a time is read, in order
        elif pool_size is None:
            with open_root_reader(self.meta.root, backend=backend, storage_options=storage_options,
                                  reader_options=reader_options) as reader:
                pool_size = auto_pool_size(self.meta.source, cache_bytes, reader.size, episodes=self.episodes)
        self.pool_size = pool_size
        self.shuffle_buffer = shuffle_buffer or auto_shuffle_buffer(self.meta.source, self.image_size)
        if decoders is None:
            resident = pool_size if shuffle else 1
            decoders = min(MAX_AUTO_DECODERS, max(1, resident * len(self.meta.video_keys)))
        self.decoders = decoders
        self.settings = dict(backend=backend, storage_options=hide_secrets(storage_options),
                             reader_options=hide_secrets(reader_options or {}),
                             cache_bytes=cache_bytes, prefetch_episodes=prefetch_episodes,
                             fetch_threads=fetch_threads, cache_dir=cache_dir, disk_cache_bytes=disk_cache_bytes)
        self._plan_episodes = plan_input(self.meta, self.episodes)
        self._epoch = multiprocessing.Value("q", 0, lock=False)
        self._consumed = 0
        self._fingerprints: dict[tuple[int, int], str] = {}
        self._loaded: PlanState | ElasticState | None = None
        self._resources: WorkerResources | None = None
        self._collate_converts: set[str] = set()  # stored keys whose frames a StreamingCollate converts

    def __getstate__(self) -> dict[str, Any]:
        """What a worker receives: arrays it can derive from the metadata are left out, so a spawned
        worker's pickle stays small. (Python writes it to the worker's pipe before the worker has
        imported anything; a pickle over the pipe's 64 KiB holds up the start of the next worker until
        this one has imported torch: with 4 MB at 100k episodes, two spawned workers started one
        after the other, 5.5 s to the first batch instead of 3.)"""
        state = super().__getstate__()
        state["_plan_episodes"] = None  # plan_input(): 35 ms at 100k episodes
        if self.episodes is self.meta.episode_table.index:
            state["episodes"] = None  # every episode: the table's own index
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.episodes is None:
            self.episodes = self.meta.episode_table.index
        self._plan_episodes = plan_input(self.meta, self.episodes)

    def _select(self, episodes: Sequence[int] | None) -> np.ndarray:
        known = self.meta.episode_table.index
        if episodes is None:
            return known
        chosen = np.unique(np.asarray(list(episodes), dtype=np.int64))
        missing = np.setdiff1d(chosen, known)
        if len(missing):
            raise ValueError(f"{self.meta.root}: episodes {missing[:10].tolist()} do not exist "
                             f"(the dataset has episodes {int(known[0])}..{int(known[-1])})")
        if not len(chosen):
            raise ValueError("episodes=[] selects nothing")
        return chosen

    # -- what LeRobotDataset offers beside meta ---------------------------------------------------------
    @property
    def features(self) -> dict[str, dict[str, Any]]:
        """The features of info.json (``meta.features``)."""
        return self.meta.features

    @property
    def fps(self) -> int:
        return self.meta.fps

    @property
    def num_episodes(self) -> int:
        """Episodes selected (all of them without ``episodes=``)."""
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        """Frames of the selected episodes (LeRobot's ``num_frames``; ``len()`` is the per-rank count)."""
        return int(self._plan_episodes.length.sum())

    @property
    def collate_fn(self) -> StreamingCollate:
        """``default_collate``'s batches with fewer copies (see :mod:`~lerobot_stream_loader.collate`):
        ``DataLoader(dataset, batch_size=..., collate_fn=dataset.collate_fn)``."""
        return StreamingCollate(self.rename.name(key) for key in self._builder().float_frame_keys())

    def _defer_float_frames(self, keys: frozenset[str]) -> None:
        """In a worker whose collate converts these (new-name) RGB video keys: leave them uint8."""
        stored = {self.rename.stored(k) for k in keys}
        self._collate_converts.update(set(self._builder().float_frame_keys()) & stored)

    # -- epochs, length and state ------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use the plan of ``epoch`` from the next iteration on (also in persistent workers)."""
        self._epoch.value = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        return resolve_rank(self._rank, self._world_size)

    def __len__(self) -> int:
        """Samples this rank yields per epoch, all DataLoader workers together: ``ceil(frames / world_size)``
        (``floor`` with ``drop_last``). The same on every rank, in every epoch, for any worker count."""
        _, world = self._rank_world()
        return samples_per_rank(self._plan_episodes, world_size=world, drop_last=self.drop_last)

    def _fingerprint(self, world: int, workers: int) -> str:
        key = (world, max(workers, 1))
        if key not in self._fingerprints:
            self._fingerprints[key] = fingerprint(
                self._plan_episodes, world_size=world, num_workers=workers, seed=self.seed,
                shuffle=self.shuffle, drop_last=self.drop_last, pool_size=self.pool_size,
                shuffle_buffer=self.shuffle_buffer)
        return self._fingerprints[key]

    def state_dict(self) -> dict[str, Any]:
        """Where this reader is in its plan: a few integers (for StatefulDataLoader)."""
        rank, world = self._rank_world()
        worker, workers = resolve_worker()
        return PlanState(epoch=self.epoch, consumed=self._consumed, rank=rank, world_size=world,
                         worker_id=worker, num_workers=workers,
                         fingerprint=self._fingerprint(world, workers)).to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration skips the samples already consumed.

        A reader's state saved with another world size or worker count raises ``ValueError`` when
        iterating; to resume on another world size or worker count load
        :func:`~lerobot_stream_loader.elastic.elastic_state` of one rank's ``StatefulDataLoader`` state
        instead (before the DataLoader starts its workers): the rest of the interrupted epoch is then
        spread over the new readers (see :mod:`lerobot_stream_loader.elastic` for the bound).
        """
        loaded = ElasticState.from_dict(state) if isinstance(state.get("consumed"), list | tuple) \
            else PlanState.from_dict(dict(state))
        self._loaded = loaded
        self.set_epoch(loaded.epoch)

    # -- iteration -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = self._rank_world()
        worker, workers = resolve_worker()
        if self.num_workers is not None and max(self.num_workers, 1) != workers and worker == 0:
            warnings.warn(f"StreamingLeRobot(num_workers={self.num_workers}) but the DataLoader runs {workers} "
                          "worker(s); the argument is not needed (len() does not depend on it)", stacklevel=2)
        options = dict(seed=self.seed, shuffle=self.shuffle, drop_last=self.drop_last, pool_size=self.pool_size,
                       shuffle_buffer=self.shuffle_buffer, rank=rank, world_size=world, worker_id=worker,
                       num_workers=workers)
        loaded, self._loaded = self._loaded, None
        skip = 0
        if isinstance(loaded, ElasticState) and loaded.epoch == self.epoch:  # later epochs: the new plan
            if loaded.fingerprint != self._fingerprint(loaded.world_size, loaded.num_workers):
                raise ValueError("the elastic state was saved for a different plan (seed, shuffle, drop_last, "
                                 "pool_size or episode list differ)")
            plan = remaining_plan(self._plan_episodes, loaded, **options)
        else:
            plan = plan_shard(self._plan_episodes, epoch=self.epoch, **options)
            if loaded is not None:
                loaded.check(rank=rank, worker_id=worker, world_size=world, num_workers=workers,
                             fingerprint=self._fingerprint(world, workers))
                skip = loaded.consumed
        self._consumed = skip
        resources = self._worker_resources()
        stream = WorkerStream(resources, plan.skip(skip), self._builder(),
                              prefetch=self.settings["prefetch_episodes"])
        try:
            for item in stream:
                self._consumed += 1
                yield self.rename.item(item)
        finally:
            stream.close()

    def _worker_resources(self) -> WorkerResources:
        """Reader and file indexes of this process, kept across epochs (never shared across processes)."""
        if self._resources is None or self._resources.pid != os.getpid():
            self._resources = WorkerResources.open(self.meta.source, **self.settings)
        return self._resources

    def _builder(self, decoders: DecoderLRU | None = None) -> ItemBuilder:
        """Items with this dataset's options, stored key names (a mixture passes its own decoder LRU)."""
        return ItemBuilder(self.meta.source, windows=self.windows, tolerance_s=self.tolerance_s,
                           return_uint8=self.return_uint8, image_transforms=self.image_transforms,
                           decoders=decoders if decoders is not None else DecoderLRU(self.decoders),
                           depth_output_unit=self.depth_output_unit, image_size=self.image_size,
                           collate_converts=self._collate_converts)

    def __repr__(self) -> str:
        return (f"StreamingLeRobot({self.meta.root!r}, episodes={len(self.episodes)}, shuffle={self.shuffle}, "
                f"seed={self.seed}, epoch={self.epoch})")
