"""Fuzz cases over a dataset's metadata and files, run in a child process under a memory cap.

``python -m tests.support.meta_fuzz ROOT WORK SEED CASES`` copies the dataset ROOT to WORK, then for
each target (info.json, the episodes table, a data parquet footer, the MP4 index sidecar) writes a
corrupted version of that one file, opens the dataset the way a worker does, restores the file,
and prints one JSON line per case: target, case, outcome (``ok`` or the exception's type), message
and seconds. The address space is capped (``resource.RLIMIT_AS``) at what the process had after
its imports plus ``HEADROOM``, so anything that believes a size it read dies here with MemoryError
instead of swapping the machine.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lerobot_stream_loader.fetch.assembly import EpisodeAssembler
from lerobot_stream_loader.fetch.file_indexes import FileIndexes
from lerobot_stream_loader.fetch.sidecar import SIDECAR_PATH, SidecarLookup
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.mp4 import index_mp4
from lerobot_stream_loader.storage import open_reader
from lerobot_stream_loader.tools.index_sidecar import build_entries, save_sidecar

HEADROOM = 1536 << 20
TARGETS = ("info", "episodes", "data", "sidecar")
HUGE = [-1, 0, 2**31, 2**32 + 7, 2**37, 2**62, 2**63 - 1, 2**64, -(2**63), 1e308, -1e-9, None, True, "7", "", [],
        {}, [1, 2], "x" * 100_000]
TEMPLATES = ["{chunk_index:999999999d}", "{chunk_index!r}", "{chunk_index.__class__}", "{file_index[0]}", "{0}",
             "{}", "{video_key:>99999999}", "{chunk_index:0999999d}", "{{", "}", "{chunk_index:{file_index}}",
             "/abs/{chunk_index}", "../{file_index}.parquet", "x" * 5000 + "{chunk_index}", "{nope}",
             "data/{chunk_index:,d}", "data/{file_index:e}", "a\x00b/{file_index}"]


def _memory_cap() -> None:
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + HEADROOM, vm + HEADROOM))


# ------------------------------------------------------------------------------------------ mutations
def mutate_info(text: bytes, rng: np.random.Generator) -> bytes:
    info = json.loads(text)
    kind = int(rng.integers(0, 6))
    if kind == 0:
        key = str(rng.choice(sorted(info)))
        info[key] = HUGE[int(rng.integers(len(HUGE)))]
    elif kind == 1:
        key = "video_path" if rng.random() < 0.5 else "data_path"
        info[key] = "data/" + TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    elif kind == 2:
        name = str(rng.choice(sorted(info["features"])))
        field = str(rng.choice(["shape", "dtype", "names", "fps", "info"]))
        info["features"][name][field] = HUGE[int(rng.integers(len(HUGE)))]
    elif kind == 3:
        info["features"]["f" * int(rng.choice([1, 10_000, 1_000_000]))] = {"dtype": "float32", "shape": [2**40]}
    elif kind == 4:
        depth = int(rng.choice([50, 5_000, 200_000]))
        return json.dumps(info)[:-1].encode() + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    else:
        raw = bytearray(json.dumps(info).encode())
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(len(raw)))] = int(rng.integers(0, 256))
        return bytes(raw[: int(rng.integers(len(raw) // 2, len(raw) + 1))])
    return json.dumps(info).encode()


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def corrupt_footer(data: bytes, rng: np.random.Generator) -> bytes:
    """Byte-level damage where parquet readers trust sizes: the footer length, the thrift footer, the end."""
    buf = bytearray(data)
    (footer_len,) = struct.unpack_from("<I", buf, len(buf) - 8)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        value = int(rng.choice([0, 1, footer_len + 1, len(buf), len(buf) - 7, 2**31 - 1, 2**32 - 1]))
        struct.pack_into("<I", buf, len(buf) - 8, value)
    elif kind == 1:
        start = len(buf) - 8 - footer_len
        for _ in range(int(rng.integers(1, 6))):
            buf[start + int(rng.integers(footer_len))] = int(rng.integers(0, 256))
    elif kind == 2:  # a varint in the footer made huge (sizes, counts, offsets are varints)
        start = len(buf) - 8 - footer_len
        at = start + int(rng.integers(footer_len - 5))
        buf[at:at + 5] = b"\xff\xff\xff\xff\x0f"
    else:
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    return bytes(buf)


def mutate_episodes(data: bytes, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.4:
        return corrupt_footer(data, rng)
    table = pq.read_table(pa.BufferReader(data))
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    names = [n for n in ("episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
                         "data/file_index", "tasks") if n in columns]
    names += [n for n in columns if n.startswith("videos/")]
    name = str(rng.choice(names))
    row = int(rng.integers(table.num_rows))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        value = int(rng.choice([-1, 0, 2**31, 2**40, 2**62, -(2**62)]))
        if name == "tasks":
            columns[name][row] = ["t" * int(rng.choice([0, 10, 1_000_000]))]
        elif name.endswith("timestamp"):
            columns[name][row] = float(rng.choice([-1.0, 0.0, 1e300, float("nan"), float("inf")]))
        else:
            columns[name][row] = value
    elif kind == 1:  # duplicate or overlap: copy another row's value
        columns[name][row] = columns[name][(row + 1) % table.num_rows]
    elif kind == 2:
        columns[name][row] = None
    else:
        columns.pop(name)
    try:
        return _parquet_bytes(pa.table(columns))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return corrupt_footer(data, rng)


def mutate_sidecar(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    (dir_len,) = struct.unpack_from("<I", buf, 8)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        struct.pack_into("<I", buf, 8, int(rng.choice([0, 1, dir_len + 1, 2**31, 2**32 - 1])))
    elif kind == 1:
        directory = json.loads(bytes(buf[12:12 + dir_len]))
        item = directory["files"][int(rng.integers(len(directory["files"])))]
        field = str(rng.choice(["size", "offset", "length", "raw", "arrays", "path", "tail"]))
        if field == "arrays" and item.get("arrays"):
            entry = item["arrays"][int(rng.integers(len(item["arrays"])))]
            pick = ["<f8", "|O", "<U9", [2**37], [-1], [2**20, 2**20]][int(rng.integers(6))]
            entry[1 if isinstance(pick, str) else 2] = pick
        else:
            item[field] = HUGE[int(rng.integers(len(HUGE)))]
        head = json.dumps(directory).encode()
        return bytes(buf[:8]) + struct.pack("<I", len(head)) + head + bytes(buf[12 + dir_len:])
    elif kind == 2:
        for _ in range(int(rng.integers(1, 8))):
            buf[int(rng.integers(len(buf)))] = int(rng.integers(0, 256))
    else:
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    return bytes(buf)


# ------------------------------------------------------------------------------------------ entry points
def open_dataset(root: Path) -> None:
    """What a worker does before decoding: metadata, then every episode's rows and mini-MP4s."""
    meta = load_meta(root)
    with open_reader(str(root)) as reader:
        assemble = EpisodeAssembler(meta, reader)
        for episode in meta.episode_indices:
            assemble(episode)


def sidecar_indexes(root: Path, reference: dict[str, object]) -> None:
    """Indexes through the sidecar must equal those read from the MP4s (a bad entry is rebuilt)."""
    with open_reader(str(root)) as reader:
        indexes = FileIndexes(reader, root=str(root), sidecar=SidecarLookup(str(root), reader))
        for path, expected in reference.items():
            got = indexes.mp4(path)
            for name, array in expected.to_arrays().items():
                if not np.array_equal(got.to_arrays()[name], array):
                    raise AssertionError(f"{path}: the sidecar gave another index ({name} differs)")


def run(root: Path, work: Path, seed: int, cases: int, first: int = 0) -> None:
    """Run cases ``first`` .. ``cases - 1`` of ``seed`` (earlier ones are drawn, not run)."""
    shutil.copytree(root, work)
    meta = load_meta(work)
    with open_reader(str(work)) as reader:
        save_sidecar(meta, build_entries(meta, reader, progress=False), output=str(work / SIDECAR_PATH))
        reference = {p: index_mp4(lambda o, n, p=p: reader.read(p, o, n), size=reader.size(p), name=p)
                     for p in meta.video_files}
    targets: dict[str, tuple[str, Callable[[bytes, np.random.Generator], bytes], Callable[[], None]]] = {
        "info": ("meta/info.json", mutate_info, lambda: open_dataset(work)),
        "episodes": ("meta/episodes/chunk-000/file-000.parquet", mutate_episodes, lambda: open_dataset(work)),
        "data": (meta.data_files[0], corrupt_footer, lambda: open_dataset(work)),
        "sidecar": (SIDECAR_PATH, mutate_sidecar, lambda: sidecar_indexes(work, reference)),
    }
    _memory_cap()
    rng = np.random.default_rng(seed)
    for case in range(cases):
        target = TARGETS[case % len(TARGETS)]
        relative, mutate, entry = targets[target]
        path = work / relative
        original = path.read_bytes()
        damaged = mutate(original, rng)
        if case < first:
            continue
        path.write_bytes(damaged)
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                entry()
                outcome, message, kinds = "ok", "", []
            except BaseException as exc:  # noqa: BLE001 - every outcome is reported to the test
                outcome, message = type(exc).__name__, str(exc)[:2000]
                kinds = [c.__name__ for c in type(exc).__mro__]
        record = {"target": target, "file": relative, "case": case, "outcome": outcome, "message": message,
                  "seconds": round(time.monotonic() - start, 3), "warnings": len(caught), "kinds": kinds}
        print(json.dumps(record), flush=True)
        path.write_bytes(original)


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:6]))
