"""Stream copy (no re-encode): cut a run of episodes out of an MP4 into a standalone file.

The cut file is the span's sample bytes, untouched, with a new sample table (``synthesize_mp4``);
its ``moov`` is then moved before ``mdat`` (faststart), as LeRobot lays its files out. Episode time
ranges in the new file are read back from the new file's own sample table.
"""

from __future__ import annotations

import struct

import numpy as np

from ..mp4 import Mp4Index, Span, index_mp4, synthesize_mp4
from ..mp4.boxes import Box, Mp4FormatError, children, iter_boxes, parse_header, require

_U32 = 0xFFFFFFFF


def cut_mp4(index: Mp4Index, span: Span, payload: bytes) -> bytes:
    """A faststart MP4 holding exactly the span's samples (stream copy)."""
    return faststart(synthesize_mp4(index, span, payload))


def faststart(data: bytes) -> bytes:
    """``ftyp, mdat, moov`` -> ``ftyp, moov, mdat`` with chunk offsets moved by the moov size.

    Files whose offsets would not fit 32 bits after the move are returned unchanged.
    """
    top = {b.type: b for b in iter_boxes(data, 0, len(data), where="file")}
    ftyp, mdat, moov = (require(top, name, "file") for name in ("ftyp", "mdat", "moov"))
    if not ftyp.offset < mdat.offset < moov.offset:
        return data
    moov_bytes = bytearray(data[moov.offset:moov.end])
    shift = len(moov_bytes)
    root = parse_header(moov_bytes, 0, len(moov_bytes), where="moov")
    for trak_box in [b for b in iter_boxes(moov_bytes, root.start, root.end, where="moov") if b.type == "trak"]:
        mdia = children(moov_bytes, require(children(moov_bytes, trak_box), "mdia", "trak"))
        minf = children(moov_bytes, require(mdia, "minf", "mdia"))
        stbl = children(moov_bytes, require(minf, "stbl", "minf"))
        if "co64" in stbl:
            _shift_table(moov_bytes, stbl["co64"], ">u8", shift)
        else:
            stco = require(stbl, "stco", "stbl")
            if not _shift_table(moov_bytes, stco, ">u4", shift):
                return data
    head = data[:ftyp.end]
    return b"".join((head, bytes(moov_bytes), data[ftyp.end:moov.offset], data[moov.end:]))


def _shift_table(buf: bytearray, table_box: Box, dtype: str, shift: int) -> bool:
    start = table_box.start + 8  # version/flags + entry count
    (count,) = struct.unpack_from(">I", buf, table_box.start + 4)
    width = np.dtype(dtype).itemsize
    if start + count * width > table_box.end:
        raise Mp4FormatError(f"'{table_box.type}': {count} entries overrun the box")
    values = np.frombuffer(bytes(buf[start:start + count * width]), dtype=dtype).astype(np.int64) + shift
    if dtype == ">u4" and len(values) and int(values.max()) > _U32:
        return False
    buf[start:start + count * width] = values.astype(dtype).tobytes()
    return True


def episode_bounds(data: bytes | Mp4Index, lengths: list[int], fps: int, name: str) -> list[tuple[float, float]]:
    """(from_timestamp, to_timestamp) of consecutive episodes of ``lengths`` frames in an MP4 (its
    bytes or its index).

    ``from`` is the presentation time of the episode's first frame; ``to`` is the next episode's
    ``from`` (the last one: its last frame + one frame duration at ``fps``).
    """
    index = data if isinstance(data, Mp4Index) else index_mp4(data, name=name)
    seconds = index.display_seconds
    total = sum(lengths)
    if len(seconds) != total:
        raise Mp4FormatError(f"{name}: presents {len(seconds)} frames, expected {total}")
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(int)
    froms = [float(seconds[s]) for s in starts]
    tos = froms[1:] + [float(seconds[-1]) + 1.0 / fps]
    return list(zip(froms, tos))


def check_episode_keyframes(data: bytes | Mp4Index, lengths: list[int], name: str) -> None:
    """Every episode's first frame (in decode order too) must be a sync sample."""
    index = data if isinstance(data, Mp4Index) else index_mp4(data, name=name)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(int)
    first_decoded = [int(index.display_order[s:s + n].min()) for s, n in zip(starts, lengths)]
    bad = [k for k, sample in enumerate(first_decoded) if not index.sync[sample]]
    if bad:
        raise Mp4FormatError(f"{name}: episode #{bad[0]} of the file does not start with a keyframe")
