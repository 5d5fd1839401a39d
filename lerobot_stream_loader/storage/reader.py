"""The RangeReader protocol, its shared statistics, retry policy and the base every backend builds on."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, wait
from dataclasses import dataclass, fields
from typing import Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from ..errors import FetchError
from ..util.daemon_pool import DaemonPool
from .coalesce import ReadRequest, assemble, plan_reads
from .paths import check_relative as check_relative_path

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_COALESCE_GAP = 1 << 20
DEFAULT_SPLIT_SIZE = 8 << 20


class RemoteFileNotFound(FetchError, FileNotFoundError):
    """The file does not exist on the storage (no retry helps)."""


class AccessDenied(FetchError, PermissionError):
    """The storage refused access to the file (after one re-resolution where that applies)."""


class Retryable(Exception):
    """A failed attempt that another attempt may fix; ``retry_after`` is the server's wish, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class ReaderStats:
    """Counters of one reader; every update holds a lock, so threads may share it.

    ``requests``/``bytes`` count what callers asked for and got; ``fetches``/``fetched_bytes`` the
    range requests actually sent after coalescing (``coalesced`` requests merged into a neighbour)
    and splitting (``split_parts`` extra parts). ``retries`` counts every repeated attempt, ``throttled``
    those a server asked for (with ``Retry-After``). Seconds are summed over all fetches.
    """

    requests: int = 0
    bytes: int = 0
    fetches: int = 0
    fetched_bytes: int = 0
    coalesced: int = 0
    split_parts: int = 0
    retries: int = 0
    throttled: int = 0
    failures: int = 0
    head_requests: int = 0
    resolves: int = 0
    reresolves: int = 0
    header_seconds: float = 0.0
    first_byte_seconds: float = 0.0
    body_seconds: float = 0.0
    retry_wait_seconds: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **increments: float) -> None:
        """Add each keyword's value to the counter of that name."""
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, float]:
        """A consistent copy of every counter."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self)}

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            for f in fields(self):
                setattr(self, f.name, f.default)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a failing request is retried.

    ``retries`` extra attempts at most, sleeping ``backoff * 2**n`` (capped at ``backoff_max``, with
    jitter) between them, or the server's ``Retry-After`` when it asks for longer; never past
    ``total_timeout`` seconds for one range. A server asking to wait (an answer with ``Retry-After``,
    as 429 and 503 carry when a server is busy) is obeyed without counting against ``retries``: only
    ``total_timeout`` bounds how long a busy server can hold a range back.
    """

    retries: int = 5
    backoff: float = 0.25
    backoff_max: float = 8.0
    total_timeout: float = 120.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to sleep after the ``failures``-th failed attempt; at least the server's
        ``retry_after``, spread up to half again so that readers told the same do not return together."""
        base = min(self.backoff_max, self.backoff * 2 ** (max(failures, 1) - 1))
        jittered = base * (0.5 + random.random() / 2)
        if retry_after is None:
            return jittered
        return max(jittered, retry_after * (1 + random.random() / 2))


@runtime_checkable
class RangeReader(Protocol):
    """Bytes of files below one dataset root; paths are relative to that root."""

    stats: ReaderStats

    def size(self, path: str) -> int: ...

    def etag(self, path: str) -> str | None: ...

    def read(self, path: str, offset: int, length: int) -> bytes: ...

    def read_many(self, requests: Iterable[ReadRequest | tuple[str, int, int]]) -> list[bytes]: ...

    def close(self) -> None: ...


def redact_url(url: str) -> str:
    """The URL without credentials, query string or fragment, safe for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    suffix = "?<redacted>" if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{suffix}"


def _as_request(item: ReadRequest | tuple[str, int, int]) -> ReadRequest:
    req = item if isinstance(item, ReadRequest) else ReadRequest(*item)
    if req.offset < 0 or req.length < 0:
        raise ValueError(f"invalid range offset={req.offset} length={req.length} of {req.path!r}")
    return ReadRequest(check_relative_path(req.path), int(req.offset), int(req.length))


class BaseRangeReader:
    """Shared part of the backends: path checks, size cache, coalescing and the fetch thread pool.

    A backend implements ``_size(path)`` and ``_fetch(path, offset, length)`` (one physical range,
    already retried and verified) and ``_close()``.
    """

    def __init__(
        self,
        *,
        max_workers: int = 8,
        coalesce_gap: int | None = DEFAULT_COALESCE_GAP,
        split_size: int | None = DEFAULT_SPLIT_SIZE,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self.coalesce_gap = coalesce_gap
        self.split_size = split_size
        self.retry = retry or RetryPolicy()
        self.stats = ReaderStats()
        self._sizes: dict[str, int] = {}
        self._etags: dict[str, str | None] = {}
        self._pool: DaemonPool | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._closing = threading.Event()  # wakes retry sleeps when the reader is closed
        self.thread_name_prefix = f"range-fetch-{id(self):x}"

    # -- public API -------------------------------------------------------------------------------
    def size(self, path: str) -> int:
        """Size in bytes of the file at ``path`` (cached)."""
        path = check_relative_path(path)
        if path not in self._sizes:
            self._sizes[path] = self._size(path)
        return self._sizes[path]

    def etag(self, path: str) -> str | None:
        """The file's version marker: its ETag (HTTP servers, the Hub, object stores) or ``mtime:<seconds>``
        on a file system, None when the store gives neither; learnt with the size, at no extra request."""
        path = check_relative_path(path)
        self.size(path)
        return self._etags.get(path)

    def read(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``path`` from ``offset``."""
        return self.read_many([ReadRequest(path, offset, length)])[0]

    def read_many(self, requests: Iterable[ReadRequest | tuple[str, int, int]]) -> list[bytes]:
        """Bytes of every request, in request order; coalesced, split and fetched concurrently."""
        reqs = [_as_request(r) for r in requests]
        self._check_open()
        plan = plan_reads(reqs, gap=self.coalesce_gap, split_size=self.split_size)
        self.stats.add(requests=len(reqs), coalesced=plan.coalesced, split_parts=plan.split_parts)
        results = self._run(plan.fetches)
        out = assemble(plan, results)
        self.stats.add(bytes=sum(len(b) for b in out))
        return out

    def close(self) -> None:
        """Cancel queued fetches, abandon running ones (never waits for storage) and release
        connections/handles; an abandoned fetch ends with an error at its next step."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        self._closing.set()
        if pool is not None:
            pool.shutdown()
        self._close()

    def __enter__(self) -> BaseRangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _executor(self) -> DaemonPool:
        with self._lock:
            self._check_open()
            if self._pool is None:
                self._pool = DaemonPool(self.max_workers, self.thread_name_prefix)
            return self._pool

    def _run(self, fetches: Sequence[ReadRequest]) -> list[bytes]:
        if len(fetches) <= 1 or self.max_workers == 1:  # one at a time: on the caller's thread, no pool
            return [self._fetch_checked(f) for f in fetches]
        futures = [self._executor().submit(self._fetch_checked, f) for f in fetches]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for fut in done:
            if fut.exception() is not None:
                for other in pending:
                    other.cancel()
                raise fut.exception()  # type: ignore[misc]
        return [f.result() for f in futures]

    def _with_retries(self, what: str, attempt: Callable[[float], T]) -> T:
        """Call ``attempt(deadline)`` until it does not raise Retryable, within the retry policy."""
        start = time.monotonic()
        deadline = start + self.retry.total_timeout
        failures = attempts = 0
        while True:
            if self._closing.is_set():
                raise FetchError(f"{what}: the reader was closed")
            try:
                return attempt(deadline)
            except Retryable as exc:
                attempts += 1
                throttled = exc.retry_after is not None  # the server said when to come back
                failures += not throttled
                elapsed = time.monotonic() - start
                delay = self.retry.delay(failures, exc.retry_after)
                if failures > self.retry.retries or elapsed + delay > self.retry.total_timeout:
                    raise FetchError(
                        f"{what}: failed after {attempts} attempt(s) in {elapsed:.1f}s; last error: {exc}"
                    ) from exc
                log.debug("%s: attempt %d failed (%s); retrying in %.2fs", what, attempts, exc, delay)
                self.stats.add(retries=1, throttled=int(throttled), retry_wait_seconds=delay)
                self._closing.wait(delay)

    def _fetch_checked(self, req: ReadRequest) -> bytes:
        try:
            data = self._fetch(req.path, req.offset, req.length)
        except Exception:
            self.stats.add(failures=1)
            raise
        if len(data) != req.length:
            raise FetchError(
                f"{self._describe(req.path)} bytes {req.offset}-{req.offset + req.length - 1}: "
                f"got {len(data)} bytes instead of {req.length}"
            )
        self.stats.add(fetches=1, fetched_bytes=len(data))
        return data

    def _describe(self, path: str) -> str:
        return path

    def _size(self, path: str) -> int:
        raise NotImplementedError

    def _fetch(self, path: str, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError
