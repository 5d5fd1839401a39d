"""Every frame of every episode, checked through the loader's own per-episode path, in parallel.

An episode is checked exactly as streaming reads it: :class:`~lerobot_stream_loader.fetch.assembly.
EpisodeAssembler` fetches its rows and, per camera, its own bytes of the MP4 (row count, ``index``,
``frame_index`` and ``task_index`` against the episodes table; every row matched to a frame within
``tolerance_s`` that lies in the episode's own part of the MP4), then every row's frame of every
camera is decoded through the loader's cameras, whose decoders check each frame's time. Any error
makes that episode bad, with a one-line cause naming the file and the reason; the readers' bounded
retries absorb transient storage faults first.

Episodes are cut into tasks of consecutive episodes of the same files (:func:`plan_frame_tasks`),
so that a worker reads its MP4s front to back; tasks run on any ``concurrent.futures.Executor``
(default: a thread of this process plus ``workers - 1`` spawned processes). A worker holds one
episode (its rows and mini-MP4s), one camera's decoder and a chunk of decoded frames at a time.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import PROGRAMMING_ERRORS
from ..fetch.assembly import EpisodeAssembler
from ..fetch.file_indexes import FileIndexes, IndexCaches
from ..fetch.frame_match import DEFAULT_TOLERANCE_S
from ..meta.dataset_meta import DatasetMeta
from .main_script import spawn_unsafe_reason

TASKS_PER_WORKER = 16  # tasks are cut small enough for about this many per worker (balance, progress)
MAX_CAUSE_CHARS = 600
_NATIVE_WHERE = re.compile(r"\b\w+, /\S+\.(?:cpp|c|h):\d+, ")  # torchcodec's source location in messages
_REPEATED_NAME = re.compile(r"([^\s:]+): \1: ")  # "path: path: " where two layers each named the file
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadEpisode:
    """An episode streaming would fail on, and why (one line naming the file and the reason)."""

    episode_index: int
    cause: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FrameTask:
    """Consecutive episodes of the same files, checked in order by one worker. ``meta`` holds only
    these episodes' rows of the episodes table (a small pickle for a process or a cluster)."""

    meta: DatasetMeta
    episodes: tuple[int, ...]
    rows: int
    tolerance_s: float = DEFAULT_TOLERANCE_S
    check_pattern: bool = False
    run: str = ""  # one validation: tasks of the same run share a process's parsed MP4 indexes and footers


@dataclass
class FramesResult:
    """What :func:`check_all_frames` found: bad episodes (sorted), frames decoded (all cameras),
    episodes and rows checked, and episodes left unchecked because their worker failed (why)."""

    bad: list[BadEpisode] = field(default_factory=list)
    frames_decoded: int = 0
    episodes: int = 0
    rows: int = 0
    unchecked: dict[int, str] = field(default_factory=dict)


def plan_frame_tasks(meta: DatasetMeta, *, workers: int, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     check_pattern: bool = False, run: str = "") -> list[FrameTask]:
    """Tasks covering every episode once: episodes grouped by the files they read (data file and
    each camera's MP4), each group cut into runs of consecutive episodes of at most about
    ``rows / (workers * TASKS_PER_WORKER)`` rows (one episode at least)."""
    table = meta.episode_table
    if not len(table):
        return []
    keys = table.file_keys()
    order = np.lexsort((table.index, *keys.T[::-1]))  # by files, then by episode
    limit = max(1, -(-int(table.length.sum()) // (max(1, workers) * TASKS_PER_WORKER)))
    tasks: list[FrameTask] = []
    episodes: list[int] = []
    rows = 0

    def close_run() -> None:
        nonlocal rows
        if episodes:
            part = table.take(episodes)
            tasks.append(FrameTask(DatasetMeta(meta.location, meta.info, part, meta.tasks), tuple(episodes), rows,
                                   tolerance_s, check_pattern, run))
        episodes.clear()
        rows = 0

    previous = None
    for position in order.tolist():
        key = tuple(keys[position].tolist())
        length = int(table.length[position])
        if key != previous or rows + length > limit:
            close_run()
        previous = key
        episodes.append(int(table.index[position]))
        rows += length
    close_run()
    return tasks


def check_frame_task(task: FrameTask) -> tuple[list[BadEpisode], int]:
    """Check the task's episodes in order (runs in a worker): (bad episodes, frames decoded)."""
    from .frame_checker import EpisodeChecker  # torch and the decoders: imported where frames are decoded

    meta = task.meta
    bad: list[BadEpisode] = []
    decoded = 0
    with meta.location.open_reader() as reader:
        indexes = FileIndexes(reader, root=meta.root, caches=_run_caches(task.run))
        checker = EpisodeChecker(meta, EpisodeAssembler(meta, reader, indexes=indexes, tolerance_s=task.tolerance_s),
                                 tolerance_s=task.tolerance_s, check_pattern=task.check_pattern)
        for index in task.episodes:
            try:
                decoded += checker.check(index)
            except PROGRAMMING_ERRORS:
                raise
            except Exception as exc:  # anything else the episode's data caused: it is bad
                bad.append(BadEpisode(index, cause_of(exc, meta.root)))
            finally:
                checker.decoders.clear()
    return bad, decoded


_caches: tuple[str, IndexCaches] | None = None  # this process's parsed MP4 indexes and footers, of one run


def _run_caches(run: str) -> IndexCaches:
    """The MP4 indexes and footers parsed by this process's earlier tasks of the same run (a new run,
    or none named, starts empty: files may have changed between runs)."""
    global _caches
    if not run or _caches is None or _caches[0] != run:
        _caches = (run, IndexCaches())
    return _caches[1]


def _forget_caches(run: str) -> None:
    global _caches
    if _caches is not None and _caches[0] == run:
        _caches = None


def cause_of(exc: BaseException, root: str) -> str:
    """One line: the error's type and message, without the dataset root and native source places."""
    text = " ".join(str(exc).split()).replace(f"{root}: ", "").replace(f"{root}/", "")
    text = _REPEATED_NAME.sub(r"\1: ", _NATIVE_WHERE.sub("", text))
    cause = f"{type(exc).__name__}: {text}"
    return cause if len(cause) <= MAX_CAUSE_CHARS else cause[:MAX_CAUSE_CHARS - 3] + "..."


def check_all_frames(meta: DatasetMeta, *, workers: int | None = None, executor: Executor | None = None,
                     progress: bool = False, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     check_pattern: bool = False) -> FramesResult:
    """Check every episode of ``meta`` (see the module docstring). ``executor``: where the tasks run
    (e.g. a Dask client's ``get_executor()``; tasks open their own readers from ``meta.location``);
    default: this process and ``workers - 1`` spawned processes (``workers`` default: one per CPU).
    ``progress``: a bar of rows on stderr."""
    workers = max(1, workers or os.cpu_count() or 1)
    run = uuid.uuid4().hex
    tasks = plan_frame_tasks(meta, workers=workers, tolerance_s=tolerance_s, check_pattern=check_pattern, run=run)
    result = FramesResult(episodes=sum(len(t.episodes) for t in tasks), rows=sum(t.rows for t in tasks))
    bar = tqdm(total=result.rows, desc="validate", unit="row", disable=not progress)
    try:
        for task, outcome in _run(tasks, executor, workers):
            if isinstance(outcome, BaseException):
                why = cause_of(outcome, meta.root)
                result.unchecked.update({index: why for index in task.episodes})
            else:
                result.bad += outcome[0]
                result.frames_decoded += outcome[1]
            bar.update(task.rows)
    finally:
        bar.close()
        _forget_caches(run)
    result.bad.sort(key=lambda b: b.episode_index)
    return result


def _run(tasks: list[FrameTask], executor: Executor | None,
         workers: int) -> Iterator[tuple[FrameTask, tuple[list[BadEpisode], int] | BaseException]]:
    """Each task with its outcome (or the exception that ended its worker), as they finish.

    With a given executor every task is submitted at once (it schedules them). Without one, a thread
    of this process and ``workers - 1`` helpers (spawned processes) each get one task at a time, the
    next as soon as one finishes: no core waits while the helpers start, and none at the end while
    another holds tasks it has not started.
    """
    pools: list[tuple[Executor, int]] = [(executor, len(tasks))] if executor is not None else \
        [(ThreadPoolExecutor(1, thread_name_prefix="validate"), 1)]
    helpers = _helpers(workers - 1) if executor is None else None
    if helpers is not None:
        pools.append((helpers, workers - 1))
    pending: dict[Future, tuple[FrameTask, int]] = {}
    load = [0] * len(pools)
    queue = iter(tasks)

    def fill() -> None:
        for number, (pool, window) in enumerate(pools):
            while load[number] < window and (task := next(queue, None)) is not None:
                pending[_submit(pool, task)] = (task, number)
                load[number] += 1

    try:
        fill()
        while pending:
            finished = []
            for future in wait(pending, return_when=FIRST_COMPLETED).done:
                task, number = pending.pop(future)
                load[number] -= 1
                finished.append((task, future))
            fill()
            for task, future in finished:
                yield task, _outcome(future)
    finally:
        for future in pending:
            future.cancel()
        if executor is None:
            for pool, _ in pools:
                pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: Executor, task: FrameTask) -> Future:
    """``pool.submit(check_frame_task, task)``; a pool that refuses (broken) gives a failed future."""
    try:
        return pool.submit(check_frame_task, task)
    except PROGRAMMING_ERRORS:
        raise
    except Exception as exc:
        future: Future = Future()
        future.set_exception(exc)
        return future


def _outcome(future: Future) -> tuple[list[BadEpisode], int] | BaseException:
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, PROGRAMMING_ERRORS):
        raise exc
    return exc


def _helpers(count: int) -> Executor | None:
    """``count`` spawned processes (threads where spawned processes cannot start from the main
    script, with a warning saying why); None for none."""
    if count < 1:
        return None
    reason = spawn_unsafe_reason()
    if reason is not None:
        _log.warning("validate: %s; checking frames in this process and %d more thread(s) instead", reason, count)
        return ThreadPoolExecutor(count, thread_name_prefix="validate")
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
