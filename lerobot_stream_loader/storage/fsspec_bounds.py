"""Our deadlines on fsspec filesystems: timeouts passed down, nested retries off, every call bounded.

fsspec backends come with their own timeouts and retry loops (aiohttp: 5 minutes per request;
s3fs: 5 attempts, botocore: its own attempts on top), which nest with ours into waits of many
minutes. Here the storage options of the reader's filesystem get our connect/read timeouts and a
single attempt per call where the backend allows it (s3: botocore ``config_kwargs``, s3fs
``retries``); every call of an event-loop filesystem runs on its loop under ``asyncio.wait_for``
with the time left to the range's deadline, and calls of other remote filesystems run in a daemon
thread that is abandoned at the deadline. Local and in-memory filesystems are called directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..util.deadline import run_with_deadline
from .credentials import basic_auth_header
from .reader import Retryable

T = TypeVar("T")

DIRECT_PROTOCOLS = ("file", "local", "memory")


def bounded_storage_options(protocol: str, options: dict[str, Any] | None, *, connect_timeout: float,
                            read_timeout: float) -> dict[str, Any]:
    """``options`` with our timeouts and single attempts added where the user set none."""
    out = dict(options or {})
    if protocol in ("s3", "s3a"):
        config = dict(out.get("config_kwargs") or {})
        config.setdefault("connect_timeout", connect_timeout)
        config.setdefault("read_timeout", read_timeout)
        config.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})  # the first try only
        out["config_kwargs"] = config
    return out


def single_attempt(fs: Any) -> None:
    """Turn off the filesystem's own retry loop where it has one (s3fs, gcsfs: ``retries``)."""
    if type(fs).__name__ in ("S3FileSystem", "GCSFileSystem") and isinstance(getattr(fs, "retries", None), int):
        fs.retries = 1


def http_request_options(protocol: str, *, connect_timeout: float, read_timeout: float,
                         pool_timeout: float, basic_auth: str | None = None) -> dict[str, Any]:
    """Per-request keyword arguments of fsspec's HTTP filesystem: aiohttp timeouts (pool wait plus
    connect, socket connect, longest stall between reads) and basic authentication (``"user:password"``;
    aiohttp drops the header on a redirect to another origin); the whole call is bounded by the caller."""
    if protocol not in ("http", "https"):
        if basic_auth is not None:
            raise ValueError(f"basic_auth applies to http(s) roots, not {protocol}://")
        return {}
    import aiohttp

    options: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(
        total=None, connect=pool_timeout + connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout)}
    if basic_auth is not None:
        options["headers"] = basic_auth_header(basic_auth)
    return options


def run_on_loop(loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, T]],
                deadline: float, what: str) -> T:
    """Run ``make()`` on ``loop`` and wait at most until ``deadline`` (monotonic); the coroutine is
    cancelled when time runs out, and Retryable raised."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise Retryable(f"{what}: no time left before the deadline")
    future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(make(), left), loop)
    try:
        return future.result(left + 1.0)
    except (TimeoutError, concurrent.futures.TimeoutError, asyncio.TimeoutError) as exc:
        future.cancel()
        raise Retryable(f"{what}: no complete answer within {left:.1f}s") from exc


def run_in_thread(call: Callable[[], T], deadline: float, what: str) -> T:
    """``call()`` in a daemon thread, abandoned (Retryable) when ``deadline`` passes first."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise Retryable(f"{what}: no time left before the deadline")
    return run_with_deadline(call, left, what)
