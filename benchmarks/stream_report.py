"""The streaming benchmark's report: the markdown table with ratios and targets, and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import machine_section

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
    if t1 and t3:
        out.append(f"- track 1 / track 3 (remote vs local): {t1['rate'] / t3['rate']:.2f} x")
    return out


def write_report(rows: list[dict], context: dict, folder: Path) -> tuple[Path, Path]:
    """Write stream.md and stream.png into ``folder``."""
    args = context["args"]
    folder.mkdir(parents=True, exist_ok=True)
    cal = context["calibration"]
    md = ["# Streaming benchmark", "",
          f"Command: `{' '.join(['python -m benchmarks stream', *(context['argv'] or [])])}`",
          f"({context['elapsed']:.0f} s). Datasets: " + "; ".join(
              f"{k}: {v['video_files']} MP4s {v['video_bytes'] / 1e6:.0f} MB, {v['data_files']} parquet"
              for k, v in context["datasets"].items()) + ".",
          f"Network: nginx on 127.0.0.1 behind the shaping proxy at {args.rtt_ms:g} ms RTT / {args.mbit:g} Mbit/s "
          f"(measured: {cal['rtt_ms']:.1f} ms per small range request, {cal['mbit']:.0f} Mbit/s on 16 MB).",
          f"Batch {args.batch_size}, {args.samples} samples per pass ({args.naive_samples} for naive), median of "
          f"{args.repeats} interleaved runs (every track once, then again); shuffle with pool_size={args.pool_size}, seed {args.seed}; uint8 frames; default "
          "cache budget (512 MB), prefetch and decoder settings.", ""]
    md += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    md += ["", "samples/s: steady state, from the arrival of the batch that completes the first round (one batch "
           "per worker, built at the same time) to the last batch. wire: nginx body bytes (remote tracks) or the reader's "
           "fetched bytes (local). wire/needed: wire bytes over bytes of the requested spans (ours: reader stats; "
           "naive: keyframe-to-frame samples of the frames read). requests: HTTP requests served (local: range "
           "reads). RSS/USS: peak resident / unique memory of the busiest worker (the main process with 0 workers). "
           "wait/decode/collate: seconds per process waiting on fetched episodes, building items "
           "(decode), collating. CPU %: all cores of the loader's processes over the pass; srv CPU %: nginx + proxy.", "", "## Ratios and targets", ""]
    for workers in args.workers:
        t1, t3, t4, t5 = (_find(rows, t, workers) for t in ("ours-http", "ours-local", "decode-only", "naive"))
        ratios = [f"{a}/{b} = {x['rate'] / y['rate']:.2f}" for a, b, x, y in
                  (("track1", "track4", t1, t4), ("track1", "track5", t1, t5), ("track1", "track3", t1, t3)) if x and y]
        md.append(f"- {workers} workers: " + ", ".join(ratios))
    md += [""] + targets(rows, context, max(args.workers))
    md += machine_section(context["load"])
    path = folder / "stream.md"
    path.write_text("\n".join(md) + "\n")
    return path, _plot(rows, folder / "stream.png")


def _plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    names = list(dict.fromkeys(r["track"] + ("" if r["variant"] == "av1" else f"\n({r['variant']})") for r in ok))
    workers = sorted({r["workers"] for r in ok})
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(1, len(workers))
    for j, w in enumerate(workers):
        for ax, key in zip(axes, ("rate", "ttfb"), strict=True):
            values = [next((r[key] for r in ok if r["workers"] == w and r["track"] + (
                "" if r["variant"] == "av1" else f"\n({r['variant']})") == n), 0) for n in names]
            ax.bar([i + j * width for i in range(len(names))], values, width, label=f"num_workers={w}")
    for ax, title in zip(axes, ("samples/s (median of runs, log scale)", "time to first batch (s)"), strict=True):
        ax.set_xticks([i + width * (len(workers) - 1) / 2 for i in range(len(names))], names, fontsize=8)
        ax.set_title(title)
        ax.legend()
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
