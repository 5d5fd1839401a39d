"""Assemble one episode from its bytes: parquet row group(s) + per camera a mini-MP4 of its span.

:class:`EpisodeAssembler` fetches an episode's byte ranges with one coalesced ``read_many`` and
turns them into an :class:`EpisodeData` (Arrow rows + per camera a synthesized mini-MP4). Errors
name the dataset, episode, camera, file and byte range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import DatasetFormatError, FetchError, StreamLoaderError
from .file_indexes import FileIndexes
from .meta import DatasetMeta, EpisodeMeta
from .mp4 import Mp4FormatError, synthesize_mp4
from .parquet_ranges import read_episode_rows
from .storage import RangeReader


@dataclass(frozen=True)
class EpisodeVideo:
    """One camera of one episode: a standalone mini-MP4, the source times of its frames (sorted) and
    the offset between the two timelines (source = mini + time_offset)."""

    key: str
    path: str
    mini_mp4: bytes
    presented: np.ndarray
    time_offset: float
    byte_range: tuple[int, int]


@dataclass(frozen=True)
class EpisodeData:
    """Everything needed to produce an episode's samples without further I/O."""

    episode: EpisodeMeta
    rows: pa.Table
    videos: dict[str, EpisodeVideo]
    nbytes: int


class EpisodeAssembler:
    """``assembler(episode_index) -> EpisodeData`` for one dataset (thread-safe; no state of its own)."""

    def __init__(self, meta: DatasetMeta, reader: RangeReader, *, indexes: FileIndexes | None = None,
                 columns: list[str] | None = None) -> None:
        self.meta = meta
        self.reader = reader
        self.indexes = indexes or FileIndexes(reader, root=meta.root)
        self.columns = columns

    def __call__(self, episode_index: int) -> EpisodeData:
        episode = self.meta.episode(episode_index)
        where = f"{self.meta.root}: episode {episode_index}"
        try:
            footer = self.indexes.footer(episode.data_path)
        except StreamLoaderError as exc:
            raise type(exc)(f"{where}: data file {episode.data_path}: {exc}") from exc
        row_groups = footer.row_groups_for(episode_index)
        requests = [(episode.data_path, *footer.ranges[rg]) for rg in row_groups]
        spans = {}
        for key, video in episode.videos.items():
            try:
                index = self.indexes.mp4(video.path)
                span = index.span(video.from_timestamp, video.to_timestamp)
            except FetchError as exc:  # storage trouble stays a FetchError (FileNotFoundError when gone)
                raise type(exc)(f"{where}, camera {key}: {video.path}: {exc}") from exc
            except (StreamLoaderError, Mp4FormatError, ValueError) as exc:
                raise DatasetFormatError(f"{where}, camera {key}: {video.path}: {exc}") from exc
            spans[key] = (index, span)
            requests.append((video.path, span.byte_offset, span.byte_length))
        try:
            blobs = self.reader.read_many(requests)
        except FetchError as exc:
            ranges = ", ".join(f"{p} [{o}, {o + n})" for p, o, n in requests)
            raise FetchError(f"{where}: fetching {ranges} failed: {exc}") from exc
        rows = read_episode_rows(footer, dict(zip(row_groups, blobs, strict=False)), episode_index)
        if rows.num_rows != episode.length:
            raise DatasetFormatError(
                f"{where}: {episode.data_path} holds {rows.num_rows} rows of the episode, the episodes table "
                f"says {episode.length}")
        _check_row_positions(rows, episode, where)
        if self.columns is not None:
            rows = rows.select([c for c in self.columns if c in rows.column_names])
        videos = {}
        for (key, (index, span)), blob in zip(spans.items(), blobs[len(row_groups):], strict=True):
            path = episode.videos[key].path
            mini = synthesize_mp4(index, span, blob)
            presented = np.sort(index.pts[span.sample_lo:span.sample_hi]) / index.timescale
            videos[key] = EpisodeVideo(key, path, mini, presented, span.time_offset,
                                       (span.byte_offset, span.byte_offset + span.byte_length))
        nbytes = rows.nbytes + sum(len(v.mini_mp4) for v in videos.values())
        return EpisodeData(episode, rows, videos, nbytes)


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
