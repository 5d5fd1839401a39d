"""Offline tools benchmark: realign throughput vs a plain copy, shuffle frames/s vs PyAV encode-only.

Run from the repository root: ``python -m benchmarks.tools_bench`` (writes benchmarks/results/tools.md).
The encode-only baseline decodes every source frame into memory first (untimed), then encodes the
same frames with the same settings in one process, one camera after the other (one encoder at a
time); shuffle runs with one worker, so both use one encoder at a time. The baseline is fed RGB
frames (as a recorder would), so its time includes the RGB -> yuv420p conversion; a second, stricter
baseline feeds the decoded yuv420p frames as they are (encoder work only). Shuffle's time also
covers what the baseline leaves out: decoding the source, image statistics, parquet and metadata.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.synthetic import write_sample_dataset
from lerobot_stream_loader.tools import CodecSettings, realign_parquets_to_videos, shuffle_episodes
from lerobot_stream_loader.util.encoder_open import open_encoder

from .report import machine_section, publish

RESULTS = Path(__file__).parent / "results" / "tools.md"


def dataset_bytes(root: Path) -> int:
    meta = load_meta(root)
    return sum((root / p).stat().st_size for p in meta.data_files + meta.video_files)


def plain_copy(root: Path, target: Path) -> float:
    """Seconds to copy the data and video files of ``root``."""
    meta = load_meta(root)
    start = time.perf_counter()
    for path in meta.data_files + meta.video_files:
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / path, target / path)
    return time.perf_counter() - start


def decoded_frames(root: Path) -> dict[str, list[av.VideoFrame]]:
    """Every frame of every camera, decoded into memory (as decoded: yuv420p)."""
    meta = load_meta(root)
    frames: dict[str, list[av.VideoFrame]] = {}
    for key in meta.video_keys:
        for path in sorted({e.videos[key].path for e in meta.episodes}):
            with av.open(str(root / path)) as container:
                frames.setdefault(key, []).extend(container.decode(video=0))
    return frames


def encode_only(frames: dict[str, list[np.ndarray]] | dict[str, list[av.VideoFrame]], fps: int,
                settings: CodecSettings, out: Path) -> float:
    """Seconds PyAV needs to encode the frames (RGB arrays or decoded frames; one camera after the
    other, one process)."""
    start = time.perf_counter()
    for key, camera in frames.items():
        first = camera[0]
        height, width = first.shape[:2] if isinstance(first, np.ndarray) else (first.height, first.width)
        with av.open(str(out / f"{key}.mp4"), "w") as container:
            stream = container.add_stream(settings.vcodec, rate=fps, options=settings.encoder_options())
            stream.width, stream.height, stream.pix_fmt = width, height, settings.pix_fmt
            open_encoder(stream)
            for n, item in enumerate(camera):
                frame = av.VideoFrame.from_ndarray(item, format="rgb24") if isinstance(item, np.ndarray) else item
                frame.pict_type = av.video.frame.PictureType.NONE
                frame.pts, frame.time_base = n, Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return time.perf_counter() - start


def timed_shuffle(source: Path, out: Path, workers: int) -> float:
    """Seconds of one shuffle into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    shuffle_episodes(source, out, seed=0, max_workers=workers)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--size", default="640x480", help="WxH (default 640x480, LeRobot's usual camera size)")
    parser.add_argument("--frames", default="150:250", help="frames per episode MIN:MAX (default 150:250)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timing; the median is reported")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start_load = os.getloadavg()
    width, height = (int(v) for v in args.size.split("x"))
    low, high = (int(v) for v in args.frames.split(":"))
    with tempfile.TemporaryDirectory(prefix="tools-bench-") as tmp:
        work = Path(tmp)
        source = write_sample_dataset(work / "src", episodes=args.episodes, cameras=args.cameras,
                                      size=(width, height), frames_per_episode=(low, high),
                                      episodes_per_video_file=3, stagger_cameras=True, episodes_per_data_file=4)
        meta = load_meta(source)
        total_bytes = dataset_bytes(source)
        copy_s = plain_copy(source, work / "copy")
        start = time.perf_counter()
        realign = realign_parquets_to_videos(source, work / "realigned")
        realign_s = time.perf_counter() - start
        decoded = decoded_frames(source)
        rgb = {key: [f.to_ndarray(format="rgb24") for f in camera] for key, camera in decoded.items()}
        settings = CodecSettings()
        workers = os.cpu_count() or 1
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved, so that a busy moment of the machine hits every kind
            runs.setdefault("encode", []).append(encode_only(rgb, meta.fps, settings, work))
            runs.setdefault("encode_yuv", []).append(encode_only(decoded, meta.fps, settings, work))
            runs.setdefault("shuffle1", []).append(timed_shuffle(source, work / "shuffled1", 1))
            runs.setdefault("shuffleN", []).append(timed_shuffle(source, work / "shuffledN", workers))
        encode_s, encode_yuv_s, shuffle1_s, shuffle_n_s = (statistics.median(runs[k]) for k in
                                                          ("encode", "encode_yuv", "shuffle1", "shuffleN"))
    n_frames = meta.total_frames * len(meta.video_keys)
    mb = total_bytes / 1e6
    rows = [
        ("realign (stream copy, cameras staggered)", f"{mb / realign_s:.1f} MB/s",
         f"plain copy {mb / copy_s:.1f} MB/s", f"{copy_s / realign_s:.2f}x"),
        ("shuffle, 1 worker (decode + encode + stats)", f"{n_frames / shuffle1_s:.1f} frames/s",
         f"PyAV encode-only {n_frames / encode_s:.1f} frames/s", f"{encode_s / shuffle1_s:.2f}x"),
        (f"shuffle, {workers} workers", f"{n_frames / shuffle_n_s:.1f} frames/s",
         f"PyAV encode-only {n_frames / encode_s:.1f} frames/s", f"{encode_s / shuffle_n_s:.2f}x"),
        ("shuffle, 1 worker, vs encoder work only", f"{n_frames / shuffle1_s:.1f} frames/s",
         f"PyAV encode-only of yuv420p frames {n_frames / encode_yuv_s:.1f} frames/s",
         f"{encode_yuv_s / shuffle1_s:.2f}x"),
    ]
    table = ["| tool | ours | baseline | ours / baseline |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    header = (f"# Offline tools benchmark\n\nDataset: {meta.total_episodes} episodes, {len(meta.video_keys)} "
              f"cameras, {width}x{height}, {meta.total_frames} frames per camera, {mb:.2f} MB "
              f"(realign cut {realign.cut_video_files} video files); encoder {settings.vcodec} "
              f"crf {settings.crf} g {settings.g} preset {settings.preset}; {os.cpu_count()} CPUs; median of "
              f"{args.repeats} runs (interleaved).\n\nCommand: `{' '.join(['python -m benchmarks tools', *(argv or [])])}`\n\n")
    notes = ("\nThe shuffle rows time the whole tool (decoding the source, encoding, image statistics, "
             "parquet and metadata); the encode-only baselines time the encoder alone on frames decoded "
             "beforehand (untimed). The first baseline is fed RGB frames, so it also converts them to "
             "yuv420p, which shuffle avoids (it encodes the decoded yuv420p frames as they are); the last "
             "row compares with the encoder's work alone. With one worker shuffle runs in-process; with "
             "more, each worker is a spawned process, whose start-up is part of the time, and each encoder "
             "gets cores / workers threads.\n")
    machine = "\n".join(machine_section((start_load, os.getloadavg())))
    publish(args.output, header + "\n".join(table) + "\n" + notes + machine + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
