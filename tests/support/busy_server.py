"""A busy file server on 127.0.0.1: Range support, 429 + Retry-After beyond a concurrency limit, and a
fraction of connections dropped (seeded), with counters of what it did.

``BusyServer(folder, max_concurrent=32, retry_after=1, drop_rate=0.02, latency=0.05)``: a GET or HEAD
that arrives while ``max_concurrent`` requests are being served gets ``429`` with ``Retry-After``;
otherwise, with probability ``drop_rate``, the connection is closed without an answer; otherwise the
file (or the requested byte range, 206) is served after ``latency`` seconds (a storage's time to
first byte, which is what makes requests overlap). ``counts`` holds ``served``, ``throttled``, ``dropped`` and
``peak`` (most requests served at once).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.support.servers import LoopbackHTTPServer, answer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class BusyServer:
    """See the module docstring; ``start()`` / ``stop()``, ``url``."""

    def __init__(self, folder: Path, *, max_concurrent: int = 32, retry_after: float = 1.0,
                 drop_rate: float = 0.02, latency: float = 0.05, seed: int = 0) -> None:
        self.folder = Path(folder).resolve()
        self.max_concurrent = max_concurrent
        self.retry_after = retry_after
        self.drop_rate = drop_rate
        self.latency = latency
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._active = 0
        self._server = LoopbackHTTPServer(self.handle)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> BusyServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            busy = self._active >= self.max_concurrent
            drop = not busy and self._rng.random() < self.drop_rate
            if not busy and not drop:
                self._active += 1
                self.counts["peak"] = max(self.counts["peak"], self._active)
            self.counts["throttled" if busy else "dropped" if drop else "served"] += 1
        if busy:
            return answer(h, 429, b"busy\n", {"Retry-After": f"{self.retry_after:g}"})
        if drop:
            h.close_connection = True
            return None
        try:
            time.sleep(self.latency)
            self._serve(h)
        finally:
            with self._lock:
                self._active -= 1
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        path = (self.folder / unquote(urlsplit(h.path).path).lstrip("/")).resolve()
        if self.folder not in path.parents or not path.is_file():
            return answer(h, 404, b"not found\n")
        data = path.read_bytes()
        m = _RANGE.fullmatch(h.headers.get("Range", ""))
        if m is None:
            return answer(h, 200, data, {"Accept-Ranges": "bytes"})
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        if start > end:
            return answer(h, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
        return answer(h, 206, data[start:end + 1],
                            {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"})


def _serve_in_child(connection, folder: Path, options: dict) -> None:
    server = BusyServer(folder, **options).start()
    connection.send(server.url)
    connection.recv()  # "stop"
    server.stop()
    connection.send(dict(server.counts))


class BusyServerProcess:
    """A :class:`BusyServer` in a process of its own (its own interpreter lock), so that a test process
    busy forking readers cannot slow its answers down; ``stop()`` returns its counts."""

    def __init__(self, folder: Path, **options: object) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve_in_child, args=(child, Path(folder), options), daemon=True)
        self._process.start()
        self.url: str = self._connection.recv()

    def stop(self) -> dict[str, int]:
        self._connection.send("stop")
        counts = self._connection.recv() if self._connection.poll(30) else {}
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
        return counts
