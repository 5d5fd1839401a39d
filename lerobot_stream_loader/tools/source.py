"""Reading a source dataset for the tools: episode rows from data parquet, episode bytes from MP4s.

Everything goes through fsspec, so sources may be local folders or URLs. :class:`SourceFiles` is
small and picklable, so tasks running in other processes (or on other machines) open the source
themselves. Data rows are found from row-group statistics of ``episode_index`` (only the row groups
that may hold an episode are read), then filtered exactly; nothing assumes one row group per episode.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ..errors import DatasetFormatError, range_not_supported
from ..fetch.assembly import READ_AHEAD_FRAMES
from ..fetch.file_indexes import DEFAULT_INDEX_BYTES, IndexCaches
from ..meta.dataset_meta import DatasetMeta, EpisodeMeta, load_meta
from ..mp4 import Mp4Index, Span, index_mp4
from ..mp4.span import compute_spans
from ..storage.credentials import basic_auth_header, reveal_secrets, secret_values
from ..storage.location import Location
from ..storage.log_scrub import scrub_from_logs
from ..storage.paths import join

_VIDEOS_LOCK = threading.Lock()  # creates a SourceFiles' shared readers
MAX_SPANS = 1 << 16  # episode spans a VideoSource remembers (about 200 bytes each)


def open_source(source: str, storage_options: dict[str, Any] | None = None) -> DatasetMeta:
    """Metadata of the source dataset (every referenced file checked when it is local)."""
    return load_meta(source, storage_options=storage_options, all_columns=True)


class SourceFiles:
    """Files below a dataset root, opened through fsspec on first use (picklable). The tasks of a run
    that hold the same object in one process share its :attr:`videos`."""

    def __init__(self, location: Location) -> None:
        self.location = location  # credentials hidden: pickled to workers unreadable
        self.root = location.root
        self._fs: tuple[fsspec.AbstractFileSystem, str] | None = None
        self._videos: VideoSource | None = None
        self._rows: EpisodeRows | None = None

    @classmethod
    def of(cls, meta: DatasetMeta) -> SourceFiles:
        """The files of ``meta``'s dataset, reached as its metadata was."""
        return cls(meta.location)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None, "_videos": None, "_rows": None}

    @property
    def videos(self) -> VideoSource:
        """The MP4 sample tables read so far, shared by every thread holding this object (a copy
        pickled to another process starts empty)."""
        with _VIDEOS_LOCK:
            if self._videos is None:
                self._videos = VideoSource(self)
            return self._videos

    @property
    def rows(self) -> EpisodeRows:
        """Episode rows of the data files, their footers and last row groups shared like :attr:`videos`."""
        with _VIDEOS_LOCK:
            if self._rows is None:
                self._rows = EpisodeRows(self)
            return self._rows

    def _resolve(self) -> tuple[fsspec.AbstractFileSystem, str]:
        if self._fs is None:
            auth = self.location.basic_auth
            scrub_from_logs(secret_values([self.location.storage_options, auth]))
            options = reveal_secrets(self.location.storage_options)
            if auth is not None:  # sent with every request; aiohttp drops it on a cross-host redirect
                options["headers"] = {**(options.get("headers") or {}), **basic_auth_header(auth.reveal())}
            self._fs = fsspec.core.url_to_fs(self.root, **options)
        return self._fs

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._resolve()[0]

    def url(self, relative: str) -> str:
        """Full path of a root-relative file for :attr:`fs`."""
        return join(self._resolve()[1], relative)

    def read(self, relative: str, offset: int, length: int) -> bytes:
        """``length`` bytes of a dataset file from ``offset``."""
        data = self.fs.cat_file(self.url(relative), start=offset, end=offset + length)
        if len(data) > length:
            raise range_not_supported(f"{self.root}/{relative}", offset, length, f"{len(data)} bytes")
        if len(data) != length:
            raise DatasetFormatError(f"{self.root}/{relative}: bytes {offset}..{offset + length} are past "
                                     f"the end of the file (got {len(data)} bytes)")
        return data

    def size(self, relative: str) -> int:
        """Size in bytes of a dataset file."""
        return int(self.fs.size(self.url(relative)))


class EpisodeRows:
    """Rows of single episodes from the source's data files, a few files' footers kept open."""

    def __init__(self, files: SourceFiles, keep_files: int = 32) -> None:
        self.files = files
        self._files: OrderedDict[str, tuple[pq.ParquetFile, list[tuple[int, int]]]] = OrderedDict()
        self._keep = keep_files
        self._cache: OrderedDict[tuple[str, tuple[int, ...]], pa.Table] = OrderedDict()
        self._lock = threading.Lock()

    def _open(self, path: str) -> tuple[pq.ParquetFile, list[tuple[int, int]]]:
        hit = self._files.get(path)
        if hit is not None:
            self._files.move_to_end(path)
            return hit
        url = self.files.url(path)
        if isinstance(self.files.fs, LocalFileSystem):  # pyarrow's own reads: no Python file in between
            handle = pq.ParquetFile(url, memory_map=True)
        else:
            handle = pq.ParquetFile(self.files.fs.open(url, "rb"))
        schema = handle.metadata.schema  # leaf columns: a struct (an image feature) holds several
        column = next((i for i in range(len(schema)) if schema.column(i).path == "episode_index"), -1)
        if column < 0:
            raise DatasetFormatError(f"{self.files.root}/{path}: no 'episode_index' column")
        ranges = []
        for group in range(handle.metadata.num_row_groups):
            stats = handle.metadata.row_group(group).column(column).statistics
            if stats is not None and stats.has_min_max:
                ranges.append((int(stats.min), int(stats.max)))
            else:
                ranges.append((-(1 << 62), 1 << 62))
        self._files[path] = (handle, ranges)
        while len(self._files) > self._keep:
            self._files.popitem(last=False)
        return handle, ranges

    def rows(self, episode: EpisodeMeta) -> pa.Table:
        """The episode's rows, sorted by ``index``; checked against the episode's length (thread-safe)."""
        with self._lock:
            return self._rows(episode)

    def _rows(self, episode: EpisodeMeta) -> pa.Table:
        handle, ranges = self._open(episode.data_path)
        groups = tuple(i for i, (lo, hi) in enumerate(ranges) if lo <= episode.index <= hi)
        key = (episode.data_path, groups)
        table = self._cache.get(key)
        if table is None:
            table = handle.read_row_groups(list(groups), use_threads=False) if groups else handle.schema_arrow.empty_table()
            self._cache[key] = table
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        mine = table.column("episode_index").to_numpy() == episode.index
        rows = table if mine.all() else table.filter(pa.array(mine))
        if not _ascending(rows.column("index")):
            rows = rows.take(pc.sort_indices(rows, [("index", "ascending")]))
        if rows.num_rows != episode.length:
            raise DatasetFormatError(
                f"{self.files.root}/{episode.data_path}: episode {episode.index} has {rows.num_rows} rows, "
                f"the episodes table says {episode.length}")
        first = rows.column("index")[0].as_py()
        if first != episode.from_index:
            raise DatasetFormatError(
                f"{self.files.root}/{episode.data_path}: episode {episode.index} starts at index {first}, "
                f"the episodes table says {episode.from_index}")
        return rows

    def schema(self, path: str) -> pa.Schema:
        """Arrow schema (with its metadata) of a data file."""
        with self._lock:
            return self._open(path)[0].schema_arrow


def _ascending(column: pa.ChunkedArray) -> bool:
    values = column.to_numpy()
    return bool((values[1:] > values[:-1]).all())


class VideoSource:
    """MP4 sample tables of the source (range reads of the moov only), the most recently used kept up
    to ``max_index_bytes`` (thread-safe)."""

    def __init__(self, files: SourceFiles, max_index_bytes: int = DEFAULT_INDEX_BYTES) -> None:
        self.files = files
        self._caches = IndexCaches(max_index_bytes)
        self._spans: OrderedDict[tuple[str, float, float, int], Span] = OrderedDict()  # checked spans

    def index(self, path: str) -> Mp4Index:
        """The sample table of one source MP4."""
        with self._caches.guard:
            found = self._caches.mp4.get(path)
        if found is None:
            found = self.read_index(path)
            with self._caches.guard:
                self._caches.mp4.put(path, found)
        return found

    def read_index(self, path: str) -> Mp4Index:
        """The sample table of one source MP4, read now."""
        size = self.files.size(path)
        return index_mp4(lambda off, length: self.files.read(path, off, length), size=size,
                         name=f"{self.files.root}/{path}")

    def span(self, path: str, from_ts: float, to_ts: float, frames: int, what: str) -> tuple[Mp4Index, Span]:
        """Index and span of the frames presented in [from_ts, to_ts); checks the frame count.

        A ``to_timestamp`` up to ``READ_AHEAD_FRAMES`` frames short (as some converters write it) is
        extended by the missing frames' duration when that presents exactly ``frames`` frames.
        """
        index = self.index(path)
        key = (path, from_ts, to_ts, frames)
        with self._caches.guard:
            known = self._spans.get(key)
        if known is not None:
            return index, known
        span = self._checked_span(index, path, from_ts, to_ts, frames, what)
        with self._caches.guard:
            self._spans[key] = span
            while len(self._spans) > MAX_SPANS:
                self._spans.popitem(last=False)
        return index, span

    def spans(self, path: str, requests: list[tuple[float, float, int, str]]) -> tuple[Mp4Index, list[Span]]:
        """:meth:`span` of each (from_ts, to_ts, frames, what) of one file, computed together."""
        index = self.index(path)
        found = compute_spans(index, [(lo, hi) for lo, hi, _, _ in requests])
        spans = [span if span.frames == frames else self._checked_span(index, path, lo, hi, frames, what)
                 for span, (lo, hi, frames, what) in zip(found, requests, strict=True)]
        with self._caches.guard:
            for (lo, hi, frames, _), span in zip(requests, spans):
                self._spans[(path, lo, hi, frames)] = span
            while len(self._spans) > MAX_SPANS:
                self._spans.popitem(last=False)
        return index, spans

    def _checked_span(self, index: Mp4Index, path: str, from_ts: float, to_ts: float, frames: int,
                      what: str) -> Span:
        span = index.span(from_ts, to_ts)
        missing = frames - span.frames
        if 0 < missing <= READ_AHEAD_FRAMES and len(index.duration):
            step = float(np.median(index.duration)) / index.timescale
            longer = index.span(from_ts, to_ts + missing * step)
            span = longer if longer.frames == frames else span
        if span.frames != frames:
            raise DatasetFormatError(
                f"{self.files.root}/{path}: {what} spans {from_ts:.6f}..{to_ts:.6f} s which present "
                f"{span.frames} frames, the episode has {frames}")
        return span

    def payload(self, path: str, span: Span) -> bytes:
        """The bytes of a span."""
        return self.files.read(path, span.byte_offset, span.byte_length)

