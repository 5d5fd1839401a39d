"""Index sidecar: round trip, staleness by size / ETag, refusal of corrupt or foreign files."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from lerobot_stream_loader.mp4 import (
    Mp4FormatError,
    SidecarEntry,
    dumps_sidecar,
    index_mp4,
    loads_sidecar,
    stale_entries,
    synthesize_mp4,
)
from tests.support.mp4_files import CUT_NAME, made

NAMES = {"videos/cam0/chunk-000/file-000.mp4": "h264_bframes", "videos/cam1/chunk-000/file-000.mp4": CUT_NAME,
         "videos/cam0/chunk-000/file-001.mp4": "av1_g2_moov_end"}


@pytest.fixture(scope="module")
def entries() -> dict[str, SidecarEntry]:
    out = {}
    for k, (path, name) in enumerate(NAMES.items()):
        data = made(name).data
        out[path] = SidecarEntry(index_mp4(data, name=path), len(data), f'"etag-{k}"', 1700000000.5 + k)
    return out


def test_round_trip_gives_the_same_spans_and_bytes(entries) -> None:
    loaded = loads_sidecar(dumps_sidecar(entries))
    assert sorted(loaded) == sorted(entries)
    for path, entry in entries.items():
        got = loaded[path]
        assert (got.size, got.etag, got.mtime) == (entry.size, entry.etag, entry.mtime)
        assert got.index.name == path and got.index.info == entry.index.info
        data = made(NAMES[path]).data
        times = entry.index.frame_times()
        for lo, hi in [(times[0], times[-1] + 1), (times[3], times[9])]:
            a, b = entry.index.span(lo, hi), got.index.span(lo, hi)
            assert a == b
            payload = data[a.byte_offset : a.byte_offset + a.byte_length]
            assert synthesize_mp4(entry.index, a, payload) == synthesize_mp4(got.index, b, payload)


def test_tuples_are_accepted(entries) -> None:
    plain = {p: (e.index, e.size, e.etag) for p, e in entries.items()}
    loaded = loads_sidecar(dumps_sidecar(plain))
    assert all(loaded[p].etag == e.etag and loaded[p].mtime is None for p, e in entries.items())


def test_staleness(entries) -> None:
    loaded = loads_sidecar(dumps_sidecar(entries))
    a, b, c = sorted(entries)
    current = {
        a: (entries[a].size, entries[a].etag),  # unchanged
        b: (entries[b].size + 1, entries[b].etag),  # size changed
        c: (entries[c].size, '"other"'),  # etag changed
        "videos/cam2/chunk-000/file-000.mp4": (10, None),  # never indexed
    }
    assert stale_entries(loaded, current) == sorted([b, c, "videos/cam2/chunk-000/file-000.mp4"])
    assert not loaded[a].is_stale(entries[a].size, None)  # no etag known now: size decides


def test_corrupt_or_foreign_files_are_refused(entries) -> None:
    blob = dumps_sidecar(entries)
    with pytest.raises(Mp4FormatError, match="sidecar"):
        loads_sidecar(blob[: len(blob) // 2])
    with pytest.raises(Mp4FormatError, match="sidecar"):
        loads_sidecar(b"not a zip")
    other = io.BytesIO()
    np.savez(other, header=np.frombuffer(b'{"format": "x", "version": 1, "files": []}', dtype=np.uint8))
    with pytest.raises(Mp4FormatError, match="format"):
        loads_sidecar(other.getvalue())
    newer = io.BytesIO()
    header = b'{"format": "lerobot-stream-loader/mp4-index", "version": 99, "files": []}'
    np.savez(newer, header=np.frombuffer(header, dtype=np.uint8))
    with pytest.raises(Mp4FormatError, match="version 99"):
        loads_sidecar(newer.getvalue())


def test_no_pickle_is_ever_loaded(entries) -> None:
    blob = dumps_sidecar(entries)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        names = archive.namelist()
    assert all(name.endswith(".npy") for name in names)
    evil = io.BytesIO()
    header = b'{"format": "lerobot-stream-loader/mp4-index", "version": 1, "files": [{"path": "a", "key": "f0", "size": 1}]}'
    arrays = {f"f0__{k}": np.array([1], dtype=np.int64) for k in ("version", "scalars", "codec", "stsd", "duration",
                                                                  "cts", "size", "offset", "sync", "sdi")}
    arrays["f0__stsd"] = np.array([object()], dtype=object)
    np.savez(evil, header=np.frombuffer(header, dtype=np.uint8), **arrays)
    with pytest.raises(Mp4FormatError, match="sidecar"):
        loads_sidecar(evil.getvalue())


def test_mtime_markers_compare_only_with_mtime_markers(entries) -> None:
    index = next(iter(entries.values())).index
    data = b"x" * 1000
    entry = SidecarEntry(index, len(data), "mtime:100.0")
    assert not entry.is_stale(len(data), "mtime:100.0")
    assert entry.is_stale(len(data), "mtime:101.5")
    assert not entry.is_stale(len(data), '"5f3a-1c2"'), "a file system marker says nothing about an HTTP ETag"
    assert entry.is_stale(len(data) + 1, "mtime:100.0")
