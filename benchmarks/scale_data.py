"""A DROID-sized synthetic dataset, written cheaply: real data parquets and metadata (per-episode stats
for every feature, as LeRobot writes them), MP4s hard-linked to one small template video.

``write_scale_dataset(root, episodes)`` lays out ``episodes`` episodes of 50..150 frames (mean 100),
3 cameras, 100 episodes per data file and per MP4 (1,000 files per camera at 100k episodes),
``data_files`` in info.json, and an index sidecar (every entry the template's index). With
``metadata_only`` only meta/ is written (for the planner and constructor at 1M episodes).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CAMERAS = ("observation.images.wrist", "observation.images.exterior_1", "observation.images.exterior_2")
EPISODES_PER_FILE = 100
FPS = 30
STATE_DIM = 8
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000
EPISODES_PER_META_FILE = 50_000


def _features() -> dict:
    vector = {"dtype": "float32", "shape": [STATE_DIM], "names": None}
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    video = {"dtype": "video", "shape": [48, 64, 3], "names": ["height", "width", "channels"],
             "info": {"video.fps": FPS, "video.codec": "h264", "video.pix_fmt": "yuv420p"}}
    return {"observation.state": vector, "action": dict(vector), **{k: dict(video) for k in CAMERAS},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": scalar, "episode_index": dict(scalar), "index": dict(scalar), "task_index": dict(scalar)}


def _stat_columns(n: int, rng: np.random.Generator) -> dict[str, pa.Array]:
    """Per-episode stats of every feature (min, max, mean, std, count), as list columns."""
    columns: dict[str, pa.Array] = {}
    for name, width in [("observation.state", STATE_DIM), ("action", STATE_DIM), ("timestamp", 1),
                        ("frame_index", 1), ("episode_index", 1), ("index", 1), ("task_index", 1),
                        *((k, 3) for k in CAMERAS)]:
        for stat in ("min", "max", "mean", "std"):
            values = rng.random((n, width)).astype(np.float64)
            flat = pa.array(values.reshape(-1))
            if name in CAMERAS:  # [3, 1, 1] like LeRobot's image stats
                inner = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, 1), 1)
                columns[f"stats/{name}/{stat}"] = pa.FixedSizeListArray.from_arrays(inner, 3)
            else:
                columns[f"stats/{name}/{stat}"] = pa.FixedSizeListArray.from_arrays(flat, width)
        columns[f"stats/{name}/count"] = pa.FixedSizeListArray.from_arrays(pa.array(np.full(n, 100)), 1)
    return columns


def _location(file_number: int) -> tuple[int, int]:
    return file_number // CHUNKS_SIZE, file_number % CHUNKS_SIZE


def _template(path: Path, frames: int) -> None:
    """A small H.264 MP4 of ``frames`` frames at 30 fps (keyframe every 30 frames), moov first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate={FPS}",
                    "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0",
                    "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)], check=True)


def write_scale_dataset(root: Path, episodes: int, *, seed: int = 0, metadata_only: bool = False,
                        log=print) -> dict:
    """Write the dataset (see the module doc) to ``root``; returns what was written and how long it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 151, size=episodes)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    file_of = np.arange(episodes) // EPISODES_PER_FILE
    files = int(file_of[-1]) + 1
    first = np.searchsorted(file_of, np.arange(files))
    file_start_frame = starts[first]
    in_file_start = starts - file_start_frame[file_of]  # frame offset of the episode inside its MP4
    chunk, file = _location(file_of)
    table = {"episode_index": pa.array(np.arange(episodes)),
             "tasks": pa.array([["Put the marker in the cup"]] * episodes, pa.list_(pa.string())),
             "length": pa.array(lengths), "data/chunk_index": pa.array(chunk), "data/file_index": pa.array(file),
             "dataset_from_index": pa.array(starts), "dataset_to_index": pa.array(ends)}
    for key in CAMERAS:
        table[f"videos/{key}/chunk_index"] = pa.array(chunk)
        table[f"videos/{key}/file_index"] = pa.array(file)
        table[f"videos/{key}/from_timestamp"] = pa.array(in_file_start / FPS)
        table[f"videos/{key}/to_timestamp"] = pa.array((in_file_start + lengths) / FPS)
    for number, lo in enumerate(range(0, episodes, EPISODES_PER_META_FILE)):
        part = {k: v[lo:lo + EPISODES_PER_META_FILE] for k, v in table.items()}
        part = pa.table({**part, **_stat_columns(len(part["length"]), rng)})
        path = root / f"meta/episodes/chunk-000/file-{number:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path)
    info = {"codebase_version": "v3.0", "robot_type": "synthetic", "total_episodes": episodes,
            "total_frames": int(ends[-1]), "total_tasks": 1, "chunks_size": CHUNKS_SIZE, "fps": FPS,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "splits": {"train": f"0:{episodes}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": _features(),
            "data_files": [DATA_PATH.format(chunk_index=c, file_index=f) for c, f in zip(*_location(np.arange(files)))]}
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    pq.write_table(pa.table({"task_index": pa.array([0]), "task": pa.array(["Put the marker in the cup"])}),
                   root / "meta/tasks.parquet")
    stats = {name: {"min": [0.0], "max": [1.0], "mean": [0.5], "std": [0.3], "count": [int(ends[-1])]}
             for name in ("observation.state", "action")}
    (root / "meta/stats.json").write_text(json.dumps(stats))
    log(f"[scale] metadata of {episodes} episodes in {time.perf_counter() - start:.1f} s")
    if metadata_only:
        return {"episodes": episodes, "frames": int(ends[-1]), "files_per_camera": files,
                "seconds": time.perf_counter() - start}
    _write_data(root, lengths, starts, file_of, first, files)
    log(f"[scale] {files} data parquets written ({time.perf_counter() - start:.1f} s)")
    per_file = np.add.reduceat(lengths, first)
    template = root / "template.mp4"
    _template(template, int(per_file.max()))
    for key in CAMERAS:
        for number in range(files):
            c, f = _location(number)
            target = root / VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(template, target)
    _write_sidecar(root, template, files)
    seconds = time.perf_counter() - start
    log(f"[scale] {files * len(CAMERAS)} MP4 links and the sidecar ({seconds:.1f} s)")
    return {"episodes": episodes, "frames": int(ends[-1]), "files_per_camera": files, "seconds": seconds}


def _write_data(root: Path, lengths: np.ndarray, starts: np.ndarray, file_of: np.ndarray, first: np.ndarray,
                files: int) -> None:
    rng = np.random.default_rng(1)
    bounds = np.append(first, len(lengths))
    for number in range(files):
        lo, hi = bounds[number], bounds[number + 1]
        n = int(lengths[lo:hi].sum())
        episode = np.repeat(np.arange(lo, hi), lengths[lo:hi])
        frame = np.arange(n) - np.repeat(starts[lo:hi] - starts[lo], lengths[lo:hi])
        state = rng.random((n, STATE_DIM), dtype=np.float32)
        rows = pa.table({
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), STATE_DIM),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)[::-1].copy()), STATE_DIM),
            "timestamp": pa.array((frame / FPS).astype(np.float32)),
            "frame_index": pa.array(frame), "episode_index": pa.array(episode),
            "index": pa.array(starts[lo] + np.arange(n)), "task_index": pa.array(np.zeros(n, dtype=np.int64)),
        })
        c, f = _location(number)
        path = root / DATA_PATH.format(chunk_index=c, file_index=f)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, path, row_group_size=10_000)


def _write_sidecar(root: Path, template: Path, files: int) -> None:
    from lerobot_stream_loader.fetch.sidecar import SIDECAR_PATH, SidecarEntry, tail_checksum
    from lerobot_stream_loader.mp4 import index_mp4
    from lerobot_stream_loader.tools.index_sidecar import encode_sidecar

    data = template.read_bytes()
    entry = SidecarEntry(index_mp4(data, name="template"), len(data), tail_checksum(data[-4096:]))
    entries = {VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f): entry
               for key in CAMERAS for c, f in (_location(n) for n in range(files))}
    (root / SIDECAR_PATH).write_bytes(encode_sidecar(entries))
