"""Storage benchmark: range fetches per backend through the shaping proxy, coalescing and splitting on/off.

``python -m benchmarks storage [--small]`` serves ``benchmarks/.data`` with nginx on 127.0.0.1 behind
the shaping proxy (``--rtt-ms``/``--mbit``) and times ``RangeReader.read_many`` for:

- **episode**: the byte ranges of N episodes, built exactly as the episode cache builds them (parquet
  row group(s) + per camera the MP4 span of the episode), one ``read_many`` per episode with
  ``--depth`` episodes in flight (the cache's prefetch depth and fetch threads);
- **batch**: ``--batch`` consecutive episodes per ``read_many``, one call at a time, so that
  neighbouring spans of one MP4 can be coalesced;
- **raw**: one big range of a random file (``--raw-mib``), split into parts or not; also through a
  second proxy at the same RTT without a rate cap (``--raw-extra-mbit``).

Each cell is timed ``--repeats`` times with a fresh reader (file sizes looked up before the clock
starts); the run with the median wall time is reported. Writes ``benchmarks/results/storage.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from lerobot_stream_loader.fetch.file_indexes import FileIndexes
from lerobot_stream_loader.fetch.sidecar import SidecarLookup
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.storage import RangeReader, ReadRequest, open_reader

from .datasets import DATA_DIR, ensure_dataset, spec_for
from .proxy import ShapingProxy
from .report import machine_section, results_folder
from .stream_bench import calibrate

RAW_DIR = DATA_DIR / "storage-raw"
MIB = 1 << 20
BACKENDS = ("http", "fsspec")


class Setting(NamedTuple):
    """Reader options of one cell: merge gap and part size in bytes (None: off)."""

    coalesce_gap: int | None
    split_size: int | None

    def label(self) -> tuple[str, str]:
        gap = "off" if self.coalesce_gap is None else f"{self.coalesce_gap / MIB:g} MiB"
        split = "off" if self.split_size is None else f"{self.split_size / MIB:g} MiB"
        return gap, split


class Workload(NamedTuple):
    """What one cell fetches: ``groups`` of requests, one ``read_many`` each, ``depth`` at a time."""

    mode: str
    root: str  # relative to DATA_DIR
    groups: list[list[ReadRequest]]
    depth: int
    episodes: int


def episode_requests(local: Path, count: int) -> list[list[ReadRequest]]:
    """Per episode, the range requests the episode cache sends for it (first ``count`` episodes)."""
    meta = load_meta(str(local))
    reader = open_reader(str(local), backend="fsspec")
    try:
        indexes = FileIndexes(reader, root=meta.root, sidecar=SidecarLookup(meta.root, reader))
        out = []
        for episode in meta.episodes[:count]:
            footer = indexes.footer(episode.data_path)
            requests = [ReadRequest(episode.data_path, *footer.ranges[rg])
                        for rg in footer.row_groups_for(episode.index)]
            for video in episode.videos.values():
                span = indexes.mp4(video.path).span(video.from_timestamp, video.to_timestamp)
                requests.append(ReadRequest(video.path, span.byte_offset, span.byte_length))
            out.append(requests)
        return out
    finally:
        reader.close()


def raw_file(mib: int) -> Path:
    """A cached file of ``mib`` MiB of random bytes under ``benchmarks/.data/storage-raw/``."""
    path = RAW_DIR / f"raw-{mib}MiB.bin"
    if not path.is_file() or path.stat().st_size != mib * MIB:
        RAW_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with partial.open("wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MIB))
        partial.rename(path)
    return path


class Bench:
    """Runs cells against nginx (for its access log) behind the proxy."""

    def __init__(self, args: argparse.Namespace, nginx: Any, proxy: ShapingProxy) -> None:
        self.args, self.nginx, self.proxy = args, nginx, proxy

    def reader(self, root: str, backend: str, setting: Setting) -> RangeReader:
        return open_reader(f"{self.proxy.url}/{root}", backend=backend, max_workers=self.args.max_workers,
                           coalesce_gap=setting.coalesce_gap, split_size=setting.split_size, retries=2)

    def run_once(self, work: Workload, backend: str, setting: Setting) -> dict[str, Any]:
        """Time one pass of ``work``; reader counters plus what nginx served."""
        reader = self.reader(work.root, backend, setting)
        try:
            for path in sorted({r.path for group in work.groups for r in group}):
                reader.size(path)
            reader.stats.reset()
            log_start = len(self.nginx.access_log())
            start = time.perf_counter()
            with ThreadPoolExecutor(work.depth) as pool:
                for blobs, group in zip(pool.map(reader.read_many, work.groups), work.groups, strict=True):
                    if [len(b) for b in blobs] != [r.length for r in group]:
                        raise RuntimeError(f"{work.root}: read_many returned wrong lengths for {group}")
            wall = time.perf_counter() - start
            stats = reader.stats.snapshot()
        finally:
            reader.close()
        served = self._served(log_start, int(stats["fetches"]))
        return {"wall": wall, "stats": stats, "gets": sum(e.method == "GET" for e in served),
                "heads": sum(e.method == "HEAD" for e in served), "wire": sum(e.body_bytes for e in served)}

    def _served(self, log_start: int, gets: int) -> list[Any]:
        """Access log entries since ``log_start``, once the ``gets`` GETs are logged (1 s at most)."""
        deadline = time.monotonic() + 1.0
        while True:  # nginx logs a request when its response is done
            served = self.nginx.access_log()[log_start:]
            if sum(e.method == "GET" for e in served) >= gets or time.monotonic() > deadline:
                return served
            time.sleep(0.02)

    def cell(self, work: Workload, backend: str, setting: Setting) -> dict[str, Any]:
        """Median-of-repeats run of one cell (by wall time), or the error it raised."""
        gap, split = setting.label()
        row: dict[str, Any] = {"mode": work.mode, "backend": backend, "gap": gap, "split": split,
                               "episodes": work.episodes}
        runs = []
        for _ in range(self.args.repeats):
            try:
                runs.append(self.run_once(work, backend, setting))
            except Exception as exc:  # one failing cell is reported, the others still run
                return {**row, "error": f"{type(exc).__name__}: {exc}"[:200]}
        runs.sort(key=lambda r: r["wall"])
        row.update(runs[len(runs) // 2], walls=[r["wall"] for r in runs])
        stats = row["stats"]
        print(f"[storage] {work.mode:7s} {backend:6s} gap={gap:7s} split={split:7s} "
              f"{stats['bytes'] / row['wall'] / 1e6:7.1f} MB/s  {stats['fetches']:4d} fetches  "
              f"walls {'/'.join(f'{w:.2f}' for w in row['walls'])} s", flush=True)
        return row


# ------------------------------------------------------------------------------------------- report
COLUMNS = ("mode", "backend", "coalesce gap", "split size", "MB/s", "episodes/s", "wall s (runs)", "requests",
           "fetches", "coalesced", "split parts", "nginx GET/HEAD", "wire MB", "retries", "header ms",
           "first byte ms", "body ms")


def _ms(total: float, count: float) -> str:
    return f"{1000 * total / count:.1f}" if total and count else "-"


def _cells(row: dict[str, Any]) -> list[str]:
    head = [row["mode"], row["backend"], row["gap"], row["split"]]
    if "error" in row:
        return head + ["FAILED: " + row["error"]] + [""] * (len(COLUMNS) - 5)
    s, wall = row["stats"], row["wall"]
    fetches = s["fetches"]
    return head + [
        f"{s['bytes'] / wall / 1e6:.1f}", f"{row['episodes'] / wall:.2f}" if row["episodes"] else "-",
        f"{wall:.2f} ({'/'.join(f'{w:.2f}' for w in row['walls'])})", str(s["requests"]), str(fetches),
        str(s["coalesced"]), str(s["split_parts"]), f"{row['gets']}/{row['heads']}", f"{row['wire'] / 1e6:.1f}",
        str(s["retries"]), _ms(s["header_seconds"], fetches), _ms(s["first_byte_seconds"], fetches),
        _ms(s["body_seconds"], fetches)]


def _rate(rows: list[dict], mode: str, backend: str, gap: str, split: str) -> float | None:
    for row in rows:
        if (row["mode"], row["backend"], row["gap"], row["split"]) == (mode, backend, gap, split) \
                and "error" not in row:
            return row["stats"]["bytes"] / row["wall"]
    return None


def findings(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Ratios of throughput between settings, per backend and mode."""
    gap, split = Setting(args.gap_mib * MIB, args.split_mib * MIB).label()
    out = []
    for backend in args.backends:
        for mode in ("episode", "batch"):
            base = _rate(rows, mode, backend, "off", "off")
            cells = [(f"coalesce {gap}", _rate(rows, mode, backend, gap, "off")),
                     (f"split {split}", _rate(rows, mode, backend, "off", split)),
                     ("both", _rate(rows, mode, backend, gap, split))]
            if base:
                out.append(f"- {mode}, {backend}: MB/s relative to both off: "
                           + ", ".join(f"{name} {rate / base:.2f} x" for name, rate in cells if rate))
        for mode in dict.fromkeys(r["mode"] for r in rows if r["mode"].startswith("raw")):
            base = _rate(rows, mode, backend, gap, "off")
            splits = [r for r in rows if r["mode"] == mode and r["backend"] == backend and r["split"] != "off"
                      and "error" not in r]
            if base and splits:
                out.append(f"- {mode}, {args.raw_mib} MiB range, {backend}: split vs one request: " + ", ".join(
                    f"{r['split']} {r['stats']['bytes'] / r['wall'] / base:.2f} x "
                    f"({r['stats']['fetches']} parts)" for r in splits))
    return out


def write_report(rows: list[dict], context: dict, folder: Path) -> Path:
    """Write storage.md into ``folder``."""
    args, cal = context["args"], context["calibration"]
    folder.mkdir(parents=True, exist_ok=True)
    md = ["# Storage benchmark", "",
          f"Command: `{' '.join(['python -m benchmarks storage', *context['argv']])}` ({context['elapsed']:.0f} s).",
          f"Network: nginx on 127.0.0.1 behind the shaping proxy at {args.rtt_ms:g} ms RTT / {args.mbit:g} Mbit/s "
          f"(measured: {cal['rtt_ms']:.1f} ms per small range request, {cal['mbit']:.0f} Mbit/s on 16 MB, "
          "one connection).",
          f"Dataset {context['dataset']}: first {context['episodes']} episodes, {context['episode_mb']:.1f} MB of "
          f"requested ranges ({context['requests_per_episode']:.1f} ranges per episode: parquet row group(s) + "
          "one MP4 span per camera, as the episode cache requests them).",
          f"episode: one read_many per episode, {args.depth} in flight; batch: {args.batch} consecutive episodes "
          f"per read_many, one at a time; raw: one {args.raw_mib} MiB range of a random file (raw, no cap: through "
          f"a second proxy with the same RTT and no rate cap). Reader "
          f"max_workers={args.max_workers}; fresh reader per run; median of {args.repeats} runs by wall time.", "",
          "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    md += ["", "MB/s: requested bytes / wall time. requests: ranges asked for; fetches: range requests sent "
           "after coalescing (merged into a neighbour: coalesced) and splitting (extra parts: split parts). "
           "nginx GET/HEAD: what the server saw (fsspec also opens files with HEAD requests). wire MB: response "
           "bodies sent by nginx. header / first byte / body ms: mean per fetch, from the reader's stats: request "
           "sent to response headers, headers to the first body chunk, first chunk to the last (summed over "
           "concurrent fetches, so not additive to wall time). The fsspec backend does not time these stages (-). "
           "The proxy delays and rate-caps each direction for all connections together and talks TCP on loopback "
           "at both ends, so no single connection is held back by a TCP window over the RTT: one range can fill "
           "the capped link by itself, and splitting can only pay where one stream is slower than the link.",
           "", "## Findings", ""] + findings(rows, args)
    md += machine_section(context["load"])
    path = folder / "storage.md"
    path.write_text("\n".join(md) + "\n")
    return path


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks storage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="quick run (small dataset, 16 MiB raw range)")
    parser.add_argument("--episodes", type=int, help="episodes to fetch (default 24, small 12)")
    parser.add_argument("--raw-mib", type=int, help="size of the raw single range in MiB (default 64, small 16)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell, the median is reported")
    parser.add_argument("--depth", type=int, default=4, help="episodes in flight in episode mode")
    parser.add_argument("--batch", type=int, default=4, help="consecutive episodes per read_many in batch mode")
    parser.add_argument("--max-workers", type=int, default=8, help="reader fetch threads")
    parser.add_argument("--gap-mib", type=float, default=1.0, help="coalesce gap when coalescing is on")
    parser.add_argument("--split-mib", type=float, default=4.0, help="part size when splitting is on")
    parser.add_argument("--rtt-ms", type=float, default=25.0)
    parser.add_argument("--mbit", type=float, default=400.0)
    parser.add_argument("--raw-extra-mbit", type=float, nargs="*", default=[0.0],
                        help="further link rates for the raw test, same RTT (0: no rate cap)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--modes", nargs="+", default=["episode", "batch", "raw"],
                        choices=["episode", "batch", "raw"])
    parser.add_argument("--output", type=Path, help="results folder (default benchmarks/results; "
                        "benchmarks/results/small with --small)")
    args = parser.parse_args(argv)
    args.output = args.output or results_folder(args.small)
    args.episodes = args.episodes or (12 if args.small else 24)
    args.raw_mib = args.raw_mib or (16 if args.small else 64)
    return args


def workloads(args: argparse.Namespace, local: Path, groups: list[list[ReadRequest]]) -> list[Workload]:
    out = []
    if "episode" in args.modes:
        out.append(Workload("episode", local.name, groups, args.depth, len(groups)))
    if "batch" in args.modes:
        batched = [sum(groups[i:i + args.batch], []) for i in range(0, len(groups), args.batch)]
        out.append(Workload("batch", local.name, batched, 1, len(groups)))
    return out


def run_episodes(bench: Bench, works: list[Workload]) -> list[dict]:
    """Every episode workload x backend x (coalescing, splitting) on/off."""
    args = bench.args
    gap, split = int(args.gap_mib * MIB), int(args.split_mib * MIB)
    rows = []
    for work in works:
        for backend in args.backends:
            for setting in (Setting(None, None), Setting(gap, None), Setting(None, split), Setting(gap, split)):
                rows.append(bench.cell(work, backend, setting))
    return rows


def run_raw(bench: Bench, raw: Path, mode: str) -> list[dict]:
    """The whole of ``raw`` as one range per backend: unsplit, split at --split-mib and at 8 MiB."""
    args = bench.args
    gap, split = int(args.gap_mib * MIB), int(args.split_mib * MIB)
    whole = Workload(mode, raw.parent.name, [[ReadRequest(raw.name, 0, raw.stat().st_size)]], 1, 0)
    splits: list[int | None] = [None, split] + ([8 * MIB] if split != 8 * MIB else [])
    return [bench.cell(whole, backend, Setting(gap, size)) for backend in args.backends for size in splits]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.servers import NginxServer

    local = ensure_dataset(spec_for(args.small, "av1"))
    groups = episode_requests(local, args.episodes)
    raw = raw_file(args.raw_mib) if "raw" in args.modes else None
    load0, started = os.getloadavg(), time.perf_counter()
    with NginxServer(DATA_DIR, max_lifetime=1800) as nginx, \
            ShapingProxy(nginx.port, rtt_ms=args.rtt_ms, mbit=args.mbit, lifetime=1800) as proxy:
        calibration = calibrate(proxy, f"{local.name}/{groups[0][-1].path}")
        print(f"[storage] proxy measured: {calibration}", flush=True)
        bench = Bench(args, nginx, proxy)
        rows = run_episodes(bench, workloads(args, local, groups))
        if raw is not None:
            rows += run_raw(bench, raw, "raw")
            for mbit in args.raw_extra_mbit:
                with ShapingProxy(nginx.port, rtt_ms=args.rtt_ms, mbit=mbit, lifetime=600) as other:
                    rows += run_raw(Bench(args, nginx, other), raw, f"raw, {f'{mbit:g} Mbit/s' if mbit else 'no cap'}")
    context = dict(args=args, argv=sys.argv[1:] if argv is None else list(argv), calibration=calibration,
                   load=(load0, os.getloadavg()), elapsed=time.perf_counter() - started, dataset=local.name,
                   episodes=len(groups), episode_mb=sum(r.length for g in groups for r in g) / 1e6,
                   requests_per_episode=statistics.mean(len(g) for g in groups))
    path = write_report(rows, context, args.output)
    print(path.read_text())
    print(f"[storage] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
