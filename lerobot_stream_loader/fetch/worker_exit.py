"""How a DataLoader worker stops promptly while it waits on storage.

PyTorch asks its workers to stop by setting the DataLoader's ``done_event`` and checks it only
between two batches; a worker waiting for an episode from a stalled server would sit out the fetch
deadline, and the training process waits (5 s per worker) before it terminates them. So a worker's
waits ask :func:`stop_requested` every :data:`POLL_S`: true once the done event is set or the
parent process is gone. :func:`watch` (started once per worker process) goes further: when the
parent is gone the worker ends at once, and when the done event is set it ends
:data:`EXIT_GRACE_S` later if PyTorch's own exit has not happened by then. Fetch threads are
daemons and are never waited for, so nothing else holds the exit.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from ..errors import StreamLoaderError

T = TypeVar("T")
POLL_S = 0.1
EXIT_GRACE_S = 1.0

_watched_pid: int | None = None
_state: dict[str, object] = {}


class WorkerStopped(StreamLoaderError):
    """The DataLoader is shutting down: this worker stopped waiting for storage."""


def wait_result(future: Future[T]) -> T:
    """``future.result()``, given up (:class:`WorkerStopped`) as soon as :func:`stop_requested`."""
    while True:
        try:
            return future.result(timeout=POLL_S)
        except FutureTimeout:
            if stop_requested():
                raise WorkerStopped("the DataLoader is shutting down") from None


def _done_flag() -> Callable[[], bool] | None:
    """A lock-free reader of the DataLoader's done event: the one multiprocessing Event among this
    worker process's start arguments (torch's and torchdata's worker loops both receive it there).

    Never ``wait()`` on it nor take its lock from here: a process that ends while one of its threads
    sleeps on (or holds) the event's condition makes the training process's ``set()`` hang forever.
    The event's flag is a semaphore whose value is read without a lock (None where the platform
    cannot, or outside a worker)."""
    args = getattr(multiprocessing.current_process(), "_args", None) or ()
    events = [a for a in args if isinstance(a, multiprocessing.synchronize.Event)]
    if len(events) != 1:
        return None
    flag = getattr(events[0], "_flag", None)
    try:
        flag.get_value()  # type: ignore[union-attr]
    except (AttributeError, NotImplementedError, OSError):
        return None
    return lambda: flag.get_value() > 0  # type: ignore[union-attr]


def _in_worker() -> bool:
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


def stop_requested() -> bool:
    """Whether this DataLoader worker should stop now (False outside workers)."""
    if _state.get("pid") != os.getpid():
        return False
    done = _state.get("done")
    if callable(done) and done():
        return True
    return os.getppid() != _state.get("parent")


def watch() -> None:
    """In a DataLoader worker, start (once per process) the thread that ends it when the DataLoader
    shuts down or the training process is gone; a no-op elsewhere."""
    global _watched_pid
    pid = os.getpid()
    if _watched_pid == pid or not _in_worker():
        return
    _watched_pid = pid
    _state.update(pid=pid, parent=os.getppid(), done=_done_flag())
    threading.Thread(target=_watch, name="worker-exit-watch", daemon=True).start()


def _watch() -> None:
    done = _state.get("done")
    pause = threading.Event()
    while os.getppid() == _state.get("parent"):
        if callable(done) and done():
            # the DataLoader is shutting down: PyTorch's worker loop normally returns well before this
            pause.wait(EXIT_GRACE_S)
            break
        pause.wait(POLL_S)
    os._exit(0)  # the training process is gone or stopping: nobody reads what this worker makes
