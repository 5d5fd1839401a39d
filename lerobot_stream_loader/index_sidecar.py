"""Build, save and find a dataset's MP4 index sidecar (every MP4's sample table in one file).

Default place: ``meta/mp4_index.npz`` inside the dataset when it is writable, else a local cache
folder keyed by the dataset URL (revision included). Entries carry the size of the file they were
built from; a reader checks it on first use and rebuilds a stale entry with a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import FetchError
from .local_cache import dataset_cache_dir
from .local_files import write_file_atomically
from .meta import DatasetMeta
from .mp4 import Mp4FormatError, Mp4Index, SidecarEntry, dumps_sidecar, index_mp4, loads_sidecar
from .paths import is_local
from .storage import RangeReader

SIDECAR_PATH = "meta/mp4_index.npz"


def cache_path(root: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Local fallback location of the sidecar of ``root`` (a remote or read-only dataset)."""
    return dataset_cache_dir(root, cache_dir) / "mp4_index.npz"


def build_entries(meta: DatasetMeta, reader: RangeReader, *, threads: int = 8,
                  progress: bool = True) -> dict[str, SidecarEntry]:
    """Index every MP4 of the dataset in parallel (range reads only: head probe + moov)."""
    def one(path: str) -> tuple[str, SidecarEntry]:
        size = reader.size(path)
        index = index_mp4(lambda offset, length: reader.read(path, offset, length), size=size,
                          name=f"{meta.root}/{path}")
        return path, SidecarEntry(index, size, reader.etag(path))

    paths = meta.video_files
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = pool.map(one, paths)
        entries = dict(tqdm(results, total=len(paths), desc="index", unit="file", disable=not progress))
    return entries


def save_sidecar(meta: DatasetMeta, entries: dict[str, SidecarEntry], output: str | None = None) -> str:
    """Write the sidecar to ``output``, or inside the dataset, or to the local cache; return where."""
    data = dumps_sidecar(entries)
    if output is not None:
        _write_local(Path(output), data)
        return str(output)
    if is_local(meta.root):
        target = Path(meta.url(SIDECAR_PATH).removeprefix("file://"))
        try:
            _write_local(target, data)
            return str(target)
        except OSError:
            pass
    elif not meta.root.startswith(("http://", "https://", "hf://")):  # object stores: try writing in place
        try:
            meta.fs.pipe_file(meta.url(SIDECAR_PATH), data)
            return f"{meta.root}/{SIDECAR_PATH}"
        except Exception as exc:  # any store refusal (permissions, read-only bucket): fall back to the cache
            warnings.warn(f"{meta.root}: cannot write {SIDECAR_PATH} ({type(exc).__name__}: {exc}); "
                          "saving the sidecar to the local cache instead", stacklevel=2)
    fallback = cache_path(meta.root)
    _write_local(fallback, data)
    return str(fallback)


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, data)


def load_sidecar(meta: DatasetMeta, reader: RangeReader,
                 cache_dir: str | os.PathLike[str] | None = None) -> dict[str, SidecarEntry]:
    """The dataset's sidecar entries, from the dataset or the local cache; {} when there is none.

    A corrupt sidecar is never trusted: it is ignored with a warning (indexes are then rebuilt).
    """
    data: bytes | None = None
    try:
        size = reader.size(SIDECAR_PATH)
        data = reader.read(SIDECAR_PATH, 0, size)
        where = f"{meta.root}/{SIDECAR_PATH}"
    except (FileNotFoundError, FetchError) as exc:
        if not isinstance(exc, FileNotFoundError):  # there, but unreadable (permissions, server errors)
            warnings.warn(f"{meta.root}/{SIDECAR_PATH}: cannot read the MP4 index sidecar ({exc}); "
                          "reading the MP4 headers instead (slower start)", stacklevel=2)
        local = cache_path(meta.root, cache_dir)
        if local.is_file():
            data, where = local.read_bytes(), str(local)
    if data is None:
        return {}
    try:
        return loads_sidecar(data)
    except Mp4FormatError as exc:
        warnings.warn(f"{where}: ignoring a corrupt MP4 index sidecar ({exc}); indexes will be rebuilt",
                      stacklevel=2)
        return {}


def fresh_index(entries: dict[str, SidecarEntry], path: str, size: int, etag: str | None, where: str,
                build: Callable[[], Mp4Index]) -> Mp4Index:
    """The sidecar's index of ``path`` when its size (and ETag, when both sides know one) still match
    and every sample lies inside the file, else a rebuilt one (with a warning)."""
    entry = entries.get(path)
    if entry is None:
        return build()
    if entry.is_stale(size, etag):
        warnings.warn(f"{where}: the MP4 index sidecar entry is stale (indexed at {entry.size} bytes, ETag "
                      f"{entry.etag}; the file now has {size} bytes, ETag {etag}); rebuilding it", stacklevel=2)
        return build()
    index = entry.index
    offset, length = index.offset, index.size
    outside = (offset < 0) | (length < 0) | (offset > size) | (length > size - offset)
    if outside.any():
        k = int(np.argmax(outside))
        warnings.warn(f"{where}: the MP4 index sidecar entry puts sample {k} at bytes [{int(offset[k])}, "
                      f"+{int(length[k])}), beyond the file ({size} bytes); rebuilding it", stacklevel=2)
        return build()
    return index
