"""The job's board of resolved URLs: a key-value server in rank 0 that every reader of the job may ask.

With ``resolve="job"`` under torch.distributed, rank 0 serves a ``torch.distributed.TCPStore`` of its
own (the server torch's rendezvous uses; unauthenticated like it, so reachable by whoever reaches the
job's other ports) holding one entry per file, and renews every entry before it expires. Its address
is written beside the machine's entries (``job.json``), so that a DataLoader worker whose entry is about
to expire takes rank 0's renewal from the board instead of resolving the file itself. Each process
opens its own connection (never one inherited through ``fork``); every call is bounded by
:data:`BOARD_TIMEOUT_S`, and a board that cannot be reached is left alone for :data:`RETRY_AFTER_S`
while the process resolves its files itself.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any

from .resolve_cache import Resolved

log = logging.getLogger(__name__)

BOARD_TIMEOUT_S = 10.0
RETRY_AFTER_S = 60.0
_PREFIX = "lerobot-stream-loader/resolved/"


def _key(scope: str, path: str) -> str:
    return f"{_PREFIX}{scope}/{path}"


class JobBoard:
    """One process's handle on the board (its server in rank 0, a client elsewhere)."""

    def __init__(self, store: Any, host: str, port: int) -> None:
        self._store, self.host, self.port = store, host, port
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def get(self, scope: str, path: str) -> Resolved | None:
        """The board's entry of ``path``; None when it has none (never waits for one to appear)."""
        key = _key(scope, path)
        with self._lock:
            if not self._store.check([key]):
                return None
            raw = self._store.get(key)
        try:
            return Resolved.from_dict(json.loads(raw))
        except (ValueError, TypeError):
            return None

    def put(self, scope: str, path: str, resolved: Resolved) -> None:
        with self._lock:
            self._store.set(_key(scope, path), json.dumps(resolved.as_dict()))


_served: JobBoard | None = None
_served_pid = 0
_clients: dict[tuple[int, str, int], JobBoard] = {}
_unreachable: dict[tuple[str, int], float] = {}
_lock = threading.Lock()


def _reachable_host() -> str:
    """An address of this machine the job's other machines reach: the interface toward MASTER_ADDR."""
    master = os.environ.get("MASTER_ADDR")
    if master:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((master, int(os.environ.get("MASTER_PORT") or 29500)))  # sends nothing
                return str(probe.getsockname()[0])
        except (OSError, ValueError):
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def serve_board() -> JobBoard:
    """This process's board server (started once per process)."""
    global _served, _served_pid
    from torch.distributed import TCPStore

    with _lock:
        if _served is None or _served_pid != os.getpid():
            host = _reachable_host()
            store = TCPStore(host, 0, is_master=True, wait_for_workers=False,
                             timeout=timedelta(seconds=BOARD_TIMEOUT_S))
            _served, _served_pid = JobBoard(store, host, int(store.port)), os.getpid()
            log.info("resolve='job': the job's board of resolved URLs serves on %s:%d", *_served.address)
        return _served


def connect_board(address: Any) -> JobBoard | None:
    """A connection of this process to the board at ``address`` ([host, port]); None when unreachable."""
    try:
        host, port = str(address[0]), int(address[1])
    except (TypeError, ValueError, IndexError):
        return None
    if _served is not None and _served_pid == os.getpid() and _served.address == (host, port):
        return _served
    key = (os.getpid(), host, port)
    with _lock:
        if key in _clients:
            return _clients[key]
        if time.monotonic() < _unreachable.get((host, port), -1.0):
            return None
    from torch.distributed import TCPStore

    try:
        with socket.create_connection((host, port), timeout=min(2.0, BOARD_TIMEOUT_S)):
            pass  # nothing listens there (a board of an earlier job): known at once, not after the timeout
        store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=BOARD_TIMEOUT_S))
    except (RuntimeError, OSError, ValueError) as exc:
        with _lock:
            _unreachable[(host, port)] = time.monotonic() + RETRY_AFTER_S
        log.warning("resolve='job': the job's board at %s:%d cannot be reached (%s); this process resolves "
                    "its files itself for %.0f s", host, port, exc, RETRY_AFTER_S)
        return None
    with _lock:
        return _clients.setdefault(key, JobBoard(store, host, port))


def forget_board(board: JobBoard) -> None:
    """A board call failed: leave it alone for a while."""
    with _lock:
        _clients.pop((os.getpid(), board.host, board.port), None)
        _unreachable[board.address] = time.monotonic() + RETRY_AFTER_S
