"""Bytes from anywhere behind one small protocol: ``open_reader(root) -> RangeReader``."""

from __future__ import annotations

import os
from typing import Any

from .coalesce import ReadRequest
from .credentials import hide_secrets, reveal_secrets, secret_values, with_url_credentials
from .fsspec_reader import FsspecRangeReader
from .http_reader import HttpRangeReader
from .log_scrub import scrub_from_logs
from .reader import (
    AccessDenied,
    BaseRangeReader,
    RangeReader,
    ReaderStats,
    RemoteFileNotFound,
    RetryPolicy,
    check_relative_path,
)

__all__ = [
    "AccessDenied",
    "FsspecRangeReader",
    "HttpRangeReader",
    "RangeReader",
    "ReadRequest",
    "ReaderStats",
    "RemoteFileNotFound",
    "RetryPolicy",
    "check_relative_path",
    "open_reader",
    "open_root_reader",
]

_RETRY_OPTIONS = ("retries", "backoff", "backoff_max", "total_timeout")


def open_reader(root: str | os.PathLike[str], backend: str = "auto", **options: Any) -> BaseRangeReader:
    """Open a RangeReader on a dataset root (local path, ``file://``, ``s3://``, ``https://``, ``hf://`` ...).

    ``backend``: ``"http"`` (native httpx, for http(s) and hf roots), ``"fsspec"`` (anything fsspec
    opens) or ``"auto"`` (http for http(s)/hf roots, fsspec otherwise).

    Options: ``max_workers`` (alias ``threads``), ``coalesce_gap`` (bytes; None disables merging),
    ``split_size`` (bytes; None disables splitting), ``retries``, ``backoff``, ``backoff_max``,
    ``total_timeout`` (seconds per range), or a ready ``retry=RetryPolicy(...)``; ``timeout`` (sets
    both) / ``connect_timeout`` / ``read_timeout`` (longest stall between bytes), ``pool_timeout``
    (longest wait for a pooled connection); ``basic_auth`` (``"user:password"``, sent to the root's
    own origin only; a user part in an http(s) root is taken out of it into this option); for http: ``token`` (None: huggingface_hub's token,
    False: none), ``endpoint``, ``full_response_limit``, ``keepalive`` (False: close each connection
    after its response, so idle readers hold none); for fsspec: ``storage_options``; ``revision``
    for hf roots, and ``resolve`` (``"machine"``, ``"job"`` or ``"process"``), ``cache_dir`` and
    ``resolve_timeout``: how resolved Hub download URLs are shared (docs/reliability.md#requests-to-the-hub).
    The defaults are tabled in docs/reliability.md.
    """
    root, options = with_url_credentials(os.fspath(root), hide_secrets(options))
    scrub_from_logs(secret_values(options))  # kept out of botocore's, httpx's ... log records
    options = reveal_secrets(options)  # credentials held as Secret are unwrapped only here
    if "threads" in options:
        options.setdefault("max_workers", options.pop("threads"))
    policy = {name: options.pop(name) for name in _RETRY_OPTIONS if name in options}
    if policy:
        if "retry" in options:
            raise TypeError(f"pass either retry=RetryPolicy(...) or {sorted(policy)}, not both")
        options["retry"] = RetryPolicy(**policy)
    if backend == "auto":
        backend = "http" if root.startswith(("http://", "https://", "hf://")) else "fsspec"
    if "timeout" in options:
        timeout = options.pop("timeout")
        options.setdefault("connect_timeout", timeout)
        options.setdefault("read_timeout", timeout)
    if backend == "http":
        return HttpRangeReader(root, **options)
    if backend == "fsspec":
        return FsspecRangeReader(root, **options)
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'http' or 'fsspec'")


def open_root_reader(
    root: str,
    *,
    backend: str = "auto",
    storage_options: dict[str, Any] | None = None,
    reader_options: dict[str, Any] | None = None,
) -> BaseRangeReader:
    """``open_reader`` with fsspec ``storage_options`` passed only to a reader that uses fsspec."""
    options = dict(reader_options or {})
    native_http = root.startswith(("http://", "https://", "hf://"))
    if storage_options and (backend == "fsspec" or (backend == "auto" and not native_http)):
        options.setdefault("storage_options", storage_options)
    return open_reader(root, backend=backend, **options)
