"""Read one episode's rows out of a large parquet file with byte-range reads only.

The footer of each data file is read once (two small range reads at most); after that an
episode costs one range read: the row group(s) that hold it, located by the row groups'
``episode_index`` statistics. Bytes are decoded by pyarrow through a sparse in-memory file that
holds only the fetched ranges.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import DatasetFormatError
from .footer_check import check_footer

_MAGIC = b"PAR1"
_TAIL_PROBE = 64 * 1024

ReadRange = Callable[[int, int], bytes]


@dataclass(frozen=True)
class ParquetFooter:
    """A data file's footer and, per row group, its byte range and episode range."""

    path: str
    size: int
    metadata: pq.FileMetaData
    footer_offset: int
    footer: bytes
    ranges: tuple[tuple[int, int], ...]
    episodes: tuple[tuple[int, int] | None, ...]

    def row_groups_for(self, episode_index: int) -> list[int]:
        """Row groups that may hold rows of ``episode_index`` (all of them if stats are absent)."""
        hits = [i for i, span in enumerate(self.episodes)
                if span is None or span[0] <= episode_index <= span[1]]
        return hits


def read_footer(path: str, size: int, read_range: ReadRange) -> ParquetFooter:
    """Read and parse the footer of the parquet file ``path`` of ``size`` bytes."""
    if size < 12:
        raise DatasetFormatError(f"{path}: {size} bytes is too small to be a parquet file")
    probe_len = min(size, _TAIL_PROBE)
    tail = read_range(size - probe_len, probe_len)
    if tail[-4:] != _MAGIC:
        raise DatasetFormatError(f"{path}: not a parquet file (no PAR1 magic at the end)")
    (footer_len,) = struct.unpack("<I", tail[-8:-4])
    if footer_len + 12 > size:
        raise DatasetFormatError(f"{path}: footer length {footer_len} exceeds the file size {size}")
    footer_offset = size - 8 - footer_len
    if footer_len + 8 <= probe_len:
        footer = tail[len(tail) - 8 - footer_len:]
    else:
        footer = read_range(footer_offset, footer_len + 8)
    try:
        check_footer(footer[:-8])
        metadata = pq.read_metadata(pa.BufferReader(_MAGIC + footer))
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: unreadable parquet footer ({exc})") from exc
    ranges, episodes = [], []
    column = _column_index(metadata, "episode_index")
    for rg in range(metadata.num_row_groups):
        group = metadata.row_group(rg)
        starts, ends = [], []
        for c in range(group.num_columns):
            chunk = group.column(c)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                start = min(start, chunk.dictionary_page_offset)
            starts.append(start)
            ends.append(start + chunk.total_compressed_size)
        lo, hi = min(starts), max(ends)
        if lo < 0 or hi > footer_offset:
            raise DatasetFormatError(f"{path}: row group {rg} claims bytes [{lo}, {hi}) outside the data")
        ranges.append((lo, hi - lo))
        episodes.append(_episode_span(group, column))
    return ParquetFooter(path, size, metadata, footer_offset, footer, tuple(ranges), tuple(episodes))


def _column_index(metadata: pq.FileMetaData, name: str) -> int | None:
    schema = metadata.schema
    for i in range(len(schema)):
        if schema.column(i).path == name:
            return i
    return None


def _episode_span(group: pq.RowGroupMetaData, column: int | None) -> tuple[int, int] | None:
    if column is None:
        return None
    stats = group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return None
    return int(stats.min), int(stats.max)


class _SparseFile(io.RawIOBase):
    """A read-only file of a given size that holds only some byte ranges."""

    def __init__(self, path: str, size: int, segments: dict[int, bytes]) -> None:
        super().__init__()
        self._path, self._size, self._pos = path, size, 0
        self._segments = _merge_adjacent(segments)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        for start, data in self._segments:
            if start <= self._pos and self._pos + want <= start + len(data):
                lo = self._pos - start
                buffer[:want] = data[lo:lo + want]
                self._pos += want
                return want
        raise OSError(f"{self._path}: bytes [{self._pos}, {self._pos + want}) were not fetched")


def _merge_adjacent(segments: dict[int, bytes]) -> list[tuple[int, bytes]]:
    """Segments sorted by start, touching or overlapping ones joined (a read may span row groups)."""
    merged: list[tuple[int, bytes]] = []
    for start, data in sorted(segments.items()):
        if merged and start <= merged[-1][0] + len(merged[-1][1]):
            prev_start, prev = merged[-1]
            merged[-1] = (prev_start, prev + data[prev_start + len(prev) - start:])
        else:
            merged.append((start, data))
    return merged


def read_row_groups(footer: ParquetFooter, row_groups: dict[int, bytes]) -> pa.Table:
    """Decode the fetched row groups (``{row group: its bytes}``) into one table."""
    segments = {footer.ranges[rg][0]: data for rg, data in row_groups.items()}
    segments[footer.footer_offset] = footer.footer
    parquet = pq.ParquetFile(_SparseFile(footer.path, footer.size, segments), metadata=footer.metadata)
    try:
        table = parquet.read_row_groups(sorted(row_groups), use_threads=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetFormatError(f"{footer.path}: row groups {sorted(row_groups)} unreadable ({exc})") from exc
    if "episode_index" not in table.column_names:
        raise DatasetFormatError(f"{footer.path}: no 'episode_index' column")
    return table


def episode_rows(table: pa.Table, episode_index: int) -> pa.Table:
    """The rows of ``episode_index`` in decoded row groups (the table itself when it holds only those)."""
    column = table.column("episode_index")
    if len(column) and pc.all(pc.equal(column, episode_index)).as_py():
        return table
    return table.filter(pc.equal(column, episode_index))
