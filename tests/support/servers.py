"""Loopback servers for tests: nginx, moto S3, a fault-injecting proxy and a Hub stand-in.

Everything binds 127.0.0.1, is started by the tests and stopped at fixture teardown; nginx also
runs under ``timeout`` so that it cannot outlive a crashed test run by more than its lifetime.

Typical use (fixtures registered through ``pytest_plugins`` in tests/conftest.py)::

    def test_x(nginx_factory, fault_proxy_factory, hub_factory, tmp_path):
        nginx = nginx_factory(folder)            # session-cached per folder; nginx.url
        proxy = fault_proxy_factory(nginx.url, schedule=["503", "drop"])   # proxy.url, proxy.counts
        hub = hub_factory(folder, cdn=proxy)     # point HF_ENDPOINT at hub.url
        hub.add_dataset("org/ds", "sub/dir")     # hf://datasets/org/ds -> folder/sub/dir

``moto_s3`` (session) is an S3 server: ``moto_s3.upload_folder(folder, "bucket")`` returns the
``s3://`` URL, ``moto_s3.storage_options`` the s3fs options.
"""

from __future__ import annotations

import http.client
import math
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

NGINX = "/usr/sbin/nginx"
HOST = "127.0.0.1"
FAULT_KINDS = ("drop", "drop_body", "500", "503", "429", "stall", "short", "long", "full200", "wrong_range")
MORE_KINDS = ("stall_body",)  # accepted, but not drawn at random by default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s")


# --------------------------------------------------------------------------------------------- nginx
@dataclass(frozen=True)
class AccessEntry:
    """One line of nginx's access log."""

    connection: int
    connection_requests: int
    method: str
    uri: str
    status: int
    body_bytes: int
    range: str
    authorization: str


_LOG_FORMAT = (
    "$connection\\t$connection_requests\\t$request_method\\t$request_uri\\t$status\\t$body_bytes_sent"
    '\\t"$http_range"\\t"$http_authorization"'
)
_NGINX_CONF = """
worker_processes 1;
master_process off;
pid {prefix}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    log_format tsv '{log_format}';
    access_log {prefix}/access.log tsv;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


class NginxServer:
    """Debian nginx serving ``root`` (with Range and keep-alive) on 127.0.0.1, as the current user."""

    def __init__(self, root: str | os.PathLike[str], *, max_lifetime: float = 1800.0) -> None:
        self.root = Path(root).resolve()
        self.max_lifetime = max_lifetime
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> NginxServer:
        for _ in range(3):  # the free port may be taken by someone else before nginx binds it
            self.port = free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(
                _NGINX_CONF.format(
                    prefix=self.prefix, host=HOST, port=self.port, root=self.root, log_format=_LOG_FORMAT
                )
            )
            cmd = ["timeout", "--kill-after=5", str(int(self.max_lifetime)), NGINX, "-p", str(self.prefix)]
            cmd += ["-c", str(conf), "-e", str(self.prefix / "error.log"), "-g", "daemon off;"]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(self.port, timeout=5.0)
                return self
            except TimeoutError:
                self.stop()
        log = (self.prefix / "error.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"nginx did not start serving {self.root}: {log}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def access_log(self) -> list[AccessEntry]:
        """Requests served so far. nginx writes a request's line just after sending the response, so a
        client can finish first: the log is read again until it has not grown for 0.1 s (at most 2 s)."""
        path = self.prefix / "access.log"

        def read() -> str:
            return path.read_text() if path.exists() else ""

        text, deadline = read(), time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
            again = read()
            if again == text:
                break
            text = again
        entries = []
        for line in text.splitlines():
            conn, nreq, method, uri, status, nbytes, rng, auth = line.split("\t")
            entries.append(
                AccessEntry(int(conn), int(nreq), method, uri, int(status), int(nbytes), rng.strip('"'),
                            auth.strip('"'))
            )
        return entries

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# ------------------------------------------------------------------------------------------ moto S3
class MotoS3Server:
    """moto's S3 server in this process (``ThreadedMotoServer``) on 127.0.0.1."""

    region = "us-east-1"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options that reach this server (dummy credentials, no instance cache)."""
        return {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.url, "region_name": self.region},
            "skip_instance_cache": True,
        }

    def start(self) -> MotoS3Server:
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        self._server.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name=self.region,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def upload_folder(self, folder: str | os.PathLike[str], bucket: str, prefix: str = "") -> str:
        """Create ``bucket`` (if needed), upload every file of ``folder`` under ``prefix``; its s3:// URL."""
        client = self.client()
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        folder = Path(folder)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = "/".join(p for p in (prefix.strip("/"), path.relative_to(folder).as_posix()) if p)
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        return f"s3://{bucket}/{prefix.strip('/')}".rstrip("/")


# ------------------------------------------------------------------------------------- fault proxy
@dataclass
class SeenRequest:
    """A request as the proxy received it, and the fault it injected (``"pass"`` for none)."""

    method: str
    path: str
    headers: dict[str, str]
    fault: str = "pass"


Gate = Callable[[str, str, dict[str, str]], "int | None"]
Handle = Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end, so handler threads have a bounded life
    server: _ThreadedServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._count_connection()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    do_HEAD = do_GET


class _ThreadedServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a node's worth of readers connecting at once
    owner: LoopbackHTTPServer

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up are part of the tests
            super().handle_error(request, client_address)


class LoopbackHTTPServer:
    """Threaded HTTP/1.1 server on 127.0.0.1:<free port> calling ``handle(request_handler)`` for GET/HEAD."""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.connections = 0
        self._lock = threading.Lock()
        self._server = _ThreadedServer((HOST, 0), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def _count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def start(self) -> LoopbackHTTPServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="loopback-http")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def answer(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    """Send a complete response with ``body`` (omitted for HEAD)."""
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


class FaultProxy:
    """HTTP proxy of our own in front of an upstream (nginx), injecting faults and recording requests.

    Faults (``FAULT_KINDS``): ``drop`` (close before answering), ``drop_body`` (half the body, then
    close), ``500``/``503``, ``429`` (with ``Retry-After: retry_after``), ``stall`` (say nothing for
    ``stall_seconds``, then close), ``short``/``long`` (consistent headers, body one half shorter /
    one byte longer than the range), ``full200`` (forward without Range: a 200 with the whole file),
    ``wrong_range`` (Content-Range shifted by one), ``stall_body`` (headers and half the body, then
    nothing for ``stall_seconds``, then close). ``fault_for(method, path)`` may name the fault of a
    request (None: no opinion); else they come from ``schedule`` (one per matching request, in order)
    and, once it is empty, at random with probability ``fault_rate`` from ``fault_kinds`` (seeded). Only methods in ``methods`` get faults. ``counts`` says what was done,
    ``seen`` keeps every request's headers (a header recorder), ``connections`` counts TCP
    connections. ``gate(method, path, headers)`` may answer a status instead of forwarding.
    """

    def __init__(
        self,
        upstream: str,
        *,
        schedule: Iterable[str] = (),
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = FAULT_KINDS,
        seed: int = 0,
        stall_seconds: float = 3.0,
        retry_after: float = 1,
        methods: Iterable[str] = ("GET",),
        gate: Gate | None = None,
        fault_for: Callable[[str, str], str | None] | None = None,
    ) -> None:
        up = urlsplit(upstream)
        self.upstream = (up.hostname or HOST, up.port or 80)
        self._schedule = list(schedule)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        for kind in (*self._schedule, *self.fault_kinds):
            if kind not in FAULT_KINDS + MORE_KINDS and kind != "pass":
                raise ValueError(f"unknown fault {kind!r}")
        self._rng = random.Random(seed)
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.methods = set(methods)
        self.gate = gate
        self.fault_for = fault_for
        self.counts: Counter[str] = Counter()
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http = LoopbackHTTPServer(self._handle)

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return self._http.connections

    def schedule(self, *faults: str) -> None:
        """Queue faults for the next matching requests (``"pass"`` lets one through)."""
        with self._lock:
            self._schedule.extend(faults)

    def start(self) -> FaultProxy:
        self._http.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.stop()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_fault(self, method: str, path: str) -> str:
        chosen = self.fault_for(method, path) if self.fault_for else None
        if chosen is not None:
            return chosen
        with self._lock:
            if method not in self.methods:
                return "pass"
            if self._schedule:
                return self._schedule.pop(0)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
            return "pass"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        seen = SeenRequest(h.command, h.path, headers)
        with self._lock:
            self.seen.append(seen)
        status = self.gate(h.command, h.path, headers) if self.gate else None
        if status is not None:
            seen.fault = f"gate{status}"
            return answer(h, status, b"denied\n")
        fault = seen.fault = self._next_fault(h.command, h.path)
        with self._lock:
            self.counts[fault] += 1
        if fault in ("drop", "stall"):
            if fault == "stall":
                self._stopping.wait(self.stall_seconds)
            h.close_connection = True
            return None
        if fault in ("500", "503", "429"):
            extra = {"Retry-After": f"{self.retry_after:g}"} if fault == "429" else {}
            return answer(h, int(fault), b"injected\n", extra)
        forward = {k: v for k, v in headers.items() if k not in ("host", "connection", "keep-alive")}
        if fault == "full200":
            forward.pop("range", None)
        status, out_headers, body = self._upstream_request(h.command, h.path, forward)
        if fault == "short":
            body = body[: len(body) // 2]
        elif fault == "long":
            body += b"\0"
        elif fault == "wrong_range" and "content-range" in out_headers:
            unit, _, spec = out_headers["content-range"].partition(" ")
            span, _, total = spec.partition("/")
            a, _, b = span.partition("-")
            out_headers["content-range"] = f"{unit} {int(a) + 1}-{int(b) + 1}/{total}"
        length = out_headers.get("content-length") if h.command == "HEAD" else str(len(body))
        h.send_response(status)
        for k, v in out_headers.items():
            if k not in ("content-length", "connection", "transfer-encoding", "keep-alive", "server", "date"):
                h.send_header(k, v)
        if length is not None:
            h.send_header("Content-Length", length)
        h.end_headers()
        if h.command != "HEAD":
            if fault in ("drop_body", "stall_body"):
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                if fault == "stall_body":
                    self._stopping.wait(self.stall_seconds)
                h.close_connection = True
            else:
                h.wfile.write(body)
        return None

    def _upstream_request(self, method: str, path: str, headers: dict[str, str]):
        conn = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()


# ------------------------------------------------------------------------------------ Hub stand-in
@dataclass
class _Signature:
    path: str
    uses: int = 0
    valid: bool = True
    expires_at: float | None = None


@dataclass
class HubStandIn:
    """The Hub's resolve endpoint, redirecting to signed URLs on ``cdn`` (a FaultProxy before nginx).

    ``files_root`` is the folder nginx serves. ``add_dataset``/``add_bucket`` map an id to a folder
    below it. A signed URL serves ``uses_per_signature`` requests (None: unlimited) and dies on
    ``expire_all()``; after that the CDN answers ``expired_status`` until the file is resolved
    again. ``send_linked_size=False`` leaves out X-Linked-Size from the redirect (the client then
    has to ask the CDN for the size). With ``token`` set, resolving needs ``Authorization: Bearer <token>`` (else 401).
    ``resolves`` counts resolutions per file, ``authorizations`` keeps the Authorization headers
    received (None when absent).

    Like the Hub: the redirect carries ``X-Linked-Etag`` and ``X-Repo-Commit``; with ``url_lifetime``
    (seconds) a signed URL names its expiry in its query (``X-Amz-Date`` + ``X-Amz-Expires`` and
    ``Expires=``) and the CDN refuses it after that. With ``resolver_budget``, each token (or anonymous
    caller) may resolve that many times per fixed window of ``window_s`` seconds; beyond, the answer is
    429 with ``Retry-After`` and the Hub's ``RateLimit: "resolvers";r=0;t=<s>`` and ``RateLimit-Policy``
    (every answer carries ``RateLimit`` then). ``resolve_requests`` counts every request to
    ``/resolve/`` per path asked (429s included), ``limited`` the 429s answered.
    """

    files_root: Path
    cdn: FaultProxy
    token: str | None = None
    uses_per_signature: int | None = None
    expired_status: int = 403
    send_linked_size: bool = True
    url_lifetime: float | None = None
    resolver_budget: int | None = None
    window_s: float = 300.0
    resolves: Counter = field(default_factory=Counter)
    resolve_requests: Counter = field(default_factory=Counter)
    limited: int = 0
    authorizations: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.files_root = Path(self.files_root).resolve()
        self._repos: dict[tuple[str, str, str | None], str] = {}
        self._sigs: dict[str, _Signature] = {}
        self._windows: dict[str, tuple[float, int]] = {}  # caller -> (window start, resolves in it)
        self._lock = threading.Lock()
        self.cdn.gate = self._gate
        self._api = LoopbackHTTPServer(self._handle)

    @property
    def url(self) -> str:
        return self._api.url

    def add_dataset(self, repo_id: str, folder: str = "", revision: str = "main") -> None:
        self._repos[("datasets", repo_id, revision)] = folder.strip("/")

    def add_bucket(self, bucket_id: str, folder: str = "") -> None:
        self._repos[("buckets", bucket_id, None)] = folder.strip("/")

    def expire_all(self) -> None:
        with self._lock:
            for sig in self._sigs.values():
                sig.valid = False

    def start(self) -> HubStandIn:
        self._api.start()
        return self

    def stop(self) -> None:
        self._api.stop()

    def _gate(self, method: str, path: str, headers: dict[str, str]) -> int | None:
        parts = urlsplit(path)
        sig_id = parse_qs(parts.query).get("sig", [""])[0]
        with self._lock:
            sig = self._sigs.get(sig_id)
            if sig is None or sig.path != unquote(parts.path).lstrip("/") or not sig.valid:
                return self.expired_status
            if sig.expires_at is not None and time.time() >= sig.expires_at:
                return self.expired_status
            sig.uses += 1
            if self.uses_per_signature is not None and sig.uses > self.uses_per_signature:
                sig.valid = False
                return self.expired_status
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        auth = h.headers.get("Authorization")
        with self._lock:
            self.authorizations.append(auth)
        segments = [unquote(s) for s in urlsplit(h.path).path.split("/")[1:]]
        if len(segments) >= 5 and segments[0] == "datasets" and segments[3] == "resolve":
            key, rel = ("datasets", f"{segments[1]}/{segments[2]}", segments[4]), segments[5:]
        elif len(segments) >= 4 and segments[0] == "buckets" and segments[3] == "resolve":
            key, rel = ("buckets", f"{segments[1]}/{segments[2]}", None), segments[4:]
        else:
            return answer(h, 404, b"no such route\n")
        budget = self._budget(auth or "anonymous", "/".join(rel))
        if budget is not None and "Retry-After" in budget:
            return answer(h, 429, b"rate limited\n", budget)
        if self.token is not None and auth != f"Bearer {self.token}":
            return answer(h, 401, b"invalid credentials\n")
        folder = self._repos.get(key)
        target = "/".join(p for p in (folder, *rel) if p) if folder is not None else ""
        file = self.files_root / target
        if folder is None or ".." in rel or not rel or not file.is_file():
            return answer(h, 404, b"entry not found\n", {"X-Error-Code": "EntryNotFound"})
        sig_id = secrets.token_hex(8)
        now = int(time.time())
        expires = now + int(self.url_lifetime) if self.url_lifetime is not None else None
        with self._lock:
            self._sigs[sig_id] = _Signature(target, expires_at=expires)
            self.resolves[target] += 1
        query = f"sig={sig_id}"
        if expires is not None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
            query += f"&X-Amz-Date={stamp}&X-Amz-Expires={int(self.url_lifetime or 0)}&Expires={expires}"
        location = f"{self.cdn.url}/{quote(target)}?{query}&X-Amz-Signature={secrets.token_hex(8)}"
        stat = file.stat()
        headers = {"Location": location, "X-Repo-Commit": "0" * 40,
                   "X-Linked-Etag": f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"', **(budget or {})}
        if self.send_linked_size:
            headers["X-Linked-Size"] = str(stat.st_size)
        return answer(h, 302, b"", headers)

    def _budget(self, caller: str, path: str) -> dict[str, str] | None:
        """Count a resolve of ``caller`` in its window; the RateLimit headers to answer (None: no budget);
        with ``Retry-After`` among them when the budget is spent."""
        with self._lock:
            self.resolve_requests[path] += 1
            if self.resolver_budget is None:
                return None
            now = time.time()
            start = math.floor(now / self.window_s) * self.window_s
            seen_start, used = self._windows.get(caller, (start, 0))
            used = used if seen_start == start else 0
            reset = max(1, math.ceil(start + self.window_s - now))
            policy = f'"fixed window";"resolvers";q={self.resolver_budget};w={self.window_s:g}'
            if used >= self.resolver_budget:
                self.limited += 1
                return {"RateLimit": f'"resolvers";r=0;t={reset}', "RateLimit-Policy": policy,
                        "Retry-After": str(reset)}
            self._windows[caller] = (start, used + 1)
            left = self.resolver_budget - used - 1
            return {"RateLimit": f'"resolvers";r={left};t={reset}', "RateLimit-Policy": policy}


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def nginx_factory() -> Iterator[Callable[[str | os.PathLike[str]], NginxServer]]:
    """``nginx_factory(folder) -> NginxServer`` serving that folder; one server per folder per session."""
    servers: dict[Path, NginxServer] = {}

    def make(folder: str | os.PathLike[str]) -> NginxServer:
        key = Path(folder).resolve()
        if key not in servers:
            servers[key] = NginxServer(key).start()
        return servers[key]

    yield make
    for server in servers.values():
        server.cleanup()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    """A moto S3 server for the whole session."""
    server = MotoS3Server().start()
    yield server
    server.stop()


@pytest.fixture
def fault_proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    """``fault_proxy_factory(upstream_url, **FaultProxy options) -> FaultProxy`` (started; stopped after)."""
    proxies: list[FaultProxy] = []

    def make(upstream: str, **options) -> FaultProxy:
        proxies.append(FaultProxy(upstream, **options).start())
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def hub_factory() -> Iterator[Callable[..., HubStandIn]]:
    """``hub_factory(files_root, cdn=proxy, **HubStandIn options) -> HubStandIn`` (started; stopped after)."""
    hubs: list[HubStandIn] = []

    def make(files_root: str | os.PathLike[str], *, cdn: FaultProxy, **options) -> HubStandIn:
        hubs.append(HubStandIn(Path(files_root), cdn, **options).start())
        return hubs[-1]

    yield make
    for hub in hubs:
        hub.stop()


@pytest.fixture(scope="session")
def random_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small random binary files: a.bin (300 KiB), sub/b.bin (3 MiB), c.bin (10 bytes)."""
    root = tmp_path_factory.mktemp("random-files")
    rng = random.Random(1234)
    for name, size in (("a.bin", 300 << 10), ("sub/b.bin", 3 << 20), ("c.bin", 10)):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root
