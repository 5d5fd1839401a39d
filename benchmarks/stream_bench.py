"""Streaming benchmark: our loader against the physical limit and LeRobot's readers, one run.

``python -m benchmarks stream [--small]`` serves ``benchmarks/.data`` with nginx on 127.0.0.1
behind the shaping proxy (``--rtt-ms``/``--mbit``), runs every track of :mod:`benchmarks.tracks`
(sequential decode of the same MP4s as the limit; ours uint8 / float32 / 224x224 from local disk,
over HTTP, and over HTTP from the disk cache; LeRobot's readers when its environment is there)
with ``num_workers=2``, and writes ``benchmarks/results/stream.md``, ``stream.png`` and
``stream.json``. Every track reports distinct episodes per batch (from 5 % into the epoch) against
a uniform random sampler's expectation computed from the episode lengths.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from torch.utils.data import DataLoader

from . import limit_track, tracks
from .datasets import DATA_DIR, dataset_bytes, ensure_dataset, spec_for, without_sidecar
from .proxy import ShapingProxy
from .report import results_folder
from .stream_report import write_report


class Bench:
    """Servers, dataset paths and the run loop shared by every track."""

    def __init__(self, args: argparse.Namespace, nginx: Any, proxy: ShapingProxy) -> None:
        self.args, self.nginx, self.proxy = args, nginx, proxy
        self.batch = args.batch_size
        self.skip_batches = 0  # batches before 5 % of the epoch, left out of the episodes-per-batch mean

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
                            collate_fn=tracks.TimedCollate(dataset), multiprocessing_context="fork" if workers else None)
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
            distinct.append(len(set(ids)))  # per batch; averaged from 5 % into the epoch
            episodes.update(ids)
            if first_only:
                break
        end = time.perf_counter()
        monitor.sample()  # the final CPU times and memory, before the workers exit
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
            "main_wait_s": waited, "distinct": self.mixed(distinct),
            "memory_budget": budget.budget if (budget := getattr(dataset, "memory", None)) is not None else None,
            "episodes": sorted(episodes), "has_reader": bool(readers),
        }

    def mixed(self, distinct: list[int]) -> float:
        """Mean distinct episodes per batch from 5 % into the epoch (all batches if the pass is shorter)."""
        later = distinct[self.skip_batches:] or distinct
        return statistics.mean(later) if later else float("nan")

    def bare_row(self, rate: float, *, ttfb: float = float("nan"), distinct: list[int] | None = None,
                 samples: int = 0, wall: float = float("nan")) -> dict[str, Any]:
        """A result row for a track that is not one of our DataLoader passes (limit, LeRobot)."""
        return {"samples": samples, "ttfb": ttfb, "wall": wall, "rate": rate, "wire_bytes": 0, "http_requests": 0,
                "reader_bytes": 0, "fetched_bytes": 0, "fetches": 0, "retries": 0, "peak_rss": 0, "peak_uss": 0,
                "cpu": float("nan"), "server_cpu": float("nan"), "wait_s": float("nan"), "build_s": float("nan"),
                "collate_s": float("nan"), "main_wait_s": float("nan"),
                "distinct": self.mixed(distinct) if distinct else float("nan"), "episodes": [], "has_reader": False}

    def run_cells(self, cells: list[Cell], workers: int) -> list[dict[str, Any]]:
        """Median-of-``repeats`` result of each (track, workers) cell.

        Repeats are interleaved (every track once, then every track again ...), so that a busy moment
        of the shared machine, or the order of the tracks, weighs on every track alike.
        """
        for r in range(self.args.repeats):
            for cell in cells:
                if cell.error is not None:
                    continue
                try:
                    run = cell.run() if cell.run else self.run_once(cell.make, workers, cell.samples)
                except Exception as exc:  # a failing track is reported, the others still run
                    import traceback

                    print(f"[stream] {cell.name} workers={workers} FAILED:\n{traceback.format_exc()}", flush=True)
                    cell.error = f"{type(exc).__name__}: {exc}"
                    continue
                cell.runs.append(run)
                print(f"[stream] {cell.name:12s} w={workers} run {r + 1}: {run['rate']:8.1f} samples/s, "
                      f"first batch {run['ttfb']:.2f}s", flush=True)
        return [self._summary(cell, workers) for cell in cells]

    @staticmethod
    def _summary(cell: Cell, workers: int) -> dict[str, Any]:
        if cell.error is not None:
            return {"track": cell.name, "workers": workers, "error": cell.error}
        runs = sorted(cell.runs, key=lambda x: x["rate"])
        result = dict(runs[len(runs) // 2])
        result.update(track=cell.name, workers=workers, rates=[x["rate"] for x in runs],
                      ttfb=statistics.median(x["ttfb"] for x in runs))
        return result


@dataclass
class Cell:
    """One track at one ``num_workers``: how to make its dataset, and its runs so far."""

    name: str
    make: Callable[[], Any] | None
    samples: int
    run: Callable[[], dict[str, Any]] | None = None  # a pass that is not a DataLoader over make()
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


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


def run_variant(bench: Bench, local: Path, label: str, names: list[str], workers_list: list[int],
                samples: int | None = None) -> list[dict]:
    """Every track of ``names`` on one dataset; ``samples`` per pass (default ``--samples``)."""
    args, rows = bench.args, []
    samples = samples or args.samples
    remote = bench.url(local)
    meta = ready_meta(local)
    lengths = meta.episode_table.length
    uniform = tracks.uniform_distinct(lengths, bench.batch)
    bench.skip_batches = math.ceil(0.05 * int(lengths.sum()) / bench.batch)
    cameras = len(meta.video_keys)
    disk_dir = tempfile.mkdtemp(prefix="disk-cache-", dir=args.scratch)
    if "ours-http-disk" in names:
        start = time.perf_counter()
        tracks.warm_disk_cache(remote, disk_dir, DISK_CACHE_BYTES)
        print(f"[stream] disk cache filled in {time.perf_counter() - start:.1f} s", flush=True)
    common = dict(shuffle=True, seed=args.seed, pool_size=args.pool_size)

    def ours(source: str, epoch: int = 0, plain: bool = False, **options: Any) -> Callable[[], Any]:
        def make() -> Any:
            dataset = tracks.BenchStreaming(source, **common, **options)
            dataset.set_epoch(epoch)
            dataset.plain_collate = plain  # the one-liner: DataLoader(StreamingLeRobot(...)), no collate_fn
            return dataset
        return make

    makers = {
        "ours-local": ours(str(local), return_uint8=True),
        "ours-local-f32": ours(str(local)),
        "ours-local-224": ours(str(local), return_uint8=True, image_size=(224, 224)),
        "ours-local-plain": ours(str(local), plain=True, return_uint8=True),
        "ours-local-f32-plain": ours(str(local), plain=True),
        "ours-http": ours(remote, backend="http", return_uint8=True),
        "ours-http-f32": ours(remote, backend="http"),
        # epoch 1 of a run whose epoch 0 filled the disk cache (warm_disk_cache)
        "ours-http-disk": ours(remote, epoch=1, backend="http", return_uint8=True, cache_dir=disk_dir,
                               disk_cache_bytes=DISK_CACHE_BYTES),
    }
    for workers in workers_list:
        cells = []
        for name in names:
            if name in makers:
                cells.append(Cell(name, makers[name], samples))
            elif name == "limit":
                files = [local / p for p in meta.video_files]
                cells.append(Cell(name, None, samples, run=lambda files=files: _limit_row(bench, files, cameras, samples)))
            elif name in ("lerobot", "lerobot-uint8", "lerobot-streaming"):
                if tracks.lerobot_python() is None:
                    print(f"[stream] no LeRobot environment (LEROBOT_REFERENCE_VENV): {name} skipped", flush=True)
                    continue
                kind = {"lerobot": "map", "lerobot-uint8": "map-uint8"}.get(name, "streaming")
                cells.append(Cell(name, None, samples, run=lambda kind=kind, w=workers: _lerobot_row(
                    bench, local, kind, w, samples)))
        for row in bench.run_cells(cells, workers):
            row.update(variant=label, uniform=uniform)
            rows.append(row)
    return rows


DISK_CACHE_BYTES = 4 << 30


def _limit_row(bench: Bench, files: list[Path], cameras: int, samples: int) -> dict[str, Any]:
    result = limit_track.sequential_decode_rate(files, cameras, samples)
    row = bench.bare_row(result["rate"], samples=int(result["frames"] // cameras), wall=result["wall"])
    row["processes"] = result["processes"]
    return row


def _lerobot_row(bench: Bench, local: Path, kind: str, workers: int, samples: int) -> dict[str, Any]:
    result = tracks.run_lerobot(local, kind, samples=samples, workers=workers, batch=bench.batch,
                                seed=bench.args.seed)
    return bench.bare_row(result["rate"], ttfb=result["ttfb"], distinct=result["distinct"],
                          samples=result["samples"], wall=result["wall"])


_META: dict[Path, Any] = {}


def ready_meta(local: Path) -> Any:
    from lerobot_stream_loader.meta.dataset_meta import load_meta

    if local not in _META:
        _META[local] = load_meta(str(local))
    return _META[local]


def first_batch_without_sidecar(bench: Bench, local: Path, workers_list: list[int]) -> dict[int, float]:
    """Time to first batch of ours-http on a view of the dataset without its index sidecar."""
    remote = bench.url(without_sidecar(local))
    out = {}
    for workers in workers_list:
        times = []
        for _ in range(bench.args.repeats):
            run = bench.run_once(lambda: tracks.BenchStreaming(
                remote, backend="http", shuffle=True, seed=bench.args.seed, pool_size=bench.args.pool_size,
                return_uint8=True), workers, bench.batch, first_only=True)
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


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream", description=__doc__)
    parser.add_argument("--small", action="store_true", help="smoke run (small dataset, few samples)")
    parser.add_argument("--samples", type=int, help="samples per pass (default 1024, small 256)")
    parser.add_argument("--repeats", type=int, help="passes per cell, the median is reported (2, small 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pool-size", type=int, help="open episodes per worker when shuffling (default: the "
                        "loader's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtt-ms", type=float, default=25.0)
    parser.add_argument("--mbit", type=float, default=400.0)
    parser.add_argument("--tracks", nargs="+", default=list(tracks.TRACKS), choices=tracks.TRACKS)
    parser.add_argument("--note", default="", help="a sentence on the run's conditions, printed under the title")
    parser.add_argument("--h264", action="store_true", help="also run ours-http on the H.264 B-frame variant")
    parser.add_argument("--no-droid", dest="droid", action="store_false",
                        help="leave out the DROID-shaped variant (3 cameras 320x180, 15 fps)")
    parser.add_argument("--droid-samples", type=int, default=0,
                        help="samples per pass of the DROID-shaped variant (default 0: one epoch, every sample "
                        "once; its 64 open episodes x 3 cameras take much of a short pass to fill)")
    parser.add_argument("--output", type=Path, help="results folder (default benchmarks/results, with --small "
                        "benchmarks/results/small, which is not committed)")
    args = parser.parse_args(argv)
    args.samples = args.samples or (256 if args.small else 1024)
    args.repeats = args.repeats or (1 if args.small else 2)
    args.output = args.output or results_folder(args.small)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.servers import NginxServer

    args.scratch = tempfile.mkdtemp(prefix="stream-bench-")
    os.environ["LEROBOT_STREAM_CACHE"] = args.scratch  # no sidecar from an earlier run's local cache
    local = ensure_dataset(spec_for(args.small, "av1"))
    h264 = ensure_dataset(spec_for(args.small, "h264")) if args.h264 else None
    droid = ensure_dataset(spec_for(args.small, "droid")) if args.droid else None
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
            rows += run_variant(bench, h264, "h264", [t for t in args.tracks if t in ("limit", "ours-http")],
                                [max(args.workers)])
        if droid is not None:
            epoch = int(ready_meta(droid).episode_table.length.sum())
            rows += run_variant(bench, droid, "droid", [t for t in args.tracks if t in tracks.DROID_TRACKS],
                                args.workers, args.droid_samples or epoch)
        no_sidecar = first_batch_without_sidecar(bench, local, args.workers) if "ours-http" in args.tracks else {}
    context = dict(args=args, argv=argv, calibration=calibration, no_sidecar=no_sidecar,
                   load=(load0, os.getloadavg()), elapsed=time.perf_counter() - started,
                   datasets={p.name: dataset_bytes(p) for p in (local, h264, droid) if p is not None})
    md, png = write_report(rows, context, args.output)
    print(Path(md).read_text())
    print(f"[stream] wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
