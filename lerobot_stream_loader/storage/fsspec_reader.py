"""fsspec backend: any fsspec URL or local path (file, s3, gcs, https, hf, memory ...).

A read of N bytes asks the storage for exactly those N bytes: one ``cat_file`` call with a start and
an end on remote filesystems, bounded by our deadlines (:mod:`.fsspec_bounds`); on local and
in-memory filesystems each fetch thread keeps its own open file handle per file. Calls into fsspec
pass keyword arguments only (s3fs's signatures put ``version_id`` in second position).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import FetchError, range_not_supported
from .fsspec_bounds import (
    DIRECT_PROTOCOLS,
    bounded_storage_options,
    http_request_options,
    run_in_thread,
    run_on_loop,
    single_attempt,
)
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

T = TypeVar("T")
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
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        pool_timeout: float = 30.0,
        storage_options: dict[str, Any] | None = None,
        revision: str | None = None,
        basic_auth: str | None = None,
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
        protocol = fsspec.core.split_protocol(root)[0] or "file"
        options = bounded_storage_options(protocol, storage_options, connect_timeout=connect_timeout,
                                          read_timeout=read_timeout)
        self.fs, root_path = fsspec.core.url_to_fs(root, **options)
        single_attempt(self.fs)
        _keep_for_the_process(self.fs)
        self._root_path = root_path.rstrip("/")
        self._open_kwargs = {} if isinstance(self.fs, LocalFileSystem) else {"cache_type": "none"}
        self._on_loop = bool(getattr(self.fs, "async_impl", False))
        self._direct = not self._on_loop and (isinstance(self.fs, LocalFileSystem) or protocol in DIRECT_PROTOCOLS)
        self._request_options = http_request_options(protocol, connect_timeout=connect_timeout,
                                                     read_timeout=read_timeout, pool_timeout=pool_timeout,
                                                     basic_auth=basic_auth)
        self._local = threading.local()
        self._all_handles: list[Any] = []

    def __repr__(self) -> str:
        return f"FsspecRangeReader({self.root!r}, fs={type(self.fs).__name__}, max_workers={self.max_workers})"

    def _full(self, path: str) -> str:
        return f"{self._root_path}/{path}" if self._root_path else path

    def _describe(self, path: str) -> str:
        return f"{self.root.rstrip('/')}/{path}"

    def _bounded(self, what: str, deadline: float, name: str, *args: Any, **kwargs: Any) -> Any:
        """``fs.<name>(*args, **kwargs)`` within ``deadline``: on the event loop (``_<name>``) for async
        filesystems, in an abandonable thread for other remote ones, directly for local ones."""
        if self._on_loop:
            method = getattr(self.fs, f"_{name}")
            return run_on_loop(self.fs.loop, lambda: method(*args, **kwargs), deadline, what)
        call: Callable[[], Any] = lambda: getattr(self.fs, name)(*args, **kwargs)  # noqa: E731
        return call() if self._direct else run_in_thread(call, deadline, what)

    def _attempt(self, what: str, path: str, call: Callable[[], T]) -> T:
        """One try of ``call``: storage answers mapped to final errors or Retryable."""
        try:
            return call()
        except (FileNotFoundError, RemoteFileNotFound):
            raise RemoteFileNotFound(f"{what}: not found") from None
        except (PermissionError, AccessDenied) as exc:
            raise AccessDenied(f"{what}: access refused ({exc})") from None
        except (Retryable, FetchError):
            raise
        except Exception as exc:  # noqa: BLE001 - transport errors of any backend (aiohttp, botocore ...)
            status = getattr(exc, "status", None) or getattr(exc, "code", None)
            if status in (401, 403):
                raise AccessDenied(f"{what}: access refused (HTTP {status})") from None
            if status == 404:
                raise RemoteFileNotFound(f"{what}: not found (HTTP 404)") from None
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc

    def _size(self, path: str) -> int:
        what = self._describe(path)
        info = self._with_retries(f"size of {what}", lambda deadline: self._attempt(
            what, path, lambda: self._bounded(what, deadline, "info", self._full(path), **self._request_options)))
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
        if self._direct:
            return self._with_retries(what, lambda deadline: self._read_handle(what, path, offset, length))

        def attempt(deadline: float) -> bytes:
            data = self._attempt(what, path, lambda: self._bounded(
                what, deadline, "cat_file", self._full(path), start=offset, end=offset + length,
                **self._request_options))
            if len(data) > length and len(data) == self.size(path):  # a 200 with the whole file
                raise range_not_supported(self._describe(path), offset, length, "HTTP 200")
            if len(data) != length:
                if offset + length > self.size(path):
                    raise FetchError(f"{what}: beyond the end of the file ({self.size(path)} bytes)")
                raise Retryable(f"got {len(data)} bytes instead of {length}")
            return data

        return self._with_retries(what, attempt)

    def _read_handle(self, what: str, path: str, offset: int, length: int) -> bytes:
        """One read through this thread's open handle of a local or in-memory file."""
        handles: dict[str, Any] = self._local.__dict__.setdefault("handles", {})
        try:
            f = self._handle(path)
            f.seek(offset)
            data = f.read(length)
        except FileNotFoundError:
            raise RemoteFileNotFound(f"{what}: not found") from None
        except PermissionError as exc:
            raise AccessDenied(f"{what}: access refused ({exc})") from None
        except (OSError, TimeoutError) as exc:
            self._drop(handles, path)
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        if len(data) != length:
            self._drop(handles, path)
            if offset + length > self.size(path):
                raise FetchError(f"{what}: beyond the end of the file ({self.size(path)} bytes)")
            raise Retryable(f"short read: {len(data)} of {length} bytes")
        return data

    def _close(self) -> None:
        with self._lock:
            handles, self._all_handles = self._all_handles, []
        for f in handles:
            f.close()
