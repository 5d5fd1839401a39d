"""shuffle_episodes: a copy of a dataset whose episodes are physically in a seeded random order.

Rows are copied with ``episode_index``/``index`` renumbered; videos are re-encoded in the new order
by the streaming encoder (one task per output video file and camera, one per data file, run on any
``concurrent.futures.Executor``). Data, videos and meta/episodes are aligned, files roll over at the
dataset's size limits (estimated from the source bytes), image stats are recomputed while encoding.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..meta.dataset_meta import DatasetMeta
from ..meta.depth import is_depth_feature
from ..synthetic.depth import DEPTH_CRF
from .encoder import CodecSettings
from .layout import FileGroup, copy_meta_files, finish_info, make_groups, write_info
from .main_script import spawn_unsafe_reason
from .output import ToolError, check_output, open_output, staged_output
from .shuffle_meta import write_shuffled_meta
from .shuffle_tasks import DataTask, EpisodeMove, VideoTask, run_data_task, run_video_task
from .source import SourceFiles, VideoSource, open_source

MB = 1 << 20
_log = logging.getLogger(__name__)


@dataclass
class ShuffleResult:
    """What shuffle wrote."""

    output: str
    seed: int
    episodes: int
    frames: int
    order: list[int]  # source episode index of each output episode
    data_files: int
    video_files: int
    vcodec: str
    tasks: int
    bytes_written: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shuffle_order(num_episodes: int, seed: int) -> list[int]:
    """Positions (into the sorted source episodes) of the output episodes: a seeded permutation."""
    return np.random.default_rng(seed).permutation(num_episodes).tolist()


def shuffle_episodes(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    seed: int,
    vcodec: str = "libsvtav1",
    *,
    crf: int = 30,
    g: int = 2,
    preset: int | str = 12,
    pix_fmt: str = "yuv420p",
    executor: Executor | None = None,
    max_workers: int | None = None,
    overwrite: bool = False,
    max_episodes_per_file: int | None = None,
    video_files_size_in_mb: float | None = None,
    data_files_size_in_mb: float | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
    before_commit: Callable[[Path], None] | None = None,
    output_storage_options: dict[str, Any] | None = None,
    staging_dir: str | os.PathLike[str] | None = None,
) -> ShuffleResult:
    """Write ``source`` with its episodes in the order ``shuffle_order(N, seed)`` to ``output_dir``.

    ``vcodec="auto"`` picks a working hardware encoder, else libsvtav1. ``executor``: where the tasks
    run (default: a local process pool of ``max_workers`` or one per CPU). Size limits default to the
    source's info.json. ``output_dir`` is a local folder or a writable fsspec URL (options:
    ``output_storage_options``, else ``storage_options`` when the protocol is the source's); a URL
    output is built in a local staging folder (in ``staging_dir``, default the system temp dir) and then
    uploaded, ``meta/info.json`` last (a local output is built beside itself; ``staging_dir`` is for
    URL outputs). With an executor whose workers run on other machines, tasks write into that folder
    (or beside a local ``output_dir``): it must be on a file system they all see.
    ``before_commit(folder)`` runs on the finished local folder before it is renamed into place (or
    uploaded). Raises ``ToolError`` (nothing written) when any task fails.
    """
    start = time.perf_counter()
    output = open_output(output_dir, source, storage_options=storage_options,
                         output_storage_options=output_storage_options, staging_dir=staging_dir)
    meta = open_source(os.fspath(source), storage_options)
    check_output(os.fspath(source), output, overwrite=overwrite)
    settings = CodecSettings(vcodec, pix_fmt, g, crf, preset).resolved()
    files = SourceFiles.of(meta)
    info = dict(meta.info)
    if video_files_size_in_mb is not None:
        info["video_files_size_in_mb"] = video_files_size_in_mb
    if data_files_size_in_mb is not None:
        info["data_files_size_in_mb"] = data_files_size_in_mb
    order = shuffle_order(meta.total_episodes, seed)
    moves = plan_moves(meta, order)
    groups = plan_groups(meta, files, moves, info, max_episodes_per_file)
    result = ShuffleResult(str(output), seed, meta.total_episodes, meta.total_frames,
                           [m.old for m in moves], len(groups), len(groups) * len(meta.video_keys),
                           settings.vcodec, 0)
    with staged_output(output, what=f"shuffle of {meta.root}", progress=progress) as tmp:
        tasks = make_tasks(meta, files, moves, groups, info, settings, tmp)
        result.tasks = len(tasks)
        outcomes = run_tasks(tasks, executor, max_workers, progress)
        result.bytes_written = sum(o["bytes"] for o in outcomes.values())
        write_shuffled_meta(meta, moves, groups, tasks, outcomes, settings, info, tmp)
        copy_meta_files(meta, tmp, stats=False)
        write_info(tmp, finish_info(_encoded_info(meta, info, settings), groups))
        if before_commit is not None:
            before_commit(tmp)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def plan_moves(meta: DatasetMeta, order: list[int]) -> list[EpisodeMove]:
    """Each output episode's source and its new global index range."""
    moves, start = [], 0
    for new, position in enumerate(order):
        episode = meta.episodes[position]
        videos = tuple((k, s.path, s.from_timestamp, s.to_timestamp) for k, s in episode.videos.items())
        moves.append(EpisodeMove(episode.index, new, episode.length, episode.from_index, start,
                                 episode.data_path, videos))
        start += episode.length
    return moves


def plan_groups(meta: DatasetMeta, files: SourceFiles, moves: list[EpisodeMove], info: dict[str, Any],
                max_episodes: int | None) -> list[FileGroup]:
    """Consecutive output episodes per file, rolled over (as LeRobot does) before a file would reach
    its size limit; sizes are estimated from the source's bytes of each episode."""
    videos = VideoSource(files)
    video_limit = float(info.get("video_files_size_in_mb") or 200) * MB
    data_limit = float(info.get("data_files_size_in_mb") or 100) * MB
    data_bytes = sum(files.size(p) for p in sorted({m.data_path for m in moves}))
    per_row = data_bytes / max(1, meta.total_frames)
    runs: list[list[int]] = []
    sizes: dict[str, float] = {}
    for move in moves:
        estimate = {"data": move.length * per_row}
        for key in meta.video_keys:
            path, lo, hi = move.video(key)
            estimate[key] = videos.span(path, lo, hi, move.length, f"episode {move.old} of {key}")[1].byte_length
        full = any(sizes.get(k, 0) + v >= (data_limit if k == "data" else video_limit) for k, v in estimate.items())
        if not runs or (runs[-1] and full) or (max_episodes and len(runs[-1]) >= max_episodes):
            runs.append([])
            sizes = {}
        runs[-1].append(move.new)
        for k, v in estimate.items():
            sizes[k] = sizes.get(k, 0) + v
    return make_groups(runs, info)


def make_tasks(meta: DatasetMeta, files: SourceFiles, moves: list[EpisodeMove], groups: list[FileGroup],
               info: dict[str, Any], settings: CodecSettings, out: Path) -> dict[str, VideoTask | DataTask]:
    """Every task, keyed by a stable id (group number, camera)."""
    tasks: dict[str, VideoTask | DataTask] = {}
    for number, group in enumerate(groups):
        members = tuple(moves[e] for e in group.episodes)
        tasks[f"{number}/data"] = DataTask(files, str(out / group.data_path(info)), members)
        for key in meta.video_keys:
            height, width = meta.features[key]["shape"][:2]
            tasks[f"{number}/{key}"] = VideoTask(files, key, str(out / group.video_path(info, key)), members,
                                                 meta.fps, width, height,
                                                 camera_settings(meta.features[key], settings))
    for task in tasks.values():
        Path(task.out).parent.mkdir(parents=True, exist_ok=True)
    return tasks


def run_tasks(tasks: dict[str, VideoTask | DataTask], executor: Executor | None, max_workers: int | None,
              progress: bool) -> dict[str, dict[str, Any]]:
    """Run every task on ``executor``; the first failure cancels the rest and raises ToolError.

    Without an executor: a process pool of ``max_workers`` (default one per CPU, at most one per
    task), whose encoders share the cores (each gets ``cores // workers`` threads); with a single
    worker the tasks run here, in turn, which spares starting a process (see ``local_executor``).
    """
    own = executor is None
    if own:
        workers = min(max_workers or os.cpu_count() or 1, len(tasks))
        if workers > 1:  # encoders that each use every core would fight over them
            tasks = {name: _sharing_cores(task, workers) for name, task in tasks.items()}
        executor = local_executor(workers)
    assert executor is not None
    futures: dict[Future, str] = {}
    try:
        for name in sorted(tasks, key=lambda n: -_work(tasks[n])):  # longest first: no straggler at the end
            task = tasks[name]
            if isinstance(task, VideoTask):
                futures[executor.submit(run_video_task, task)] = name
            else:
                futures[executor.submit(run_data_task, task)] = name
        outcomes: dict[str, dict[str, Any]] = {}
        bar = tqdm(total=len(futures), desc="shuffle", unit="task", disable=not progress)
        for future in as_completed(futures):
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
            bar.update(1)
        bar.close()
        return outcomes
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


def local_executor(workers: int) -> Executor:
    """Where the tasks run without an executor: here for one worker, else a pool of ``workers``
    spawned processes. Where spawned processes cannot start from the main script (a script read
    from standard input, or a call from a script's top level outside ``if __name__ ==
    "__main__":``, which every worker would run again), the pool is of threads instead (the codecs
    release the GIL while they work), with a warning saying why."""
    if workers <= 1:
        return InlineExecutor()
    reason = spawn_unsafe_reason()
    if reason is not None:
        _log.warning("shuffle: %s; running the tasks in %d threads of this process instead", reason, workers)
        return ThreadPoolExecutor(workers, thread_name_prefix="shuffle")
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _work(task: VideoTask | DataTask) -> int:
    """Rough cost of a task: pixels to encode (copying rows is cheap beside it)."""
    frames = sum(move.length for move in task.episodes)
    return frames * task.width * task.height if isinstance(task, VideoTask) else frames


def _sharing_cores(task: VideoTask | DataTask, workers: int) -> VideoTask | DataTask:
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


def camera_settings(feature: dict[str, Any], settings: CodecSettings) -> CodecSettings:
    """How one camera is encoded: ``settings``, except that a depth camera keeps LeRobot's depth
    encoding (12-bit grey HEVC, lossless, so its codes, and the depth they dequantize to, are kept
    exactly) whatever the RGB settings say."""
    if not is_depth_feature(feature):
        return settings
    return CodecSettings("libx265", "gray12le", settings.g, DEPTH_CRF, "medium",
                         options=(("x265-params", "lossless=1:forced-idr=1:log-level=none"),))


def _encoded_info(meta: DatasetMeta, info: dict[str, Any], settings: CodecSettings) -> dict[str, Any]:
    features = {name: dict(feature) for name, feature in info["features"].items()}
    for key in meta.video_keys:
        used = camera_settings(features[key], settings)
        features[key]["info"] = {**features[key].get("info", {}), **used.feature_info()}
    return {**info, "features": features}
