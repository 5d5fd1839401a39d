"""Streaming benchmark: our loader vs its decode-only ceiling vs the naive remote reader, one run.

``python -m benchmarks stream [--small]`` serves ``benchmarks/.data`` with nginx on 127.0.0.1
behind the shaping proxy (``--rtt-ms``/``--mbit``), runs every track of :mod:`benchmarks.tracks`
with ``num_workers`` in {0, 2}, and writes ``benchmarks/results/stream.md`` and ``stream.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.utils.data import DataLoader

from . import tracks
from .datasets import DATA_DIR, dataset_bytes, ensure_dataset, spec_for, without_sidecar
from .proxy import ShapingProxy
from .report import machine_section

RESULTS = Path(__file__).parent / "results"


class Bench:
    """Servers, dataset paths and the run loop shared by every track."""

    def __init__(self, args: argparse.Namespace, nginx: Any, proxy: ShapingProxy) -> None:
        self.args, self.nginx, self.proxy = args, nginx, proxy
        self.batch = args.batch_size

    def url(self, path: Path) -> str:
        return f"{self.proxy.url}/{path.relative_to(DATA_DIR).as_posix()}"

    def run_once(self, make: Callable[[], Any], workers: int, samples: int, *, sampler: Any = None,
                 first_only: bool = False) -> dict[str, Any]:
        """Time one DataLoader pass over ``samples`` samples of the dataset ``make()`` returns."""
        folder = tempfile.mkdtemp(prefix="probe-", dir=self.args.scratch)
        exclude = {p.pid for p in psutil.Process().children(recursive=True)}
        log_start = len(self.nginx.access_log())
        monitor = tracks.Monitor(exclude)
        monitor.start()
        start = time.perf_counter()
        dataset = make()
        dataset.probe_folder = folder
        loader = DataLoader(dataset, batch_size=self.batch, num_workers=workers, sampler=sampler,
                            collate_fn=tracks.timed_collate, multiprocessing_context="fork" if workers else None)
        count, first, waited, distinct, episodes = 0, 0.0, 0.0, [], set()
        arrivals: list[tuple[float, int]] = []  # (time, samples so far) at each batch
        iterator = iter(loader)
        while count < samples:
            before = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            now = time.perf_counter()
            waited += now - before
            first = first or now
            count += len(batch["index"])
            arrivals.append((now, count))
            ids = batch["episode_index"].tolist()
            distinct.append(len(set(ids)))
            episodes.update(ids)
            if first_only:
                break
        end = time.perf_counter()
        del iterator, loader
        if hasattr(dataset, "close"):
            dataset.close()
        system = monitor.stop()
        time.sleep(0.2)  # nginx logs a request when its response is done
        served = self.nginx.access_log()[log_start:]
        probes = tracks.read_probes(folder)
        readers = [p["reader"] for p in probes if p.get("reader")]
        stage = {k: sum(p["seconds"][k] for p in probes) / max(1, len(probes)) for k in ("next", "build", "collate")}
        wall = end - start
        return {
            "samples": count, "ttfb": first - start, "wall": wall,
            "rate": steady_rate(arrivals, workers),
            "wire_bytes": sum(e.body_bytes for e in served), "http_requests": len(served),
            "reader_bytes": sum(r["bytes"] for r in readers), "fetched_bytes": sum(r["fetched_bytes"] for r in readers),
            "fetches": sum(r["fetches"] for r in readers), "retries": sum(r["retries"] for r in readers),
            "peak_rss": system["peak_rss"], "peak_uss": system["peak_uss"], "cpu": system["cpu_seconds"] / wall / (os.cpu_count() or 1),
            "server_cpu": system["server_seconds"] / wall / (os.cpu_count() or 1),
            "wait_s": stage["next"] - stage["build"], "build_s": stage["build"], "collate_s": stage["collate"],
            "main_wait_s": waited, "distinct": statistics.mean(distinct) if distinct else float("nan"),
            "episodes": sorted(episodes), "has_reader": bool(readers),
        }

    def track(self, name: str, make: Callable[[], Any], workers: int, samples: int, *,
              sampler: Callable[[], Any] | None = None) -> dict[str, Any] | None:
        """Median-of-``repeats`` result of one (track, workers) cell; None when it failed."""
        runs = []
        for r in range(self.args.repeats):
            try:
                runs.append(self.run_once(make, workers, samples, sampler=sampler() if sampler else None))
            except Exception as exc:  # a failing track is reported, the others still run
                import traceback

                print(f"[stream] {name} workers={workers} FAILED:\n{traceback.format_exc()}", flush=True)
                return {"track": name, "workers": workers, "error": f"{type(exc).__name__}: {exc}"}
            print(f"[stream] {name:12s} w={workers} run {r + 1}: {runs[-1]['rate']:8.1f} samples/s, "
                  f"first batch {runs[-1]['ttfb']:.2f}s", flush=True)
        runs.sort(key=lambda x: x["rate"])
        result = dict(runs[len(runs) // 2])
        result.update(track=name, workers=workers, rates=[x["rate"] for x in runs],
                      ttfb=statistics.median(x["ttfb"] for x in runs))
        return result


def steady_rate(arrivals: list[tuple[float, int]], workers: int) -> float:
    """Samples per second once every worker has delivered its first batch.

    With ``w`` workers the first ``w`` batches are built at the same time, so they arrive almost
    together; counting from the first of them would credit the loader with batches it built while
    the clock was not running. The rate is measured from the arrival of the ``w``-th batch on.
    """
    warm = max(1, workers)
    if len(arrivals) <= warm:
        return float("nan")
    (t0, n0), (t1, n1) = arrivals[warm - 1], arrivals[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def _per_worker(samples: int, batch: int, workers: int) -> int:
    return math.ceil(samples / batch / max(1, workers)) * batch + 3 * batch


def run_variant(bench: Bench, local: Path, label: str, names: list[str], workers_list: list[int]) -> list[dict]:
    args, rows = bench.args, []
    remote = bench.url(local)
    common = dict(shuffle=True, seed=args.seed, pool_size=args.pool_size, return_uint8=True)
    makers = {
        "ours-http": lambda w: lambda: tracks.BenchStreaming(remote, backend="http", num_workers=w, **common),
        "ours-fsspec": lambda w: lambda: tracks.BenchStreaming(remote, backend="fsspec", num_workers=w, **common),
        "ours-local": lambda w: lambda: tracks.BenchStreaming(str(local), num_workers=w, **common),
    }
    for workers in workers_list:
        per_worker = _per_worker(args.samples, bench.batch, workers)
        for name in names:
            row = None
            if name in makers:
                row = bench.track(name, makers[name](workers), workers, args.samples)
            elif name == "decode-only":
                ready = tracks.DecodeOnly(str(local), workers=workers, per_worker=per_worker, seed=args.seed,
                                          pool_size=args.pool_size)
                row = bench.track(name, lambda ready=ready: ready, workers, args.samples)
            elif name == "naive":
                items = tracks.planned_items(ready_meta(local), workers, per_worker, seed=args.seed,
                                             pool_size=args.pool_size)
                order = torch.randperm(len(items), generator=torch.Generator().manual_seed(args.seed)).tolist()
                row = bench.track(name, lambda items=items: tracks.NaiveRemote(remote, items), workers,
                                  args.naive_samples, sampler=lambda order=order: order)
                if row and "error" not in row:
                    used = [items[i] for i in order[: row["samples"]]]
                    row["needed_bytes"] = tracks.naive_needed(ready_meta(local), local, used)
            elif name == "lerobot":
                if tracks.lerobot_streaming(str(local), args.seed) is None:
                    print("[stream] lerobot is not importable: track 6 skipped", flush=True)
                    continue
                row = bench.track(name, lambda: tracks.lerobot_streaming(str(local), args.seed), workers,
                                  args.samples)
            if row is not None:
                row["variant"] = label
                rows.append(row)
    return rows


_META: dict[Path, Any] = {}


def ready_meta(local: Path) -> Any:
    from lerobot_stream_loader.meta import load_meta

    if local not in _META:
        _META[local] = load_meta(str(local))
    return _META[local]


def first_batch_without_sidecar(bench: Bench, local: Path, workers_list: list[int]) -> dict[int, float]:
    """Time to first batch of track 1 on a view of the dataset without its index sidecar."""
    remote = bench.url(without_sidecar(local))
    out = {}
    for workers in workers_list:
        times = []
        for _ in range(bench.args.repeats):
            run = bench.run_once(lambda w=workers: tracks.BenchStreaming(
                remote, backend="http", num_workers=w, shuffle=True, seed=bench.args.seed,
                pool_size=bench.args.pool_size, return_uint8=True), workers, bench.batch, first_only=True)
            times.append(run["ttfb"])
        out[workers] = statistics.median(times)
        print(f"[stream] no sidecar w={workers}: first batch {out[workers]:.2f}s", flush=True)
    return out


def calibrate(proxy: ShapingProxy, path: str) -> dict[str, float]:
    """Measured round trip of a tiny range request and throughput of a 16 MB one through the proxy."""
    import httpx

    with httpx.Client(timeout=30) as client:
        client.get(f"{proxy.url}/{path}", headers={"Range": "bytes=0-15"})
        small = []
        for _ in range(5):
            t = time.perf_counter()
            client.get(f"{proxy.url}/{path}", headers={"Range": "bytes=0-15"})
            small.append(time.perf_counter() - t)
        t = time.perf_counter()
        body = client.get(f"{proxy.url}/{path}", headers={"Range": f"bytes=0-{(16 << 20) - 1}"}).content
        big = time.perf_counter() - t
    return {"rtt_ms": statistics.median(small) * 1000, "mbit": len(body) * 8 / big / 1e6}


# ------------------------------------------------------------------------------------------- report
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
          f"{args.repeats}; shuffle with pool_size={args.pool_size}, seed {args.seed}; uint8 frames; default "
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


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream", description=__doc__)
    parser.add_argument("--small", action="store_true", help="smoke run (small dataset, few samples)")
    parser.add_argument("--samples", type=int, help="samples per pass (default 1024, small 256)")
    parser.add_argument("--naive-samples", type=int, help="samples per naive pass (default 192, small 128): at least two batches "
                        "per worker after the first round")
    parser.add_argument("--repeats", type=int, help="passes per cell, the median is reported (3, small 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pool-size", type=int, default=8, help="resident episodes per worker when shuffling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtt-ms", type=float, default=25.0)
    parser.add_argument("--mbit", type=float, default=400.0)
    parser.add_argument("--tracks", nargs="+", default=list(tracks.TRACKS), choices=tracks.TRACKS)
    parser.add_argument("--no-h264", action="store_true", help="skip the H.264 B-frame variant")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.samples = args.samples or (256 if args.small else 1024)
    args.naive_samples = args.naive_samples or (128 if args.small else 192)
    args.repeats = args.repeats or (1 if args.small else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.servers import NginxServer

    args.scratch = tempfile.mkdtemp(prefix="stream-bench-")
    os.environ["LEROBOT_STREAM_CACHE"] = args.scratch  # no sidecar from an earlier run's local cache
    local = ensure_dataset(spec_for(args.small, "av1"))
    h264 = None if args.no_h264 else ensure_dataset(spec_for(args.small, "h264"))
    load0 = os.getloadavg()
    started = time.perf_counter()
    with NginxServer(DATA_DIR, max_lifetime=1800) as nginx, \
            ShapingProxy(nginx.port, rtt_ms=args.rtt_ms, mbit=args.mbit, lifetime=1800) as proxy:
        bench = Bench(args, nginx, proxy)
        video = ready_meta(local).video_files[0]
        calibration = calibrate(proxy, f"{local.name}/{video}")
        print(f"[stream] proxy measured: {calibration}", flush=True)
        rows = run_variant(bench, local, "av1", args.tracks, args.workers)
        if h264 is not None:
            rows += run_variant(bench, h264, "h264", [t for t in args.tracks if t in ("ours-http", "decode-only")],
                                [max(args.workers)])
        no_sidecar = first_batch_without_sidecar(bench, local, args.workers) if "ours-http" in args.tracks else {}
    context = dict(args=args, argv=argv, calibration=calibration, no_sidecar=no_sidecar,
                   load=(load0, os.getloadavg()), elapsed=time.perf_counter() - started,
                   datasets={p.name: dataset_bytes(p) for p in (local, h264) if p is not None})
    md, png = write_report(rows, context, args.output)
    print(Path(md).read_text())
    print(f"[stream] wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
