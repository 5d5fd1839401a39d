"""Fixture ``plain_http_factory(folder)``: Python's own file server, which ignores Range requests.

It answers every GET with ``200`` and the whole file, as ``python -m http.server`` does, and counts
the GET requests it received (``server.gets``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

HOST = "127.0.0.1"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.gets += 1
        super().do_GET()


class PlainHttpServer(ThreadingHTTPServer):
    """A threaded ``SimpleHTTPRequestHandler`` server on 127.0.0.1; clients hanging up are not errors."""

    daemon_threads = True

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__((HOST, 0), partial(_QuietHandler, directory=os.fspath(folder)))
        self.lock = threading.Lock()
        self.gets = 0
        self.url = f"http://{HOST}:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True, name="plain-http").start()

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a reader closing early is expected
            super().handle_error(request, client_address)


@pytest.fixture
def plain_http_factory() -> Iterator[Callable[[str | os.PathLike[str]], PlainHttpServer]]:
    """``plain_http_factory(folder) -> PlainHttpServer`` serving ``folder`` (stopped after the test)."""
    servers: list[PlainHttpServer] = []

    def make(folder: str | os.PathLike[str]) -> PlainHttpServer:
        servers.append(PlainHttpServer(folder))
        return servers[-1]

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
