"""``validate --frames all`` against the sequential decode of the same MP4s, in one run.

Run from the repository root: ``python -m benchmarks validate [--small] [--variant droid] [--workers N]
[--repeats N]`` (writes ``benchmarks/results/validate.md``, ``validate-droid.md`` for DROID's shape, or
into ``results/small/`` with ``--small``).

- limit: every MP4 of the dataset decoded front to back with torchcodec to uint8 RGB, one process
  per core (``limit_track``: forked processes, whole files, no seeking, no checks), as many frames
  as the dataset holds.
- validate: ``validate(root, frames="all", workers=N)`` as the command runs it: metadata, counts and
  files, then every episode fetched and every frame of every camera decoded and checked (spawned
  helper processes started inside the timed call).
- validate, command: ``lerobot-stream validate ROOT --frames all --workers N --json`` as a
  subprocess, Python's start and imports included.

Rates are frames/s over every camera; runs are interleaved and the best of ``--repeats`` is kept
for each (the machine is shared: the best run is the one least disturbed). Each track's CPU time
(this process and its children, helpers and subprocesses included) per frame is also recorded: the
ratio of CPU times does not depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.tools import validate

from . import limit_track
from .datasets import dataset_bytes, ensure_dataset, spec_for
from .report import machine_section, publish, results_folder

TARGET = 0.8


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (user + system)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def limit_rate(root: Path, processes: int) -> tuple[float, int]:
    """(frames/s, frames) of the sequential decode of every MP4 of ``root``, ``processes`` processes."""
    meta = load_meta(root)
    files = [root / p for p in meta.video_files]
    frames = meta.total_frames * len(meta.video_keys)
    result = limit_track.sequential_decode_rate(files, len(meta.video_keys), meta.total_frames, processes)
    return result["frames"] / result["wall"], frames


def validate_rate(root: Path, workers: int) -> tuple[float, int]:
    """(frames/s, frames decoded) of ``validate(root, frames="all")``; raises unless it finds the dataset ok."""
    start = time.perf_counter()
    report = validate(root, frames="all", workers=workers)
    wall = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(f"validate found problems in the benchmark dataset: {report.problems[:3]}")
    return report.checked["frames_decoded"] / wall, report.checked["frames_decoded"]


def command_rate(root: Path, workers: int) -> tuple[float, int]:
    """(frames/s, frames decoded) of the ``lerobot-stream validate`` command, process start included."""
    code = "import sys; from lerobot_stream_loader.cli import main; sys.exit(main())"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "validate", str(root), "--frames", "all", "--workers",
                           str(workers), "--json"], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"lerobot-stream validate exited {done.returncode}: {done.stderr[-2000:]}")
    frames = int(json.loads(done.stdout)["checked"]["frames_decoded"])
    return frames / wall, frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", action="store_true", help="the smoke-run dataset")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="validate's workers and the limit's processes (default: one per core)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each (default 2)")
    parser.add_argument("--variant", choices=["av1", "droid"], default="av1",
                        help="the stream benchmark's dataset: 640x480 x 2 (av1) or DROID's shape (droid)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results file (default results/validate.md, validate-droid.md for droid)")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    spec = spec_for(args.small, args.variant)
    root = ensure_dataset(spec)
    runs: dict[str, list[float]] = {"limit": [], "validate": [], "command": []}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    frames: dict[str, int] = {}
    for repeat in range(args.repeats):
        for name, measure in (("limit", limit_rate), ("validate", validate_rate), ("command", command_rate)):
            before = cpu_seconds()
            rate, frames[name] = measure(root, args.workers)
            cpu[name].append((cpu_seconds() - before) / frames[name] * 1000)
            runs[name].append(rate)
            print(f"[validate-bench] run {repeat + 1}: {name} {rate:.1f} frames/s, {cpu[name][-1]:.2f} CPU s per "
                  f"1000 frames ({frames[name]} frames, load {os.getloadavg()[0]:.2f})", flush=True)
    if len(set(frames.values())) != 1:
        raise SystemExit(f"the tracks decoded different frame counts: {frames}")
    best = {name: max(rates) for name, rates in runs.items()}
    least_cpu = {name: min(values) for name, values in cpu.items()}
    name = "validate.md" if args.variant == "av1" else f"validate-{args.variant}.md"
    output = args.output or results_folder(args.small) / name
    publish(output, render(spec.name, root, args, best, runs, least_cpu, frames["limit"],
                           (load_start, os.getloadavg())))
    ratio = best["validate"] / best["limit"]
    print(f"[validate-bench] validate --frames all at {ratio:.2f}x the sequential decode "
          f"({'meets' if ratio >= TARGET else 'MISSES'} the {TARGET}x target); CPU time per frame "
          f"{least_cpu['validate'] / least_cpu['limit']:.2f}x the limit's")
    return 0


def render(name: str, root: Path, args: argparse.Namespace, best: dict[str, float], runs: dict[str, list[float]],
           cpu: dict[str, float], frames: int, load: tuple) -> str:
    meta = load_meta(root)
    size = dataset_bytes(root)
    small = (" --small" if args.small else "") + (f" --variant {args.variant}" if args.variant != "av1" else "")
    rows = [
        ("limit: sequential decode of the same MP4s, 1 process per core", "limit"),
        (f"`validate(root, frames=\"all\", workers={args.workers})`", "validate"),
        (f"`lerobot-stream validate ROOT --frames all --workers {args.workers} --json` (process start included)",
         "command"),
    ]
    lines = [
        "# Validating every frame",
        "",
        f"Dataset `{name}`: {meta.total_episodes} episodes, {len(meta.video_keys)} cameras, "
        f"{meta.total_frames} frames per camera ({frames} frames in all), {size['video_files']} MP4s, "
        f"{size['video_bytes'] / 1e6:.1f} MB of video; local disk; best of {args.repeats} interleaved runs.",
        "",
        f"Command: `python -m benchmarks validate{small} --workers {args.workers} --repeats {args.repeats}`",
        "",
        "| track | frames/s | x limit | runs (frames/s) | CPU s per 1000 frames | x limit's CPU |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for label, key in rows:
        shown = ", ".join(f"{r:.0f}" for r in runs[key])
        lines.append(f"| {label} | {best[key]:.0f} | {best[key] / best['limit']:.2f} | {shown} | {cpu[key]:.2f} | "
                     f"{cpu[key] / cpu['limit']:.2f} |")
    lines += [
        "",
        "The limit decodes whole files and checks nothing. Validate fetches each episode as streaming does "
        "(its rows and, per camera, its own bytes of the MP4 as a mini-MP4), matches every row to its frame, "
        "decodes every frame of every camera through the loader's decoders (each frame's time checked) "
        "and also reads the whole data files for the row counts; its time includes starting the helper "
        "processes. The command row adds Python's start and imports. CPU time counts every process of a "
        "track (the least of its runs): it shows what checking costs beyond decoding whatever else the "
        "machine runs, while frames/s also shows how well the track keeps the cores busy.",
    ]
    return "\n".join(lines + machine_section(load)) + "\n"


if __name__ == "__main__":
    sys.exit(main())
