"""shuffle_episodes: a copy of a dataset whose episodes are physically in a seeded random order.

Rows are copied with ``episode_index``/``index`` renumbered; videos are either stream-copied
(``vcodec="copy"``: every episode's samples moved as they are, lossless, at disk speed; see
:mod:`.shuffle_copy`) or re-encoded in the new order by the streaming encoder. One task per output
video file and camera, one per data file, run on any ``concurrent.futures.Executor``. Data, videos
and meta/episodes are aligned, files roll over at the dataset's size limits (estimated from the
source bytes). A run records each finished file in its staging folder and, killed, resumes from
there (``resume=True``, :mod:`.resume`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..meta.dataset_meta import DatasetMeta
from ..meta.depth import is_depth_feature
from ..synthetic.depth import DEPTH_CRF
from .encoder import CodecSettings
from .layout import FileGroup, copy_meta_files, finish_info, make_groups, write_info
from .output import check_output, open_output
from .resume import partial_folder, resumable_output
from .shuffle_copy import (
    COPY,
    CopyNotPossible,
    CopyTask,
    SourceSurvey,
    copied_file_is_intact,
    copy_problem,
    survey_videos,
)
from .shuffle_meta import write_shuffled_meta
from .shuffle_tasks import DataTask, EpisodeMove, VideoTask
from .source import SourceFiles, open_source
from .task_runner import InlineExecutor, Task, local_executor, run_tasks

MB = 1 << 20
_log = logging.getLogger(__name__)
__all__ = ["InlineExecutor", "ShuffleResult", "local_executor", "run_shuffle", "shuffle_episodes", "shuffle_order"]


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
    vcodec: str  # the encoder used, or "copy"
    tasks: int
    bytes_written: int = 0
    seconds: float = 0.0
    resumed: int = 0  # files kept from an earlier, unfinished run

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
    resume: bool = False,
) -> ShuffleResult:
    """Write ``source`` with its episodes in the order ``shuffle_order(N, seed)`` to ``output_dir``.

    ``vcodec="copy"`` moves every episode's video samples as they are (lossless, frames bit-identical,
    no encoder settings apply); it needs every episode of every camera to start on a keyframe, else
    :class:`CopyNotPossible` names the first one that does not. Any other ``vcodec`` re-encodes with
    ``crf``, ``g``, ``preset``, ``pix_fmt``; ``"auto"`` picks a working hardware encoder, else libsvtav1.
    ``executor``: where the tasks run (default: a local pool of ``max_workers`` or one per CPU).
    Size limits default to the source's info.json. ``output_dir`` is a local folder or a writable
    fsspec URL (options: ``output_storage_options``, else ``storage_options`` when the protocol is the
    source's); the dataset is built in a staging folder (beside a local ``output_dir``; for a URL, in
    ``staging_dir``, default the system temp dir) and then renamed into place or uploaded,
    ``meta/info.json`` last. With an executor whose workers run on other machines, that folder must be
    on a file system they all see. ``resume=True`` continues a run of the same arguments that was
    killed, keeping the files it finished (each checked again), and keeps this run's finished files
    if it fails. ``before_commit(folder)`` runs on the finished local folder before it is moved into
    place. Raises ``ToolError`` (nothing written to ``output_dir``) when any task fails.
    """
    return run_shuffle(source, output_dir, seed, vcodec, crf=crf, g=g, preset=preset, pix_fmt=pix_fmt,
                       executor=executor, max_workers=max_workers, overwrite=overwrite,
                       max_episodes_per_file=max_episodes_per_file, video_files_size_in_mb=video_files_size_in_mb,
                       data_files_size_in_mb=data_files_size_in_mb, storage_options=storage_options,
                       progress=progress, before_commit=before_commit, output_storage_options=output_storage_options,
                       staging_dir=staging_dir, resume=resume)


def run_shuffle(source: str | os.PathLike[str], output_dir: str | os.PathLike[str], seed: int, vcodec: str | None,
                *, tool: str = "shuffle", crf: int = 30, g: int = 2, preset: int | str = 12, pix_fmt: str = "yuv420p",
                executor: Executor | None = None, max_workers: int | None = None, overwrite: bool = False,
                max_episodes_per_file: int | None = None, video_files_size_in_mb: float | None = None,
                data_files_size_in_mb: float | None = None, storage_options: dict[str, Any] | None = None,
                progress: bool = False, before_commit: Callable[[Path], None] | None = None,
                output_storage_options: dict[str, Any] | None = None,
                staging_dir: str | os.PathLike[str] | None = None, resume: bool = False) -> ShuffleResult:
    """:func:`shuffle_episodes` for a named ``tool`` (a resumed run must be of the same tool);
    ``vcodec=None``: stream copy where every episode allows it, else libsvtav1."""
    start = time.perf_counter()
    output = open_output(output_dir, source, storage_options=storage_options,
                         output_storage_options=output_storage_options, staging_dir=staging_dir)
    meta = open_source(os.fspath(source), storage_options)
    check_output(os.fspath(source), output, overwrite=overwrite)
    files = SourceFiles.of(meta)
    videos = files.videos  # read once here, shared with the tasks that run in this process
    info = dict(meta.info)
    if video_files_size_in_mb is not None:
        info["video_files_size_in_mb"] = video_files_size_in_mb
    if data_files_size_in_mb is not None:
        info["data_files_size_in_mb"] = data_files_size_in_mb
    order = shuffle_order(meta.total_episodes, seed)
    moves = plan_moves(meta, order)
    survey = survey_videos(meta, videos, sorted(moves, key=lambda move: move.old))
    groups = plan_groups(meta, files, moves, info, max_episodes_per_file, survey)
    copy = use_copy(vcodec, meta, survey, moves)
    settings = None if copy else CodecSettings(vcodec or "libsvtav1", pix_fmt, g, crf, preset).resolved()
    arguments = {"tool": tool, "source": str(meta.root), "seed": seed,
                 "vcodec": COPY if settings is None else settings.vcodec,
                 "encoding": None if settings is None else asdict(settings), "plan": plan_digest(moves, groups, info)}
    result = ShuffleResult(str(output), seed, meta.total_episodes, meta.total_frames, [m.old for m in moves],
                           len(groups), len(groups) * len(meta.video_keys), str(arguments["vcodec"]), 0)
    tmp = partial_folder(output)
    tasks = make_tasks(meta, files, moves, groups, info, settings, tmp)
    relative = {name: Path(task.out).relative_to(tmp).as_posix() for name, task in tasks.items()}

    def intact(name: str) -> bool:  # a stream copy kept from an earlier run: checked against the source
        task = tasks.get(name)
        return isinstance(task, CopyTask) and copied_file_is_intact(task)

    with resumable_output(output, what=f"{tool} of {meta.root}", arguments=arguments, resume=resume,
                          progress=progress, verify=intact, workers=max_workers) as run:
        for task in tasks.values():
            Path(task.out).parent.mkdir(parents=True, exist_ok=True)
        outcomes = {name: earlier for name in tasks if (earlier := run.outcome(name, relative[name])) is not None}
        result.tasks, result.resumed = len(tasks), len(outcomes)
        todo = {name: task for name, task in tasks.items() if name not in outcomes}
        outcomes.update(run_tasks(todo, executor, max_workers, progress, finished=len(outcomes),
                                  done=lambda name, outcome: run.record(name, relative[name], outcome)))
        result.bytes_written = sum(o["bytes"] for o in outcomes.values())
        write_shuffled_meta(meta, moves, groups, tasks, outcomes, info, tmp, copied=copy)
        copy_meta_files(meta, tmp, stats=False)
        write_info(tmp, finish_info(info if settings is None else _encoded_info(meta, info, settings), groups))
        if before_commit is not None:
            before_commit(tmp)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def use_copy(vcodec: str | None, meta: DatasetMeta, survey: SourceSurvey, moves: list[EpisodeMove]) -> bool:
    """Whether videos are stream-copied: ``"copy"`` (refused with the reason when the source does not
    allow it), ``None`` (when the source allows it), any encoder name: no."""
    if vcodec not in (None, COPY) or not meta.video_keys:
        return vcodec == COPY
    problem = copy_problem(meta, survey, sorted(moves, key=lambda move: move.old))
    if problem is None:
        return True
    if vcodec == COPY:
        raise CopyNotPossible(f"--vcodec copy (vcodec='copy') cannot shuffle {meta.root}: "
                              f"{problem}; shuffle with a re-encoding --vcodec (e.g. libsvtav1) instead")
    _log.info("videos are re-encoded: %s", problem)
    return False


def plan_digest(moves: list[EpisodeMove], groups: list[FileGroup], info: dict[str, Any]) -> str:
    """SHA-256 of what the tasks are made from: the episodes' moves, the file groups and info.json."""
    plan = {"moves": [vars(m) for m in moves], "groups": [vars(g) for g in groups], "info": info}  # flat fields
    return hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()


def plan_moves(meta: DatasetMeta, order: list[int]) -> list[EpisodeMove]:
    """Each output episode's source and its new global index range."""
    moves, start = [], 0
    episodes = meta.episodes  # built once: each access builds every episode's object
    for new, position in enumerate(order):
        episode = episodes[position]
        videos = tuple((k, s.path, s.from_timestamp, s.to_timestamp) for k, s in episode.videos.items())
        moves.append(EpisodeMove(episode.index, new, episode.length, episode.from_index, start,
                                 episode.data_path, videos))
        start += episode.length
    return moves


def plan_groups(meta: DatasetMeta, files: SourceFiles, moves: list[EpisodeMove], info: dict[str, Any],
                max_episodes: int | None, survey: SourceSurvey | None = None) -> list[FileGroup]:
    """Consecutive output episodes per file, rolled over (as LeRobot does) before a file would reach
    its size limit; sizes are estimated from the source's bytes of each episode (``survey``)."""
    if survey is None:
        survey = survey_videos(meta, files.videos, sorted(moves, key=lambda move: move.old))
    video_limit = float(info.get("video_files_size_in_mb") or 200) * MB
    data_limit = float(info.get("data_files_size_in_mb") or 100) * MB
    data_bytes = sum(files.size(p) for p in sorted({m.data_path for m in moves}))
    per_row = data_bytes / max(1, meta.total_frames)
    runs: list[list[int]] = []
    sizes: dict[str, float] = {}
    for move in moves:
        estimate = {"data": move.length * per_row}
        for key in meta.video_keys:
            estimate[key] = survey.spans[(move.old, key)].byte_length
        full = any(sizes.get(k, 0) + v >= (data_limit if k == "data" else video_limit) for k, v in estimate.items())
        if not runs or (runs[-1] and full) or (max_episodes and len(runs[-1]) >= max_episodes):
            runs.append([])
            sizes = {}
        runs[-1].append(move.new)
        for k, v in estimate.items():
            sizes[k] = sizes.get(k, 0) + v
    return make_groups(runs, info)


def make_tasks(meta: DatasetMeta, files: SourceFiles, moves: list[EpisodeMove], groups: list[FileGroup],
               info: dict[str, Any], settings: CodecSettings | None, out: Path) -> dict[str, Task]:
    """Every task, keyed by a stable id (group number, camera); ``settings=None``: stream copies.
    The tasks write below ``out``, whose folders the caller makes."""
    tasks: dict[str, Task] = {}
    for number, group in enumerate(groups):
        members = tuple(moves[e] for e in group.episodes)
        tasks[f"{number}/data"] = DataTask(files, str(out / group.data_path(info)), members)
        for key in meta.video_keys:
            height, width = meta.features[key]["shape"][:2]
            path = str(out / group.video_path(info, key))
            if settings is None:
                tasks[f"{number}/{key}"] = CopyTask(files, key, path, members, meta.fps, width, height)
            else:
                tasks[f"{number}/{key}"] = VideoTask(files, key, path, members, meta.fps, width, height,
                                                     camera_settings(meta.features[key], settings))
    return tasks


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
