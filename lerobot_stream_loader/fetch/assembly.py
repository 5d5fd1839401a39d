"""Assemble one episode from its bytes: parquet row group(s) + per camera a mini-MP4 of its span.

:class:`EpisodeAssembler` fetches an episode's byte ranges with one coalesced ``read_many`` and
turns them into an :class:`EpisodeData` (Arrow rows + per camera a synthesized mini-MP4). Errors
name the dataset, episode, camera, file and byte range. A row group holding many episodes is fetched
and decoded once and kept for the next episodes (:mod:`~lerobot_stream_loader.parquet.shared_row_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..errors import DatasetFormatError, FetchError, StreamLoaderError
from ..meta.dataset_meta import DatasetMeta, EpisodeMeta
from ..meta.episode_table import VideoSpan
from ..mp4 import Mp4FormatError, Mp4Index, Span, synthesize_mp4
from ..parquet.ranges import episode_rows, read_row_groups
from ..parquet.shared_row_groups import GroupRows, SharedRowGroups, holds_many_episodes
from ..storage import RangeReader
from .file_indexes import FileIndexes
from .frame_match import DEFAULT_TOLERANCE_S, RowFrames

# Frames read past an episode's to_timestamp, which some converters write a frame or two short.
READ_AHEAD_FRAMES = 2


@dataclass(frozen=True)
class EpisodeVideo:
    """One camera of one episode: a standalone mini-MP4, the source times of its frames (sorted), the
    offset between the two timelines (source = mini + time_offset) and each row's frame among them
    (None when the rows have no ``timestamp``)."""

    key: str
    path: str
    mini_mp4: bytes
    presented: np.ndarray
    time_offset: float
    byte_range: tuple[int, int]
    row_frames: RowFrames | None = None


@dataclass(frozen=True)
class EpisodeData:
    """Everything needed to produce an episode's samples without further I/O."""

    episode: EpisodeMeta
    rows: pa.Table
    videos: dict[str, EpisodeVideo]
    nbytes: int


class EpisodeAssembler:
    """``assembler(episode_index) -> EpisodeData`` for one dataset (thread-safe; its only state is the LRU of shared row groups)."""

    def __init__(self, meta: DatasetMeta, reader: RangeReader, *, indexes: FileIndexes | None = None,
                 columns: list[str] | None = None, tolerance_s: float = DEFAULT_TOLERANCE_S) -> None:
        self.meta = meta
        self.tolerance_s = tolerance_s
        self.reader = reader
        self.indexes = indexes or FileIndexes(reader, root=meta.root)
        self.columns = columns
        self.shared = SharedRowGroups()  # row groups holding many episodes, decoded once

    def __call__(self, episode_index: int) -> EpisodeData:
        episode = self.meta.episode(episode_index)
        where = f"{self.meta.root}: episode {episode_index}"
        try:
            footer = self.indexes.footer(episode.data_path)
        except StreamLoaderError as exc:
            raise type(exc)(f"{where}: data file {episode.data_path}: {exc}") from exc
        row_groups = footer.row_groups_for(episode_index)
        shared_key = (episode.data_path, tuple(row_groups)) if holds_many_episodes(footer, row_groups) else None
        group = self.shared.get(shared_key) if shared_key is not None else None
        requests = [] if group is not None else [(episode.data_path, *footer.ranges[rg]) for rg in row_groups]
        fetched_groups = len(requests)
        spans = {key: self._span(where, key, video.path, video.from_timestamp, _read_until(video, self.meta.fps))
                 for key, video in episode.videos.items()}
        requests += [(episode.videos[key].path, span.byte_offset, span.byte_length)
                     for key, (_, span) in spans.items()]
        blobs = self._read(where, requests)
        if group is None:
            table = read_row_groups(footer, dict(zip(row_groups, blobs, strict=False)))
            if shared_key is None:
                rows = episode_rows(table, episode_index)
            else:
                group = GroupRows.of(table)
                self.shared.put(shared_key, group)
        if group is not None:
            rows = group.rows(episode_index)
        if rows.num_rows != episode.length:
            raise DatasetFormatError(
                f"{where}: {episode.data_path} holds {rows.num_rows} rows of the episode, the episodes table "
                f"says {episode.length}")
        _check_row_positions(rows, episode, where)
        _check_task_indices(rows, episode, where, self.meta.tasks)
        payloads = dict(zip(spans, blobs[fetched_groups:], strict=True))
        matched = self._cover_row_times(where, episode, rows, spans, payloads)
        if self.columns is not None:
            rows = rows.select([c for c in self.columns if c in rows.column_names])
        videos = {}
        for key, (index, span) in spans.items():
            path = episode.videos[key].path
            mini = synthesize_mp4(index, span, payloads[key])
            row_frames = matched.get(key)
            presented = row_frames.presented if row_frames is not None else _presented(index, span)
            videos[key] = EpisodeVideo(key, path, mini, presented, span.time_offset,
                                       (span.byte_offset, span.byte_offset + span.byte_length), row_frames)
        nbytes = rows.nbytes + sum(len(v.mini_mp4) for v in videos.values())
        return EpisodeData(episode, rows, videos, nbytes)

    def _span(self, where: str, key: str, path: str, from_ts: float, to_ts: float) -> tuple[Mp4Index, Span]:
        try:
            index = self.indexes.mp4(path)
            return index, index.span(from_ts, to_ts)
        except FetchError as exc:  # storage trouble stays a FetchError (FileNotFoundError when gone)
            raise type(exc)(f"{where}, camera {key}: {path}: {exc}") from exc
        except (StreamLoaderError, Mp4FormatError, ValueError) as exc:
            raise DatasetFormatError(f"{where}, camera {key}: {path}: {exc}") from exc

    def _read(self, where: str, requests: list[tuple[str, int, int]]) -> list[bytes]:
        try:
            return self.reader.read_many(requests)
        except FetchError as exc:
            ranges = ", ".join(f"{p} [{o}, {o + n})" for p, o, n in requests)
            raise FetchError(f"{where}: fetching {ranges} failed: {exc}") from exc

    def _cover_row_times(self, where: str, episode: EpisodeMeta, rows: pa.Table,
                         spans: dict[str, tuple[Mp4Index, Span]],
                         payloads: dict[str, bytes]) -> dict[str, RowFrames]:
        """Match every row to its frame in each camera, widening (and fetching again) the span of any
        camera whose fetched frames miss a time the rows need; returns each camera's match.

        A row needs the frame at ``from_timestamp + timestamp``, as LeRobot decodes it; windows only
        reach other rows of the episode. ``to_timestamp`` is not trusted to end after the last frame
        (converters write it a frame short): the first fetch reads up to ``READ_AHEAD_FRAMES`` beyond
        it, never into the next episode of the file, and a camera still short is fetched again over the times the rows give. A time with no frame
        within ``tolerance_s`` even then is refused when a camera asks for its row.
        """
        if "timestamp" not in rows.column_names or not spans:
            return {}
        times = np.asarray(rows.column("timestamp").to_numpy(zero_copy_only=False), dtype=np.float32)
        matched, wider = {}, {}
        for key, (index, span) in spans.items():
            video = episode.videos[key]
            needed = video.from_timestamp + times.astype(np.float64)
            part = _own_part(video, self.meta.fps)
            matched[key] = RowFrames.match(_presented(index, span), needed, part)
            if matched[key].within(self.tolerance_s):
                continue
            lo = min(video.from_timestamp, float(needed.min()) - self.tolerance_s)
            hi = max(video.to_timestamp, float(needed.max())) + max(2 * self.tolerance_s, 0.5 / self.meta.fps)
            try:
                grown = self._span(where, key, video.path, max(lo, 0.0), hi)
            except DatasetFormatError:
                continue  # no frame there at all: the camera names the missing time
            if (grown[1].byte_offset, grown[1].byte_length) != (span.byte_offset, span.byte_length):
                wider[key] = grown
                matched[key] = RowFrames.match(_presented(*grown), needed, part)
        if wider:
            blobs = self._read(where, [(episode.videos[k].path, s.byte_offset, s.byte_length)
                                       for k, (_, s) in wider.items()])
            spans.update(wider)
            payloads.update(zip(wider, blobs, strict=True))
        return matched


def _read_until(video: VideoSpan, fps: float) -> float:
    """End of the first fetch of an episode's frames: ``READ_AHEAD_FRAMES`` past ``to_timestamp``, but
    never into the next episode of the same MP4 (whose bytes, when broken, must not fail this one)."""
    return min(video.to_timestamp + READ_AHEAD_FRAMES / fps, _own_part(video, fps)[1])


def _own_part(video: VideoSpan, fps: float) -> tuple[float, float]:
    """[start, end) seconds of the MP4 that hold an episode's frames: from its ``from_timestamp`` to
    where the next episode of the file starts, half a frame of slack each side (``to_timestamp`` is
    not the end: converters write it a frame short)."""
    half = 0.5 / fps
    return video.from_timestamp - half, video.next_from_timestamp - half


def _presented(index: Mp4Index, span: Span) -> np.ndarray:
    """Source-timeline times of the frames of ``span``, sorted."""
    return np.sort(index.pts[span.sample_lo:span.sample_hi]) / index.timescale


def _check_row_positions(rows: pa.Table, episode: EpisodeMeta, where: str) -> None:
    """The rows' ``index`` and ``frame_index`` must be the episode's range in the episodes table."""
    for name, start in (("index", episode.from_index), ("frame_index", 0)):
        if name not in rows.column_names:
            continue
        values = np.asarray(rows.column(name).to_numpy(zero_copy_only=False), dtype=np.int64)
        wrong = np.flatnonzero(values != np.arange(start, start + episode.length))
        if len(wrong):
            k = int(wrong[0])
            raise DatasetFormatError(
                f"{where}: {episode.data_path}: column {name!r} is {int(values[k])} in row {k} of the episode, "
                f"the episodes table gives the episode [{start}, {start + episode.length})")


def _check_task_indices(rows: pa.Table, episode: EpisodeMeta, where: str, tasks: Mapping[int, str]) -> None:
    """Every row's ``task_index`` must name a task of meta/tasks.parquet."""
    if "task_index" not in rows.column_names:
        return
    column = rows.column("task_index")
    values = np.asarray(column.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    known = np.fromiter(tasks.keys(), dtype=np.int64, count=len(tasks))
    unknown = np.flatnonzero(~np.isin(values, known))
    if len(unknown):
        k = int(unknown[0])
        shown = "null" if column[k].as_py() is None else int(values[k])
        raise DatasetFormatError(
            f"{where}: {episode.data_path}: task_index {shown} in row {k} of the episode is not in "
            f"meta/tasks.parquet (it has {len(tasks)} tasks)")
