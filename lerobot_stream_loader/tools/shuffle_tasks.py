"""The independent tasks of a shuffle: one per output video file and camera, one per data file.

Tasks are plain picklable values and top-level functions, so any ``concurrent.futures.Executor``
(a local process pool, a Dask cluster's ``client.get_executor()``) can run them. Each task opens the
source itself and writes exactly one output file; it returns what the metadata needs.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa

from ..errors import StalledError
from ..meta.dataset_meta import EpisodeMeta
from ..meta.stats import to_lists
from ..mp4 import synthesize_mp4
from ..util.deadline import run_while_progressing
from .encoder import HARDWARE_ENCODERS, CameraResult, CodecSettings, FileEncoder
from .layout import write_parquet
from .remux import check_episode_keyframes, episode_bounds
from .renumbered_stats import constant_stats, run_stats
from .source import SourceFiles, VideoSource
from .verify import OutputCheckError, check_reencoded

TOLERANCE_S = 1e-4
STALL_SECONDS = 180.0  # no frame encoded for this long: the encoder is stuck
STALL_RETRIES = 1
FALLBACK_PRESETS = (10, 8)  # SVT-AV1 presets tried in turn when a frame fails the output check
_log = logging.getLogger(__name__)
RENUMBERED = ("index", "episode_index")


@dataclass(frozen=True)
class EpisodeMove:
    """Where an output episode comes from and where it goes."""

    old: int
    new: int
    length: int
    old_from: int
    new_from: int
    data_path: str
    videos: tuple[tuple[str, str, float, float], ...]  # (camera, path, from_ts, to_ts) in the source

    def video(self, key: str) -> tuple[str, float, float]:
        for name, path, lo, hi in self.videos:
            if name == key:
                return path, lo, hi
        raise KeyError(key)


@dataclass(frozen=True)
class CameraTask:
    """One camera's episodes, in order, into one output MP4."""

    files: SourceFiles
    key: str
    out: str
    episodes: tuple[EpisodeMove, ...]
    fps: int
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"video {Path(self.out).name} of {self.key}"


@dataclass(frozen=True)
class VideoTask(CameraTask):
    """Re-encode one camera's episodes, in order, into one output MP4."""

    settings: CodecSettings


@dataclass(frozen=True)
class DataTask:
    """Copy the episodes' rows, renumbered, into one output parquet (one row group per episode)."""

    files: SourceFiles
    out: str
    episodes: tuple[EpisodeMove, ...]

    @property
    def name(self) -> str:
        return f"data {Path(self.out).name}"


def run_video_task(task: VideoTask) -> dict[str, Any]:
    """Decode each source episode and stream its frames to the encoder; return spans and image stats.

    The task is the camera's one encoder thread: it decodes and encodes in turn (the decoder and the
    encoder run their own native threads), which avoids handing every frame to another Python thread.
    The encoder is watched: one that makes no progress for ``STALL_SECONDS`` (SVT-AV1 occasionally
    deadlocks inside an encode call) is abandoned and the file is encoded again, at most
    ``STALL_RETRIES`` times, then a ``StalledError`` names the file.
    Every frame of the finished file is then checked against the source frame it must hold
    (``tools.verify``). SVT-AV1's fastest presets occasionally mangle a frame into a near copy of its
    neighbour on fine detail; such a file is encoded again with the next slower preset of
    ``FALLBACK_PRESETS``, and when none is left an ``OutputCheckError`` names the file and frame.
    """
    lengths = [m.length for m in task.episodes]
    attempts = fallback_settings(task.settings)
    for attempt, settings in enumerate(attempts):
        result = _encode_watched(replace(task, settings=settings))
        data = Path(task.out).read_bytes()
        if result.lengths != lengths:
            raise RuntimeError(f"{task.out}: encoded episodes of {result.lengths} frames, expected {lengths}")
        check_episode_keyframes(data, lengths, task.out)
        try:
            check_reencoded(task.out, data, result.fingerprints, lengths)
        except OutputCheckError as error:
            if attempt + 1 == len(attempts):
                Path(task.out).unlink(missing_ok=True)
                raise
            _log.warning("%s; encoding the file again with preset %s", str(error), attempts[attempt + 1].preset)
            continue
        return {"key": task.key, "bounds": episode_bounds(data, lengths, task.fps, task.out),
                "stats": [to_lists(s) for s in result.stats], "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}
    raise AssertionError("unreachable: the last attempt returns or raises")


def fallback_settings(settings: CodecSettings) -> list[CodecSettings]:
    """``settings``, then (for SVT-AV1) the same with each slower preset of ``FALLBACK_PRESETS``."""
    if settings.vcodec != "libsvtav1":
        return [settings]
    slower = [p for p in FALLBACK_PRESETS if p < int(settings.preset)]
    return [settings] + [replace(settings, preset=p) for p in slower]


def _encode_watched(task: VideoTask) -> CameraResult:
    """Encode the task's file into ``<out>.part<k>`` under the progress watchdog; rename it into place."""
    attempt = 0
    while True:
        part = f"{task.out}.part{attempt}"
        encoders: list[FileEncoder] = []
        try:
            result = run_while_progressing(partial(_encode_file, task, part, encoders),
                                           partial(_frames_encoded, encoders),
                                           STALL_SECONDS, f"encoder of {task.out}")
        except StalledError as error:
            Path(part).unlink(missing_ok=True)  # the abandoned thread keeps writing to an unlinked file
            if attempt == STALL_RETRIES:
                raise StalledError(f"{error}; gave up after {STALL_RETRIES + 1} tries") from error
            attempt += 1
            _log.warning("%s; encoding the file again (retry %d of %d)", str(error), attempt, STALL_RETRIES)
            continue
        os.replace(part, task.out)
        return result


def _frames_encoded(encoders: list[FileEncoder]) -> int:
    return encoders[0].frames if encoders else 0


def _encode_file(task: VideoTask, path: str, encoders: list[FileEncoder]) -> CameraResult:
    videos = task.files.videos
    encoder = FileEncoder(path, task.width, task.height, task.fps, task.settings)
    encoders.append(encoder)
    try:
        for move in task.episodes:
            _feed_episode(videos, task.key, move, encoder)
            encoder.end_episode()
        return encoder.close()
    except BaseException:
        encoder.abort()
        raise


def _feed_episode(videos: VideoSource, key: str, move: EpisodeMove, encoder: FileEncoder) -> None:
    path, lo, hi = move.video(key)
    what = f"episode {move.old} of {key}"
    index, span = videos.span(path, lo, hi, move.length, what)
    mini = synthesize_mp4(index, span, videos.payload(path, span))
    sent = 0
    with av.open(io.BytesIO(mini)) as container:
        stream = container.streams.video[0]
        if encoder.settings.vcodec in HARDWARE_ENCODERS:
            stream.thread_type = "AUTO"  # the encoder leaves the CPU free: let the decoder use it
        else:  # a software encoder keeps every core busy: more decoder threads only add overhead
            stream.codec_context.thread_count = 1
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) + span.time_offset
            if t >= lo - TOLERANCE_S and sent < move.length:  # the episode's frames, from from_timestamp on
                encoder.add(frame)  # (counted, not cut at to_timestamp: converters may write it short)
                sent += 1
    if sent != move.length:
        raise RuntimeError(f"{videos.files.root}/{path}: {what} decoded to {sent} frames in "
                           f"{lo:.6f}..{hi:.6f} s, expected {move.length}")


def run_data_task(task: DataTask) -> dict[str, Any]:
    """Write the renumbered rows; return per-episode stats of the renumbered columns."""
    rows = task.files.rows
    schema = rows.schema(task.episodes[0].data_path)
    parts = []
    for move in task.episodes:
        source = EpisodeMeta(index=move.old, length=move.length, from_index=move.old_from,
                             to_index=move.old_from + move.length, data_path=move.data_path)
        table = rows.rows(source)
        parts.append(table.cast(schema) if table.schema != schema else table)
    table = pa.concat_tables(parts)
    lengths = [move.length for move in task.episodes]
    values = {"index": np.concatenate([np.arange(m.new_from, m.new_from + m.length) for m in task.episodes]),
              "episode_index": np.repeat([move.new for move in task.episodes], lengths)}
    for name, column in values.items():
        where = table.schema.get_field_index(name)
        table = table.set_column(where, table.schema.field(where), pa.array(column, table.schema.field(where).type))
    index_stats = run_stats([move.new_from for move in task.episodes], lengths)
    stats = [{"index": index, "episode_index": to_lists(constant_stats(move.new, move.length))}
             for move, index in zip(task.episodes, index_stats)]
    out = Path(task.out)
    write_parquet(out, table, lengths)
    data = out.read_bytes()
    return {"stats": stats, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
