"""Mixing benchmark: a 3-source MixedStreamingLeRobot vs each source alone, and a 100-source mixture's memory.

``python -m benchmarks mix [--small]`` writes three sample datasets that differ in fps, episode
lengths and content but not in per-frame decoding cost (AV1, 2 cameras, same size), serves them
with nginx on 127.0.0.1 behind the shaping proxy (``--rtt-ms``/``--mbit``) and, with DataLoader
workers collating with ``dataset.collate_fn`` (as ``StreamingDataLoader`` does), measures samples/s
(from the batch that completes the first round of workers) of:

- ``single-<x>``: ``StreamingLeRobot(x)`` alone, for each of the three sources;
- ``mix-3``: the three mixed with weights 0.5/0.3/0.2, the same total pool size and budget;
- ``mix-100``: 100 sources (each a StreamingLeRobot of one of the three datasets, its own reader)
  under the same per-worker byte budget, against ``single-a`` with that budget.

The mixture's rate is compared with source a's and with the weighted harmonic mean of the three
single-source rates (what mixing would give with no overhead); for the 100-source case, peak memory
(USS: pages unique to the process), threads and TCP connections per worker are reported against
the budget. Results: ``benchmarks/results/mix.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from torch.utils.data import DataLoader

from .datasets import DATA_DIR, DatasetSpec, ensure_dataset
from .proxy import ShapingProxy
from .report import machine_section, publish, results_folder

WEIGHTS = (0.5, 0.3, 0.2)
DECODER_BYTES = int(0.95 * 2**20)  # an open AV1 decoder of a 320x240 mini-MP4 (USS measured per decoder)


def specs(small: bool) -> dict[str, DatasetSpec]:
    """Three AV1 2-camera datasets of one frame size: fps 30/15/10, different episode lengths."""
    episodes, scale = (24, 1) if small else (48, 2)
    lengths = {"a": (30, 60), "b": (20, 50), "c": (40, 70)}
    return {name: DatasetSpec(name=f"mix-{'small' if small else 'full'}-{name}", episodes=episodes, size=(320, 240),
                              frames_per_episode=(lengths[name][0] * scale, lengths[name][1] * scale), codec="av1",
                              gop=2, bframes=False, episodes_per_video_file=4, episodes_per_data_file=4, fps=fps)
            for name, fps in (("a", 30), ("b", 15), ("c", 10))}


class WorkerMonitor(threading.Thread):
    """Peak RSS/USS, threads and TCP connections of each DataLoader worker (children of this process)."""

    def __init__(self, exclude: set[int], period: float = 0.1, heavy_period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.exclude, self.period = exclude, period
        self.heavy_every = max(1, round(heavy_period / period))  # USS (smaps) and sockets: ~7 ms per process
        self._count = 0
        self.peaks: dict[int, dict[str, int]] = {}
        self.cpu: dict[int, float] = {}  # CPU seconds of each worker (last sample)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample(self._count % self.heavy_every == 0)
            self._count += 1
            self._halt.wait(self.period)

    def sample(self, heavy: bool) -> None:
        for proc in psutil.Process().children(recursive=True):
            if proc.pid in self.exclude:
                continue
            try:
                with proc.oneshot():
                    full = heavy or proc.pid not in self.peaks
                    memory = proc.memory_full_info() if full else proc.memory_info()
                    times = proc.cpu_times()
                    now = {"rss": memory.rss, "threads": proc.num_threads()}
                    if full:
                        now.update(uss=memory.uss, tcp=len(proc.net_connections(kind="tcp")))
            except psutil.Error:
                continue
            peak = self.peaks.setdefault(proc.pid, dict.fromkeys(now, 0))
            for key, value in now.items():
                peak[key] = max(peak.get(key, 0), value)
            self.cpu[proc.pid] = times.user + times.system

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        self.sample(True)
        peaks: dict[str, float] = {key: max((p[key] for p in self.peaks.values()), default=0)
                                   for key in ("rss", "uss", "threads", "tcp")}
        peaks["cpu"] = sum(self.cpu.values())
        return peaks


def run_once(make: Callable[[], Any], args: argparse.Namespace, samples: int) -> dict[str, Any]:
    """One DataLoader pass of ``samples`` samples over ``make()``: rate, first batch, worker peaks."""
    monitor = WorkerMonitor({p.pid for p in psutil.Process().children(recursive=True)})
    monitor.start()
    start = time.perf_counter()
    dataset = make()
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                        collate_fn=dataset.collate_fn, multiprocessing_context="fork")
    arrivals, count = [], 0
    for batch in loader:
        count += len(batch["index"])
        arrivals.append((time.perf_counter(), count))
        if count >= samples:
            break
    del loader
    dataset.close()
    peaks = monitor.stop()
    warm = max(1, args.workers)
    (t0, n0), (t1, n1) = arrivals[warm - 1], arrivals[-1]
    return {"rate": (n1 - n0) / (t1 - t0), "ttfb": arrivals[0][0] - start, "samples": count,
            "cpu_ms": 1000 * peaks.pop("cpu") / count, **peaks}


def median_runs(cells: dict[str, Callable[[], Any]], args: argparse.Namespace, samples: int) -> dict[str, dict]:
    """Median-rate run of each cell; repeats interleaved so that machine noise weighs on all alike."""
    runs: dict[str, list[dict]] = {name: [] for name in cells}
    for r in range(args.repeats):
        for name, make in cells.items():
            run = run_once(make, args, samples)
            runs[name].append(run)
            print(f"[mix] {name:10s} run {r + 1}: {run['rate']:7.1f} samples/s, {run['cpu_ms']:.2f} worker CPU ms "
                  f"per sample, first batch {run['ttfb']:.2f} s, worker peak USS {run['uss'] / 2**20:.0f} MiB", flush=True)
    out = {}
    for name, cell_runs in runs.items():
        ordered = sorted(cell_runs, key=lambda x: x["rate"])
        out[name] = dict(ordered[len(ordered) // 2], rates=[x["rate"] for x in ordered])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="smaller datasets and passes")
    parser.add_argument("--samples", type=int, help="samples per pass (default 1024, small 384)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per cell; the median is reported")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pool-size", type=int, default=8, help="resident episodes per worker (all sources)")
    parser.add_argument("--sources", type=int, default=100, help="sources of the many-source case")
    parser.add_argument("--budget-mib", type=int, default=64, help="cache_bytes of the many-source case")
    parser.add_argument("--buffer", type=int, default=128, help="shuffle_buffer (decoded samples per worker, all "
                        "sources) of the many-source case")
    parser.add_argument("--rtt-ms", type=float, default=25.0)
    parser.add_argument("--mbit", type=float, default=400.0)
    parser.add_argument("--output", type=Path, help="results file (default benchmarks/results/mix.md; "
                        "benchmarks/results/small/mix.md with --small)")
    args = parser.parse_args(argv)
    args.output = args.output or results_folder(args.small) / "mix.md"
    args.samples = args.samples or (384 if args.small else 1024)
    epoch = 2 * args.samples  # samples_per_epoch of the mixtures: more than a pass reads
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from lerobot_stream_loader import MixedStreamingLeRobot, StreamingLeRobot
    from lerobot_stream_loader.plan.decode_order import run_length
    from tests.support.servers import NginxServer

    paths = {name: ensure_dataset(spec) for name, spec in specs(args.small).items()}
    load0, started = os.getloadavg(), time.perf_counter()
    with NginxServer(DATA_DIR, max_lifetime=3600) as nginx, \
            ShapingProxy(nginx.port, rtt_ms=args.rtt_ms, mbit=args.mbit, lifetime=3600) as proxy:
        urls = {name: f"{proxy.url}/{path.relative_to(DATA_DIR).as_posix()}" for name, path in paths.items()}
        common = dict(return_uint8=True)

        def single(name: str, **options: Any) -> Callable[[], Any]:
            return lambda: StreamingLeRobot(urls[name], shuffle=True, pool_size=args.pool_size, **common, **options)

        def mix3() -> Any:
            return MixedStreamingLeRobot([StreamingLeRobot(urls[n], **common) for n in "abc"], weights=WEIGHTS,
                                         samples_per_epoch=epoch, pool_size=args.pool_size)

        rows = median_runs({"single-a": single("a"), "single-b": single("b"), "single-c": single("c"),
                            "mix-3": mix3}, args, args.samples)
        budget = args.budget_mib << 20
        built: dict[str, float] = {}

        def mix_many() -> Any:
            start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                sources = list(pool.map(lambda i: StreamingLeRobot(urls["abc"[i % 3]], **common), range(args.sources)))
            mix = MixedStreamingLeRobot(sources, samples_per_epoch=epoch, cache_bytes=budget,
                                        shuffle_buffer=args.buffer)
            built["seconds"] = time.perf_counter() - start
            built["pool"] = sum(mix.pool_sizes)
            built["buffer"] = sum(mix.shuffle_buffers)  # + one decoded run per source: what may wait decoded
            pairs = zip(mix.pool_sizes, mix.shuffle_buffers, strict=True)
            built["decoded"] = sum(b + run_length(p, b) for p, b in pairs)
            built["decoders"] = mix.decoders
            return mix

        many = median_runs({"single-a@budget": single("a", cache_bytes=budget, shuffle_buffer=args.buffer),
                            f"mix-{args.sources}": mix_many},
                           args, args.samples)
    context = dict(args=args, argv=argv, built=built, load=(load0, os.getloadavg()),
                   elapsed=time.perf_counter() - started)
    publish(args.output, report(rows, many, context))
    return 0


def _row(name: str, run: dict) -> str:
    rates = "/".join(f"{r:.0f}" for r in run["rates"])
    return (f"| {name} | {run['rate']:.1f} | {rates} | {run['cpu_ms']:.2f} | {run['ttfb']:.2f} | "
            f"{run['rss'] / 2**20:.0f} / {run['uss'] / 2**20:.0f} | {run['threads']} | {run['tcp']} |")


def report(rows: dict[str, dict], many: dict[str, dict], context: dict) -> str:
    """The results file: both tables, the ratios against the targets, machine and versions."""
    args = context["args"]
    harmonic = 1 / sum(w / rows[f"single-{n}"]["rate"] for w, n in zip(WEIGHTS, "abc", strict=True))
    cpu = sum(w * rows[f"single-{n}"]["cpu_ms"] for w, n in zip(WEIGHTS, "abc", strict=True))
    mixed = rows["mix-3"]["rate"]
    big, alone = many[f"mix-{args.sources}"], many["single-a@budget"]
    extra = big["uss"] - alone["uss"]
    sample_bytes = 2 * 3 * 320 * 240  # uint8 frames of the two cameras
    cache = args.budget_mib << 20
    decoded = context["built"].get("decoded", args.buffer) * sample_bytes
    decoders = context["built"].get("decoders", 0) * DECODER_BYTES
    bound = cache + decoded + decoders
    header = ["| track | samples/s (median) | runs | worker CPU ms/sample | 1st batch s | peak RSS / USS per "
              "worker MiB | threads | TCP conns |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    lines = [
        "# Mixing benchmark", "",
        f"`python -m benchmarks mix {' '.join(context['argv'] or [])}`".replace(" `", "`"), "",
        f"Three AV1 2-camera {'small ' if args.small else ''}datasets over nginx behind the shaping proxy "
        f"({args.rtt_ms:g} ms RTT, {args.mbit:g} Mbit/s), {args.workers} DataLoader workers, batch "
        f"{args.batch_size}, shuffle, uint8 frames, {args.samples} samples per pass, median of {args.repeats} "
        f"interleaved passes; pool of {args.pool_size} resident episodes per worker (all sources together).", "",
        "## Three sources, weights 0.5/0.3/0.2", "", *header,
        *(_row(name, run) for name, run in rows.items()), "",
        f"- mix-3 / single-a: **{mixed / rows['single-a']['rate']:.2f}x** (target >= 0.9x)",
        f"- mix-3 / weighted harmonic mean of the three single-source rates ({harmonic:.1f} samples/s, mixing "
        f"without overhead): **{mixed / harmonic:.2f}x**",
        f"- worker CPU per sample, mix-3 / weighted mean of the single sources ({cpu:.2f} ms): "
        f"**{rows['mix-3']['cpu_ms'] / cpu:.2f}x** (less sensitive than samples/s to other load on the machine)", "",
        f"## {args.sources} sources under one budget (cache_bytes = {args.budget_mib} MiB, shuffle_buffer = "
        f"{args.buffer})", "", *header,
        *(_row(name, run) for name, run in many.items()), "",
        f"- {args.sources} sources built in {context['built'].get('seconds', float('nan')):.1f} s "
        f"(metadata of each over the proxy, 8 at a time); {context['built'].get('pool', 0)} open episodes and "
        f"{context['built'].get('buffer', 0)} decoded samples per worker in all (at least one of each per source)",
        f"- a worker's bounds: cache_bytes {cache / 2**20:.0f} MiB + decoded samples (shuffle buffers and one run "
        f"per source: {context['built'].get('decoded', 0)}) {decoded / 2**20:.0f} MiB + "
        f"{context['built'].get('decoders', 0)} open decoders (about {DECODER_BYTES / 2**20:.2f} MiB each at 320x240, "
        f"measured apart) {decoders / 2**20:.0f} MiB = {bound / 2**20:.0f} MiB; parsed MP4 indexes and footers "
        "share one cache of 64 MiB, as in a single-source worker; each source's metadata (its episodes table) "
        "and range reader come on top, as a single dataset's do",
        f"- {'met' if extra <= bound else 'MISSED'}: the {args.sources}-source worker stays within those bounds: "
        f"{extra / 2**20:+.0f} MiB of USS above a single-source worker with the same settings "
        f"(**{extra / bound:.2f}x the bounds**; the single-source worker uses part of its own bounds too)",
        f"- the pass reads about {args.samples / args.sources:.0f} samples per source: opening {args.sources} "
        "readers and fetching and decoding a first episode per source weigh on every sample (CPU per sample); "
        "longer passes spread that start",
        f"- peak threads per worker {big['threads']} (single source {alone['threads']}), TCP connections "
        f"{big['tcp']} (single source {alone['tcp']})",
        "", f"Elapsed {context['elapsed']:.0f} s.",
    ]
    return "\n".join(lines + machine_section(context["load"])) + "\n"


if __name__ == "__main__":
    sys.exit(main())
