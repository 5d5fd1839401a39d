"""Writing the MP4 index sidecar (layout and reading: :mod:`lerobot_stream_loader.fetch.sidecar`).

:func:`build_entries` indexes every MP4 of a dataset by range reads, :func:`save_sidecar` writes the
sidecar inside the dataset, or to the machine's cache folder where the dataset is not writable.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..fetch.sidecar import MAGIC, SIDECAR_PATH, SidecarEntry, cache_path, read_tail, tail_checksum
from ..fetch.sidecar_directory import FORMAT, VERSION
from ..meta.dataset_meta import DatasetMeta
from ..mp4 import index_mp4
from ..storage import RangeReader
from ..storage.paths import is_local
from ..util.local_files import write_file_atomically


def encode_sidecar(entries: dict[str, SidecarEntry]) -> bytes:
    """The version-2 bytes of ``entries`` ({relative path: entry}); entry offsets count from the end
    of the directory."""
    files, blobs = [], []
    offset = 0
    for path, entry in sorted(entries.items()):
        arrays = entry.index.to_arrays()
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
        blob = zlib.compress(raw, 6)
        files.append({"path": path, "size": int(entry.size), "tail": entry.tail, "offset": offset,
                      "length": len(blob), "raw": len(raw),
                      "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]})
        blobs.append(blob)
        offset += len(blob)
    directory = json.dumps({"format": FORMAT, "version": VERSION, "files": files}).encode()
    return MAGIC + struct.pack("<I", len(directory)) + directory + b"".join(blobs)


def build_entries(meta: DatasetMeta, reader: RangeReader, *, threads: int = 8,
                  progress: bool = True) -> dict[str, SidecarEntry]:
    """Index every MP4 of the dataset in parallel (range reads only: head probe, moov, last bytes)."""
    def one(path: str) -> tuple[str, SidecarEntry]:
        size = reader.size(path)
        read = lambda offset, length: reader.read(path, offset, length)  # noqa: E731
        index = index_mp4(read, size=size, name=f"{meta.root}/{path}")
        return path, SidecarEntry(index, size, tail_checksum(read_tail(read, size)))

    paths = meta.video_files
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = pool.map(one, paths)
        return dict(tqdm(results, total=len(paths), desc="index", unit="file", disable=not progress))


def save_sidecar(meta: DatasetMeta, entries: dict[str, SidecarEntry], output: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Write the sidecar to ``output``, or inside the dataset, or to the local cache; return where."""
    data = encode_sidecar(entries)
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
    fallback = cache_path(meta.root, cache_dir)
    _write_local(fallback, data)
    return str(fallback)


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, data)
