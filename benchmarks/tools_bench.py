"""Offline tools benchmark: realign and stream-copy shuffle vs a plain copy, re-encoding shuffle vs PyAV
encode-only, and a DROID-shaped dataset shuffled by copy and by re-encoding on 1, 2 and a Dask cluster.

Run from the repository root: ``python -m benchmarks.tools_bench`` (writes benchmarks/results/tools.md
and tools.png). The encode-only baseline decodes every source frame into memory first (untimed), then
encodes the same frames with the same settings in one process, one camera after the other (one encoder
at a time); shuffle runs with one worker, so both use one encoder at a time. The baseline is fed RGB
frames (as a recorder would), so its time includes the RGB -> yuv420p conversion; a second, stricter
baseline feeds the decoded yuv420p frames as they are (encoder work only). Shuffle's time also covers
what the baseline leaves out: decoding the source, image statistics, parquet and metadata.
The DROID-shaped source (3 cameras at 320x180, a few hundred episodes) is written once into
``benchmarks/.data/tools/`` and kept; each of its runs is timed once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.synthetic import write_sample_dataset
from lerobot_stream_loader.tools import CodecSettings, realign_parquets_to_videos, shuffle_episodes
from lerobot_stream_loader.util.encoder_open import open_encoder

from .report import machine_section, publish

RESULTS = Path(__file__).parent / "results" / "tools.md"
DATA = Path(__file__).parent / ".data" / "tools"
DROID_CAMERA_FRAMES = 81e6  # DROID as LeRobot stores it: about 27 M frames of each of 3 cameras


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


def timed_shuffle(source: Path, out: Path, workers: int | None, **options: Any) -> float:
    """Seconds of one shuffle into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    shuffle_episodes(source, out, seed=0, max_workers=workers, **options)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def droid_source(episodes: int, cameras: int, size: tuple[int, int], frames: tuple[int, int]) -> Path:
    """The DROID-shaped sample dataset (15 fps, AV1 as LeRobot writes it), written once and kept."""
    root = DATA / f"droid-{episodes}x{cameras}-{size[0]}x{size[1]}-{frames[0]}-{frames[1]}"
    if not (root / "meta" / "info.json").is_file():
        print(f"[tools] writing the DROID-shaped source {root} (once)", flush=True)
        write_sample_dataset(root, episodes=episodes, cameras=cameras, size=size, fps=15,
                             frames_per_episode=frames, episodes_per_video_file=20, episodes_per_data_file=20,
                             overwrite=True)
    return root


def time_copies(source: Path, work: Path, per_file: int, repeats: int) -> dict[str, float]:
    """Median seconds of a plain copy of the files and of the copy shuffle on 1 and 2 workers
    (interleaved runs)."""
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        shutil.rmtree(work / "droid-copy", ignore_errors=True)
        runs.setdefault("plain copy", []).append(plain_copy(source, work / "droid-copy"))
        shutil.rmtree(work / "droid-copy", ignore_errors=True)
        for workers in _workers():
            runs.setdefault(f"copy, {workers} worker{'s' if workers > 1 else ''}", []).append(
                timed_shuffle(source, work / "droid", workers, max_episodes_per_file=per_file, vcodec="copy"))
    return {name: statistics.median(values) for name, values in runs.items()}


def _workers() -> tuple[int, ...]:
    return (1, min(2, os.cpu_count() or 1))


def droid_runs(source: Path, work: Path, per_file: int) -> dict[str, float]:
    """Seconds of each DROID-shaped re-encode (once each: minutes): on 1 and 2 local workers, and (with
    the copy) on a Dask LocalCluster of 2 single-threaded worker processes (started before the clock, as a
    running cluster)."""
    times: dict[str, float] = {}
    for workers in _workers():
        times[f"re-encode, {workers} worker{'s' if workers > 1 else ''}"] = timed_shuffle(
            source, work / "droid", workers, max_episodes_per_file=per_file)
    try:
        import distributed
    except ImportError:  # the dist extra is absent: no Dask rows
        return times
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        client.run(importlib.import_module, "lerobot_stream_loader.tools.task_runner")  # a running cluster
        executor = client.get_executor()
        for mode, options in (("copy", {"vcodec": "copy"}), ("re-encode", {})):
            times[f"{mode}, Dask LocalCluster (2 processes)"] = timed_shuffle(
                source, work / "droid", None, executor=executor, max_episodes_per_file=per_file, **options)
    return times


def droid_table(source: Path, times: dict[str, float], copy_s: float) -> tuple[list[str], dict[str, float]]:
    """Rows of the DROID-shaped table and core hours per million camera frames of each run."""
    meta = load_meta(source)
    frames = meta.total_frames * len(meta.video_keys)
    mb = dataset_bytes(source) / 1e6
    cores = os.cpu_count() or 1
    rows = ["| run | seconds | camera frames/s | MB/s | x plain copy | core hours per M frames | "
            "DROID (81 M frames): core hours |", "|---|---:|---:|---:|---:|---:|---:|"]
    hours: dict[str, float] = {}
    for name, seconds in times.items():
        hours[name] = seconds * cores / 3600 / (frames / 1e6)
        rows.append(f"| {name} | {seconds:.2f} | {frames / seconds:,.0f} | {mb / seconds:.0f} | "
                    f"{copy_s / seconds:.2f}x | {hours[name]:.3g} | {hours[name] * DROID_CAMERA_FRAMES / 1e6:,.1f} |")
    rows.append(f"| plain copy of the files | {copy_s:.2f} | | {mb / copy_s:.0f} | 1.00x | | |")
    return rows, hours


def plot(hours: dict[str, float], path: Path) -> None:
    """Core hours per million camera frames of each DROID-shaped run (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.2))
    names = list(hours)
    axis.barh(names, [hours[n] for n in names], color=["tab:green" if "copy" in n else "tab:orange" for n in names])
    axis.set_xscale("log")
    axis.invert_yaxis()
    axis.set_xlabel("core hours per million camera frames (log)")
    axis.set_title("shuffle of a DROID-shaped dataset: stream copy vs re-encode")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--size", default="640x480", help="WxH (default 640x480, LeRobot's usual camera size)")
    parser.add_argument("--frames", default="150:250", help="frames per episode MIN:MAX (default 150:250)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timing; the median is reported")
    parser.add_argument("--droid-episodes", type=int, default=200, help="episodes of the DROID-shaped run (0: none)")
    parser.add_argument("--droid-frames", default="30:60", help="its frames per episode MIN:MAX")
    parser.add_argument("--droid-long-frames", default="150:300",
                        help="frames per episode MIN:MAX of the copy runs at DROID's episode length")
    parser.add_argument("--droid-episodes-per-file", type=int, default=20, help="its output episodes per file")
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
        start = time.perf_counter()
        realign = realign_parquets_to_videos(source, work / "realigned")
        realign_s = time.perf_counter() - start
        decoded = decoded_frames(source)
        rgb = {key: [f.to_ndarray(format="rgb24") for f in camera] for key, camera in decoded.items()}
        settings = CodecSettings()
        workers = os.cpu_count() or 1
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved, so that a busy moment of the machine hits every kind
            shutil.rmtree(work / "copy", ignore_errors=True)
            runs.setdefault("copy", []).append(plain_copy(source, work / "copy"))
            runs.setdefault("copy1", []).append(timed_shuffle(source, work / "copied", 1, vcodec="copy"))
            runs.setdefault("copyN", []).append(timed_shuffle(source, work / "copied", workers, vcodec="copy"))
            runs.setdefault("encode", []).append(encode_only(rgb, meta.fps, settings, work))
            runs.setdefault("encode_yuv", []).append(encode_only(decoded, meta.fps, settings, work))
            runs.setdefault("shuffle1", []).append(timed_shuffle(source, work / "shuffled1", 1))
            runs.setdefault("shuffleN", []).append(timed_shuffle(source, work / "shuffledN", workers))
        del decoded, rgb
        m = {k: statistics.median(v) for k, v in runs.items()}
        droid: tuple[list[str], dict[str, float]] | None = None
        if args.droid_episodes:
            lo, hi = (int(v) for v in args.droid_frames.split(":"))
            droid_src = droid_source(args.droid_episodes, 3, (320, 180), (lo, hi))
            droid_times = time_copies(droid_src, work, args.droid_episodes_per_file, args.repeats)
            droid_copy = droid_times.pop("plain copy")
            droid_times.update(droid_runs(droid_src, work, args.droid_episodes_per_file))
            droid = droid_table(droid_src, droid_times, droid_copy)
            droid_meta, droid_mb = load_meta(droid_src), dataset_bytes(droid_src) / 1e6
            lo, hi = (int(v) for v in args.droid_long_frames.split(":"))
            long_src = droid_source(args.droid_episodes, 3, (320, 180), (lo, hi))
            long_times = time_copies(long_src, work, args.droid_episodes_per_file, args.repeats)
            long_copy = long_times.pop("plain copy")
            long_rows = droid_table(long_src, long_times, long_copy)[0]
            long_meta, long_mb = load_meta(long_src), dataset_bytes(long_src) / 1e6
    n_frames = meta.total_frames * len(meta.video_keys)
    mb = total_bytes / 1e6
    rows = [
        ("realign (stream copy, cameras staggered)", f"{mb / realign_s:.1f} MB/s",
         f"plain copy {mb / m['copy']:.1f} MB/s", f"{m['copy'] / realign_s:.2f}x"),
        ("shuffle --vcodec copy, 1 worker", f"{mb / m['copy1']:.1f} MB/s", f"plain copy {mb / m['copy']:.1f} MB/s",
         f"{m['copy'] / m['copy1']:.2f}x"),
        (f"shuffle --vcodec copy, {workers} workers", f"{mb / m['copyN']:.1f} MB/s",
         f"plain copy {mb / m['copy']:.1f} MB/s", f"{m['copy'] / m['copyN']:.2f}x"),
        ("shuffle --vcodec copy, 1 worker, frames/s", f"{n_frames / m['copy1']:,.0f} frames/s",
         f"re-encoding shuffle, 1 worker {n_frames / m['shuffle1']:.1f} frames/s",
         f"{m['shuffle1'] / m['copy1']:.0f}x"),
        ("shuffle, 1 worker (decode + encode + stats)", f"{n_frames / m['shuffle1']:.1f} frames/s",
         f"PyAV encode-only {n_frames / m['encode']:.1f} frames/s", f"{m['encode'] / m['shuffle1']:.2f}x"),
        (f"shuffle, {workers} workers", f"{n_frames / m['shuffleN']:.1f} frames/s",
         f"PyAV encode-only {n_frames / m['encode']:.1f} frames/s", f"{m['encode'] / m['shuffleN']:.2f}x"),
        ("shuffle, 1 worker, vs encoder work only", f"{n_frames / m['shuffle1']:.1f} frames/s",
         f"PyAV encode-only of yuv420p frames {n_frames / m['encode_yuv']:.1f} frames/s",
         f"{m['encode_yuv'] / m['shuffle1']:.2f}x"),
    ]
    table = ["| tool | ours | baseline | ours / baseline |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    header = (f"# Offline tools benchmark\n\nDataset: {meta.total_episodes} episodes, {len(meta.video_keys)} "
              f"cameras, {width}x{height}, {meta.total_frames} frames per camera, {mb:.2f} MB "
              f"(realign cut {realign.cut_video_files} video files); encoder {settings.vcodec} "
              f"crf {settings.crf} g {settings.g} preset {settings.preset}; {os.cpu_count()} CPUs; median of "
              f"{args.repeats} runs (interleaved).\n\nCommand: `{' '.join(['python -m benchmarks tools', *(argv or [])])}`"
              "\n\n")
    targets = [f"- copy at >= 10x the re-encoding shuffle's speed: {m['shuffle1'] / m['copy1']:.0f}x (1 worker) "
               f"-> {'met' if m['shuffle1'] / m['copy1'] >= 10 else 'missed'}",
               f"- copy at >= 0.3x a plain copy's MB/s: {m['copy'] / m['copy1']:.2f}x (1 worker), "
               f"{m['copy'] / m['copyN']:.2f}x ({workers} workers) -> "
               f"{'met' if max(m['copy'] / m['copy1'], m['copy'] / m['copyN']) >= 0.3 else 'missed'}"]
    text = header + "\n".join(table) + "\n"
    if droid is not None:
        rows_d, hours = droid
        copy_runs = [n for n in hours if n.startswith("copy")]
        best = min(copy_runs, key=lambda n: hours[n])
        speedup = min(hours[n.replace("copy", "re-encode")] / hours[n] for n in copy_runs)
        targets.append(f"- DROID shape: copy >= 10x re-encode in every configuration: {speedup:.0f}x at least -> "
                       f"{'met' if speedup >= 10 else 'missed'}")
        fastest = min(copy_runs, key=lambda n: droid_times[n])
        ratio = droid_copy / droid_times[fastest]
        targets.append(f"- DROID shape, {args.droid_frames.replace(':', '-')}-frame episodes: copy at >= 0.3x a "
                       f"plain copy's MB/s: {ratio:.2f}x ({fastest}) -> {'met' if ratio >= 0.3 else 'missed'}")
        longest = min(long_times, key=long_times.__getitem__)
        ratio = long_copy / long_times[longest]
        targets.append(f"- DROID shape, {args.droid_long_frames.replace(':', '-')}-frame episodes (DROID's own "
                       f"length): copy at >= 0.3x a plain copy's MB/s: {ratio:.2f}x ({longest}) -> "
                       f"{'met' if ratio >= 0.3 else 'missed'}")
        text += (f"\n## DROID-shaped dataset\n\n{droid_meta.total_episodes} episodes of "
                 f"{args.droid_frames.replace(':', '-')} frames, 3 cameras at 320x180, 15 fps, AV1 (crf 30, g 2) "
                 f"as LeRobot writes it: {droid_meta.total_frames * 3:,} camera frames, {droid_mb:.1f} MB, "
                 f"{len(droid_meta.video_files)} video files; output {args.droid_episodes_per_file} episodes per "
                 f"file. Copies: median of {args.repeats} interleaved runs; re-encodes timed once. Core hours = seconds x the machine's cores (every run occupies the "
                 f"machine) / 3600, per million camera frames; DROID (27 M frames x 3 cameras) is about "
                 f"{DROID_CAMERA_FRAMES / 1e6:.0f} M camera frames.\n\n" + "\n".join(rows_d) +
                 f"\n\n![core hours]({RESULTS.with_suffix('.png').name})\n\nFor DROID: copy takes about "
                 f"{hours[best] * DROID_CAMERA_FRAMES / 1e6:,.1f} core hours (mostly disk: size the cluster by I/O), "
                 f"re-encoding about {min(v for n, v in hours.items() if 're-encode' in n) * DROID_CAMERA_FRAMES / 1e6:,.0f}.\n")
        text += (f"\n### Copy at DROID's episode length\n\nDROID's episodes hold about 290 frames on average "
                 f"(27 M frames in 92 k episodes); the runs above use shorter ones, where each episode's fixed "
                 f"work weighs more. The same shape with {long_meta.total_episodes} episodes of "
                 f"{args.droid_long_frames.replace(':', '-')} frames ({long_meta.total_frames * 3:,} camera "
                 f"frames, {long_mb:.1f} MB, {len(long_meta.video_files)} video files), copies only:\n\n"
                 + "\n".join(long_rows) + "\n")
        plot(hours, args.output.with_suffix(".png"))
    text += "\n## Targets\n\n" + "\n".join(targets) + "\n"
    text += ("\nThe re-encoding shuffle rows time the whole tool (decoding the source, encoding, image statistics, "
             "parquet and metadata); the encode-only baselines time the encoder alone on frames decoded "
             "beforehand (untimed). The first baseline is fed RGB frames, so it also converts them to "
             "yuv420p, which shuffle avoids; the last row compares with the encoder's work alone. The re-encoding "
             "shuffle includes its output check and, where SVT-AV1's preset 12 damaged a frame, the file's second "
             "encode at preset 10 (docs/shuffle.md). The copy rows time the whole tool too (metadata, parquet, "
             "the check of every copied byte, a checksum per data file). With one worker shuffle runs in-process; "
             "with more, encoders run in spawned processes (start-up included) with cores / workers threads "
             "each, copies in threads.\n")
    text += "\n".join(machine_section((start_load, os.getloadavg()))) + "\n"
    publish(args.output, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
