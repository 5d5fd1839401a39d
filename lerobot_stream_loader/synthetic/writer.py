"""``write_sample_dataset``: a complete synthetic LeRobot v3.0 dataset whose frames carry their index."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..meta.stats import Stats, image_stats, sampled_frame_positions
from .depth import depth_metres, depth_video_info, encode_depth_episode
from .layout import (
    VIDEO_PATH,
    EpisodePlan,
    SampleOptions,
    file_location,
    plan_episodes,
    video_cameras,
    video_key,
)
from .pattern import FrameRenderer
from .tables import (
    aggregate_stats,
    features,
    info_json,
    write_data_files,
    write_episodes_table,
    write_json,
    write_tasks,
)
from .video import VideoSettings, concatenate_episodes, encode_checked_episode, video_info

Progress = Callable[[int], None]


def write_sample_dataset(
    out: str | os.PathLike[str],
    *,
    episodes: int = 6,
    cameras: int = 2,
    fps: int = 30,
    size: tuple[int, int] = (96, 72),
    frames_per_episode: tuple[int, int] = (20, 40),
    codec: str = "av1",
    gop: int = 2,
    bframes: bool = False,
    episodes_per_video_file: int = 3,
    stagger_cameras: bool = False,
    episodes_per_data_file: int = 4,
    faststart: bool = True,
    tasks: int = 2,
    seed: int = 0,
    state_dim: int = 6,
    action_dim: int = 6,
    depth_camera: bool = False,
    image_features: tuple[str, ...] | list[str] = (),
    single_row_group: bool = False,
    to_timestamp_short: bool = False,
    extra_columns: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a LeRobot v3.0 dataset to ``out`` and return its path.

    Episode lengths are drawn from ``frames_per_episode`` (inclusive) with ``seed``. Camera ``k`` is
    ``observation.images.cam{k}``, ``size`` is (width, height). Every video frame shows its global
    ``index`` (see ``lerobot_stream_loader.synthetic.checks``); ``observation.state`` and ``action`` rows are
    ``testing.expected_state(index, state_dim)`` and ``testing.expected_action(index, action_dim)``.
    Videos: each episode encoded on its own, ``episodes_per_video_file`` episodes appended per MP4 by
    stream copy (``stagger_cameras``: camera ``k``'s first file holds ``k`` fewer, modulo the count).
    ``depth_camera`` adds ``observation.images.depth``, a depth camera as LeRobot 0.6.1 writes one
    (12-bit log-quantized HEVC, see ``sample.depth``); ``image_features`` (``"rgb"``, ``"depth"``) add
    image features stored in the data parquet (see ``sample.images``).
    The dataset is built in a folder beside ``out`` and renamed into place at the end; a non-empty
    ``out`` is refused unless ``overwrite``. ``progress(n)`` is called as each camera-episode of
    ``n`` frames is encoded (from worker threads, one call at a time).

    Layouts other writers make: ``single_row_group`` writes each data file as one row group holding
    all its episodes; ``to_timestamp_short`` declares every ``to_timestamp`` one frame short
    (``from_timestamp + (length - 1) / fps``, as some converters do); ``extra_columns`` adds float64,
    int32, bool, string, ``list<double>`` and language columns (see ``sample.extra_columns``).
    """
    options = SampleOptions(
        episodes=episodes, cameras=cameras, fps=fps, size=(int(size[0]), int(size[1])),
        frames_per_episode=(int(frames_per_episode[0]), int(frames_per_episode[1])), codec=codec,
        gop=gop, bframes=bframes, episodes_per_video_file=episodes_per_video_file,
        stagger_cameras=stagger_cameras, episodes_per_data_file=episodes_per_data_file,
        faststart=faststart, tasks=tasks, seed=seed, state_dim=state_dim, action_dim=action_dim,
        depth_camera=depth_camera, image_features=tuple(image_features),
        single_row_group=single_row_group, to_timestamp_short=to_timestamp_short, extra_columns=extra_columns,
    )
    options.validate()
    target = Path(out)
    _check_target(target, overwrite)
    plans = plan_episodes(options)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        _write_all(staging, options, plans, progress)
        _replace(target, staging, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_target(target: Path, overwrite: bool) -> None:
    hint = "(replace it with overwrite=True or --overwrite)"
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty {hint}")
    if target.exists() and not target.is_dir() and not overwrite:
        raise FileExistsError(f"{target} exists and is not a folder {hint}")


def _replace(target: Path, staging: Path, overwrite: bool) -> None:
    _check_target(target, overwrite)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    staging.rename(target)


def _write_all(
    root: Path, options: SampleOptions, plans: list[EpisodePlan], progress: Progress | None
) -> None:
    spans, video_stats = _write_videos(root, options, plans, progress)
    if options.to_timestamp_short:
        spans = {(camera, episode): (lo, lo + (plans[episode].length - 1) / options.fps)
                 for (camera, episode), (lo, _) in spans.items()}
    stats = write_data_files(root, plans, options)
    for (camera, episode), camera_stats in video_stats.items():
        stats[episode][video_key(options, camera)] = camera_stats
    infos = {video_key(options, camera): video_info(root / _video_path(options, camera, 0))
             for camera in range(video_cameras(options))}
    if options.depth_camera:
        key = video_key(options, options.cameras)
        infos[key] = depth_video_info(infos[key], options.gop)
    feats = features(options, infos)
    order = [name for name, feature in feats.items() if feature["dtype"] not in ("string", "language")]
    task_count = len({plan.task_index for plan in plans})
    write_episodes_table(root, plans, options, spans, stats, order)
    write_tasks(root, task_count)
    write_json(root / "meta" / "stats.json", aggregate_stats(stats, order))
    write_json(root / "meta" / "info.json", info_json(options, plans, task_count, feats))


def _video_path(options: SampleOptions, camera: int, file_number: int) -> str:
    chunk, file = file_location(file_number)
    return VIDEO_PATH.format(video_key=video_key(options, camera), chunk_index=chunk, file_index=file)


Spans = dict[tuple[int, int], tuple[float, float]]
ImageStats = dict[tuple[int, int], Stats]


def _write_videos(
    root: Path, options: SampleOptions, plans: list[EpisodePlan], progress: Progress | None
) -> tuple[Spans, ImageStats]:
    """Encode every (camera, video file) in a thread pool; return spans and image stats per episode."""
    jobs: dict[tuple[int, int], list[EpisodePlan]] = {}
    for plan in plans:
        for camera, file_number in plan.video_files.items():
            jobs.setdefault((camera, file_number), []).append(plan)
    lock = threading.Lock()

    def report(frames: int) -> None:
        if progress is not None:
            with lock:
                progress(frames)

    all_spans: Spans = {}
    all_stats: ImageStats = {}
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        futures = [
            pool.submit(_write_video_file, root, options, camera, number, members, report)
            for (camera, number), members in jobs.items()
        ]
        for future in futures:
            spans, episode_stats = future.result()
            all_spans.update(spans)
            all_stats.update(episode_stats)
    return all_spans, all_stats


def _write_video_file(
    root: Path,
    options: SampleOptions,
    camera: int,
    file_number: int,
    members: list[EpisodePlan],
    report: Progress,
) -> tuple[Spans, ImageStats]:
    """Encode the episodes of one MP4 of ``camera`` (each verified) and append them into the file."""
    width, height = options.size
    settings = VideoSettings(options.codec, options.fps, width, height, options.gop, options.bframes)
    renderer = FrameRenderer(width, height, camera)
    path = root / _video_path(options, camera, file_number)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts, episode_stats = [], {}
    depth = camera == options.cameras
    for plan in members:
        where = f"{path.relative_to(root)} ({video_key(options, camera)}, episode {plan.index})"
        positions = sampled_frame_positions(plan.length)
        if depth:
            parts.append(encode_depth_episode(plan.from_index, plan.length, options.fps, width, height,
                                              options.gop, where))
            sampled = [depth_metres(plan.from_index + p, width, height)[..., None] for p in positions]
            episode_stats[camera, plan.index] = image_stats(np.stack(sampled), scale=1.0)
        else:
            parts.append(encode_checked_episode(renderer, plan.from_index, plan.length, settings, where))
            sampled = [renderer.render(plan.from_index + p) for p in positions]
            episode_stats[camera, plan.index] = image_stats(np.stack(sampled))
        report(plan.length)
    lengths = [plan.length for plan in members]
    spans = concatenate_episodes(parts, lengths, path, options.fps, options.faststart)
    return {(camera, plan.index): span for plan, span in zip(members, spans, strict=True)}, episode_stats
