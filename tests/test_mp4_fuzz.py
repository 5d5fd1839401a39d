"""Corrupted real MP4s: each either indexes (and then spans and synthesizes) or raises Mp4FormatError
naming the box, without allocating what a box claims and without reading outside the file."""

from __future__ import annotations

import re
import struct
import tracemalloc

import numpy as np
import pytest

from lerobot_stream_loader.mp4 import Mp4FormatError, index_mp4, synthesize_mp4
from lerobot_stream_loader.mp4.boxes import Box, iter_boxes
from tests.support.mp4_files import CUT_NAME, made

CONTAINERS = {"moov", "trak", "mdia", "minf", "stbl", "edts", "dinf"}
TABLES = {"stts", "ctts", "stss", "stsc", "stsz", "stco", "co64", "elst", "stsd", "dref"}
NAMES_A_BOX = re.compile(r"'[A-Za-z0-9 ]{4}'|top level")
CASES_PER_FILE = 220


def all_boxes(data: bytes) -> list[Box]:
    out: list[Box] = []

    def walk(start: int, end: int) -> None:
        for b in iter_boxes(data, start, end, where="walk"):
            out.append(b)
            if b.type in CONTAINERS:
                walk(b.start, b.end)

    walk(0, len(data))
    return out


def corrupt(data: bytes, boxes: list[Box], rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(0, 6)
    b = boxes[rng.integers(len(boxes))]
    tables = [t for t in boxes if t.type in TABLES]
    if kind == 0:
        return bytes(buf[: rng.integers(0, len(buf))])
    if kind == 1:
        size = b.end - b.offset
        value = int(rng.choice([0, 1, 7, 8, size - 1, size + 1, 0xFFFFFFFF, 0x7FFFFFFF, rng.integers(0, 2 * size + 9)]))
        struct.pack_into(">I", buf, b.offset, value)
    elif kind == 2:
        struct.pack_into(">I", buf, b.offset, 1)
        if b.offset + 16 <= len(buf):
            big = int(rng.choice([0, 8, 15, 2**40, 2**63 - 1, b.end - b.offset + 8, rng.integers(0, 2**32)]))
            struct.pack_into(">Q", buf, b.offset + 8, big)
    elif kind == 3 and tables:
        t = tables[rng.integers(len(tables))]
        at = t.start + int(rng.choice([4, 8]))
        if at + 4 <= t.end:
            (count,) = struct.unpack_from(">I", buf, at)
            value = int(rng.choice([0, 1, count + 1, max(count - 1, 0), 0xFFFFFFFF, 0x7FFFFFFF, rng.integers(0, 2**32)]))
            struct.pack_into(">I", buf, at, value)
    elif kind == 4 and tables:
        t = tables[rng.integers(len(tables))]
        if t.end - t.start > 12:
            at = int(rng.integers(t.start + 8, t.end - 3))
            struct.pack_into(">I", buf, at, int(rng.choice([0, 1, 0xFFFFFFFF, 0x80000000, rng.integers(0, 2**32)])))
    else:
        moov = next(x for x in boxes if x.type == "moov")
        for _ in range(rng.integers(1, 5)):
            buf[rng.integers(moov.offset, moov.end)] = rng.integers(0, 256)
    return bytes(buf)


def exercise(data: bytes) -> str:
    """Index (through range reads) and, when that works, span and synthesize; 'ok' or the error."""

    def read_range(offset: int, length: int) -> bytes:
        assert 0 <= offset and length >= 0 and offset + length <= len(data), (offset, length, len(data))
        return data[offset : offset + length]

    try:
        index = index_mp4(read_range, size=len(data), name="fuzz.mp4")
        times = index.frame_times()
        if len(times):
            for lo, hi in [(times[0], times[-1] + 1.0), (times[len(times) // 2], times[-1] + 1.0)]:
                span = index.span(lo, hi)
                mini = synthesize_mp4(index, span, data[span.byte_offset : span.byte_offset + span.byte_length])
                assert len(mini) > span.byte_length
        return "ok"
    except Mp4FormatError as exc:
        message = str(exc)
        assert message.startswith("fuzz.mp4: ") or message.startswith("fuzz.mp4"), message
        assert NAMES_A_BOX.search(message), f"error does not name a box: {message}"
        return "error"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["av1_g2", "h264_audio", CUT_NAME])
def test_corruptions_parse_or_fail_cleanly(name: str) -> None:
    data = made(name).data
    boxes = all_boxes(data)
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "error": 0}
    tracemalloc.start()
    try:
        for _ in range(CASES_PER_FILE):
            outcomes[exercise(corrupt(data, boxes, rng))] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"peak allocation {peak} bytes for a {len(data)}-byte file"
    assert outcomes["error"] > CASES_PER_FILE // 4 and outcomes["ok"] > 0, outcomes
