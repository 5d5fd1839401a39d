"""StreamingLeRobot: a torch IterableDataset over a LeRobot v3.0 dataset, local or remote.

``DataLoader(StreamingLeRobot(source, ...), batch_size=..., num_workers=...)`` yields, for the
samples each (rank, worker) is planned to read, exactly what ``LeRobotDataset[i]`` returns.
Metadata is read once in the constructor; each worker opens its own reader, cache and decoders.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .base import ReaderPlace, StreamingBase, check_resources
from .fetch.bad_episodes import DEFAULT_MAX_BAD_FRACTION, BadEpisodes, check_policy
from .fetch.frame_match import DEFAULT_TOLERANCE_S
from .items.builder import ItemBuilder
from .items.decode import DecoderLRU
from .items.rename import KeyRenamer, stored_names
from .items.windows import DeltaWindows
from .meta.dataset_meta import DatasetMeta, open_dataset
from .meta.depth import DEFAULT_DEPTH_UNIT, check_depth_features, check_unit, is_depth_feature
from .meta.episode_files import check_episode_files, files_of_episodes
from .meta.lerobot_view import LeRobotMeta
from .plan.elastic import ElasticState, remaining_plan
from .plan.ranks import resolve_worker
from .plan.shard import PlanEpisodes, ShardPlan, group_episodes, plan_shard, samples_per_rank
from .plan.sizing import auto_decoders, auto_pool_size, auto_shuffle_buffer, worker_memory
from .plan.state import fingerprint
from .storage.job_resolve import share_job_resolves
from .storage.paths import is_local
from .stream import ResourceSettings, WorkerResources, WorkerStream

if TYPE_CHECKING:
    from typing_extensions import Unpack


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


def plan_input(meta: DatasetMeta | LeRobotMeta, episodes: np.ndarray) -> PlanEpisodes:
    """The planner's arrays for the selected episodes: lengths and the files each one reads."""
    table = meta.episode_table
    pos = table.positions(episodes)
    files = table.file_keys()[pos]
    return group_episodes(table.index[pos], table.length[pos], files[:, :2], files)


class StreamingLeRobot(StreamingBase[ShardPlan]):
    """Stream a LeRobot v3.0 dataset frame-exactly into training.

    Args:
        source: local folder, ``hf://datasets/<user>/<name>``, ``s3://...``, ``https://...``, or a bare
            ``user/name`` (a Hub dataset).
        episodes: restrict to these episode indices.
        exclude_episodes: leave these episode indices out (after ``episodes``), e.g. the ``bad_episodes``
            of ``lerobot-stream validate ROOT --frames all --json``.
        on_bad_episode: ``"raise"`` (default): an episode whose own data fails (rows that disagree
            with the episodes table, a frame missing, outside ``tolerance_s`` or outside the episode's
            part of its MP4, undecodable or missing video bytes, a file that is gone) ends the
            iteration with an error naming it; ``"skip"``: it is skipped, named once per process in a
            :class:`~lerobot_stream_loader.fetch.bad_episodes.SkippedEpisodeWarning`, and its samples
            are stood in for by other samples of the same reader, so every rank still yields
            ``len(dataset)`` samples (docs/reliability.md#bad-episodes).
        max_bad_fraction: with ``"skip"``, a reader that finds more than ``max(1, max_bad_fraction x
            its episodes)`` bad episodes stops with ``TooManyBadEpisodes``.
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
            ``cache_bytes`` (estimated from the MP4 sizes) and whose decoders (one per camera) fit
            the memory budget's decoder share, 4..64.
        shuffle_buffer: decoded samples a worker holds when shuffling: a batch draws from about the
            last ``shuffle_buffer`` decoded samples (``run = shuffle_buffer // (2 * pool_size)``
            frames are decoded per turn). The decoded-frame budget of a worker is
            ``shuffle_buffer + run`` samples of uint8 frames (converted to float32 when yielded).
            Default: as many samples as fit in the budget's share of decoded samples (256 MiB by
            default) of uint8 frames, 32..4096 (145 for two 640x480 cameras).
        memory_budget: bytes one DataLoader worker may hold in all (docs/reliability.md#resource-bounds-per-worker):
            256 MiB for the interpreter and libraries, the batch memory a worker keeps for reuse (four
            batches of 32 samples, at most a quarter of the budget), and the rest shared 4 : 2 : 3 by
            fetched bytes (``cache_bytes``), decoded samples (``shuffle_buffer``) and open decoders
            (``decoders``). Default: 1408 MiB (256 + 512 + 256 + 384) plus the four batches. A part
            set here keeps its size and the others share the rest; ``dataset.memory`` shows the split.
        cache_bytes: per-worker byte budget of fetched episodes (default: its share of
            ``memory_budget``, 512 MiB without one).
        prefetch_episodes: episodes fetched ahead of the one being read.
        fetch_threads: per-worker threads that fetch episodes.
        decoders: open decoders kept per worker (one per resident episode and camera). Default: enough for
            the open pool within the budget's share (an open decoder holds a few frames: about 3 MB
            at 640x480), at most 128.
        storage_options: fsspec options (credentials, endpoints) for metadata and the fsspec backend.
        cache_dir: this machine's cache folder (metadata of remote datasets, index sidecars), shared by
            every rank and worker; default ``$LEROBOT_STREAM_CACHE``, else ``~/.cache/lerobot_stream_loader``.
        disk_cache_bytes: keep fetched episode bytes in ``cache_dir`` (folder ``episodes/`` of the
            dataset), up to this many bytes for the whole machine, least recently used evicted: from
            the second epoch on, cached episodes are read from local disk, not the network. Entries are
            atomic and checksummed (a torn or corrupt one is fetched again). 0 (default): off.
        reader_options: extra keyword arguments for the range reader (timeouts, retries, coalescing).
        resolve: how far a Hub dataset's resolved download URLs are shared
            (docs/reliability.md#requests-to-the-hub): ``"machine"`` (default): by every rank and
            worker of the machine, through ``cache_dir``; ``"job"``: one process resolves the selected
            episodes' files for the whole job (a collective call under torch.distributed; else through
            ``cache_dir``, job-wide when every node sees it); ``"process"``: each process resolves the
            files it opens. Other roots ignore it.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        episodes: Sequence[int] | None = None,
        exclude_episodes: Sequence[int] | None = None,
        on_bad_episode: str = "raise",
        max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
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
        memory_budget: int | None = None,
        cache_bytes: int | None = None,
        prefetch_episodes: int = 4,
        fetch_threads: int = 4,
        decoders: int | None = None,
        storage_options: dict[str, Any] | None = None,
        reader_options: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        disk_cache_bytes: int = 0,
        resolve: str = "machine",
    ) -> None:
        super().__init__()
        with open_dataset(source, revision=revision, backend=backend, storage_options=storage_options,
                          reader_options=reader_options, cache_dir=cache_dir, check_files=False,
                          resolve=resolve) as (meta, reader):
            # one reader for the whole construction: metadata, then the MP4 sizes that size the pool
            self.meta = LeRobotMeta(meta)
            self._setup(episodes, exclude_episodes, delta_timestamps, rename, image_transforms, image_size, return_uint8,
                        depth_output_unit, tolerance_s, shuffle, seed, drop_last, num_workers)
            if resolve == "job":
                share_job_resolves(meta.location, list(files_of_episodes(meta, self.episodes)))
            check_policy(on_bad_episode, max_bad_fraction)
            self.on_bad_episode, self.max_bad_fraction = on_bad_episode, float(max_bad_fraction)
            check_resources(pool_size=pool_size, shuffle_buffer=shuffle_buffer, cache_bytes=cache_bytes,
                            prefetch_episodes=prefetch_episodes, fetch_threads=fetch_threads, decoders=decoders,
                            memory_budget=memory_budget)
            self.memory = worker_memory(self.meta.source, self.image_size, memory_budget, cache_bytes=cache_bytes,
                                        shuffle_buffer=shuffle_buffer, decoders=decoders,
                                        return_uint8=self.return_uint8)
            cache_bytes = self.memory.cache
            if disk_cache_bytes < 0:
                raise ValueError(f"disk_cache_bytes must be >= 0 (0: no disk cache), got {disk_cache_bytes}")
            if pool_size is None and not shuffle:
                pool_size = 1  # without shuffle one episode at a time is read, in order
            elif pool_size is None:
                pool_size = auto_pool_size(self.meta.source, cache_bytes, reader.size, episodes=self.episodes,
                                           decoder_bytes=self.memory.decoders)
        self.pool_size = pool_size
        self.shuffle_buffer = shuffle_buffer or auto_shuffle_buffer(self.meta.source, self.image_size,
                                                                    self.memory.decoded)
        self.decoders = decoders or auto_decoders(self.memory, self.meta.source, pool_size if shuffle else 1)
        self.settings: ResourceSettings = dict(cache_bytes=cache_bytes, prefetch_episodes=prefetch_episodes,
                                               fetch_threads=fetch_threads, cache_dir=cache_dir,
                                               disk_cache_bytes=disk_cache_bytes)
        self._plan_episodes = plan_input(self.meta, self.episodes)
        self._fingerprints: dict[tuple[int, int], str] = {}
        self._start(rank, world_size)
        self._collate_converts: set[str] = set()  # stored keys whose frames a StreamingCollate converts
        self._bad = BadEpisodes()  # the current pass's skipped episodes, in this process
        self._warned: dict[int, str] = {}  # every episode this process skipped (named once each)

    def _setup(self, episodes: Sequence[int] | None, exclude: Sequence[int] | None, delta_timestamps: Mapping[str, Sequence[float]] | None,
               rename: Mapping[str, str] | None, image_transforms: Callable[[torch.Tensor], torch.Tensor] | None,
               image_size: tuple[int, int] | None, return_uint8: bool, depth_output_unit: str,
               tolerance_s: float, shuffle: bool, seed: int, drop_last: bool, num_workers: int | None) -> None:
        """Check and keep the item options against the metadata."""
        self.episodes = self._select(episodes, exclude)
        self.rename = KeyRenamer(rename, self.meta.features, where=self.meta.root)
        delta_timestamps = stored_names(self.rename, delta_timestamps)
        if is_local(self.meta.root):  # only the selected episodes' files must be there
            check_episode_files(self.meta.source, self.episodes,
                                lambda path: os.path.isfile(os.path.join(self.meta.root, path)))
        self.windows = (DeltaWindows(delta_timestamps, fps=self.meta.fps, features=self.meta.features,
                                     tolerance_s=tolerance_s) if delta_timestamps else None)
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
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
        self.num_workers = num_workers

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

    def _select(self, episodes: Sequence[int] | None, exclude: Sequence[int] | None) -> np.ndarray:
        known = self.meta.episode_table.index
        chosen = known if episodes is None else self._existing(episodes, "episodes")
        if episodes is not None and not len(chosen):
            raise ValueError("episodes=[] selects nothing")
        if exclude is not None:
            chosen = np.setdiff1d(chosen, self._existing(exclude, "exclude_episodes"))
            if not len(chosen):
                raise ValueError(f"{self.meta.root}: exclude_episodes leaves no episode to read")
        return chosen

    def _existing(self, episodes: Sequence[int], name: str) -> np.ndarray:
        """``episodes`` sorted and distinct; ``ValueError`` naming those the dataset does not have."""
        known = self.meta.episode_table.index
        chosen = np.unique(np.asarray(list(episodes), dtype=np.int64))
        missing = np.setdiff1d(chosen, known)
        if len(missing):
            raise ValueError(f"{self.meta.root}: {name} {missing[:10].tolist()} do not exist "
                             f"(the dataset has episodes {int(known[0])}..{int(known[-1])})")
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

    def float_frame_keys(self) -> set[str]:
        return {self.rename.name(key) for key in self._builder().float_frame_keys()}

    def defer_float_frames(self, keys: Iterable[str]) -> None:
        stored = {self.rename.stored(k) for k in keys}
        self._collate_converts.update(set(self._builder().float_frame_keys()) & stored)

    # -- epochs, length and plans (the rest: StreamingBase) -------------------------------------------
    _plan_name = "plan (seed, shuffle, drop_last, pool_size or episode list differ)"

    def _samples_per_rank(self, world: int) -> int:
        """``ceil(frames / world_size)`` (``floor`` with ``drop_last``)."""
        return samples_per_rank(self._plan_episodes, world_size=world, drop_last=self.drop_last)

    def _fingerprint(self, world: int, workers: int) -> str:
        key = (world, max(workers, 1))
        if key not in self._fingerprints:
            self._fingerprints[key] = fingerprint(
                self._plan_episodes, world_size=world, num_workers=workers, seed=self.seed,
                shuffle=self.shuffle, drop_last=self.drop_last, pool_size=self.pool_size,
                shuffle_buffer=self.shuffle_buffer)
        return self._fingerprints[key]

    def _plan_options(self) -> dict[str, Any]:
        return dict(seed=self.seed, shuffle=self.shuffle, drop_last=self.drop_last, pool_size=self.pool_size,
                    shuffle_buffer=self.shuffle_buffer)

    def _fresh_plan(self, *, epoch: int, **place: Unpack[ReaderPlace]) -> ShardPlan:
        return plan_shard(self._plan_episodes, epoch=epoch, **self._plan_options(), **place)

    def _elastic_plan(self, loaded: ElasticState, **place: Unpack[ReaderPlace]) -> ShardPlan:
        return remaining_plan(self._plan_episodes, loaded, **self._plan_options(), **place)

    # -- iteration -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = resolve_worker()
        if self.num_workers is not None and max(self.num_workers, 1) != workers and worker == 0:
            warnings.warn(f"StreamingLeRobot(num_workers={self.num_workers}) but the DataLoader runs {workers} "
                          "worker(s); the argument is not needed (len() does not depend on it)", stacklevel=2)
        plan, _ = self._reader_plan()
        self._bad = self._bad_episodes(len(plan.admit_episodes), self._resumed_skipped)
        resources = self._worker_resources()
        stream = WorkerStream(resources, plan, self._builder(), prefetch=self.settings["prefetch_episodes"],
                              bad=self._bad)
        self._io_base, self._pass_cache = resources.io_counters(), getattr(stream.cache, "stats", None)
        yield from self._counted(stream, stream.close, self.rename.item)

    def _bad_episodes(self, planned: int, resumed: list[dict[str, Any]]) -> BadEpisodes:
        """This pass's policy on bad episodes (those a resumed state had skipped: skipped again unread)."""
        bad = BadEpisodes(self.on_bad_episode, self.max_bad_fraction, where=self.meta.root, planned=planned,
                          warned=self._warned)
        bad.known({int(e["episode_index"]): str(e["cause"]) for e in resumed})
        return bad

    @property
    def skipped_episodes(self) -> list[dict[str, Any]]:
        """The episodes this process has skipped (``on_bad_episode="skip"``), each once:
        ``[{"episode_index": N, "cause": "..."}]``. DataLoader workers skip in their own processes: read
        theirs from the loader's state, ``skipped_episodes(loader.state_dict())``
        (:func:`lerobot_stream_loader.skipped_episodes`)."""
        return [{"episode_index": e, "cause": c} for e, c in sorted(self._warned.items())]

    def _skipped_now(self) -> list[dict[str, Any]]:
        return [{"episode_index": e, "cause": c} for e, c in self._bad.found.items()]

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
