"""Mini-MP4 synthesis: a small valid MP4 around a span's sample bytes, without re-encoding.

Layout: ftyp, mdat (the fetched payload, untouched), moov. Each sample is its own chunk, so sample
offsets are simply the payload offsets rebased; bytes of other tracks inside the payload are ignored.
No edit list: every sample from the leading sync sample on is presented (see Span.time_offset).
Only sync samples that are real random access points stay sync samples (see keyframes.py), so a
decoder never seeks to an I-frame whose followers reference earlier frames.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from .boxes import box, full_box, table_box
from .keyframes import random_access_mask

if TYPE_CHECKING:
    from .index import Mp4Index
    from .span import Span

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_FTYP = box(b"ftyp", b"isom", struct.pack(">I", 512), b"isom", b"iso2", b"mp41")
_U32 = 0xFFFFFFFF


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encoding: (counts, values)."""
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    counts = np.diff(np.append(starts, len(values)))
    return counts, values[starts]


def _header_boxes(timescale: int, duration: int, width: int, height: int, language: int) -> tuple[bytes, ...]:
    """mvhd, tkhd, mdhd, hdlr, vmhd + dinf for one video track."""
    long = duration > _U32
    v = 1 if long else 0
    times = struct.pack(">QQIQ" if long else ">IIII", 0, 0, timescale, duration)
    mvhd = full_box(b"mvhd", v, 0, times, struct.pack(">IH10x", 0x10000, 0x100), _MATRIX, bytes(24),
                    struct.pack(">I", 2))
    tk_times = struct.pack(">QQI4xQ" if long else ">III4xI", 0, 0, 1, duration)
    tkhd = full_box(b"tkhd", v, 3, tk_times, bytes(8), struct.pack(">hhh2x", 0, 0, 0), _MATRIX,
                    struct.pack(">II", width << 16, height << 16))
    mdhd = full_box(b"mdhd", v, 0, times, struct.pack(">HH", language, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00")
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    return mvhd, tkhd, mdhd, hdlr, vmhd, dinf


def synthesize_mp4(index: Mp4Index, span: Span, payload: bytes | bytearray | memoryview) -> bytes:
    """A standalone MP4 holding exactly the span's samples; `payload` is the file's bytes
    [span.byte_offset, span.byte_offset + span.byte_length)."""
    if len(payload) != span.byte_length:
        raise ValueError(
            f"{index.name or '<bytes>'}: payload has {len(payload)} bytes, span bytes "
            f"{span.byte_offset}..{span.byte_offset + span.byte_length} need {span.byte_length}"
        )
    lo, hi = span.sample_lo, span.sample_hi
    sizes = index.size[lo:hi]
    mdat_header = 16 if len(payload) + 8 > _U32 else 8
    chunk_offsets = index.offset[lo:hi] - span.byte_offset + (len(_FTYP) + mdat_header)
    if mdat_header == 16:
        mdat = struct.pack(">I4sQ", 1, b"mdat", len(payload) + 16)
    else:
        mdat = struct.pack(">I4s", len(payload) + 8, b"mdat")

    durations = index.duration[lo:hi]
    stts = table_box(b"stts", list(_runs(durations)))
    cts = index.cts[lo:hi] + span.cts_shift
    stbl = [index.info.stsd, stts]
    if cts.any():
        negative = bool((cts < 0).any())  # possible even when every presentation time is >= 0
        stbl.append(table_box(b"ctts", list(_runs(cts)), version=int(negative), dtype=">i4" if negative else ">u4"))
    dts = index.dts[lo:hi]
    sync = random_access_mask(index.info.codec, index.info.stsd, index.sync[lo:hi], dts, dts + index.cts[lo:hi],
                              memoryview(payload), index.offset[lo:hi] - span.byte_offset, sizes)
    if not sync.all():
        stbl.append(table_box(b"stss", [np.flatnonzero(sync) + 1]))
    stbl.append(full_box(b"stsz", 0, 0, struct.pack(">II", 0, len(sizes)), sizes.astype(">u4").tobytes()))
    sdi = index.sdi[lo:hi]
    first = np.concatenate(([0], np.flatnonzero(sdi[1:] != sdi[:-1]) + 1))
    stbl.append(table_box(b"stsc", [first + 1, np.ones(len(first), dtype=np.int64), sdi[first]]))
    if int(chunk_offsets.max()) > _U32:
        stbl.append(full_box(b"co64", 0, 0, struct.pack(">I", len(sizes)), chunk_offsets.astype(">u8").tobytes()))
    else:
        stbl.append(full_box(b"stco", 0, 0, struct.pack(">I", len(sizes)), chunk_offsets.astype(">u4").tobytes()))

    info = index.info
    mvhd, tkhd, mdhd, hdlr, vmhd, dinf = _header_boxes(
        info.timescale, int(durations.sum()), info.width, info.height, info.language
    )
    minf = box(b"minf", vmhd, dinf, box(b"stbl", *stbl))
    moov = box(b"moov", mvhd, box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf)))
    return b"".join((_FTYP, mdat, bytes(payload), moov))
