"""Native HTTP backend: pooled httpx client, verified range responses, bounded retries.

Every response is checked before its bytes are returned: a 206 whose ``Content-Range`` and body
length match the request, or a 200 carrying the whole file. A 200 to a request for part of a file
from a server that does not announce ``Accept-Ranges: bytes`` raises :class:`RangeNotSupported` at
once (its body is not read); from one that does (a passing glitch), the whole file is sliced when it
is at most ``full_response_limit`` bytes, else the request is retried. Connection errors, timeouts, 429, 5xx, short or long bodies and mismatched
ranges are retried with exponential backoff and jitter (honouring ``Retry-After``) within a bounded
number of attempts and seconds. A 401/403/410 makes an ``hf://`` reader resolve the file again once.
Redirects are followed by hand so that each hop gets only the headers meant for its host.

Resolving an ``hf://`` file is one request against the Hub's per-token budget. A 429 there is
backpressure, not a failure: the wait it names (``RateLimit``'s reset, else ``Retry-After``) holds every
resolve of the token on the machine (:mod:`~lerobot_stream_loader.storage.hub_limits`), within
``resolve_timeout`` seconds per resolve (default one 5-minute window and a minute).
"""

from __future__ import annotations

import functools
import os
import random
import re
import ssl
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote, urljoin

import httpx

from ..errors import FetchError, range_not_supported
from .credentials import basic_auth_header
from .hf import HubLocator, Resolved, origin
from .hub_limits import RateLimit, ResolveHold, limited_wait
from .hub_limits import retry_after as _retry_after
from .reader import (
    DEFAULT_COALESCE_GAP,
    DEFAULT_SPLIT_SIZE,
    AccessDenied,
    BaseRangeReader,
    RemoteFileNotFound,
    Retryable,
    RetryPolicy,
    redact_url,
)

_MAX_REDIRECTS = 5
RESOLVE_TIMEOUT_S = 360.0  # one 5-minute rate-limit window of the Hub, and a minute
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class Locator(Protocol):
    """Maps paths below the root to URLs and decides which headers each URL may receive."""

    can_refresh: bool

    def target(self, path: str, *, refused: str | None = None) -> Resolved: ...

    def borrowed(self, url: str) -> bool: ...

    def headers_for(self, url: str) -> dict[str, str]: ...

    def describe(self, path: str) -> str: ...


class UrlLocator:
    """A plain http(s) root: a file's URL is the root joined with its path; basic authentication,
    when given, goes to the root's own origin only (never to where it redirects)."""

    can_refresh = False

    def __init__(self, root: str, basic_auth: str | None = None) -> None:
        self.root = root.rstrip("/")
        self._origin = origin(self.root)
        self._headers = basic_auth_header(basic_auth) if basic_auth is not None else {}

    def target(self, path: str, *, refused: str | None = None) -> Resolved:
        return Resolved(f"{self.root}/{quote(path)}", None)

    def borrowed(self, url: str) -> bool:
        return False

    def headers_for(self, url: str) -> dict[str, str]:
        return dict(self._headers) if origin(url) == self._origin else {}

    def describe(self, path: str) -> str:
        return redact_url(f"{self.root}/{quote(path)}")


class _Denied(Exception):
    """The server refused the URL (401/403/410)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _RateLimited(Exception):
    """The Hub answered a resolve with 429: wait ``wait`` seconds (None: it did not say)."""

    def __init__(self, wait: float | None, limit: RateLimit | None) -> None:
        super().__init__("HTTP 429")
        self.wait, self.limit = wait, limit


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The verifying SSL context every client of this process uses (one costs about 1 MiB; a worker
    of a mixture holds one reader per source)."""
    return httpx.create_ssl_context()


class HttpRangeReader(BaseRangeReader):
    """RangeReader over http(s):// roots and hf:// roots (resolved through the Hub).

    For ``hf://`` roots: ``resolve`` (``"machine"``: resolved URLs shared through ``cache_dir`` by every
    reader of the machine; ``"job"``: also through the job's board; ``"process"``: kept in this reader
    only), ``cache_dir`` (default: the machine's cache folder), ``resolve_timeout`` (seconds one resolve
    may take, rate-limit waits and the wait for another reader's resolve included)."""

    def __init__(
        self,
        root: str,
        *,
        max_workers: int = 8,
        coalesce_gap: int | None = DEFAULT_COALESCE_GAP,
        split_size: int | None = DEFAULT_SPLIT_SIZE,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        pool_timeout: float = 30.0,
        full_response_limit: int = 16 << 20,
        token: str | bool | None = None,
        revision: str | None = None,
        endpoint: str | None = None,
        keepalive: bool = True,
        basic_auth: str | None = None,
        resolve: str = "machine",
        cache_dir: str | os.PathLike[str] | None = None,
        resolve_timeout: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        super().__init__(
            max_workers=max_workers, coalesce_gap=coalesce_gap, split_size=split_size, retry=retry
        )
        self.root = root
        self.full_response_limit = full_response_limit
        self.resolve_timeout = float(resolve_timeout)
        self._locator: Locator
        self._hold: ResolveHold | None = None
        if root.startswith("hf://"):
            if basic_auth is not None:
                raise ValueError("basic_auth applies to http(s):// roots; a Hub root takes a token")
            hub = HubLocator(root, head=self._resolve_head, revision=revision, endpoint=endpoint, token=token,
                             stats=self.stats, share=resolve, cache_dir=cache_dir,
                             lock_timeout=self.resolve_timeout)
            self._hold = ResolveHold(hub.limit_key, hub.hold_file, hub.endpoint)
            self._locator = hub
        elif root.startswith(("http://", "https://")):
            if revision is not None:
                raise ValueError(f"revision={revision!r} only applies to hf:// roots, not {redact_url(root)}")
            if resolve != "machine" or cache_dir is not None:
                raise ValueError(f"resolve= and cache_dir= apply to hf:// roots, not {redact_url(root)}")
            self._locator = UrlLocator(root, basic_auth)
        else:
            raise ValueError(f"the HTTP backend needs an http(s):// or hf:// root, got {root!r}")
        self._client = httpx.Client(
            verify=shared_ssl_context(),
            limits=httpx.Limits(max_connections=max_workers,
                                max_keepalive_connections=max_workers if keepalive else 0),
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=pool_timeout),
            follow_redirects=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "lerobot-stream-loader"},
        )

    def __repr__(self) -> str:
        shown = self.root if self.root.startswith("hf://") else redact_url(self.root)
        return f"HttpRangeReader({shown!r}, max_workers={self.max_workers})"

    @property
    def hub_locator(self) -> HubLocator | None:
        """The locator of an ``hf://`` root (None for http(s) roots)."""
        return self._locator if isinstance(self._locator, HubLocator) else None

    def _describe(self, path: str) -> str:
        return self._locator.describe(path)

    def _close(self) -> None:
        self._client.close()

    # -- requests -------------------------------------------------------------------------------
    def _resolve_head(self, url: str, headers: Mapping[str, str]) -> httpx.Response:
        """HEAD a Hub resolve URL: the machine's rate-limit hold waited out first, a 429 noted as one,
        all within ``resolve_timeout``."""
        assert self._hold is not None
        deadline = time.monotonic() + self.resolve_timeout
        unnamed = 0
        while True:
            self._wait_for_hold(url, deadline)
            try:
                return self._head(url, headers, rate_limited=True)
            except _RateLimited as exc:
                unnamed = unnamed + 1 if exc.wait is None else 0
                wait = exc.wait if exc.wait is not None else self.retry.delay(unnamed)
                self._hold.note(max(wait, 1.0), exc.limit)  # "t=0": the window resets in under a second

    def _wait_for_hold(self, url: str, deadline: float) -> None:
        assert self._hold is not None
        left = self._hold.remaining()
        if left <= 0:
            return
        wait = left + random.uniform(0.0, min(5.0, 0.1 * left))  # readers held together do not return together
        if time.monotonic() + wait > deadline:
            raise FetchError(f"HEAD {redact_url(url)}: the Hub's resolver rate limit holds resolves for "
                             f"{left:.0f} s more, past resolve_timeout ({self.resolve_timeout:g} s)")
        self._hold.waiting(left)
        self.stats.add(retries=1, throttled=1, retry_wait_seconds=wait)
        if self._closing.wait(wait):
            raise FetchError(f"HEAD {redact_url(url)}: the reader was closed")

    def _head(self, url: str, headers: Mapping[str, str], *, rate_limited: bool = False) -> httpx.Response:
        """HEAD ``url`` (no redirect following), retrying transport errors, 429 and 5xx (with
        ``rate_limited``, a 429 raises :class:`_RateLimited` for the caller's hold instead)."""

        def once(deadline: float) -> httpx.Response:
            try:
                resp = self._client.head(url, headers=dict(headers), timeout=self._timeout(deadline))
            except _TRANSIENT as exc:
                raise Retryable(f"{type(exc).__name__}: {exc}") from exc
            self.stats.add(head_requests=1)
            if resp.status_code == 429 and rate_limited:
                raise _RateLimited(*limited_wait(resp.headers))
            if resp.status_code == 429 or resp.status_code >= 500:
                raise Retryable(f"HTTP {resp.status_code}", _retry_after(resp.headers.get("retry-after")))
            return resp

        return self._with_retries(f"HEAD {redact_url(url)}", once)

    def _timeout(self, deadline: float) -> httpx.Timeout:
        """The client's timeouts, none longer than the time left before ``deadline``."""
        left = max(0.001, deadline - time.monotonic())
        t = self._client.timeout
        return httpx.Timeout(connect=min(t.connect or left, left), read=min(t.read or left, left),
                             write=min(t.write or left, left), pool=min(t.pool or left, left))

    # -- size -------------------------------------------------------------------------------------
    def _size(self, path: str) -> int:
        target = self._locator.target(path)
        if target.size is not None:
            self._etags[path] = target.etag
            return target.size
        url = target.url
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._head(url, self._locator.headers_for(url))
            if resp.is_redirect:
                url = urljoin(url, resp.headers["location"])
                continue
            self._raise_for_final_status(resp.status_code, self._describe(path))
            if resp.status_code == 200 and "content-length" in resp.headers:
                self._etags[path] = resp.headers.get("etag")
                return int(resp.headers["content-length"])
            raise FetchError(f"{self._describe(path)}: HEAD gave HTTP {resp.status_code} without a size")
        raise FetchError(f"{self._describe(path)}: more than {_MAX_REDIRECTS} redirects")

    @staticmethod
    def _raise_for_final_status(status: int, what: str) -> None:
        if status == 404:
            raise RemoteFileNotFound(f"{what}: not found (HTTP 404)")
        if status in (401, 403, 410):
            raise AccessDenied(f"{what}: access refused (HTTP {status})")

    # -- ranges -----------------------------------------------------------------------------------
    def _fetch(self, path: str, offset: int, length: int) -> bytes:
        what = f"{self._describe(path)} bytes {offset}-{offset + length - 1}"
        refreshes, refused = 0, None  # a URL another reader resolved may be refused too: then this one resolves
        while True:
            target = self._locator.target(path, refused=refused)
            try:
                return self._with_retries(what, functools.partial(self._get_once, target, offset, length))
            except _Denied as exc:
                borrowed = refreshes == 1 and self._locator.borrowed(target.url)
                if self._locator.can_refresh and (refreshes == 0 or borrowed):
                    refreshes, refused = refreshes + 1, target.url
                    self.stats.add(reresolves=1)
                    continue
                again = " even after resolving the file again" if refreshes else ""
                raise AccessDenied(f"{what}: access refused ({exc}){again}") from None

    def _get_once(self, target: Resolved, offset: int, length: int, deadline: float) -> bytes:
        url = target.url
        for _ in range(_MAX_REDIRECTS + 1):
            headers = {**self._locator.headers_for(url), "Range": f"bytes={offset}-{offset + length - 1}"}
            started = time.monotonic()
            try:
                with self._client.stream("GET", url, headers=headers, timeout=self._timeout(deadline)) as resp:
                    headers_at = time.monotonic()
                    self.stats.add(header_seconds=headers_at - started)
                    if resp.is_redirect:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    return self._checked_body(resp, offset, length, target.size, deadline, headers_at)
            except _TRANSIENT as exc:
                raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        raise FetchError(f"{redact_url(target.url)}: more than {_MAX_REDIRECTS} redirects")

    def _checked_body(
        self,
        resp: httpx.Response,
        offset: int,
        length: int,
        size: int | None,
        deadline: float,
        headers_at: float,
    ) -> bytes:
        status = resp.status_code
        declared = resp.headers.get("content-length")
        if status == 206:
            content_range = resp.headers.get("content-range", "")
            m = _CONTENT_RANGE.fullmatch(content_range.strip())
            if m and m.group(3) != "*" and offset + length > int(m.group(3)):
                raise FetchError(
                    f"{redact_url(str(resp.url))}: bytes {offset}-{offset + length - 1} lie beyond the "
                    f"end of the file ({m.group(3)} bytes)"
                )
            if not m or (int(m.group(1)), int(m.group(2))) != (offset, offset + length - 1):
                raise Retryable(f"Content-Range {content_range!r} does not match the requested range")
            if declared is not None and int(declared) != length:
                raise Retryable(f"Content-Length {declared} differs from the requested {length} bytes")
            return self._read_body(resp, length, deadline, headers_at)
        if status == 200:
            total = int(declared) if declared is not None else None
            if offset == 0 and total == length:  # the whole file was asked for
                return self._read_body(resp, total, deadline, headers_at)
            if "bytes" not in resp.headers.get("accept-ranges", "").lower():  # never slice such answers
                raise range_not_supported(redact_url(str(resp.url)), offset, length,
                                          f"HTTP 200 with the whole file, {declared or 'unknown'} bytes")
            if (
                total is None
                or total > self.full_response_limit
                or total < offset + length
                or (size is not None and total != size)
            ):
                raise Retryable(f"HTTP 200 with {declared or 'unknown'} bytes (whole file) instead of 206")
            return self._read_body(resp, total, deadline, headers_at)[offset : offset + length]
        if status in (401, 403, 410):
            raise _Denied(status)
        if status == 429 or status >= 500:
            after = _retry_after(resp.headers.get("retry-after"))
            suffix = f" (Retry-After: {after:g}s)" if after is not None else ""
            raise Retryable(f"HTTP {status}{suffix}", after)
        if status == 404:
            raise RemoteFileNotFound(f"{redact_url(str(resp.url))}: not found (HTTP 404)")
        if status == 416:
            raise FetchError(f"{redact_url(str(resp.url))}: range beyond the end of the file (HTTP 416)")
        raise FetchError(f"{redact_url(str(resp.url))}: unexpected HTTP {status} for a range request")

    def _read_body(self, resp: httpx.Response, expected: int, deadline: float, headers_at: float) -> bytes:
        buf = bytearray()
        first: float | None = None
        for chunk in resp.iter_raw():
            if first is None:
                first = time.monotonic()
            buf += chunk
            if len(buf) > expected:
                raise Retryable(f"body longer than the expected {expected} bytes")
            if time.monotonic() > deadline:
                raise Retryable(f"body not complete within the time limit ({len(buf)}/{expected} bytes)")
        now = time.monotonic()
        if first is not None:
            self.stats.add(first_byte_seconds=first - headers_at, body_seconds=now - first)
        if len(buf) != expected:
            raise Retryable(f"short body: {len(buf)} of {expected} bytes")
        return bytes(buf)
