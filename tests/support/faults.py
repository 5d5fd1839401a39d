"""Helpers of the hardening tests: process snapshots (threads, fds, RSS) and DataLoader worker pids.

The test servers (nginx, fault proxy, Hub stand-in) run partly in the test process, so a snapshot
leaves out what belongs to them: their handler threads and the sockets bound to or aimed at their
ports. What is left is what the loader itself holds.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

_SERVER_THREADS = ("process_request_thread", "loopback-http")


@dataclass(frozen=True)
class Snapshot:
    """Threads and file descriptors of this process, without those of the test servers."""

    threads: frozenset[str]
    fds: frozenset[str]


def snapshot(server_ports: Iterable[int] = ()) -> Snapshot:
    """Threads (name:ident) and fds (number -> target) this process holds now, servers excluded."""
    ports = set(server_ports)
    threads = frozenset(f"{t.name}:{t.ident}" for t in threading.enumerate()
                        if not any(s in t.name for s in _SERVER_THREADS))
    server_fds = set()
    for conn in psutil.Process().net_connections(kind="inet"):
        local = conn.laddr.port if conn.laddr else None
        remote = conn.raddr.port if conn.raddr else None
        if local in ports or remote in ports:
            server_fds.add(conn.fd)
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed between listing and reading
            continue
        if int(name) not in server_fds:
            fds.add(f"{name}->{target}")
    return Snapshot(threads, frozenset(fds))


def wait_released(before: Snapshot, server_ports: Iterable[int], *, timeout: float = 20.0) -> Snapshot:
    """Wait (bounded) until this process holds no thread or fd that ``before`` lacked; the extras left."""
    ports = list(server_ports)
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = snapshot(ports)
        extra = Snapshot(now.threads - before.threads, now.fds - before.fds)
        if (not extra.threads and not extra.fds) or time.monotonic() > deadline:
            return extra
        time.sleep(0.2)


def record_worker_pid(folder: Path, worker_id: int) -> None:
    """``worker_init_fn`` (with ``functools.partial(record_worker_pid, folder)``): leave this pid in folder."""
    (Path(folder) / f"worker-{worker_id}-{os.getpid()}").touch()


def worker_pids(folder: Path) -> dict[int, int]:
    """{worker_id: pid} of the workers that recorded themselves in ``folder`` (latest per id)."""
    found: dict[int, int] = {}
    for path in sorted(Path(folder).glob("worker-*"), key=lambda p: p.stat().st_mtime):
        _, worker, pid = path.name.split("-")
        found[int(worker)] = int(pid)
    return found


def rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    return psutil.Process(pid).memory_info().rss
