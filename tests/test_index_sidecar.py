"""MP4 index sidecar: layout, range reads per file, content check, bounded memory, hostile and old files."""

from __future__ import annotations

import io
import json
import shutil
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.fetch.file_indexes import FileIndexes, index_bytes
from lerobot_stream_loader.fetch.sidecar import (
    MAGIC,
    OLD_SIDECAR_PATH,
    SIDECAR_PATH,
    Sidecar,
    SidecarEntry,
    SidecarError,
    SidecarLookup,
)
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.mp4 import Mp4Index, synthesize_mp4
from lerobot_stream_loader.storage import open_reader
from lerobot_stream_loader.synthetic.checks import read_frame_index
from lerobot_stream_loader.tools.index_sidecar import build_entries, encode_sidecar, save_sidecar

CAM = "observation.images.cam0"


@pytest.fixture(scope="module")
def source(make_sample) -> Path:
    return make_sample(episodes=6, cameras=2, frames_per_episode=(10, 16), episodes_per_video_file=2,
                       size=(64, 48), seed=21)


@pytest.fixture(scope="module")
def entries(source: Path) -> dict[str, SidecarEntry]:
    with open_reader(str(source)) as reader:
        return build_entries(load_meta(source), reader, progress=False)


@pytest.fixture
def root(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(source, out)
    return out


def _stream(root: Path | str, **options) -> list[dict]:
    items = list(StreamingLeRobot(root, return_uint8=True, **options))
    assert items and all(read_frame_index(x[CAM]) == int(x["index"]) for x in items)
    return items


def _rewrite(root: Path, change) -> None:
    """Edit the sidecar's directory (JSON) with ``change(directory)`` and write it back."""
    data = (root / SIDECAR_PATH).read_bytes()
    (length,) = struct.unpack("<I", data[8:12])
    directory = json.loads(data[12:12 + length])
    change(directory)
    raw = json.dumps(directory).encode()
    (root / SIDECAR_PATH).write_bytes(MAGIC + struct.pack("<I", len(raw)) + raw + data[12 + length:])


def test_round_trip_gives_the_same_spans_and_bytes(source: Path, entries) -> None:
    loaded = Sidecar.from_bytes(encode_sidecar(entries)).entries()
    assert sorted(loaded) == sorted(entries)
    for path, entry in entries.items():
        got = loaded[path]
        assert (got.size, got.tail) == (entry.size, entry.tail) and got.tail
        assert got.index.info == entry.index.info
        data = (source / path).read_bytes()
        times = entry.index.frame_times()
        a, b = entry.index.span(times[1], times[-2]), got.index.span(times[1], times[-2])
        assert a == b
        payload = data[a.byte_offset:a.byte_offset + a.byte_length]
        assert synthesize_mp4(entry.index, a, payload) == synthesize_mp4(got.index, b, payload)


@pytest.mark.timeout(120)
def test_a_worker_reads_the_head_once_and_one_entry_per_mp4_it_opens(root: Path, entries, nginx_factory) -> None:
    save_sidecar(load_meta(root), entries)
    server = nginx_factory(root)
    before = len(server.access_log())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _stream(server.url, episodes=[0])
    log = [e for e in server.access_log()[before:] if e.method == "GET"]
    sidecar_reads = [e for e in log if e.uri.endswith(SIDECAR_PATH)]
    mp4_reads = [e for e in log if e.uri.endswith(".mp4")]
    cameras = 2
    print(f"episode 0: {len(sidecar_reads)} sidecar range reads, {len(mp4_reads)} MP4 range reads")
    assert len(sidecar_reads) <= 1 + cameras, "head once, then one entry per MP4 opened"
    assert all(e.range for e in sidecar_reads)
    assert len(mp4_reads) <= 2 * cameras, "no moov read: the episode span and the last bytes per MP4"


def test_a_plain_copy_keeps_the_sidecar_in_use(root: Path, entries, tmp_path: Path) -> None:
    """cp -r / rsync without -t / a re-download change every mtime: no warning, no header read."""
    save_sidecar(load_meta(root), entries)
    copied = tmp_path / "copied"
    shutil.copytree(root, copied, copy_function=shutil.copyfile)  # new mtimes
    meta = load_meta(copied)
    with open_reader(str(copied)) as reader, warnings.catch_warnings():
        warnings.simplefilter("error")
        lookup = SidecarLookup(meta.root, reader)
        for path in meta.video_files:
            size = reader.size(path)
            assert lookup.index(path, size, lambda o, n, p=path: reader.read(p, o, n)) is not None
        _stream(copied)


def test_changed_files_are_one_warning_and_read_from_their_headers(root: Path, entries) -> None:
    changed = {p: SidecarEntry(e.index, e.size, "00000000") for p, e in entries.items()}  # same size, other bytes
    save_sidecar(load_meta(root), changed)
    with pytest.warns(UserWarning) as caught:
        _stream(root)
    stale = [str(w.message) for w in caught if "stale" in str(w.message)]
    assert len(stale) == 1 and "shown once" in stale[0], stale


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "bad magic", "entry outside the file", "wrong type"])
def test_a_damaged_sidecar_is_ignored_with_one_warning(root: Path, entries, damage: str) -> None:
    save_sidecar(load_meta(root), entries)
    path = root / SIDECAR_PATH
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "bit flip":
        data[len(data) - 40] ^= 0x40
        path.write_bytes(bytes(data))
    elif damage == "bad magic":
        path.write_bytes(b"PK" + bytes(data[2:]))
    elif damage == "wrong type":
        _rewrite(root, lambda d: d["files"][0].update(offset="far"))
    else:
        _rewrite(root, lambda d: d["files"][0].update(offset=10 ** 12))
    with pytest.warns(UserWarning) as caught:
        _stream(root)
    messages = [str(w.message) for w in caught if "sidecar" in str(w.message) or "entry" in str(w.message)]
    assert len(messages) == 1, messages
    if damage == "wrong type":
        assert "unreadable placement" in messages[0] and "reading the MP4 headers instead" in messages[0]


@pytest.mark.parametrize("claim", ["raw", "shape"])
def test_absurd_array_sizes_are_one_warning_never_a_memory_error(root: Path, entries, claim: str) -> None:
    save_sidecar(load_meta(root), entries)

    def huge(directory: dict) -> None:
        item = directory["files"][0]
        for spec in item["arrays"]:
            if spec[0] == "offset":
                spec[2] = [2 ** 37]
        if claim == "raw":
            item["raw"] = sum(int(np.prod(s[2])) * np.dtype(s[1]).itemsize for s in item["arrays"])

    _rewrite(root, huge)
    with pytest.warns(UserWarning, match="claim") as caught:
        _stream(root)
    assert len([w for w in caught if "sidecar" in str(w.message)]) == 1


def _v1_bytes(entries: dict[str, SidecarEntry], shape_of_offset: tuple[int, ...] | None = None) -> bytes:
    """A version-1 sidecar as earlier releases wrote it (one .npz)."""
    arrays, files = {}, []
    for k, (path, entry) in enumerate(sorted(entries.items())):
        files.append({"path": path, "key": f"f{k}", "size": entry.size, "etag": None, "mtime": 1.0})
        for name, array in entry.index.to_arrays().items():
            arrays[f"f{k}__{name}"] = array
    header = {"format": "lerobot-stream-loader/mp4-index", "version": 1, "files": files}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    data = out.getvalue()
    if shape_of_offset is not None:  # rewrite one array header to claim a huge shape
        old = f"'shape': ({len(next(iter(entries.values())).index.offset)},)".encode()
        new = f"'shape': {shape_of_offset},".encode()
        at = data.index(b"f0__offset.npy")
        at = data.index(old, at)
        data = data[:at] + new.ljust(len(old)) + data[at + len(old):]
    return data


def test_an_old_sidecar_still_loads_with_one_message(root: Path, entries) -> None:
    (root / OLD_SIDECAR_PATH).write_bytes(_v1_bytes(entries))
    with pytest.warns(UserWarning, match="version-1 .* rewrites it as meta/mp4_index.bin") as caught:
        _stream(root)
    assert len(caught) == 1


def test_an_old_sidecar_claiming_2_37_elements_is_ignored(root: Path, entries) -> None:
    (root / OLD_SIDECAR_PATH).write_bytes(_v1_bytes(entries, shape_of_offset=(2 ** 37,)))
    with pytest.warns(UserWarning, match="ignoring the sidecar") as caught:
        _stream(root)
    assert len(caught) == 1


def test_corrupt_entries_raise_sidecar_errors(entries) -> None:
    blob = encode_sidecar(entries)
    with pytest.raises(SidecarError, match="magic"):
        Sidecar.from_bytes(b"not a sidecar at all")
    with pytest.raises(SidecarError, match="does not fit"):
        Sidecar.from_bytes(blob[:40])


def test_parsed_indexes_are_bounded(root: Path, entries) -> None:
    save_sidecar(load_meta(root), entries)
    meta = load_meta(root)
    one = max(index_bytes(e.index) for e in entries.values())
    with open_reader(str(root)) as reader:
        indexes = FileIndexes(reader, root=meta.root, sidecar=SidecarLookup(meta.root, reader),
                              max_index_bytes=int(one * 1.5))
        for path in meta.video_files:
            assert isinstance(indexes.mp4(path), Mp4Index)
            assert indexes.held_index_bytes <= 2 * one
        assert len(meta.video_files) > 2


def test_the_directory_a_worker_holds_is_small_per_mp4(entries) -> None:
    """Every worker holds the directory: about 3.5 KB of Python objects per MP4 parsed, its bytes held instead."""
    import tracemalloc

    one = next(iter(entries.values()))
    many = {f"videos/cam/chunk-{i // 1000:03d}/file-{i % 1000:03d}.mp4": one for i in range(3000)}
    blob = encode_sidecar(many)
    tracemalloc.start()
    try:
        sidecar = Sidecar.from_bytes(blob)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(sidecar.directory.paths()) == 3000
    assert held / 3000 < 1200, f"{held / 3000:.0f} bytes per MP4"
    path = "videos/cam/chunk-002/file-999.mp4"
    assert np.array_equal(sidecar.entry(path).index.offset, one.index.offset)


class _SlowSidecar:
    """A reader whose sidecar reads take a while (a remote store): other threads ask meanwhile."""

    def __init__(self, reader) -> None:
        self.reader = reader

    def size(self, path: str) -> int:
        return self.reader.size(path)

    def read(self, path: str, offset: int, length: int) -> bytes:
        if path == SIDECAR_PATH:
            time.sleep(0.2)
        return self.reader.read(path, offset, length)


def test_concurrent_lookups_open_the_sidecar_once(root: Path, entries) -> None:
    """A worker's fetch threads ask for entries at once: each waits for the sidecar to be opened."""
    from concurrent.futures import ThreadPoolExecutor

    save_sidecar(load_meta(root), entries)
    meta = load_meta(root)
    with open_reader(str(root)) as plain:
        reader = _SlowSidecar(plain)
        lookup = SidecarLookup(meta.root, reader)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with ThreadPoolExecutor(8) as pool:
                found = list(pool.map(lambda p: lookup.index(p, reader.size(p), lambda o, n: reader.read(p, o, n)),
                                      meta.video_files))
        assert all(index is not None for index in found)
