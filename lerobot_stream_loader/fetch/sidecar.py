"""The MP4 index sidecar: every MP4's sample table, saved once, read by workers only for the files they open.

Layout (version 2, ``meta/mp4_index.bin``): an 8-byte magic, the directory length (uint32 LE), a JSON
directory ``{"format", "version", "files": [{"path", "size", "tail", "offset", "length", "raw",
"arrays": [[name, dtype, shape], ...]}]}``, then one zlib-compressed blob per file (its index arrays
back to back). A worker reads the head of the sidecar once (one or two range reads) and keeps the
directory as its bytes (:mod:`~lerobot_stream_loader.fetch.sidecar_directory`: one file's item is parsed
when asked); per MP4 it opens, it reads that file's blob (one range read); parsed indexes live in the
worker's bounded LRU (:class:`~lerobot_stream_loader.fetch.file_indexes.FileIndexes`).

An entry is used only while its MP4 has the same size and the same last ``TAIL_BYTES`` bytes (a
CRC-32 that copying, re-downloading or touching the file preserves). A corrupt, oversized or
unreadable sidecar or entry is ignored with one warning per worker and the MP4 headers are read
instead; never a MemoryError. Where: inside the dataset when writable, else the machine's cache folder.
Version 1 sidecars (``meta/mp4_index.npz``, read whole) still load, with a warning saying how to
rewrite them.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FetchError
from ..mp4 import Mp4FormatError, Mp4Index
from ..storage import RangeReader
from ..storage.local_cache import dataset_cache_dir
from .sidecar_directory import FORMAT, VERSION, SidecarDirectory, SidecarError

SIDECAR_PATH = "meta/mp4_index.bin"
OLD_SIDECAR_PATH = "meta/mp4_index.npz"
MAGIC = b"LRSMP4IX"
TAIL_BYTES = 4096
HEAD_READ = 64 << 10
MAX_DIRECTORY_BYTES = 256 << 20
MAX_ENTRY_BYTES = 1 << 30
_DTYPES = {"<i8", "<i4", "<u8", "<u4", "<u2", "|u1", "|b1"}
_V1_ARRAYS = ("version", "scalars", "codec", "stsd", "duration", "cts", "size", "offset", "sync", "sdi")

ReadRange = Callable[[int, int], bytes]


@dataclass
class SidecarEntry:
    """One indexed MP4: its index, its size and the CRC-32 of its last bytes when indexed ("" unknown)."""

    index: Mp4Index
    size: int
    tail: str = ""


def tail_checksum(data: bytes) -> str:
    """The content check of an MP4: CRC-32 of its last ``TAIL_BYTES`` bytes, as hex."""
    return f"{zlib.crc32(data):08x}"


def read_tail(read: ReadRange, size: int) -> bytes:
    """The last ``TAIL_BYTES`` bytes of a file of ``size`` bytes."""
    n = min(TAIL_BYTES, size)
    return read(size - n, n) if n else b""


def cache_path(root: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the sidecar of ``root`` goes in the machine's cache (a remote or read-only dataset)."""
    return dataset_cache_dir(root, cache_dir) / Path(SIDECAR_PATH).name


# ------------------------------------------------------------------------------------------- reading
class Sidecar:
    """A sidecar's directory, and its entries read on demand through ``read(offset, length)``."""

    def __init__(self, where: str, read: ReadRange, size: int) -> None:
        self.where = where
        self._read = read
        head = read(0, min(size, HEAD_READ))
        if head[:len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + 4:
            raise SidecarError(f"{where}: not a version-{VERSION} MP4 index sidecar (bad magic)")
        (length,) = struct.unpack("<I", head[len(MAGIC):len(MAGIC) + 4])
        start = len(MAGIC) + 4
        if length > min(size - start, MAX_DIRECTORY_BYTES):
            raise SidecarError(f"{where}: directory of {length} bytes does not fit the file ({size} bytes)")
        raw = head[start:start + length]
        if len(raw) < length:
            raw += read(start + len(raw), length - len(raw))
        self._base = start + length
        self._size = size
        self.directory = SidecarDirectory(raw, where)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "sidecar") -> Sidecar:
        return cls(where, lambda offset, length: data[offset:offset + length], len(data))

    def entries(self) -> dict[str, SidecarEntry]:
        """Every entry (reads the whole sidecar: for tools and tests)."""
        return {path: self.entry(path) for path in self.directory.paths()}  # type: ignore[misc]

    def entry(self, path: str) -> SidecarEntry | None:
        """The entry of ``path`` (None when it has none); :class:`SidecarError` when it is unusable."""
        item = self.directory.item(path)
        if item is None:
            return None
        try:
            _check_placement(item, self._size - self._base)
        except (ValueError, KeyError, TypeError) as exc:
            raise SidecarError(f"{self.where}: entry {path}: unreadable placement ({exc})") from exc
        blob = self._read(self._base + int(item["offset"]), int(item["length"]))
        arrays = _decode_arrays(blob, item, f"{self.where}: entry {path}")
        try:
            index = Mp4Index.from_arrays(arrays, name=path)
        except (Mp4FormatError, ValueError, KeyError, TypeError) as exc:
            raise SidecarError(f"{self.where}: entry {path}: {exc}") from exc
        return SidecarEntry(index, int(item["size"]), str(item.get("tail") or ""))


def _check_placement(item: dict, size: int) -> None:
    offset, length, raw = (int(item[k]) for k in ("offset", "length", "raw"))
    if offset < 0 or length < 0 or offset + length > size:
        raise SidecarError(f"entry {item['path']}: bytes [{offset}, +{length}) lie outside the sidecar")
    if raw > MAX_ENTRY_BYTES or length > MAX_ENTRY_BYTES:
        raise SidecarError(f"entry {item['path']}: claims {raw} bytes of arrays (limit {MAX_ENTRY_BYTES})")
    int(item["size"])
    str(item.get("tail") or "")


def _decode_arrays(blob: bytes, item: dict, where: str) -> dict[str, np.ndarray]:
    """An entry's arrays, after checking every claimed size against the bytes really there."""
    try:
        specs = [(str(name), np.dtype(kind), tuple(int(d) for d in shape)) for name, kind, shape in item["arrays"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise SidecarError(f"{where}: bad array list ({exc})") from exc
    total = 0
    for name, kind, shape in specs:
        if kind.str not in _DTYPES or any(d < 0 for d in shape):
            raise SidecarError(f"{where}: array {name!r} has dtype {kind.str} shape {shape}")
        total += int(np.prod(shape, dtype=object)) * kind.itemsize
    if total != int(item["raw"]) or total > MAX_ENTRY_BYTES:
        raise SidecarError(f"{where}: arrays claim {total} bytes, the entry holds {item['raw']}")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(blob, total + 1)
    except zlib.error as exc:
        raise SidecarError(f"{where}: corrupt data ({exc})") from exc
    if len(raw) != total or not inflate.eof:
        raise SidecarError(f"{where}: {len(raw)} bytes of arrays, expected {total}")
    arrays, at = {}, 0
    for name, kind, shape in specs:
        n = int(np.prod(shape, dtype=object)) * kind.itemsize
        arrays[name] = np.frombuffer(raw, dtype=kind, count=n // kind.itemsize, offset=at).reshape(shape)
        at += n
    return arrays


def decode_v1(data: bytes, where: str) -> dict[str, SidecarEntry]:
    """Entries of a version-1 sidecar (one .npz, read whole); sizes are checked before anything is read."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if sum(i.file_size for i in infos) > max(64 * len(data), 1 << 20) or \
                    sum(i.file_size for i in infos) > MAX_ENTRY_BYTES:
                raise SidecarError(f"{where}: its arrays claim more bytes than it can hold")
            for info in infos:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                    if dtype.hasobject or int(np.prod(shape, dtype=object)) * dtype.itemsize > info.file_size:
                        raise SidecarError(f"{where}: array {info.filename} claims shape {shape} of {dtype}")
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(bytes(npz["header"]).decode())
                if header.get("format") != FORMAT or header.get("version") != 1:
                    raise SidecarError(f"{where}: format {header.get('format')!r} version {header.get('version')!r}")
                result = {}
                for item in header["files"]:
                    arrays = {name: npz[f"{item['key']}__{name}"] for name in _V1_ARRAYS}
                    index = Mp4Index.from_arrays(arrays, name=item["path"])
                    result[item["path"]] = SidecarEntry(index, int(item["size"]))
                return result
    except SidecarError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError, Mp4FormatError) as exc:
        raise SidecarError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from exc


class SidecarLookup:
    """A worker's access to the dataset's sidecar: found on first use (the dataset, then the machine's
    cache; version 2, then version 1), entries read one file at a time, each problem warned once."""

    def __init__(self, root: str, reader: RangeReader, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = root
        self._reader = reader
        self._cache_dir = cache_dir
        self._opened = False
        self._lock = threading.Lock()  # fetch threads of one worker look entries up concurrently
        self._sidecar: Sidecar | None = None
        self._old: dict[str, SidecarEntry] = {}
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    def index(self, path: str, size: int, read: ReadRange) -> Mp4Index | None:
        """The sidecar's index of ``path`` (``size`` bytes now; ``read(offset, length)`` reads it) when it
        has a usable entry whose size and last bytes still match; else None (read the MP4's headers)."""
        self._open()
        try:
            entry = self._sidecar.entry(path) if self._sidecar is not None else self._old.get(path)
        except SidecarError as exc:
            self._warn("entry", f"unusable MP4 index sidecar entry: {exc}; reading the MP4 headers instead "
                                "(shown once per worker for any unusable entry)")
            return None
        except FetchError as exc:
            self._warn("entry", f"{self._where()}: reading the entry of {path} failed ({exc}); reading the MP4 "
                                "headers instead (shown once per worker)")
            return None
        if entry is None:
            return None
        stale = entry.size != size or (entry.tail and entry.tail != tail_checksum(read_tail(read, size)))
        if stale:
            self._warn("stale", f"{self._where()}: the entry of {path} is stale (indexed at {entry.size} bytes, "
                                f"the file has {size}, or its content changed); stale entries are read from the "
                                "MP4 headers instead (shown once per worker; `lerobot-stream index` refreshes it)")
            return None
        offset, length = entry.index.offset, entry.index.size
        outside = (offset < 0) | (length < 0) | (offset > size) | (length > size - offset)
        if outside.any():
            k = int(np.argmax(outside))
            self._warn("entry", f"{self._where()}: the entry of {path} puts sample {k} at bytes [{int(offset[k])}, "
                                f"+{int(length[k])}), beyond the file ({size} bytes); reading the MP4 headers instead")
            return None
        return entry.index

    def _where(self) -> str:
        return self._sidecar.where if self._sidecar is not None else f"{self.root}/{OLD_SIDECAR_PATH}"

    def _warn(self, kind: str, message: str) -> None:
        with self._warn_lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        warnings.warn(message, stacklevel=4)

    def _open(self) -> None:
        with self._lock:
            if not self._opened:
                self._find()
                self._opened = True

    def _find(self) -> None:
        local = cache_path(self.root, self._cache_dir)
        candidates = [(f"{self.root}/{SIDECAR_PATH}", self._remote(SIDECAR_PATH), 2),
                      (f"{self.root}/{OLD_SIDECAR_PATH}", self._remote(OLD_SIDECAR_PATH), 1),
                      (str(local), _local(local), 2),
                      (str(local.with_suffix(".npz")), _local(local.with_suffix(".npz")), 1)]
        for where, opener, version in candidates:
            try:
                found = opener()
                if found is None:
                    continue
                read, size = found
                if version == 2:
                    self._sidecar = Sidecar(where, read, size)
                else:
                    self._old = decode_v1(read(0, size), where)
                    self._warn("old", f"{where}: a version-1 MP4 index sidecar, read whole by every worker; "
                                      "`lerobot-stream index` rewrites it as " + SIDECAR_PATH)
                return
            except SidecarError as exc:
                self._warn("unusable", f"{exc}; ignoring the sidecar and reading the MP4 headers instead")
            except (FetchError, OSError) as exc:
                self._warn("unusable", f"{where}: cannot read the MP4 index sidecar ({exc}); reading the MP4 "
                                       "headers instead (slower start)")

    def _remote(self, relative: str) -> Callable[[], tuple[ReadRange, int] | None]:
        def opener() -> tuple[ReadRange, int] | None:
            try:
                size = self._reader.size(relative)
            except FileNotFoundError:
                return None
            return (lambda offset, length: self._reader.read(relative, offset, length)), size
        return opener


def _local(path: Path) -> Callable[[], tuple[ReadRange, int] | None]:
    def opener() -> tuple[ReadRange, int] | None:
        if not path.is_file():
            return None

        def read(offset: int, length: int) -> bytes:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        return read, path.stat().st_size
    return opener
