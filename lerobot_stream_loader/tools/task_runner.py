"""Running a shuffle's tasks on any ``concurrent.futures.Executor``: here, a local pool, or Dask.

Tasks are plain picklable values run by top-level functions; the first failure cancels the rest.
Each finished task is reported at once (``done``), in the calling thread, so a run can record its
finished files as it goes (see :mod:`.resume`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from .main_script import spawn_unsafe_reason
from .output import ToolError
from .shuffle_copy import CopyTask, run_copy_task
from .shuffle_tasks import DataTask, VideoTask, run_data_task, run_video_task

Task = VideoTask | DataTask | CopyTask
_log = logging.getLogger(__name__)


def task_function(task: Task) -> Callable[[Any], dict[str, Any]]:
    """The top-level function that runs ``task``."""
    if isinstance(task, VideoTask):
        return run_video_task
    if isinstance(task, CopyTask):
        return run_copy_task
    return run_data_task


def run_tasks(tasks: dict[str, Task], executor: Executor | None, max_workers: int | None, progress: bool, *,
              done: Callable[[str, dict[str, Any]], None] | None = None, finished: int = 0
              ) -> dict[str, dict[str, Any]]:
    """Run every task on ``executor``; the first failure cancels the rest and raises ToolError.

    Without an executor: a pool of ``max_workers`` (default one per CPU, at most one per task);
    encoders share the cores (each gets ``cores // workers`` threads); stream copies run in threads
    (they wait on the disk, and a process would cost more to start than most copies take). With a
    single worker the tasks run here, in turn (see ``local_executor``). ``done(name, outcome)`` is
    called here as each task finishes; ``finished`` tasks were done before (the progress bar's start).
    """
    own = executor is None
    if own:
        workers = min(max_workers or os.cpu_count() or 1, max(1, len(tasks)))
        if workers > 1:  # encoders that each use every core would fight over them
            tasks = {name: _sharing_cores(task, workers) for name, task in tasks.items()}
        copies = not any(isinstance(task, VideoTask) for task in tasks.values())
        executor = local_executor(workers, threads=copies)
    assert executor is not None
    futures: dict[Future, str] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(tasks) + finished, initial=finished, desc="shuffle", unit="file", disable=not progress)

    def handle(future: Future) -> None:
        name = futures[future]
        try:
            outcomes[name] = future.result()
        except BaseException as exc:
            for other in futures:
                other.cancel()
            _wait_quietly(futures)
            future, exc = _first_failure(futures, future, exc)
            name = futures[future]
            raise ToolError(f"shuffle task '{tasks[name].name}' failed: {type(exc).__name__}: {exc}; "
                            "nothing was written") from exc
        if done is not None:
            done(name, outcomes[name])
        bar.update(1)

    try:
        for name in submission_order(tasks):
            future = executor.submit(task_function(tasks[name]), tasks[name])
            futures[future] = name
            if isinstance(executor, InlineExecutor):  # ran already: record it before the next one runs
                handle(future)
        for future in as_completed([f for f in futures if futures[f] not in outcomes]):
            handle(future)
        bar.close()
        return outcomes
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


def local_executor(workers: int, *, threads: bool = False) -> Executor:
    """Where the tasks run without an executor: here for one worker, else a pool of ``workers``
    spawned processes (``threads``: threads). Where spawned processes cannot start from the main
    script (a script read from standard input, or a call from a script's top level outside ``if
    __name__ == "__main__":``, which every worker would run again), the pool is of threads instead
    (the codecs release the GIL while they work), with a warning saying why."""
    if workers <= 1:
        return InlineExecutor()
    if threads:
        return ThreadPoolExecutor(workers, thread_name_prefix="shuffle")
    reason = spawn_unsafe_reason()
    if reason is not None:
        _log.warning("shuffle: %s; running the tasks in %d threads of this process instead", reason, workers)
        return ThreadPoolExecutor(workers, thread_name_prefix="shuffle")
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def submission_order(tasks: dict[str, Task]) -> list[str]:
    """Longest first (no straggler at the end); with stream copies, whose time goes to the kernel's
    copy, each data task (Python and arrow work) is slotted between copies so that the two overlap."""
    order = sorted(tasks, key=lambda n: -_work(tasks[n]))
    data = [n for n in order if isinstance(tasks[n], DataTask)]
    if not data or any(isinstance(task, VideoTask) for task in tasks.values()):
        return order
    others = [n for n in order if not isinstance(tasks[n], DataTask)]
    step = max(1, len(others) // len(data))
    mixed: list[str] = []
    for at, name in enumerate(others):
        mixed.append(name)
        if at % step == step - 1 and data:
            mixed.append(data.pop(0))
    return mixed + data


def _work(task: Task) -> int:
    """Rough cost of a task: pixels to encode or copy (copying rows is cheap beside it)."""
    frames = sum(move.length for move in task.episodes)
    return frames if isinstance(task, DataTask) else frames * task.width * task.height


def _sharing_cores(task: Task, workers: int) -> Task:
    if not isinstance(task, VideoTask) or task.settings.threads:
        return task
    share = max(1, (os.cpu_count() or 1) // workers)
    return replace(task, settings=replace(task.settings, threads=share))


class InlineExecutor(Executor):
    """Runs each submitted call at once in the calling thread; after a failure, later calls are
    not run (their futures come back cancelled)."""

    def __init__(self) -> None:
        self._failed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        if self._failed:
            future.cancel()
            return future
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            self._failed = True
            future.set_exception(exc)
        return future


def _first_failure(futures: dict[Future, str], seen: Future, error: BaseException
                   ) -> tuple[Future, BaseException]:
    """The first submitted task that raised (not one cancelled because of it), else ``seen``."""
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            return future, future.exception()  # type: ignore[return-value]
    return seen, error


def _wait_quietly(futures: dict[Future, str]) -> None:
    """Let tasks already running finish (they write into the temporary folder) before cleanup."""
    for future in futures:
        if not future.cancelled():
            try:
                future.exception()
            except BaseException:  # cancelled while waiting: nothing more to wait for
                pass
