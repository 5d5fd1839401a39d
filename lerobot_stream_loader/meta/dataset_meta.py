"""Dataset metadata: info.json, the episodes table, tasks and stats of a LeRobot v3.0 dataset.

``load_meta(root)`` reads everything a loader plans from, validates it, and never lists a
directory: the episodes files are found by probing their deterministic names, data files come
from info.json ``data_files`` when present, else from the episodes table.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from ..errors import DatasetFormatError
from ..storage import RangeReader
from ..storage.credentials import Secret, reveal_secrets
from ..storage.local_cache import dataset_cache_dir, offline
from ..storage.location import Location
from ..storage.paths import PathEscapeError, check_relative, is_bare_repo_id, is_local, join
from ..storage.resolve_cache import hub_reader_options
from .cache import MetaCache
from .checks import check_episodes_table, check_info
from .episode_table import EpisodeMeta, EpisodeTable, VideoSpan
from .files import MetaFiles, read_episodes, read_tasks
from .hub_revision import default_hub_location

__all__ = ["DatasetMeta", "EpisodeMeta", "EpisodeTable", "VideoSpan", "load_meta", "open_dataset"]

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"


class DatasetMeta:
    """Validated metadata of one dataset; built by :func:`load_meta`.

    ``episode_table`` holds the episodes as numpy columns (only what streaming needs). The full Arrow
    episodes table (per-episode stats included) is kept only when loaded with ``all_columns=True``
    (the tools); ``stats`` (meta/stats.json) is read on first use.
    """

    def __init__(
        self,
        location: Location,
        info: dict[str, Any],
        episode_table: EpisodeTable,
        tasks: dict[int, str],
        *,
        episodes_table: pa.Table | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        self.location = location
        self.root = location.root
        self.info = info
        self.episode_table = episode_table
        self.tasks = tasks
        self._episodes_table = episodes_table
        self._stats = stats
        self.fps: int = int(info["fps"])
        self.features: dict[str, dict[str, Any]] = info["features"]
        self.video_keys: list[str] = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        self.total_frames: int = int(info["total_frames"])
        self.total_episodes: int = int(info["total_episodes"])

    @cached_property
    def _fsspec(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return fsspec.core.url_to_fs(self.root, **reveal_secrets(self.storage_options))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_fsspec", None)  # a file system handle (write-capable) is never sent to another process
        state.pop("video_files", None)  # lists of every file: derived again where needed (O(files) to pickle)
        state.pop("data_files", None)
        return state

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """An fsspec filesystem of the root (for tools that write; reading goes through range readers)."""
        return self._fsspec[0]

    def url(self, relative: str) -> str:
        """Full path of a root-relative file, as understood by :attr:`fs`."""
        return join(self._fsspec[1], relative)

    @property
    def episodes_table(self) -> pa.Table:
        """The whole Arrow episodes table (only when loaded with ``load_meta(..., all_columns=True)``)."""
        if self._episodes_table is None:
            raise RuntimeError(f"{self.root}: the full episodes table was not loaded; use "
                               "load_meta(..., all_columns=True)")
        return self._episodes_table

    @property
    def storage_options(self) -> dict[str, Any]:
        """The fsspec options of the root (credentials hidden)."""
        return self.location.storage_options

    @property
    def basic_auth(self) -> Secret | None:
        """Credentials the root URL carried (its user part), held hidden; None without."""
        return self.location.basic_auth

    @property
    def stats(self) -> dict[str, Any]:
        """meta/stats.json ({} when absent), read on first use."""
        if self._stats is None:
            with self.location.open_reader() as reader:
                files = MetaFiles(self.root, reader)
                self._stats = files.json(STATS_PATH) if files.exists(STATS_PATH) else {}
        return self._stats

    @stats.setter
    def stats(self, value: dict[str, Any]) -> None:
        self._stats = value

    @property
    def episode_indices(self) -> list[int]:
        """Episode indices in table order (sorted)."""
        return self.episode_table.index.tolist()

    @property
    def episodes(self) -> list[EpisodeMeta]:
        """Every episode as an object, sorted by index (one object per episode: for tools and tests)."""
        return [self.episode(i) for i in self.episode_indices]

    def episode(self, index: int) -> EpisodeMeta:
        """Metadata of episode ``index``; ``KeyError`` naming the dataset when it does not exist."""
        try:
            return self.episode_table.episode(int(index))
        except KeyError:
            raise KeyError(f"{self.root}: no episode {index} (the dataset has {self.total_episodes})") from None

    @cached_property
    def data_files(self) -> list[str]:
        """Data parquet paths, from info.json ``data_files`` or else the episodes table."""
        listed = self.info.get("data_files")
        if listed is not None:
            return [check_relative(p, what="data_files entry") for p in listed]
        return self.episode_table.data_files()

    @cached_property
    def video_files(self) -> list[str]:
        """Every distinct MP4 referenced by the episodes table."""
        return self.episode_table.video_files()

    @property
    def lengths(self) -> np.ndarray:
        """Episode lengths in table order, as int64."""
        return self.episode_table.length

    def task_index(self, task: str) -> int:
        """The task index of a task string."""
        for index, text in self.tasks.items():
            if text == task:
                return index
        raise KeyError(f"{self.root}: unknown task {task!r}")

    def __repr__(self) -> str:
        return (f"DatasetMeta({self.root!r}, episodes={self.total_episodes}, frames={self.total_frames}, "
                f"fps={self.fps}, cameras={self.video_keys})")


def load_meta(root: str | os.PathLike[str] | Location, **options: Any) -> DatasetMeta:
    """Read and validate a dataset's metadata from a local path, a URL or a :class:`Location`
    (``options`` as for :func:`open_dataset`)."""
    with open_dataset(root, **options) as (meta, _):
        return meta


@contextmanager
def open_dataset(
    root: str | os.PathLike[str] | Location,
    *,
    revision: str | None = None,
    storage_options: dict[str, Any] | None = None,
    backend: str = "auto",
    reader_options: dict[str, Any] | None = None,
    check_files: bool | None = None,
    all_columns: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    resolve: str | None = None,
) -> Iterator[tuple[DatasetMeta, RangeReader]]:
    """The metadata of ``root`` and the range reader it was read through, open for more reads
    (closed when the ``with`` block ends): one reader from the source to its last setting-up read.

    Files are read through a range reader (``backend`` and ``reader_options`` as for
    :func:`lerobot_stream_loader.storage.open_reader`; ``storage_options`` go to fsspec).
    ``check_files`` (default: only for local roots) also checks that every data and video file
    the metadata references exists. Only the episodes-table columns streaming needs are parsed,
    unless ``all_columns`` (then ``meta.episodes_table`` holds every column, per-episode stats
    included, and stats.json is read now). Raises :class:`DatasetFormatError` naming the file and key,
    ``FileNotFoundError`` for a missing local folder; for a bare ``user/name`` that is no local folder
    and no readable Hub dataset, the error says both.

    The streaming metadata of a dataset is kept in the machine's cache (``cache_dir``, default
    :func:`~lerobot_stream_loader.storage.local_cache.default_cache_dir`), keyed by the root and the size and
    ETag (local files: mtime) of meta/info.json: a warm start costs one request, and DataLoader
    workers map the cached columns. With ``HF_HUB_OFFLINE=1`` the cached copy of a remote dataset is
    used without any request. ``use_cache=False`` reads the files and leaves the cache alone (the
    offline tools, which write nothing outside their output). A Hub root without a revision is read at
    LeRobot's ``v3.0`` tag when the dataset has it, else at ``main``
    (:mod:`~lerobot_stream_loader.meta.hub_revision`: one more request).

    ``resolve`` (Hub roots read over HTTP): how far resolved download URLs are shared, ``"machine"``
    (through ``cache_dir``), ``"job"`` or ``"process"`` (:mod:`~lerobot_stream_loader.storage.resolve_cache`);
    by default ``"machine"``, or ``"process"`` when the machine's caches are left alone (``use_cache=False``
    or ``all_columns``: the offline tools, which write nothing outside their output).
    """
    if resolve is None:
        resolve = "machine" if use_cache and not all_columns else "process"
    reader_options = hub_reader_options(root if not isinstance(root, Location) else root.root, revision=revision,
                                        backend=backend, reader_options=reader_options, resolve=resolve,
                                        cache_dir=cache_dir)
    location = Location.of(root, revision=revision, backend=backend, storage_options=storage_options,
                           reader_options=reader_options)
    with _named_for_users(root, location):
        check_local_root(location)
        if revision is None:
            location = default_hub_location(location, cache_dir=cache_dir)
        reader = location.open_reader()
        try:
            meta = _load_meta(location, reader, check_files, all_columns, cache_dir, use_cache)
        except BaseException:
            reader.close()
            raise
    with reader:
        yield meta, reader


@contextmanager
def _named_for_users(root: str | os.PathLike[str] | Location, location: Location) -> Iterator[None]:
    """A bare ``user/name`` that is neither a local folder nor a readable Hub dataset: say both."""
    try:
        yield
    except (OSError, DatasetFormatError) as exc:
        if isinstance(root, Location) or not is_bare_repo_id(root):
            raise
        raise type(exc)(f"{os.fspath(root)!r} is neither a local folder (there is none of that name in "
                        f"{os.getcwd()}) nor a readable Hub dataset {location.root}: {exc}") from exc


def check_local_root(location: Location) -> None:
    """A local root must be an existing folder."""
    if not location.is_local:
        return
    folder = location.root.removeprefix("file://")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder}: not a folder (a dataset root is the folder holding meta/)")
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{folder}: no such dataset folder")


def _load_meta(location: Location, file_reader: RangeReader, check_files: bool | None, all_columns: bool,
               cache_dir: str | os.PathLike[str] | None, use_cache: bool) -> DatasetMeta:
    root_url = location.root
    # local roots too (versioned by size and mtime): their DataLoader workers then map the cached
    # episode columns, shared by every process, instead of each unpickling its own copy
    cache = MetaCache(dataset_cache_dir(root_url, cache_dir)) if use_cache and not all_columns else None

    def made(info: dict[str, Any], table: EpisodeTable, tasks: dict[int, str], **full: Any) -> DatasetMeta:
        return DatasetMeta(location, info, table, tasks, **full)

    if cache is not None and offline() and not is_local(root_url):
        version = cache.latest()
        cached = cache.load(version) if version else None
        if cached is None:
            raise DatasetFormatError(f"{root_url}: HF_HUB_OFFLINE is set and the metadata cache {cache.folder} "
                                     "holds no copy of this dataset's metadata (open it once online first)")
        return made(*cached)
    reader = MetaFiles(root_url, file_reader)
    version = reader.version(INFO_PATH) if cache is not None else None
    if cache is None or version is None:
        return _read_meta(reader, made, check_files, all_columns)
    cached = cache.load(version, reader.file_version)
    if cached is None:
        with cache.lock():
            cached = cache.load(version, reader.file_version)  # another process may have filled it meanwhile
            if cached is None:
                meta = _read_meta(reader, made, check_files, all_columns)
                try:
                    sources = [reader.file_version(path) for path in reader.read_paths if path != INFO_PATH]
                    cache.save(version, meta.info, meta.tasks, meta.episode_table, sources)
                except OSError as exc:
                    warnings.warn(f"{cache.folder}: cannot cache the metadata ({exc})", stacklevel=3)
                    return meta
                cached = cache.load(version)  # the memory-mapped copy: shared by every process
                if cached is None:
                    return meta
    meta = made(*cached)
    _check_files(reader, meta, check_files)
    return meta


def _read_meta(reader: MetaFiles, made: Callable[..., DatasetMeta], check_files: bool | None,
               all_columns: bool) -> DatasetMeta:
    """Read and validate every metadata file of the root (no cache)."""
    root_url = reader.root
    info = reader.json(INFO_PATH)
    check_info(info, f"{root_url}/{INFO_PATH}")
    episodes_table = read_episodes(reader, info, all_columns)
    tasks = read_tasks(reader)
    stats = (reader.json(STATS_PATH) if reader.exists(STATS_PATH) else {}) if all_columns else None
    check_episodes_table(episodes_table, info, root_url)
    meta = made(info, EpisodeTable.from_arrow(episodes_table, info), tasks,
                episodes_table=episodes_table if all_columns else None, stats=stats)
    _check_files(reader, meta, check_files)
    return meta


def _check_files(reader: MetaFiles, meta: DatasetMeta, check_files: bool | None) -> None:
    """Every referenced path stays below the root; with ``check_files`` (default: local roots) exists."""
    try:
        files = meta.data_files + meta.video_files
    except PathEscapeError as exc:
        raise DatasetFormatError(f"{meta.root}/{INFO_PATH}: {exc}") from exc
    if check_files if check_files is not None else is_local(meta.root):
        missing = [p for p in files if not reader.exists(p, track=False)]
        if missing:
            raise DatasetFormatError(
                f"{meta.root}: {len(missing)} file(s) referenced by the metadata are missing, "
                f"first: {missing[0]}")
