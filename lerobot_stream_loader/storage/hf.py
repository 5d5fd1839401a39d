"""``hf://`` roots: parse them, resolve files to their download URL, keep the token on the Hub host.

``hf://datasets/<namespace>/<name>[@<revision>][/<prefix>]`` and
``hf://buckets/<namespace>/<name>[/<prefix>]`` map to the Hub's resolve endpoint
(``HF_ENDPOINT`` or huggingface_hub's default). A file is resolved with HEAD requests that follow the
redirect by hand, so the Authorization header is only ever sent to the Hub's own origin (scheme, host
and port). The Hub's redirect carries the size (``X-Linked-Size``), so its target (usually a signed CDN
URL) is taken without touching it; other redirects are followed with HEAD.

Resolved URLs are kept until shortly before they expire, and resolved again after a 403/410. How far
they are shared (``share``): ``"process"``, this locator's memory only; ``"machine"`` (default), also
the machine's cache folder, so that every rank and worker of the machine resolves a file once per URL
lifetime (:mod:`~lerobot_stream_loader.storage.resolve_cache`); ``"job"``, also the job's board of
rank 0 when one is announced there (:mod:`~lerobot_stream_loader.storage.job_board`).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx

from ..errors import FetchError
from .job_board import JobBoard, connect_board, forget_board
from .local_cache import default_cache_dir
from .reader import AccessDenied, ReaderStats, RemoteFileNotFound, redact_url
from .resolve_cache import (
    Resolved,
    ResolveStore,
    check_resolve_mode,
    resolve_scope,
    stamped,
    token_fingerprint,
)

__all__ = ["HubLocator", "HubRoot", "Resolved", "hub_endpoint", "origin", "parse_hf_root"]

HeadFn = Callable[[str, Mapping[str, str]], httpx.Response]

_SPECIAL_REVISION = re.compile(r"^refs/(?:convert/[\w.-]+|pr/\d+)")
_MAX_REDIRECTS = 5
MAX_BORROWED = 4096  # borrowed URLs remembered per locator


@dataclass(frozen=True)
class HubRoot:
    """A parsed ``hf://`` root: repository kind, id, revision and the prefix inside it."""

    kind: str  # "datasets" or "buckets"
    repo_id: str
    revision: str | None
    prefix: str

    def uri(self, path: str = "") -> str:
        """The ``hf://`` URI of ``path`` below this root."""
        rev = f"@{self.revision}" if self.revision is not None else ""
        inner = "/".join(p for p in (self.prefix, path) if p)
        return f"hf://{self.kind}/{self.repo_id}{rev}" + (f"/{inner}" if inner else "")


def parse_hf_root(url: str, revision: str | None = None) -> HubRoot:
    """Parse ``hf://datasets/...`` or ``hf://buckets/...``; ``revision`` overrides a missing '@rev'."""
    if not url.startswith("hf://"):
        raise ValueError(f"not an hf:// URL: {url!r}")
    kind, _, body = url[len("hf://") :].strip("/").partition("/")
    if kind not in ("datasets", "buckets"):
        raise ValueError(f"unsupported hf:// root {url!r}: expected hf://datasets/... or hf://buckets/...")
    parts = body.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"hf:// root {url!r} lacks a '<namespace>/<name>' id")
    namespace, name = parts[0], parts[1]
    rest = parts[2] if len(parts) == 3 else ""
    rev_in_url: str | None = None
    if "@" in name:
        if kind == "buckets":
            raise ValueError(f"buckets have no revisions: {url!r}")
        name, _, after = (name + ("/" + rest if rest else "")).partition("@")
        special = _SPECIAL_REVISION.match(after)
        if special:
            rev_in_url, rest = special.group(0), after[special.end() :].lstrip("/")
        else:
            rev_in_url, _, rest = after.partition("/")
        rev_in_url = unquote(rev_in_url)
    if rev_in_url and revision and rev_in_url != revision:
        raise ValueError(f"revision {revision!r} disagrees with the one in {url!r}")
    rev = rev_in_url or revision or ("main" if kind == "datasets" else None)
    if kind == "buckets" and revision:
        raise ValueError(f"buckets have no revisions: {url!r} with revision={revision!r}")
    if ".." in rest.split("/"):
        raise ValueError(f"hf:// root {url!r} contains '..'")
    return HubRoot(kind, f"{namespace}/{name}", rev, rest.strip("/"))


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub endpoint: the argument, else ``HF_ENDPOINT``, else huggingface_hub's constant."""
    if endpoint is None:
        endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    return endpoint.rstrip("/")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, with default ports filled in."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class HubLocator:
    """Resolve files below an ``hf://`` root to download URLs; the only holder of the token.

    ``share``: ``"process"``, ``"machine"`` or ``"job"`` (module doc); ``cache_dir``: the machine's cache
    folder (default :func:`~lerobot_stream_loader.storage.local_cache.default_cache_dir`);
    ``lock_timeout``: the longest wait for another reader's resolve of the same file."""

    can_refresh = True

    def __init__(
        self,
        root: str,
        *,
        head: HeadFn,
        revision: str | None = None,
        endpoint: str | None = None,
        token: str | bool | None = None,
        stats: ReaderStats | None = None,
        share: str = "machine",
        cache_dir: str | os.PathLike[str] | None = None,
        lock_timeout: float = 120.0,
    ) -> None:
        self.root = parse_hf_root(root, revision)
        self.endpoint = hub_endpoint(endpoint)
        if token is None or token is True:
            from huggingface_hub import get_token

            token = get_token()
        self.__token = token or None
        self._head = head
        self._stats = stats or ReaderStats()
        self._cache: dict[str, Resolved] = {}
        # URLs this locator took from another reader (machine, job): kept per URL, not per path, since one
        # thread may replace a path's URL while another thread's request with the old one is refused
        self._borrowed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.share = check_resolve_mode(share)
        self.scope = resolve_scope(self.endpoint, self.root.kind, self.root.repo_id, self.root.revision,
                                   self.__token)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.store = (None if share == "process"
                      else ResolveStore(self.cache_dir, self.scope, lock_timeout=lock_timeout))
        self.limit_key = token_fingerprint(f"{self.endpoint}\x00{token_fingerprint(self.__token)}")

    def __repr__(self) -> str:
        return f"HubLocator({self.root.uri()!r}, endpoint={self.endpoint!r}, share={self.share!r})"

    @property
    def hold_file(self) -> Path | None:
        """Where the machine's readers of this token note a rate-limit hold (None: kept in memory)."""
        return None if self.store is None else self.store.base / f"{self.limit_key}.hold"

    def describe(self, path: str) -> str:
        """The file's hf:// URI, for messages."""
        return self.root.uri(path)

    def resolve_url(self, path: str) -> str:
        """The Hub's resolve URL of ``path`` (relative to the root)."""
        inner = quote("/".join(p for p in (self.root.prefix, path) if p))
        if self.root.kind == "buckets":
            return f"{self.endpoint}/buckets/{self.root.repo_id}/resolve/{inner}"
        rev = quote(self.root.revision or "main", safe="")
        return f"{self.endpoint}/datasets/{self.root.repo_id}/resolve/{rev}/{inner}"

    def headers_for(self, url: str) -> dict[str, str]:
        """Authorization for the Hub's own origin, nothing for any other host."""
        if self.__token and origin(url) == origin(self.endpoint):
            return {"Authorization": f"Bearer {self.__token}"}
        return {}

    def target(self, path: str, *, refused: str | None = None) -> Resolved:
        """The download URL, size and ETag of ``path``: this locator's until shortly before the URL
        expires, else the machine's (or the job's), else resolved; ``refused``: a URL of it the server
        refused (never given again)."""
        with self._lock:
            mine = self._cache.get(path)
        if mine is not None and mine.fresh() and (refused is None or mine.url != refused):
            return mine
        resolved, borrowed = (self._resolve(path), False) if self.store is None else self._shared(path, refused)
        with self._lock:
            self._cache[path] = resolved
            if borrowed:
                self._borrowed[resolved.url] = None
                while len(self._borrowed) > MAX_BORROWED:
                    self._borrowed.popitem(last=False)
        return resolved

    def borrowed(self, url: str) -> bool:
        """Whether ``url`` came from another reader (its refusal deserves a resolve of this one's own)."""
        with self._lock:
            return url in self._borrowed

    def renew(self, path: str) -> Resolved:
        """Resolve ``path`` now and share the answer with the machine."""
        resolved = self._resolve(path)
        if self.store is not None:
            self.store.put(path, resolved)
        with self._lock:
            self._cache[path] = resolved
        return resolved

    def _shared(self, path: str, refused: str | None) -> tuple[Resolved, bool]:
        """(URL of ``path``, whether another reader resolved it): the machine's, the job's, or resolved."""
        assert self.store is not None
        found = self._stored(path, refused)
        if found is not None:
            return found, True
        with self.store.locked(path):  # one reader of the machine resolves, the others wait for its answer
            found = self._stored(path, refused)
            if found is not None:
                return found, True
            board = self._board()
            if board is not None:
                found = self._ask(board, path)
                if found is not None and found.fresh() and found.url != refused:
                    self.store.put(path, found)
                    return found, True
            try:
                resolved = self._resolve(path)
            except RemoteFileNotFound:
                self.store.put_missing(path)  # optional files (the index sidecar) are looked for by every reader
                raise
            self.store.put(path, resolved)
            if board is not None:
                self._tell(board, path, resolved)
            return resolved, False

    def _stored(self, path: str, refused: str | None) -> Resolved | None:
        """The machine's usable entry of ``path``; ``RemoteFileNotFound`` when the Hub lately said it has none."""
        assert self.store is not None
        found, missing = self.store.lookup(path)
        if missing:
            raise RemoteFileNotFound(f"{self.describe(path)}: not found (HTTP 404)")
        return found if found is not None and found.fresh() and found.url != refused else None

    def _board(self) -> JobBoard | None:
        """The job's board announced in the machine's folder (``share="job"`` only)."""
        if self.share != "job" or self.store is None:
            return None
        announced = self.store.read("job.json")
        return connect_board(announced.get("board")) if announced else None

    def _ask(self, board: JobBoard, path: str) -> Resolved | None:
        try:
            return board.get(self.scope, path)
        except (RuntimeError, OSError):
            forget_board(board)
            return None

    def _tell(self, board: JobBoard, path: str, resolved: Resolved) -> None:
        try:
            board.put(self.scope, path, resolved)
        except (RuntimeError, OSError):
            forget_board(board)

    def _resolve(self, path: str) -> Resolved:
        self._stats.add(resolves=1)
        url = self.resolve_url(path)
        size: int | None = None
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._head(url, self.headers_for(url))
            status = resp.status_code
            if size is None and "x-linked-size" in resp.headers:
                size = int(resp.headers["x-linked-size"])
            if 300 <= status < 400 and "location" in resp.headers:
                url = urljoin(url, resp.headers["location"])
                if size is not None:  # the Hub told the size: the redirect target is the download URL
                    return stamped(Resolved(url, size, resp.headers.get("x-linked-etag")))
                continue
            if status == 200:
                if size is None and "content-length" in resp.headers:
                    size = int(resp.headers["content-length"])
                return stamped(Resolved(url, size, resp.headers.get("etag")))
            where = f"{self.describe(path)} ({redact_url(url)})"
            if status == 404:
                raise RemoteFileNotFound(f"{where}: not found (HTTP 404)")
            if status in (401, 403):
                raise AccessDenied(
                    f"{where}: access refused (HTTP {status}); the dataset may be private or gated: "
                    "log in with `hf auth login`, set HF_TOKEN, or pass token=..."
                )
            raise FetchError(f"{where}: resolving failed with HTTP {status}")
        raise RemoteFileNotFound(f"{self.describe(path)}: more than {_MAX_REDIRECTS} redirects")
