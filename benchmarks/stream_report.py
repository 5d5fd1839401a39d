"""The streaming benchmark's report: a summary of ratios a user compares, targets, the detail table, the plot."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from lerobot_stream_loader.plan.memory import DEFAULT_MEMORY_BUDGET

from .report import machine_section, machine_title, results_folder

COLUMNS = ("track", "workers", "samples/s", "runs", "1st batch s", "wire MB", "KB/sample", "wire/needed",
           "requests", "retries", "peak RSS/USS per worker MB", "CPU %", "srv CPU %", "wait s", "decode s", "collate s",
           "episodes/batch")


def _cells(row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return [row["track"], str(row["workers"]), "FAILED: " + row["error"][:120]] + [""] * (len(COLUMNS) - 3)
    remote = row["wire_bytes"] > 0
    needed = row.get("needed_bytes") or row["reader_bytes"]
    moved = row["wire_bytes"] if remote else row["fetched_bytes"]
    ratio = f"{moved / needed:.3f}" if needed and moved else "-"
    requests = row["http_requests"] if remote else row["fetches"]
    return [row["track"] + ("" if row["variant"] == "av1" else f" ({row['variant']})"), str(row["workers"]),
            f"{row['rate']:.1f}", "/".join(f"{r:.0f}" for r in row["rates"]), f"{row['ttfb']:.2f}",
            f"{row['wire_bytes'] / 1e6:.1f}", f"{row['wire_bytes'] / 1e3 / max(1, row['samples']):.0f}", ratio,
            str(requests), str(row["retries"]) if row["has_reader"] else "-", f"{row['peak_rss'] / 2**20:.0f}/{row['peak_uss'] / 2**20:.0f}",
            f"{100 * row['cpu']:.0f}", f"{100 * row['server_cpu']:.0f}", f"{row['wait_s']:.2f}", f"{row['build_s']:.2f}",
            f"{row['collate_s']:.2f}", f"{row['distinct']:.1f}"]


def _find(rows: list[dict], track: str, workers: int, variant: str = "av1") -> dict | None:
    for row in rows:
        if row["track"] == track and row["workers"] == workers and row.get("variant") == variant \
                and "error" not in row:
            return row
    return None


LABELS = {
    "limit": "limit: sequential decode, 1 process per core",
    "ours-local": "ours, local disk, uint8",
    "ours-local-f32": "ours, local disk, float32",
    "ours-local-224": "ours, local disk, 224x224 uint8",
    "ours-http": "ours, HTTP, uint8",
    "ours-http-f32": "ours, HTTP, float32",
    "ours-http-disk": "ours, HTTP, disk cache (epoch 2), uint8",
    "ours-local-plain": "ours, the one-liner DataLoader(StreamingLeRobot(...)), uint8",
    "ours-local-f32-plain": "ours, the one-liner DataLoader(StreamingLeRobot(...)), float32",
    "lerobot": "LeRobot LeRobotDataset, local, float32",
    "lerobot-uint8": "LeRobot LeRobotDataset, local, uint8 (return_uint8, as lerobot-train reads)",
    "lerobot-streaming": "LeRobot StreamingLeRobotDataset, local",
}
SMALL_NOTE = ("**Smoke run (`--small`): targets are not judged.** The dataset and the passes are too small for "
              "the ratios to mean anything; the committed results come from the full run.")


def label(row: dict) -> str:
    """A track's name as a user reads it, with its codec variant when it is not the default AV1."""
    name = LABELS.get(row["track"], row["track"])
    return name if row.get("variant", "av1") == "av1" else f"{name} ({row['variant']})"


def targets(rows: list[dict], context: dict, workers: int) -> list[str]:
    """The targets of the speed issue, each met or missed, with the measured ratio."""
    def find(track: str) -> dict | None:
        return _find(rows, track, workers) or (_find(rows, track, os.cpu_count() or 1) if track == "limit" else None)

    limit, lerobot = find("limit"), find("lerobot")
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"- [{'x' if ok else ' '}] {'met' if ok else 'MISSED'}: {text}")

    for track, share in (("ours-local", 0.75), ("ours-http", 0.75), ("ours-local-f32", 0.5), ("ours-http-f32", 0.5)):
        row = find(track)
        if row and limit:
            ratio = row["rate"] / limit["rate"]
            line(ratio >= share, f"{label(row)} >= {share:.2f} x the limit: {ratio:.2f} x")
    for track in ("ours-local", "ours-http", "ours-local-f32"):
        row = find(track)
        if row and row.get("uniform"):
            ratio = row["distinct"] / row["uniform"]
            line(ratio >= 0.8, f"{label(row)}: episodes per batch >= 0.8 x a uniform random sampler's from 5 % into "
                 f"the epoch: {row['distinct']:.1f} / {row['uniform']:.1f} = {ratio:.2f} x")
    ours_f32 = find("ours-local-f32")
    if ours_f32 and lerobot:
        ratio = ours_f32["rate"] / lerobot["rate"]
        line(ratio >= 3, f"float32 from local disk >= 3 x LeRobot's LeRobotDataset (same workers): {ratio:.1f} x")
    for plain, fast in (("ours-local-plain", "ours-local"), ("ours-local-f32-plain", "ours-local-f32")):
        one, row = find(plain), find(fast)
        if one and row:
            ratio = one["rate"] / row["rate"]
            line(ratio >= 0.9, f"{label(one)} >= 0.9 x {label(row)}: {ratio:.2f} x")
    out += droid_targets(rows, workers, line)
    disk, local = find("ours-http-disk"), find("ours-local")
    if disk and local:
        ratio = disk["rate"] / local["rate"]
        line(ratio >= 0.95, f"HTTP + disk cache, epoch 2 >= 0.95 x local disk: {ratio:.2f} x "
             f"({disk['wire_bytes'] / 1e6:.1f} MB from the server in that pass)")
    for row in [r for r in rows if r["track"].startswith("ours") and "error" not in r and r["workers"] == workers]:
        bound = row.get("memory_budget") or MEMORY_BOUND
        line(row["peak_uss"] <= bound, f"{label(row)}: peak unique memory per worker "
             f"{row['peak_uss'] / 2**20:.0f} MiB <= its memory_budget {bound / 2**20:.0f} MiB")
    return out


def droid_targets(rows: list[dict], workers: int, line: Any) -> list[str]:
    """The targets at DROID's shape (3 cameras 320x180): our fast path against the limit and LeRobot's
    reader as its trainer reads it, the one-liner against the fast path, episodes per batch."""
    def find(track: str) -> dict | None:
        return _find(rows, track, workers, "droid") or \
            (_find(rows, track, os.cpu_count() or 1, "droid") if track == "limit" else None)

    limit, fast, plain, lerobot = (find(t) for t in ("limit", "ours-local", "ours-local-plain", "lerobot-uint8"))
    if fast and limit:
        ratio = fast["rate"] / limit["rate"]
        line(ratio >= 0.75, f"DROID's shape: {label(fast)} >= 0.75 x the limit: {ratio:.2f} x")
    if fast and lerobot:
        ratio = fast["rate"] / lerobot["rate"]
        line(ratio >= 3, f"DROID's shape: {label(fast)} >= 3 x {label(lerobot)}: {ratio:.1f} x")
    if fast and plain:
        ratio = plain["rate"] / fast["rate"]
        line(ratio >= 0.9, f"DROID's shape: the one-liner >= 0.9 x the fast path: {ratio:.2f} x")
    if fast and fast.get("uniform"):
        ratio = fast["distinct"] / fast["uniform"]
        line(ratio >= 0.8, f"DROID's shape: episodes per batch >= 0.8 x a uniform random sampler's: "
             f"{fast['distinct']:.1f} / {fast['uniform']:.1f} = {ratio:.2f} x")
    return []


# a track's per-worker memory_budget (its dataset's default, recorded with the row; rows of older runs: the
# default without batches): fetched bytes, decoded samples, decoders and kept batch memory, besides the
# interpreter (lerobot_stream_loader/plan/memory.py)
MEMORY_BOUND = DEFAULT_MEMORY_BUDGET


def summary(rows: list[dict], workers_list: list[int], variant: str = "av1") -> list[str]:
    """samples/s of every track of ``variant`` as a ratio of the limit, and episodes per batch against a
    random sampler."""
    rows = [r for r in rows if r.get("variant", "av1") == variant]
    head = ["| track | " + " | ".join(f"{w} workers: samples/s | x limit | episodes/batch (x uniform)"
                                     for w in workers_list) + " |",
            "|---|" + "---:|---:|---:|" * len(workers_list)]
    names = list(dict.fromkeys(r["track"] for r in rows))
    lines = []
    for name in names:
        cells = []
        for w in workers_list:
            row = _find(rows, name, w, variant) or \
                (_find(rows, name, os.cpu_count() or 1, variant) if name == "limit" else None)
            limit = _find(rows, "limit", w, variant) or _find(rows, "limit", os.cpu_count() or 1, variant)
            if row is None:
                cells += ["-", "-", "-"]
                continue
            mixed = "-" if row["distinct"] != row["distinct"] else (
                f"{row['distinct']:.1f} ({row['distinct'] / row['uniform']:.2f} x)" if row.get("uniform") else
                f"{row['distinct']:.1f}")
            cells += [f"{row['rate']:.0f}", _ratio(row["rate"] / limit["rate"]) if limit else "-", mixed]
        example = next(r for r in rows if r["track"] == name)
        lines.append(f"| {label(example)} | " + " | ".join(cells) + " |")
    uniform = next((r["uniform"] for r in rows if r.get("uniform")), None)
    if uniform:
        lines.append("| uniform random sampler, expected | "
                     + " | ".join(["-", "-", f"{uniform:.1f}"] * len(workers_list)) + " |")
    return head + lines


def _ratio(value: float) -> str:
    return f"{value:.2f} x" if value < 10 else f"{value:.1f} x"


def _dataset_line(context: dict) -> str:
    from .datasets import SPECS

    specs = {spec.name: spec for spec in SPECS.values()}
    parts = []
    for name, files in context["datasets"].items():
        spec = specs.get(name)
        shape = (f"{spec.episodes} episodes, {spec.cameras} cameras {spec.size[0]}x{spec.size[1]} {spec.codec.upper()}"
                 f" (keyframe every {spec.gop}{', B-frames' if spec.bframes else ''}), " if spec else "")
        parts.append(f"{name}: {shape}{files['video_files']} MP4s of {files['video_bytes'] / 1e6:.0f} MB, "
                     f"{files['data_files']} parquet files")
    return "; ".join(parts)


def write_report(rows: list[dict], context: dict, folder: Path) -> tuple[Path, Path]:
    """Write stream.md, stream.png and stream.json (the rows, to redraw without rerunning) into ``folder``."""
    args = context["args"]
    folder.mkdir(parents=True, exist_ok=True)
    cal = context["calibration"]
    context.setdefault("machine", {"title": machine_title(context["load"]), "section": machine_section(context["load"])})
    md = ["# Streaming benchmark", "",
          f"Shuffled frames of {_dataset_line(context)}, served by nginx on 127.0.0.1 behind a proxy "
          f"shaping it to {args.rtt_ms:g} ms RTT / {args.mbit:g} Mbit/s; batch {args.batch_size}. "
          f"Machine: {context['machine']['title']}.", ""]
    if getattr(args, "note", ""):
        md += [f"**Run conditions:** {args.note}", ""]
    if args.small:
        md += [SMALL_NOTE, ""]
    md += ["## Summary", ""] + summary(rows, args.workers)
    if any(r.get("variant") == "droid" for r in rows):
        md += ["", "### DROID's shape: 3 cameras 320x180, 15 fps", ""] + summary(rows, args.workers, "droid")
        passes = sorted({r["samples"] for r in rows if r.get("variant") == "droid" and r.get("samples")})
        md += ["", f"Samples per pass: {', '.join(map(str, passes))} (every track; by default one epoch, every "
               "sample once: the pool of 64 open episodes x 3 cameras fills during the first thousands of "
               "samples, and an epoch pays each episode's fetch and decoder opening once, as training does)."]
    md += ["", "samples/s: steady rate, median of runs; x limit: over the sequential decode of the same MP4s "
           "(one process per core). episodes/batch: distinct episodes in a batch of "
           f"{args.batch_size} from 5 % into the epoch, against the expectation of a uniform random sampler over "
           "all frames (computed from the episode lengths).", ""]
    if args.small:
        md += ["## Targets", "", "Not judged on a smoke run (see above)."]
    else:
        md += ["## Targets", ""] + targets(rows, context, max(args.workers))
    md += ["", "![samples/s, episodes per batch and time to first batch per track](stream.png)", "", "## Details", "",
           f"Command: `{' '.join(['python -m benchmarks stream', *(context['argv'] or [])])}` "
           f"({context['elapsed']:.0f} s). Network measured at {cal['rtt_ms']:.1f} ms per small range request, "
           f"{cal['mbit']:.0f} Mbit/s on 16 MB. {args.samples} samples per pass, "
           f"median of {args.repeats} interleaved runs (every track once, then again); shuffle, seed {args.seed}, "
           f"pool_size={args.pool_size or 'default'}; default cache budget (512 MB), shuffle buffer, prefetch and "
           "decoder settings.", ""]
    md += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    md += ["", "samples/s: steady state, from the arrival of the batch that completes the first round (one batch "
           "per worker, built at the same time) to the last batch. wire: nginx body bytes (remote tracks) or the reader's "
           "fetched bytes (local). wire/needed: wire bytes over bytes of the requested spans (reader stats). "
           "requests: HTTP requests served (local: range "
           "reads). RSS/USS: peak resident (the kernel's high-water mark) / unique memory (read every 3 s and at the end "
           "of the pass) of the busiest worker (the main process with 0 workers). "
           "wait/decode/collate: seconds per process waiting on fetched episodes, building items "
           "(decode), collating. CPU %: all cores of the loader's processes over the pass; srv CPU %: nginx + proxy."]
    md += context["machine"]["section"]
    path = folder / "stream.md"
    path.write_text("\n".join(md) + "\n")
    saved = {"rows": rows, "context": {**context, "args": vars(args)}}
    (folder / "stream.json").write_text(json.dumps(saved, indent=1, default=str) + "\n")
    first = next(iter(context["datasets"]))
    others = f" (+ {', '.join(list(context['datasets'])[1:])})" if len(context["datasets"]) > 1 else ""
    title = (f"{_dataset_line({'datasets': {first: context['datasets'][first]}})}{others}\nover HTTP (nginx, {args.rtt_ms:g} ms RTT, {args.mbit:g} Mbit/s), batch "
             f"{args.batch_size}; {context['machine']['title']}")
    return path, plot(rows, folder / "stream.png", title, small=args.small)


def plot(rows: list[dict], path: Path, title: str, *, small: bool = False) -> Path:
    """Three bar charts on linear axes from zero, per track and workers: samples/s, distinct episodes per
    batch (with a uniform random sampler's expectation and 0.8 x of it as lines), time to first batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    names = list(dict.fromkeys(label(r) for r in ok))
    workers = sorted({r["workers"] for r in ok})
    fig, axes = plt.subplots(1, 3, figsize=(22, 6))
    width = 0.8 / max(1, len(workers))
    charts = (("rate", "{:.0f}", "samples per second (steady state, median of runs)", "Throughput (higher is better)"),
              ("distinct", "{:.1f}", "distinct episodes per batch, from 5 % into the epoch",
               "Episodes per batch (higher is better)"),
              ("ttfb", "{:.1f}", "seconds to the first batch", "Time to first batch (lower is better)"))
    for ax, (key, fmt, ylabel, subtitle) in zip(axes, charts, strict=True):
        for j, w in enumerate(workers):
            values = [next((r[key] for r in ok if r["workers"] == w and label(r) == n), 0.0) for n in names]
            values = [v if v == v else 0.0 for v in values]  # NaN: the track does not measure it
            bars = ax.bar([i + j * width for i in range(len(names))], values, width, label=f"num_workers={w}")
            ax.bar_label(bars, [fmt.format(v) if v else "" for v in values], fontsize=7, padding=2)
        ax.set_xticks([i + width * (len(workers) - 1) / 2 for i in range(len(names))],
                      [textwrap.fill(n, 13, break_long_words=False) for n in names], fontsize=7)
        ax.set_xlabel("track")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.25 * max([r[key] for r in ok if r[key] == r[key]] or [1.0]))
        uniform = next((r["uniform"] for r in ok if r.get("uniform")), None)
        if key == "distinct" and uniform:
            ax.axhline(uniform, color="black", linewidth=1, label=f"uniform random sampler ({uniform:.1f})")
            ax.axhline(0.8 * uniform, color="grey", linestyle="--", linewidth=1, label="0.8 x uniform (target)")
        ax.set_title(subtitle, fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(("SMOKE RUN (--small), not comparable: " if small else "") + title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.stream_report FOLDER``: redraw stream.md and stream.png from FOLDER/stream.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_report", description=main.__doc__)
    parser.add_argument("folder", type=Path, nargs="?", default=results_folder(False))
    folder = parser.parse_args(argv).folder
    saved = json.loads((folder / "stream.json").read_text())
    context = {**saved["context"], "args": argparse.Namespace(**saved["context"]["args"])}
    context["no_sidecar"] = {int(k): v for k, v in context["no_sidecar"].items()}
    for path in write_report(saved["rows"], context, folder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
