"""Native HTTP backend: pooled httpx client, verified range responses, bounded retries.

Every response is checked before its bytes are returned: a 206 whose ``Content-Range`` and body
length match the request, or a 200 carrying the whole file. A 200 to a request for part of a file
from a server that does not announce ``Accept-Ranges: bytes`` raises :class:`RangeNotSupported` at
once (its body is not read); from one that does (a passing glitch), the whole file is sliced when it
is at most ``full_response_limit`` bytes, else the request is retried. Connection errors, timeouts, 429, 5xx, short or long bodies and mismatched
ranges are retried with exponential backoff and jitter (honouring ``Retry-After``) within a bounded
number of attempts and seconds. A 401/403/410 makes an ``hf://`` reader resolve the file again once.
Redirects are followed by hand so that each hop gets only the headers meant for its host.
"""

from __future__ import annotations

import functools
import re
import ssl
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import quote, urljoin

import httpx

from ..errors import FetchError, range_not_supported
from .credentials import basic_auth_header
from .hf import HubLocator, Resolved, origin
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
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class Locator(Protocol):
    """Maps paths below the root to URLs and decides which headers each URL may receive."""

    can_refresh: bool

    def target(self, path: str, *, refresh: bool = False) -> Resolved: ...

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

    def target(self, path: str, *, refresh: bool = False) -> Resolved:
        return Resolved(f"{self.root}/{quote(path)}", None)

    def headers_for(self, url: str) -> dict[str, str]:
        return dict(self._headers) if origin(url) == self._origin else {}

    def describe(self, path: str) -> str:
        return redact_url(f"{self.root}/{quote(path)}")


class _Denied(Exception):
    """The server refused the URL (401/403/410)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The verifying SSL context every client of this process uses (one costs about 1 MiB; a worker
    of a mixture holds one reader per source)."""
    return httpx.create_ssl_context()


class HttpRangeReader(BaseRangeReader):
    """RangeReader over http(s):// roots and hf:// roots (resolved through the Hub)."""

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
    ) -> None:
        super().__init__(
            max_workers=max_workers, coalesce_gap=coalesce_gap, split_size=split_size, retry=retry
        )
        self.root = root
        self.full_response_limit = full_response_limit
        self._locator: Locator
        if root.startswith("hf://"):
            if basic_auth is not None:
                raise ValueError("basic_auth applies to http(s):// roots; a Hub root takes a token")
            self._locator = HubLocator(
                root, head=self._head, revision=revision, endpoint=endpoint, token=token, stats=self.stats
            )
        elif root.startswith(("http://", "https://")):
            if revision is not None:
                raise ValueError(f"revision={revision!r} only applies to hf:// roots, not {redact_url(root)}")
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

    def _describe(self, path: str) -> str:
        return self._locator.describe(path)

    def _close(self) -> None:
        self._client.close()

    # -- requests -------------------------------------------------------------------------------
    def _head(self, url: str, headers: Mapping[str, str]) -> httpx.Response:
        """HEAD ``url`` (no redirect following), retrying transport errors, 429 and 5xx."""

        def once(deadline: float) -> httpx.Response:
            try:
                resp = self._client.head(url, headers=dict(headers), timeout=self._timeout(deadline))
            except _TRANSIENT as exc:
                raise Retryable(f"{type(exc).__name__}: {exc}") from exc
            self.stats.add(head_requests=1)
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
        refreshed = False
        while True:
            target = self._locator.target(path, refresh=refreshed)
            try:
                return self._with_retries(what, functools.partial(self._get_once, target, offset, length))
            except _Denied as exc:
                if self._locator.can_refresh and not refreshed:
                    refreshed = True
                    self.stats.add(reresolves=1)
                    continue
                again = " even after resolving the file again" if refreshed else ""
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
