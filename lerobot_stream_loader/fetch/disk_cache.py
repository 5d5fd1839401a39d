"""Fetched episode bytes kept on local disk, shared by every worker and rank of a machine.

:class:`DiskCachedReader` wraps a range reader: a ``read_many`` (one episode's parquet row groups
and MP4 spans) is answered from ``<cache_dir>/<dataset>/episodes/`` when that exact list of
ranges was fetched before, else fetched and stored. Entries are:

- **atomic**: written to a temporary file of the writing process and renamed into place, so a
  process killed mid-write leaves no entry, only a temporary file that is removed once older than
  ``STALE_TMP_S``;
- **checksummed**: a header (magic, blob lengths, SHA-256 of the payload) is checked on every read;
  an entry that is torn or corrupt is deleted and the ranges are fetched again, never decoded;
- **LRU-evicted** under ``budget_bytes`` for the whole machine: a hit refreshes the entry's
  modification time; a process that has written about ``budget_bytes / 8`` since it last looked
  lists the folder under a file lock and deletes the least recently used entries until the folder
  holds at most ``budget_bytes``.

A process may start or die at any moment: readers only ever see whole, checked entries; the lock
only saves duplicated eviction work (an entry deleted under a reader is a miss).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..storage.coalesce import ReadRequest
from ..storage.local_cache import file_lock

MAGIC = b"LRSEPI1\n"
STALE_TMP_S = 600.0
_HEADER = struct.Struct("<8s32sQ")  # magic, sha256 of the payload, blob count


def entry_key(requests: Sequence[tuple[str, int, int]]) -> str:
    """The file name of the entry holding ``requests`` (path, offset, length)."""
    digest = hashlib.sha256(repr([(str(p), int(o), int(n)) for p, o, n in requests]).encode())
    return digest.hexdigest()[:40]


def encode_entry(blobs: Sequence[bytes]) -> list[bytes]:
    """Header + lengths + payload pieces of an entry."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(blob)
    header = _HEADER.pack(MAGIC, digest.digest(), len(blobs)) + struct.pack(f"<{len(blobs)}Q", *map(len, blobs))
    return [header, *blobs]


def decode_entry(data: bytes, expected: Sequence[int]) -> list[bytes] | None:
    """The blobs of an entry, or None when it is torn, corrupt, or not of ``expected`` lengths."""
    if len(data) < _HEADER.size:
        return None
    magic, checksum, count = _HEADER.unpack_from(data)
    lengths_end = _HEADER.size + 8 * count
    if magic != MAGIC or count != len(expected) or len(data) < lengths_end:
        return None
    lengths = struct.unpack_from(f"<{count}Q", data, _HEADER.size)
    if list(lengths) != list(expected) or len(data) != lengths_end + sum(lengths):
        return None
    payload = memoryview(data)[lengths_end:]
    if hashlib.sha256(payload).digest() != checksum:
        return None
    out, at = [], 0
    for n in lengths:
        out.append(bytes(payload[at:at + n]))
        at += n
    return out


class EpisodeDiskCache:
    """The entries of one dataset in the machine's cache folder (see the module doc)."""

    def __init__(self, folder: str | os.PathLike[str], budget_bytes: int) -> None:
        if budget_bytes < 1:
            raise ValueError(f"disk_cache_bytes must be >= 1, got {budget_bytes}")
        self.folder = Path(folder)
        self.budget_bytes = budget_bytes
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0, "written": 0, "evicted": 0}
        self._written_since_scan = 0
        self._lock = threading.Lock()

    def get(self, key: str, lengths: Sequence[int]) -> list[bytes] | None:
        """The blobs of entry ``key`` if present and intact (a bad entry is deleted)."""
        path = self.folder / key
        try:
            data = path.read_bytes()
        except OSError:
            self._count("misses")
            return None
        blobs = decode_entry(data, lengths)
        if blobs is None:
            self._count("corrupt")
            self._count("misses")
            _unlink(path)
            return None
        self._count("hits")
        try:
            os.utime(path)  # least recently *used*
        except OSError:
            pass
        return blobs

    def put(self, key: str, blobs: Sequence[bytes]) -> None:
        """Store ``blobs`` as entry ``key`` (atomically); evict when this process has written enough."""
        size = sum(len(b) for b in blobs)
        if size > self.budget_bytes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as handle:
                for piece in encode_entry(blobs):
                    handle.write(piece)
            os.replace(tmp, self.folder / key)
        except OSError:
            _unlink(tmp)  # a full or read-only disk: the cache is an optimisation, training goes on
            return
        self._count("written")
        with self._lock:
            self._written_since_scan += size
            scan = self._written_since_scan >= max(1, self.budget_bytes // 8)
            if scan:
                self._written_since_scan = 0
        if scan:
            self.evict()

    def evict(self, stale_tmp_s: float = STALE_TMP_S) -> None:
        """Delete least recently used entries until the folder holds at most ``budget_bytes``, and
        temporary files of writers that died (older than ``stale_tmp_s``)."""
        with file_lock(self.folder / ".lock", timeout_s=30.0) as locked:
            if not locked:
                return
            entries, total, now = [], 0, time.time()
            for path in self.folder.iterdir():
                try:
                    info = path.stat()
                except OSError:
                    continue
                if path.name.endswith(".tmp"):
                    if now - info.st_mtime > stale_tmp_s:
                        _unlink(path)
                elif not path.name.startswith("."):
                    entries.append((info.st_mtime, info.st_size, path))
                    total += info.st_size
            for _, size, path in sorted(entries):
                if total <= self.budget_bytes:
                    break
                _unlink(path)
                total -= size
                self._count("evicted")

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class DiskCachedReader:
    """A range reader whose ``read_many`` goes through an :class:`EpisodeDiskCache`; everything else
    (and ``stats``: the bytes that really crossed the network) is the wrapped reader's."""

    def __init__(self, reader: Any, cache: EpisodeDiskCache) -> None:
        self._reader = reader
        self.disk_cache = cache

    def read_many(self, requests: Iterable[ReadRequest | tuple[str, int, int]]) -> list[bytes]:
        requests = [ReadRequest(*r) for r in requests]  # read twice below (any iterable may come)
        key = entry_key(requests)
        lengths = [int(n) for _, _, n in requests]
        blobs = self.disk_cache.get(key, lengths)
        if blobs is None:
            blobs = self._reader.read_many(requests)
            self.disk_cache.put(key, blobs)
        return blobs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)
