"""Which sync samples are safe places to start decoding.

Muxers mark every intra-coded H.264/HEVC frame as a sync sample, but a non-IDR I-frame is not a
random access point: frames after it may reference frames before it. A decoder that seeks to
one returns broken or missing frames. And with B-frames, a seek lands on the last sync sample
whose *decode* time is at or before the target, so a sync sample that follows another one too
closely, or that is decoded after a frame it is presented before, sends the seek to the wrong
place. This module keeps only sync samples that are safe on both counts: real random access
points (H.264 IDR; HEVC IRAP; any sync sample of other codecs) that every earlier-decoded frame
is presented before, and whose decode time is after the previous kept sync sample's
presentation time.
"""

from __future__ import annotations

import numpy as np

_H264 = (b"avc1", b"avc3")
_HEVC = (b"hvc1", b"hev1")
_H264_IDR = 5
_HEVC_IRAP = range(16, 22)  # BLA_W_LP .. CRA_NUT


def nal_length_size(stsd: bytes, codec: str) -> int | None:
    """Bytes of the NAL length prefix from the avcC / hvcC record, or None for other codecs."""
    tag = codec.encode()
    if tag in _H264:
        at, byte = stsd.find(b"avcC"), 4
    elif tag in _HEVC:
        at, byte = stsd.find(b"hvcC"), 21
    else:
        return None
    if at < 0 or at + 4 + byte >= len(stsd):
        return None
    return (stsd[at + 4 + byte] & 0x03) + 1


def _is_random_access(sample: memoryview, length_size: int, hevc: bool) -> bool:
    pos, end = 0, len(sample)
    while pos + length_size < end:
        size = int.from_bytes(sample[pos:pos + length_size], "big")
        pos += length_size
        if size <= 0 or pos + size > end:
            return False
        header = sample[pos]
        nal_type = (header >> 1) & 0x3F if hevc else header & 0x1F
        if (nal_type in _HEVC_IRAP) if hevc else nal_type == _H264_IDR:
            return True
        pos += size
    return False


def random_access_mask(codec: str, stsd: bytes, sync: np.ndarray, dts: np.ndarray, pts: np.ndarray,
                       payload: memoryview, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``sync`` with the sync samples that are not safe seek targets cleared.

    Arrays are per sample in decode order; ``offsets`` are the samples' offsets inside ``payload``.
    The first sample stays a sync sample (decoding has to start somewhere); samples that cannot
    be parsed are treated as unsafe.
    """
    length_size = nal_length_size(stsd, codec)
    hevc = codec.encode() in _HEVC
    safe = np.zeros_like(sync)
    if not len(sync):
        return safe
    safe[0] = True
    if length_size is None and np.array_equal(pts, dts) and bool((dts[1:] > dts[:-1]).all()):
        safe[1:] = sync[1:]  # frames shown as decoded, no bitstream to parse: every sync sample is safe
        return safe
    shown_before = np.maximum.accumulate(pts)
    last_kept_pts = pts[0]
    for i in np.flatnonzero(sync)[1:].tolist():
        if shown_before[i - 1] >= pts[i] or dts[i] <= last_kept_pts:
            continue
        if length_size is not None:
            start, size = int(offsets[i]), int(sizes[i])
            if not _is_random_access(payload[start:start + size], length_size, hevc):
                continue
        safe[i] = True
        last_kept_pts = pts[i]
    return safe
