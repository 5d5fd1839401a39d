"""Stream-copy concatenation: runs of samples (episodes) taken from MP4s, back to back in one new MP4.

Each run is a span's samples, bytes untouched, with their durations and composition offsets. The new
file is laid out ``ftyp, moov, mdat`` (faststart); its ``mdat`` holds the runs' bytes in order, so a
run's samples sit at one contiguous byte range. Runs are shifted in presentation time so that every
run's first presented frame comes one constant after its first decoded sample: runs that were cut
from files with other edit lists still follow each other without overlap or gap.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np

from .boxes import Mp4FormatError, box, full_box, table_box
from .index import Mp4Index, TrackInfo
from .keyframes import _is_random_access, nal_length_size, random_access_mask
from .span import Span
from .synth import _FTYP, _header_boxes, _runs

_U32 = 0xFFFFFFFF
_VISUAL_ENTRY = 86  # size, type, reserved, data reference index and VisualSampleEntry fields


@dataclass(frozen=True)
class SampleRun:
    """Consecutive samples of one track in decode order: their bytes back to back and their timing."""

    data: bytes | memoryview  # a view into a mapped source file where the samples lie back to back
    size: np.ndarray  # bytes per sample
    duration: np.ndarray  # ticks per sample
    cts: np.ndarray  # composition offset per sample (ticks)
    sync: np.ndarray  # sync sample flags
    sdi: np.ndarray  # sample description index per sample

    @property
    def samples(self) -> int:
        return len(self.size)

    @functools.cached_property
    def first_presented(self) -> int:
        """Ticks from the run's first decoded sample to its first presented frame."""
        dts = np.concatenate(([0], np.cumsum(self.duration[:-1]))) if self.samples else self.duration
        return int((dts + self.cts).min()) if self.samples else 0


@functools.lru_cache(maxsize=256)  # asked per episode; a dataset has few configurations
def without_bitrate(stsd: bytes) -> bytes:
    """The ``stsd`` box with each visual sample entry's ``btrt`` box left out.

    ``btrt`` holds one file's bitrate figures (muxers write them per file): files of one encoder
    setting differ only there, and a concatenation's figures would be neither file's. Nothing decodes
    from it. A box that does not parse as expected is returned unchanged.
    """
    try:
        (count,) = struct.unpack_from(">I", stsd, 12)
        pos, entries = 16, []
        for _ in range(count):
            size, kind = struct.unpack_from(">I4s", stsd, pos)
            end = pos + size
            if size < _VISUAL_ENTRY or end > len(stsd):
                return stsd
            children, at = [], pos + _VISUAL_ENTRY
            while at + 8 <= end:
                child_size, child = struct.unpack_from(">I4s", stsd, at)
                if child_size < 8 or at + child_size > end:
                    return stsd
                if child != b"btrt":
                    children.append(stsd[at:at + child_size])
                at += child_size
            body = stsd[pos + 8:pos + _VISUAL_ENTRY] + b"".join(children) + stsd[at:end]
            entries.append(struct.pack(">I4s", 8 + len(body), kind) + body)
            pos = end
        return full_box(b"stsd", 0, 0, struct.pack(">I", count), *entries)
    except struct.error:
        return stsd


def closed_span_problem(span: Span) -> str | None:
    """Why the span's samples cannot be copied on their own, or None when they can.

    They can when its samples are exactly the frames it presents: then decoding starts at its first
    sample, a sync sample, and needs nothing before it (a span always starts at a sync sample).
    """
    if span.samples == span.frames:
        return None
    return (f"it does not start on a keyframe (its {span.frames} frames need {span.samples} samples, "
            "decoded from a keyframe before its first frame)")


def starts_random_access(codec: str, stsd: bytes, sample: bytes | memoryview) -> bool:
    """Whether a sample is a real random access point (H.264 IDR, HEVC IRAP; any sample of other codecs)."""
    length_size = nal_length_size(stsd, codec)
    if length_size is None:
        return True
    return _is_random_access(memoryview(sample), length_size, codec.encode() in (b"hvc1", b"hev1"))


def sample_run(index: Mp4Index, span: Span, payload: bytes | memoryview) -> SampleRun:
    """The span's samples, gathered out of ``payload`` (the file's bytes of the span; a memoryview is
    sliced, not copied, when the samples lie back to back).

    As in a mini-MP4 (``synth``), only sync samples that are real random access points stay sync
    samples, so that a decoder seeking in the new file never lands on one that is not.
    """
    lo, hi = span.sample_lo, span.sample_hi
    offsets = index.offset[lo:hi] - span.byte_offset
    sizes = index.size[lo:hi]
    if len(payload) != span.byte_length:
        raise ValueError(f"{index.name or '<bytes>'}: payload has {len(payload)} bytes, the span {span.byte_length}")
    if len(sizes) and bool((offsets[1:] == offsets[:-1] + sizes[:-1]).all()):
        start = int(offsets[0])
        data: bytes | memoryview = payload[start:start + int(sizes.sum())]
    else:  # other tracks' bytes between the samples: take each sample's own bytes
        data = b"".join(payload[o:o + s] for o, s in zip(offsets.tolist(), sizes.tolist()))
    durations, cts = index.duration[lo:hi].copy(), index.cts[lo:hi].copy()
    dts = np.concatenate(([0], np.cumsum(durations[:-1]))).astype(np.int64) if len(sizes) else durations
    starts = np.concatenate(([0], np.cumsum(sizes[:-1]))).astype(np.int64) if len(sizes) else sizes
    sync = random_access_mask(index.info.codec, index.info.stsd, index.sync[lo:hi], dts, dts + cts,
                              memoryview(data), starts, sizes)
    return SampleRun(data, sizes.copy(), durations, cts, sync, index.sdi[lo:hi].copy())


def concat_head(info: TrackInfo, sample_runs: list[SampleRun]) -> bytes:
    """``ftyp`` + ``moov`` + the ``mdat`` header of an MP4 whose ``mdat`` holds the runs' data in order.

    ``info`` gives the sample description (copied without its ``btrt``), timescale and frame size;
    every run must have been cut from files with that sample description.
    """
    if not sample_runs:
        raise Mp4FormatError("no samples to concatenate")
    sizes = np.concatenate([r.size for r in sample_runs]).astype(np.int64)
    durations = np.concatenate([r.duration for r in sample_runs]).astype(np.int64)
    lead = max(r.first_presented for r in sample_runs)
    cts = np.concatenate([r.cts + (lead - r.first_presented) for r in sample_runs]).astype(np.int64)
    sync = np.concatenate([r.sync for r in sample_runs])
    sdi = np.concatenate([r.sdi for r in sample_runs]).astype(np.int64)
    total = int(sizes.sum())
    mdat_header = 16 if total + 8 > _U32 else 8
    base, head = 0, b""
    for _ in range(3):  # the moov's size depends on whether 64-bit offsets are needed, which depends on it
        offsets = base + mdat_header + np.concatenate(([0], np.cumsum(sizes[:-1])))
        moov = _moov(info, durations, cts, sync, sdi, sizes, offsets)
        head = _FTYP + moov
        if len(head) == base:
            break
        base = len(head)
    if mdat_header == 16:
        return head + struct.pack(">I4sQ", 1, b"mdat", total + 16)
    return head + struct.pack(">I4s", total + 8, b"mdat")


def _moov(info: TrackInfo, durations: np.ndarray, cts: np.ndarray, sync: np.ndarray, sdi: np.ndarray,
          sizes: np.ndarray, offsets: np.ndarray) -> bytes:
    stbl = [without_bitrate(info.stsd), table_box(b"stts", list(_runs(durations)))]
    if cts.any():
        negative = bool((cts < 0).any())
        stbl.append(table_box(b"ctts", list(_runs(cts)), version=int(negative), dtype=">i4" if negative else ">u4"))
    if not sync.all():
        stbl.append(table_box(b"stss", [np.flatnonzero(sync) + 1]))
    n = len(sizes)
    stbl.append(full_box(b"stsz", 0, 0, struct.pack(">II", 0, n), sizes.astype(">u4").tobytes()))
    first = np.concatenate(([0], np.flatnonzero(sdi[1:] != sdi[:-1]) + 1))
    stbl.append(table_box(b"stsc", [first + 1, np.ones(len(first), dtype=np.int64), sdi[first]]))
    if int(offsets.max()) > _U32:
        stbl.append(full_box(b"co64", 0, 0, struct.pack(">I", n), offsets.astype(">u8").tobytes()))
    else:
        stbl.append(full_box(b"stco", 0, 0, struct.pack(">I", n), offsets.astype(">u4").tobytes()))
    mvhd, tkhd, mdhd, hdlr, vmhd, dinf = _header_boxes(info.timescale, int(durations.sum()), info.width,
                                                      info.height, info.language)
    minf = box(b"minf", vmhd, dinf, box(b"stbl", *stbl))
    return box(b"moov", mvhd, box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf)))
