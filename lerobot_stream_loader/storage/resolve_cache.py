"""Resolved Hub download URLs, shared by the readers of a machine through its cache folder.

The Hub counts every request to its resolve endpoint against a per-token budget; the range reads that
follow go to the signed URL it answered and do not count. Each resolved file gets one small file below
``<cache_dir>/resolved/<scope>/``, so every rank and DataLoader worker of a machine (or of a job, on a
folder every node sees) uses one resolution per URL lifetime. The scope is a hash of the Hub endpoint,
the repository (kind and id), the revision and a hash of the token: a URL is never shared across tokens
or revisions, and no token is written anywhere. A signed URL grants read access until it expires, so
entries are mode 0600 in folders of mode 0700.

An entry holds the URL, size, ETag and expiry (parsed from the URL's query, ``Expires=`` or
``X-Amz-Date`` + ``X-Amz-Expires``; else :data:`DEFAULT_LIFETIME_S` after it was resolved). It is used
until :func:`renew_margin` before it expires. A file the Hub does not have (404) is noted for
:data:`MISSING_FOR_S` (readers look for optional files, such as the index sidecar). One lock file per
entry lets one reader resolve while the others wait (bounded) for its answer. A reader reads and
writes only the entries of files it opens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..util.local_files import write_file_atomically
from .local_cache import file_lock
from .paths import normalize_root

log = logging.getLogger(__name__)

RESOLVE_MODES = ("process", "machine", "job")
DEFAULT_LIFETIME_S = 600.0  # a URL whose query names no expiry is taken to last this long
MISSING_FOR_S = 600.0  # a 404 is believed this long
MIN_MARGIN_S, MAX_MARGIN_S = 1.0, 300.0
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Resolved:
    """Where a file's bytes are fetched from: URL, size and ETag when the server told them, and when
    the URL was resolved and expires (seconds since the epoch; None: never)."""

    url: str
    size: int | None
    etag: str | None = None
    expires_at: float | None = None
    resolved_at: float | None = None

    def fresh(self, now: float | None = None) -> bool:
        """Whether the URL may still be used: more than :func:`renew_margin` before it expires."""
        if self.expires_at is None:
            return True
        return (time.time() if now is None else now) < self.expires_at - renew_margin(self)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resolved:
        """An entry read back; ``ValueError`` when it is not one."""
        if not isinstance(data.get("url"), str) or not urlsplit(data["url"]).scheme.startswith("http"):
            raise ValueError("no http(s) url")
        size, etag = data.get("size"), data.get("etag")
        expires, resolved = data.get("expires_at"), data.get("resolved_at")
        if not (size is None or (isinstance(size, int) and size >= 0)):
            raise ValueError("bad size")
        if not (etag is None or isinstance(etag, str)):
            raise ValueError("bad etag")
        if not all(v is None or isinstance(v, int | float) for v in (expires, resolved)):
            raise ValueError("bad times")
        return cls(data["url"], size, etag, expires, resolved)


def renew_margin(resolved: Resolved) -> float:
    """Seconds before expiry from which a URL is resolved again: a tenth of its lifetime, 1 s to 5 min."""
    lifetime = DEFAULT_LIFETIME_S
    if resolved.expires_at is not None and resolved.resolved_at is not None:
        lifetime = max(0.0, resolved.expires_at - resolved.resolved_at)
    return min(MAX_MARGIN_S, max(MIN_MARGIN_S, 0.1 * lifetime))


def url_expiry(url: str) -> float | None:
    """When a signed URL expires (seconds since the epoch), from its query; None when it does not say."""
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items() if v}
    found: list[float] = []
    with contextlib.suppress(ValueError):
        if "expires" in query:
            found.append(float(query["expires"]))
    for prefix in ("x-amz-", "x-goog-"):
        date, expires = query.get(prefix + "date"), query.get(prefix + "expires")
        if date and expires:
            with contextlib.suppress(ValueError):
                start = datetime.strptime(date, _AMZ_DATE).replace(tzinfo=timezone.utc).timestamp()
                found.append(start + float(expires))
    return min(found) if found else None


def stamped(resolved: Resolved, now: float | None = None) -> Resolved:
    """``resolved`` with the time it was resolved and its expiry (from the URL, else the default lifetime)."""
    now = time.time() if now is None else now
    expires = url_expiry(resolved.url)
    if expires is None:
        expires = now + DEFAULT_LIFETIME_S
    return replace(resolved, resolved_at=now, expires_at=expires)


def _digest(*parts: str, size: int = 32) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:size]


def token_fingerprint(token: str | None) -> str:
    """A one-way hash of ``token`` that tells tokens apart (never stored by itself)."""
    return "anonymous" if not token else _digest("lerobot-stream-loader token", token)


def resolve_scope(endpoint: str, kind: str, repo_id: str, revision: str | None, token: str | None) -> str:
    """The key of one (endpoint, repository, revision, token): entries are shared only within it."""
    return _digest(endpoint, kind, repo_id, revision or "", token_fingerprint(token))


def check_resolve_mode(mode: str) -> str:
    if mode not in RESOLVE_MODES:
        raise ValueError(f"resolve={mode!r}: expected one of {', '.join(map(repr, RESOLVE_MODES))}")
    return mode


def hub_reader_options(source: str | os.PathLike[str], *, revision: str | None, backend: str,
                       reader_options: dict[str, Any] | None, resolve: str,
                       cache_dir: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """``reader_options`` with ``resolve`` and ``cache_dir`` added when ``source`` is a Hub root read by
    the HTTP backend (the readers that resolve files); unchanged otherwise."""
    check_resolve_mode(resolve)
    if backend not in ("auto", "http") or not normalize_root(source, revision).startswith("hf://"):
        return reader_options
    if resolve == "machine" and cache_dir is None:
        return reader_options  # the readers' defaults
    options = dict(reader_options or {})
    options.setdefault("resolve", resolve)
    if cache_dir is not None:
        options.setdefault("cache_dir", os.fspath(cache_dir))
    return options


def _private_folder(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only (a signed URL is a credential)."""
    write_file_atomically(path, data, mode=0o600)


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON object file, None when absent, unreadable or not an object."""
    try:
        if path.stat().st_size > 1 << 16:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ResolveStore:
    """The entries of one scope in a cache folder: one file and one lock file per resolved path."""

    def __init__(self, cache_dir: Path, scope: str, *, lock_timeout: float) -> None:
        self.base = Path(cache_dir) / "resolved"
        self.folder = self.base / scope
        self.lock_timeout = lock_timeout
        self._warned = False

    def __repr__(self) -> str:
        return f"ResolveStore({str(self.folder)!r})"

    def _entry(self, path: str) -> Path:
        return self.folder / f"{_digest(path, size=40)}.json"

    def get(self, path: str) -> Resolved | None:
        """The stored entry of ``path`` (fresh or not); None when there is none or it is unreadable."""
        return self.lookup(path)[0]

    def lookup(self, path: str) -> tuple[Resolved | None, bool]:
        """(the stored entry of ``path`` or None, whether the Hub said lately that it has no such file)."""
        data = read_json(self._entry(path))
        if data is None or data.get("path") != path:
            return None, False
        if data.get("missing") is True:
            until = data.get("expires_at")
            return None, isinstance(until, int | float) and until > time.time()
        try:
            return Resolved.from_dict(data), False
        except ValueError:
            return None, False

    def put_missing(self, path: str) -> None:
        """Note that the Hub has no file at ``path`` (for :data:`MISSING_FOR_S`)."""
        try:
            _private_folder(self.folder)
            entry = {"path": path, "missing": True, "expires_at": time.time() + MISSING_FOR_S}
            write_private(self._entry(path), json.dumps(entry).encode())
        except OSError as exc:
            self._warn(exc)

    def put(self, path: str, resolved: Resolved) -> None:
        """Store ``resolved`` for every reader of the scope (an unwritable folder only costs sharing)."""
        try:
            _private_folder(self.folder)
            write_private(self._entry(path), json.dumps({"path": path, **resolved.as_dict()}).encode())
        except OSError as exc:
            self._warn(exc)

    def adopt(self, path: str, resolved: Resolved) -> bool:
        """Store ``resolved`` unless the stored entry is the same URL or expires later; True when written."""
        current = self.get(path)
        if current is not None and (current.url == resolved.url
                                    or (current.expires_at or 0) >= (resolved.expires_at or 0)):
            return False
        self.put(path, resolved)
        return True

    @contextlib.contextmanager
    def locked(self, path: str) -> Iterator[bool]:
        """Hold the entry's lock (bounded by ``lock_timeout``; False: proceeding without it)."""
        try:
            _private_folder(self.folder)
        except OSError as exc:
            self._warn(exc)
        with file_lock(self.folder / f"{_digest(path, size=40)}.lock", self.lock_timeout) as held:
            yield held

    def read(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the scope (the job's board address, a job manifest)."""
        return read_json(self.folder / name)

    def write(self, name: str, data: dict[str, Any]) -> None:
        try:
            _private_folder(self.folder)
            write_private(self.folder / name, json.dumps(data).encode())
        except OSError as exc:
            self._warn(exc)

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("cannot write resolved Hub URLs below %s (%s): this process resolves its files itself",
                        self.folder, exc)
