"""ISO BMFF box reading and writing, bounded by the bytes actually present.

Readers never trust a size or count before checking it against the bytes they hold, so a corrupt
or hostile file costs at most the memory of the file itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import DatasetFormatError

MAX_MOOV = 1 << 29  # 512 MiB: about 30 million samples


class Mp4FormatError(DatasetFormatError):
    """An MP4 file is malformed or uses a feature this library does not handle (named in the message)."""


@dataclass(frozen=True)
class Box:
    """A box located inside a buffer: `type`, payload `start` and `end` (absolute positions)."""

    type: str
    offset: int
    start: int
    end: int


def box_type_name(raw: bytes) -> str:
    """A printable name for a 4-byte box type."""
    return raw.decode("latin-1") if all(32 <= c < 127 for c in raw) else raw.hex()


def parse_header(buf: bytes | bytearray | memoryview, pos: int, limit: int, *, where: str,
                 base: int = 0) -> Box:
    """The box whose header starts at `pos`; it must end at or before `limit`.

    `base` is added to positions in messages (the buffer's place in the file).
    """
    if limit - pos < 8:
        raise Mp4FormatError(f"'{where}': box header at byte {base + pos} cut short ({limit - pos} bytes left)")
    size, raw_type = struct.unpack_from(">I4s", buf, pos)
    name = box_type_name(raw_type)
    header = 8
    if size == 1:
        if limit - pos < 16:
            raise Mp4FormatError(f"'{where}': box '{name}' at byte {base + pos}: 64-bit size cut short")
        (size,) = struct.unpack_from(">Q", buf, pos + 8)
        header = 16
    elif size == 0:
        size = limit - pos
    if size < header:
        raise Mp4FormatError(f"'{where}': box '{name}' at byte {base + pos} has invalid size {size}")
    if pos + size > limit:
        raise Mp4FormatError(
            f"'{where}': box '{name}' at byte {base + pos} claims {size} bytes but only {limit - pos} remain"
        )
    return Box(name, pos, pos + header, pos + size)


def iter_boxes(buf: bytes | bytearray | memoryview, start: int, end: int, *, where: str) -> Iterator[Box]:
    """The boxes laid end to end in `buf[start:end]`."""
    pos = start
    while pos < end:
        box = parse_header(buf, pos, end, where=where)
        yield box
        pos = box.end


def children(buf: bytes | bytearray | memoryview, parent: Box, *, skip: int = 0) -> dict[str, Box]:
    """First child of each type inside `parent` (after `skip` payload bytes)."""
    found: dict[str, Box] = {}
    for box in iter_boxes(buf, parent.start + skip, parent.end, where=parent.type):
        found.setdefault(box.type, box)
    return found


def all_children(buf: bytes | bytearray | memoryview, parent: Box, type_: str) -> list[Box]:
    """Every child of `parent` with the given type."""
    return [b for b in iter_boxes(buf, parent.start, parent.end, where=parent.type) if b.type == type_]


def require(found: dict[str, Box], name: str, parent: str) -> Box:
    """The child `name` of `parent`, or an error naming both."""
    if name not in found:
        raise Mp4FormatError(f"'{parent}' has no '{name}' box")
    return found[name]


def full_box_table(
    buf: bytes | bytearray | memoryview, box: Box, entry_dtype: np.dtype | str, *, head: int = 0
) -> tuple[int, int, np.ndarray, int]:
    """Parse a full box holding `entry_count` fixed-size entries after `head` extra bytes.

    Returns (version, flags, entries as a numpy view, position after the head). The count is checked
    against the payload length before any array is made.
    """
    dtype = np.dtype(entry_dtype)
    pos = box.start
    if box.end - pos < 8 + head:
        raise Mp4FormatError(f"'{box.type}' box at byte {box.offset} is too short ({box.end - pos} bytes)")
    version = buf[pos]
    flags = int.from_bytes(bytes(buf[pos + 1 : pos + 4]), "big")
    head_pos = pos + 4
    (count,) = struct.unpack_from(">I", buf, head_pos + head)
    table = head_pos + head + 4
    if count * dtype.itemsize > box.end - table:
        raise Mp4FormatError(
            f"'{box.type}' box at byte {box.offset} claims {count} entries "
            f"({count * dtype.itemsize} bytes) but holds {box.end - table} bytes"
        )
    return version, flags, np.frombuffer(buf, dtype=dtype, count=count, offset=table), head_pos


def locate_moov(read: Callable[[int, int], bytes], size: int, *, probe: int = 65536) -> tuple[bytes, int]:
    """The whole 'moov' box of a file and its offset, found by walking the top-level box headers.

    Reads one head probe, then one 16-byte header per top-level box outside it (never the 'mdat'
    payload), then the 'moov' itself.
    """
    head = read(0, min(size, probe))
    pos = 0
    while pos < size:
        if pos + 16 <= len(head) or len(head) == size:
            hdr = head[pos : pos + 16]
        else:
            hdr = read(pos, min(16, size - pos))
        if len(hdr) < 8:
            raise Mp4FormatError(f"top level: box header at byte {pos} cut short ({size - pos} bytes left)")
        (length,) = struct.unpack_from(">I", hdr, 0)
        name = box_type_name(bytes(hdr[4:8]))
        header = 8
        if length == 1:
            if len(hdr) < 16:
                raise Mp4FormatError(f"top level: box '{name}' at byte {pos}: 64-bit size cut short")
            (length,) = struct.unpack_from(">Q", hdr, 8)
            header = 16
        elif length == 0:
            length = size - pos  # size 0: the box runs to the end of the file
        if length < header or pos + length > size:
            raise Mp4FormatError(
                f"top level: box '{name}' at byte {pos} claims {length} bytes but the file has {size - pos} left"
            )
        if name in ("moof", "mfra"):
            raise Mp4FormatError(f"top level: box '{name}' at byte {pos}: fragmented MP4 is not supported")
        if name == "moov":
            if length > MAX_MOOV:
                raise Mp4FormatError(f"'moov' at byte {pos} claims {length} bytes, over the {MAX_MOOV} limit")
            data = head[pos : pos + length] if pos + length <= len(head) else read(pos, length)
            if len(data) != length:
                raise Mp4FormatError(f"'moov' at byte {pos}: read {len(data)} of {length} bytes")
            return bytes(data), pos
        pos += length
    raise Mp4FormatError(f"top level: no 'moov' box in {size} bytes")


# ---------------------------------------------------------------------------------------------- writing


def box(type_: bytes, *parts: bytes) -> bytes:
    """A box of `type_` around `parts`; 64-bit size when needed."""
    body = b"".join(parts)
    size = 8 + len(body)
    if size > 0xFFFFFFFF:
        return struct.pack(">I4sQ", 1, type_, size + 8) + body
    return struct.pack(">I4s", size, type_) + body


def full_box(type_: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    """A full box (version + 24-bit flags) of `type_` around `parts`."""
    return box(type_, struct.pack(">I", (version << 24) | flags), *parts)


def table_box(type_: bytes, columns: list[np.ndarray], *, version: int = 0, dtype: str = ">u4") -> bytes:
    """A full box holding an entry count and interleaved big-endian columns."""
    count = len(columns[0]) if columns else 0
    table = np.empty((count, len(columns)), dtype=dtype)
    for k, col in enumerate(columns):
        table[:, k] = col
    return full_box(type_, version, 0, struct.pack(">I", count), table.tobytes())
