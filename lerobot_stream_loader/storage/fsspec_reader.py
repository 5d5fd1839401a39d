"""fsspec backend: any fsspec URL or local path (file, s3, gcs, https, hf, memory ...).

Each fetch thread keeps its own open file handle per file, opened without a read-ahead cache
(``cache_type="none"``), so a read of N bytes asks the storage for exactly those N bytes. Calls into
fsspec pass keyword arguments only (s3fs's signatures put ``version_id`` in second position).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import FetchError, range_not_supported
from .hf import parse_hf_root
from .reader import (
    DEFAULT_COALESCE_GAP,
    DEFAULT_SPLIT_SIZE,
    AccessDenied,
    BaseRangeReader,
    RemoteFileNotFound,
    Retryable,
    RetryPolicy,
)

_HANDLES_PER_THREAD = 32
_EVENT_LOOP_FILESYSTEMS: dict[int, Any] = {}


def _keep_for_the_process(fs: Any) -> None:
    """Keep an event-loop filesystem (http, s3, gcs ...) referenced until the process ends.

    A forked DataLoader worker inherits the parent's filesystem together with its pooled connections,
    whose sockets and event-loop epoll set it shares with the parent. When the worker makes its own
    filesystem, fsspec drops the inherited one from its cache; were it garbage-collected there, its
    connections would be closed from the worker, which unregisters them from the parent's epoll set,
    and the parent's next request on such a connection would be sent but its answer never read. Held
    here, it is never collected in a worker (workers end with ``os._exit``).
    """
    if getattr(fs, "async_impl", False):
        _EVENT_LOOP_FILESYSTEMS.setdefault(id(fs), fs)


class FsspecRangeReader(BaseRangeReader):
    """RangeReader over an fsspec filesystem rooted at ``root``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_workers: int = 8,
        coalesce_gap: int | None = DEFAULT_COALESCE_GAP,
        split_size: int | None = DEFAULT_SPLIT_SIZE,
        retry: RetryPolicy | None = None,
        storage_options: dict[str, Any] | None = None,
        revision: str | None = None,
    ) -> None:
        super().__init__(
            max_workers=max_workers, coalesce_gap=coalesce_gap, split_size=split_size, retry=retry
        )
        root = os.fspath(root)
        if root.startswith("hf://"):
            root = parse_hf_root(root, revision).uri()
        elif revision is not None:
            raise ValueError(f"revision={revision!r} only applies to hf:// roots, not {root!r}")
        self.root = root
        self.fs, root_path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        _keep_for_the_process(self.fs)
        self._root_path = root_path.rstrip("/")
        self._open_kwargs = {} if isinstance(self.fs, LocalFileSystem) else {"cache_type": "none"}
        self._local = threading.local()
        self._all_handles: list[Any] = []

    def __repr__(self) -> str:
        return f"FsspecRangeReader({self.root!r}, fs={type(self.fs).__name__}, max_workers={self.max_workers})"

    def _full(self, path: str) -> str:
        return f"{self._root_path}/{path}" if self._root_path else path

    def _describe(self, path: str) -> str:
        return f"{self.root.rstrip('/')}/{path}"

    def _size(self, path: str) -> int:
        try:
            info = self.fs.info(self._full(path))
        except FileNotFoundError:
            raise RemoteFileNotFound(f"{self._describe(path)}: not found") from None
        except PermissionError as exc:
            raise AccessDenied(f"{self._describe(path)}: access refused ({exc})") from None
        etag = info.get("ETag") or info.get("etag")  # object stores; file systems give an mtime instead
        if etag is None and info.get("mtime") is not None:
            etag = f"mtime:{info['mtime']}"
        self._etags[path] = None if etag is None else str(etag)
        return int(info["size"])

    def _handle(self, path: str) -> Any:
        handles: dict[str, Any] = self._local.__dict__.setdefault("handles", {})
        if path not in handles:
            if len(handles) >= _HANDLES_PER_THREAD:
                self._drop(handles, next(iter(handles)))
            f = self.fs.open(self._full(path), mode="rb", **self._open_kwargs)
            handles[path] = f
            with self._lock:
                self._all_handles.append(f)
        return handles[path]

    def _drop(self, handles: dict[str, Any], path: str) -> None:
        f = handles.pop(path, None)
        if f is not None:
            with self._lock:
                if f in self._all_handles:
                    self._all_handles.remove(f)
            f.close()

    def _fetch(self, path: str, offset: int, length: int) -> bytes:
        what = f"{self._describe(path)} bytes {offset}-{offset + length - 1}"

        def attempt(deadline: float) -> bytes:
            handles: dict[str, Any] = self._local.__dict__.setdefault("handles", {})
            try:
                f = self._handle(path)
                f.seek(offset)
                data = f.read(length)
            except FileNotFoundError:
                raise RemoteFileNotFound(f"{what}: not found") from None
            except PermissionError as exc:
                raise AccessDenied(f"{what}: access refused ({exc})") from None
            except ValueError as exc:  # fsspec's HTTP file, when a server answers a range with a 200
                if "range requests" not in str(exc):
                    raise
                raise range_not_supported(self._describe(path), offset, length, "HTTP 200") from None
            except (OSError, TimeoutError) as exc:
                self._drop(handles, path)
                raise Retryable(f"{type(exc).__name__}: {exc}") from exc
            if len(data) != length:
                self._drop(handles, path)
                if offset + length > self.size(path):
                    raise FetchError(f"{what}: beyond the end of the file ({self.size(path)} bytes)")
                raise Retryable(f"short read: {len(data)} of {length} bytes")
            return data

        return self._with_retries(what, attempt)

    def _close(self) -> None:
        with self._lock:
            handles, self._all_handles = self._all_handles, []
        for f in handles:
            f.close()
