"""A small thread pool of daemon threads whose shutdown never waits for running work.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter (or a DataLoader
worker process) exits, so a fetch stuck on a stalled server would keep the process alive until the
fetch's own deadline. Here, :meth:`DaemonPool.shutdown` cancels queued work and returns at once;
running calls are abandoned (their results dropped) and their threads end when the call returns,
or with the process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Work = tuple[Future, Callable[..., Any], tuple[Any, ...]]


class DaemonPool:
    """``submit(fn, *args) -> Future`` on at most ``max_workers`` daemon threads, started on demand."""

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self.name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._shutdown = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a pool thread; RuntimeError after :meth:`shutdown`."""
        future: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{self.name}: cannot submit after shutdown")
            self._queue.put((future, fn, args))
            if self._queue.qsize() > self._idle and len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._run, name=f"{self.name}-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self) -> None:
        """Cancel queued work and let idle threads end; never waits for running calls."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            threads = len(self._threads)
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                break
            if work is not None:  # cancelled, and concurrent.futures.wait() callers told so
                work[0].cancel()
                work[0].set_running_or_notify_cancel()
        for _ in range(threads):
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            work = self._queue.get()
            with self._lock:
                self._idle -= 1
            if work is None:
                return
            future, fn, args = work
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                del future, fn, args, work
            with self._lock:
                if self._shutdown:
                    return
