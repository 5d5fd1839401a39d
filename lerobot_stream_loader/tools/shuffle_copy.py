"""Lossless shuffle: each episode's samples stream-copied into the new files, no decode, no encode.

LeRobot encodes every episode on its own and appends episodes by stream copy, so each episode starts
on a keyframe and its samples can be moved to any place in any file of the same sample description.
:func:`copy_problem` says, from the MP4 indexes alone, whether a dataset allows it; a
:class:`CopyTask` writes one output video file; :func:`check_copied_file` checks the written file's
samples against the source's bytes (equal sample bytes under the same sample description decode to
the same frames, bit for bit).
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fsspec.implementations.local import LocalFileSystem

from ..errors import StreamLoaderError
from ..meta.dataset_meta import DatasetMeta
from ..mp4 import Mp4Index, Span, index_mp4
from ..mp4.concat import (
    SampleRun,
    closed_span_problem,
    concat_head,
    sample_run,
    starts_random_access,
    without_bitrate,
)
from ..mp4.index import TrackInfo
from .output import ToolError
from .remux import check_episode_keyframes, episode_bounds
from .shuffle_tasks import CameraTask, EpisodeMove
from .source import SourceFiles, VideoSource
from .verify import OutputCheckError

COPY = "copy"
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


class CopyNotPossible(ToolError):
    """The source cannot be shuffled by stream copy (an episode does not start on a keyframe, ...)."""


@dataclass(frozen=True)
class CopyTask(CameraTask):
    """Stream-copy one camera's episodes, in order, into one output MP4."""


@dataclass
class SourceSurvey:
    """Every episode's span in its source MP4 per camera, and each source MP4's codec configuration."""

    spans: dict[tuple[int, str], Span]  # (source episode, camera) -> span
    configurations: dict[str, tuple[bytes, int]]  # source MP4 -> (sample description without btrt, timescale)


def survey_videos(meta: DatasetMeta, videos: VideoSource, episodes: list[EpisodeMove]) -> SourceSurvey:
    """One pass over the episodes in source order (``episodes`` sorted by source index): consecutive
    episodes share a file, so each MP4 index is read once, and a file's spans are computed together."""
    survey = SourceSurvey({}, {})
    for key in meta.video_keys:
        in_file: dict[str, list[EpisodeMove]] = {}
        for episode in episodes:
            in_file.setdefault(episode.video(key)[0], []).append(episode)
        for path, members in in_file.items():
            requests = [(*episode.video(key)[1:], episode.length, f"episode {episode.old} of {key}")
                        for episode in members]
            index, spans = videos.spans(path, requests)
            survey.spans.update(((episode.old, key), span) for episode, span in zip(members, spans))
            survey.configurations[path] = (without_bitrate(index.info.stsd), index.timescale)
    return survey


def copy_problem(meta: DatasetMeta, survey: SourceSurvey, episodes: list[EpisodeMove]) -> str | None:
    """Why the dataset cannot be shuffled by stream copy, naming the first episode concerned, or None.

    Every episode (``episodes``: in source order) of every camera must start on a keyframe and be a
    closed run of samples (the MP4 index says so); then each camera's files must share one sample
    description (codec configuration) and timescale, since a new file mixes episodes of many files.
    """
    for key in meta.video_keys:
        for episode in episodes:
            path, lo, _ = episode.video(key)
            problem = closed_span_problem(survey.spans[(episode.old, key)])
            if problem is not None:
                return (f"episode {episode.old} of {key} ({meta.root}/{path} at {lo:.3f} s) cannot be "
                        f"stream-copied: {problem}")
    for key in meta.video_keys:
        first = episodes[0].video(key)[0] if episodes else ""
        for episode in episodes:
            path = episode.video(key)[0]
            if survey.configurations[path] != survey.configurations[first]:
                return (f"episode {episode.old} of {key} cannot be stream-copied into one file with the "
                        f"episodes of {first}: {path} has another codec configuration or timescale")
    return None


class SourceMaps:
    """Local source files mapped read-only (a span's bytes are then a view, never a copy); remote
    sources are read into memory instead."""

    def __init__(self, files: SourceFiles) -> None:
        self.files = files
        self.local = isinstance(files.fs, LocalFileSystem)
        self._maps: dict[str, mmap.mmap] = {}
        self._fds: dict[str, int] = {}
        self.kernel_copy = self.local

    def mapped(self, path: str) -> mmap.mmap:
        """The whole local file, mapped."""
        if path not in self._maps:
            self._maps[path] = _map(self.files.url(path))
        return self._maps[path]

    def payload(self, videos: VideoSource, path: str, span: Span) -> bytes | memoryview:
        """The bytes of a span: a view into the mapped file, or (remote) read."""
        if not self.local:
            return videos.payload(path, span)
        data = self.mapped(path)
        end = span.byte_offset + span.byte_length
        if end > len(data):
            raise OutputCheckError(f"{self.files.root}/{path}: bytes {span.byte_offset}..{end} lie past its end")
        return memoryview(data)[span.byte_offset:end]

    def fd(self, path: str) -> int:
        """A read-only descriptor of the local source file (kept open until :meth:`close`)."""
        if path not in self._fds:
            self._fds[path] = os.open(self.files.url(path), os.O_RDONLY)
        return self._fds[path]

    def copy_run(self, out: int, at: int, run: SampleRun, place: tuple[str, int] | None) -> None:
        """Write a run's bytes at ``at`` of the file ``out``: by the kernel (``copy_file_range``, no
        pass through this process) from its place in a local source file, else from memory."""
        if place is not None and self.kernel_copy:
            try:
                _kernel_copy(self.fd(place[0]), place[1], out, at, len(run.data))
                return
            except OSError as error:
                if error.errno not in _NO_KERNEL_COPY:
                    raise OSError(error.errno, f"{self.files.url(place[0])}: {error.strerror}") from error
                self.kernel_copy = False  # another file system or an old kernel: write from memory
        _write_at(out, at, run.data)

    def close(self) -> None:
        for mapped in self._maps.values():
            _unmap(mapped)
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _write_at(out: int, at: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` at offset ``at`` of the file ``out``."""
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.pwrite(out, view[done:], at + done)


def _kernel_copy(source: int, offset: int, out: int, at: int, length: int) -> None:
    """Copy ``length`` bytes at ``offset`` of ``source`` to ``at`` of ``out``, in the kernel."""
    done = 0
    while done < length:
        copied = os.copy_file_range(source, out, length - done, offset + done, at + done)
        if copied <= 0:
            raise OSError(errno.EIO, f"the source ended {length - done} bytes early")
        done += copied


def _map(path: str) -> mmap.mmap:
    with open(path, "rb") as file:
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def _unmap(mapped: mmap.mmap) -> None:
    try:
        mapped.close()
    except BufferError:  # a view is still held somewhere: the mapping goes when the last view does
        pass


def source_runs(task: CopyTask, maps: SourceMaps) -> tuple[TrackInfo, list[SampleRun], list[tuple[str, int] | None]]:
    """Each episode's samples in the source, checked to be copyable, the first one's track info, and
    where each run's bytes lie in one piece of a local source file (path, offset), else None."""
    videos = task.files.videos
    copied: list[SampleRun] = []
    places: list[tuple[str, int] | None] = []
    info: TrackInfo | None = None
    for move in task.episodes:
        path, lo, hi = move.video(task.key)
        what = f"episode {move.old} of {task.key}"
        index, span = videos.span(path, lo, hi, move.length, what)
        problem = closed_span_problem(span)
        if problem is None and info is not None and not _same_configuration(index.info, info):
            problem = "its file has another codec configuration than the file's first episode"
        run = sample_run(index, span, maps.payload(videos, path, span))
        if problem is None and not starts_random_access(index.info.codec, index.info.stsd,
                                                        run.data[:int(run.size[0])]):
            problem = "it does not start on a keyframe (its first frame is not a random access point)"
        if problem is not None:
            raise OutputCheckError(f"{task.files.root}/{path}: {what} cannot be stream-copied: {problem}")
        info = info or index.info
        copied.append(run)
        in_place = maps.local and isinstance(run.data, memoryview) and run.samples > 0
        places.append((path, int(index.offset[span.sample_lo])) if in_place else None)
    if info is None:
        raise ValueError(f"{task.name}: no episodes")
    return info, copied, places


def _same_configuration(one: TrackInfo, other: TrackInfo) -> bool:
    """Whether samples of both tracks decode alike: equal timescales and sample descriptions (but
    for their ``btrt``, compared only when the descriptions differ)."""
    return one.timescale == other.timescale and (
        one.stsd == other.stsd or without_bitrate(one.stsd) == without_bitrate(other.stsd))


def run_copy_task(task: CopyTask) -> dict[str, Any]:
    """Copy each episode's samples into ``task.out`` and check the file against the source's bytes.

    Each episode's bytes are compared with the source's right after their copy (while both are
    still in the CPU's caches), then the file's index is checked against the copied samples.
    Returns the episodes' time spans. No checksum: a resumed run checks a kept copy against the
    source again (:func:`copied_file_is_intact`), which costs nothing while copying.
    """
    maps = SourceMaps(task.files)
    lengths = [m.length for m in task.episodes]
    part = f"{task.out}.part"
    try:
        info, copied, places = source_runs(task, maps)
        head = concat_head(info, copied)
        size = len(head) + sum(len(run.data) for run in copied)
        out = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(out, size)
            _write_at(out, 0, head)
            data = mmap.mmap(out, size, access=mmap.ACCESS_READ)
            try:
                at, written = len(head), []
                for number, (run, place) in enumerate(zip(copied, places)):
                    maps.copy_run(out, at, run, place)
                    if not same_bytes(data, at, run.data):
                        raise OutputCheckError(f"{task.out}: episode #{number} of the file differs from the "
                                               "source's bytes (stream copy damaged)")
                    written.append(at)
                    at += len(run.data)
                index = check_copied_file(task.out, data, without_bitrate(info.stsd), copied, lengths,
                                          compared=written)
            finally:
                _unmap(data)
        finally:
            os.close(out)
        os.replace(part, task.out)
        del copied  # views into the mapped sources: gone before the maps close
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    finally:
        maps.close()
    return {"key": task.key, "bounds": episode_bounds(index, lengths, task.fps, task.out), "stats": None,
            "bytes": size, "sha256": None}


def copied_file_is_intact(task: CopyTask) -> bool:
    """Whether ``task.out`` (kept from an earlier run) holds exactly the source's samples, as checked
    when it was written."""
    maps = SourceMaps(task.files)
    try:
        info, copied, _ = source_runs(task, maps)
        data = _map(task.out)
        try:
            check_copied_file(task.out, data, without_bitrate(info.stsd), copied, [m.length for m in task.episodes])
        finally:
            _unmap(data)
        del copied
        return True
    except (OSError, ValueError, StreamLoaderError):
        return False
    finally:
        maps.close()


def check_copied_file(path: str, data: bytes | mmap.mmap, stsd: bytes, copied: list[SampleRun],
                      lengths: list[int], *, compared: list[int] | None = None) -> Mp4Index:
    """Raise ``OutputCheckError`` unless the file's bytes ``data`` hold exactly the copied samples: the
    same sample description, sizes, durations, every episode starting on a keyframe, and each
    episode's bytes equal to the source's. ``compared``: each run's offset in the file where its
    bytes were already compared (then only its place is checked). Returns the file's index."""
    index = index_mp4(lambda offset, length: data[offset:offset + length], size=len(data), name=path)
    expected = np.concatenate([r.size for r in copied])
    if index.info.stsd != stsd:
        raise OutputCheckError(f"{path}: its sample description differs from the source's")
    if len(index.size) != len(expected) or not np.array_equal(index.size, expected):
        raise OutputCheckError(f"{path}: holds {len(index.size)} samples, not the {len(expected)} copied")
    if not np.array_equal(index.duration, np.concatenate([r.duration for r in copied])):
        raise OutputCheckError(f"{path}: sample durations differ from the source's")
    start = 0
    for number, run in enumerate(copied):
        at = int(index.offset[start])
        contiguous = np.array_equal(index.offset[start:start + run.samples] - at,
                                    np.concatenate(([0], np.cumsum(run.size[:-1]))))
        same = at == compared[number] if compared is not None else same_bytes(data, at, run.data)
        if not contiguous or not same:
            raise OutputCheckError(f"{path}: episode #{number} of the file differs from the source's bytes "
                                   "(stream copy damaged)")
        start += run.samples
    check_episode_keyframes(index, lengths, path)
    return index


def same_bytes(data: bytes | mmap.mmap, at: int, expected: bytes | memoryview) -> bool:
    """Whether ``data[at:at + len(expected)] == expected``, compared in place (no copy of ``data``)."""
    n = len(expected)
    if at < 0 or at + n > len(data):
        return False
    whole = n - n % 8
    actual = np.frombuffer(data, np.uint8, count=n, offset=at)
    wanted = np.frombuffer(expected, np.uint8)
    return bool(np.array_equal(actual[:whole].view(np.uint64), wanted[:whole].view(np.uint64))
                and np.array_equal(actual[whole:], wanted[whole:]))
