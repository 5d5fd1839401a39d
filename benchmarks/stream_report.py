"""The streaming benchmark's report: a summary of ratios a user compares, targets, the detail table, the plot."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

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
    "ours-http": "ours, native HTTP",
    "ours-fsspec": "ours, fsspec HTTP",
    "ours-local": "ours, local disk",
    "decode-only": "decode-only limit",
    "naive": "naive remote (torchcodec per MP4)",
    "lerobot": "LeRobot's streaming dataset",
}
SMALL_NOTE = ("**Smoke run (`--small`): targets are not judged.** The dataset and the passes are too small for "
              "the ratios to mean anything; the committed results come from the full run.")


def label(row: dict) -> str:
    """A track's name as a user reads it, with its codec variant when it is not the default AV1."""
    name = LABELS.get(row["track"], row["track"])
    return name if row.get("variant", "av1") == "av1" else f"{name} ({row['variant']})"


def targets(rows: list[dict], context: dict, workers: int) -> list[str]:
    t1, t3, t4, t5 = (_find(rows, t, workers) for t in ("ours-http", "ours-local", "decode-only", "naive"))
    out = []
    def line(ok: bool, text: str) -> None:
        out.append(f"- [{'x' if ok else ' '}] {'met' if ok else 'MISSED'}: {text}")
    if t1 and t4:
        line(t1["rate"] >= 0.9 * t4["rate"], f"track 1 >= 0.90 x track 4 ({workers} workers): "
             f"{t1['rate'] / t4['rate']:.2f} x")
    if t1 and t5:
        line(t1["rate"] >= 10 * t5["rate"], f"track 1 >= 10 x track 5: {t1['rate'] / t5['rate']:.1f} x")
    if t1 and t1["reader_bytes"]:
        ratio = t1["wire_bytes"] / t1["reader_bytes"]
        line(ratio <= 1.05, f"bytes on the wire <= 1.05 x needed: {ratio:.3f} x (nginx body bytes / bytes of the "
             f"requested spans; reader's own fetched/requested {t1['fetched_bytes'] / t1['reader_bytes']:.3f})")
    if t1:
        nos = context["no_sidecar"].get(workers)
        line(t1["ttfb"] <= 2.0, f"time to first batch <= 2 s with the sidecar: {t1['ttfb']:.2f} s"
             + (f"; without a sidecar {nos:.2f} s" if nos is not None else ""))
        budget = 512 << 20
        line(t1["peak_uss"] <= budget + (600 << 20), f"peak memory per worker <= cache budget (512 MB) + 600 MB: "
             f"{t1['peak_uss'] / 2**20:.0f} MB unique (USS); RSS {t1['peak_rss'] / 2**20:.0f} MB also counts "
             "pages shared with the parent after fork")
    return out


def summary(rows: list[dict], workers_list: list[int]) -> list[str]:
    """The few numbers a user compares: our samples/s, and the alternatives' as ratios of ours."""
    head = ["| | " + " | ".join(f"{w} workers" for w in workers_list) + " |", "|---|" + "---:|" * len(workers_list)]

    def rate_line(text: str, track: str) -> str | None:
        cells = [_find(rows, track, w) for w in workers_list]
        if not any(cells):
            return None
        return f"| {text} | " + " | ".join(f"{c['rate']:.0f}" if c else "-" for c in cells) + " |"

    def ratio_line(text: str, track: str) -> str | None:
        pairs = [(_find(rows, "ours-http", w), _find(rows, track, w)) for w in workers_list]
        if not any(a and b for a, b in pairs):
            return None
        return f"| {text} | " + " | ".join(_ratio(a["rate"] / b["rate"]) if a and b and b["rate"] else "-"
                                          for a, b in pairs) + " |"

    lines = [
        rate_line("**ours over HTTP: samples/s**", "ours-http"),
        ratio_line("ours / decoding the same frames from memory (the limit; 1.0 = no cost for streaming)",
                   "decode-only"),
        ratio_line("ours / naive remote reading (torchcodec on an fsspec HTTP file per MP4)", "naive"),
        ratio_line("ours / LeRobot's streaming dataset", "lerobot"),
        ratio_line("ours over HTTP / ours from local disk", "ours-local"),
    ]
    firsts = [_find(rows, "ours-http", w) for w in workers_list]
    if any(firsts):
        lines.append("| time to the first batch, ours over HTTP | "
                     + " | ".join(f"{c['ttfb']:.2f} s" if c else "-" for c in firsts) + " |")
    return head + [x for x in lines if x]


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
          f"shaping it to {args.rtt_ms:g} ms RTT / {args.mbit:g} Mbit/s; batch {args.batch_size}, uint8 frames. "
          f"Machine: {context['machine']['title']}.", ""]
    if args.small:
        md += [SMALL_NOTE, ""]
    md += ["## Summary", ""] + summary(rows, args.workers)
    md += ["", "samples/s: steady rate, median of runs. A ratio above 1 means ours is faster.", ""]
    if args.small:
        md += ["## Targets", "", "Not judged on a smoke run (see above)."]
    else:
        md += ["## Targets", ""] + targets(rows, context, max(args.workers))
    md += ["", "![samples/s and time to first batch per track](stream.png)", "", "## Details", "",
           f"Command: `{' '.join(['python -m benchmarks stream', *(context['argv'] or [])])}` "
           f"({context['elapsed']:.0f} s). Network measured at {cal['rtt_ms']:.1f} ms per small range request, "
           f"{cal['mbit']:.0f} Mbit/s on 16 MB. {args.samples} samples per pass ({args.naive_samples} for naive), "
           f"median of {args.repeats} interleaved runs (every track once, then again); shuffle with "
           f"pool_size={args.pool_size}, seed {args.seed}; default cache budget (512 MB), prefetch and decoder "
           "settings. Track numbers: 1 ours-http, 2 ours-fsspec, 3 ours-local, 4 decode-only, 5 naive, 6 lerobot.", ""]
    md += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    md += ["", "samples/s: steady state, from the arrival of the batch that completes the first round (one batch "
           "per worker, built at the same time) to the last batch. wire: nginx body bytes (remote tracks) or the reader's "
           "fetched bytes (local). wire/needed: wire bytes over bytes of the requested spans (ours: reader stats; "
           "naive: keyframe-to-frame samples of the frames read). requests: HTTP requests served (local: range "
           "reads). RSS/USS: peak resident / unique memory of the busiest worker (the main process with 0 workers). "
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
    """Two bar charts on linear axes from zero: samples/s and time to first batch, per track and workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    names = list(dict.fromkeys(label(r) for r in ok))
    workers = sorted({r["workers"] for r in ok})
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.6))
    width = 0.8 / max(1, len(workers))
    charts = (("rate", "{:.0f}", "samples per second (steady state, median of runs)", "Throughput (higher is better)"),
              ("ttfb", "{:.1f}", "seconds to the first batch", "Time to first batch (lower is better)"))
    for ax, (key, fmt, ylabel, subtitle) in zip(axes, charts, strict=True):
        for j, w in enumerate(workers):
            values = [next((r[key] for r in ok if r["workers"] == w and label(r) == n), 0.0) for n in names]
            bars = ax.bar([i + j * width for i in range(len(names))], values, width, label=f"num_workers={w}")
            ax.bar_label(bars, [fmt.format(v) if v else "" for v in values], fontsize=7, padding=2)
        ax.set_xticks([i + width * (len(workers) - 1) / 2 for i in range(len(names))],
                      [textwrap.fill(n, 16) for n in names], fontsize=7)
        ax.set_xlabel("track")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.25 * max([r[key] for r in ok] or [1.0]))
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
