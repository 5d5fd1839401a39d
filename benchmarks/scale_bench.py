"""``python -m benchmarks scale [--small]``: the loader on a DROID-sized dataset (rank 311 of 512).

For each dataset size (default 10k and 100k episodes; ``--small``: 2k and 10k), local and over nginx,
fork and spawn, with and without the index sidecar, one fresh process measures: constructor time
and memory growth, per-worker memory (RSS and USS) at the first batch, time to the first batch and
the requests made before it (file reads vs everything else). Plus padding per epoch at 512 x 8
readers and metadata-only numbers at 1M episodes (``--small``: 100k). Table and plot go to
``benchmarks/results/scale.md`` / ``scale.png`` (``--small``: ``benchmarks/results/small/``, no
target judged).

Requests to the Hub (``--resolves-only`` runs just this part, in about a minute): one epoch of 2 ranks
x 2 workers on one machine against the Hub stand-in (tests/support/servers.py), for each
``resolve=`` mode, counts resolves per file; from those counts and the plan at DROID size (100k
episodes, 4,000 files, 512 ranks x 8 workers, 64 readers per machine) it computes the resolves per
machine and per job of an epoch, against the free tier's 5,000 per 5 minutes. Written to
``benchmarks/results/hub_budget.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .report import results_folder
from .scale_data import write_scale_dataset

DATA = Path(__file__).parent / ".data" / "scale"
RANK, WORLD, WORKERS = 311, 512, 2
EQUAL_POOL = 8  # pool_size of the rows that compare worker memory across dataset sizes
TARGETS = {"constructor_s": 3.0, "constructor_mb": 200.0, "first_batch_s": 5.0, "other_requests_per_worker": 20}


def dataset(episodes: int, metadata_only: bool = False) -> Path:
    """The generated dataset folder (written once, kept under benchmarks/.data/scale)."""
    root = DATA / (f"meta-{episodes}" if metadata_only else f"ds-{episodes}")
    if not (root / "meta/info.json").is_file():
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        write_scale_dataset(staging, episodes, metadata_only=metadata_only)
        staging.rename(root)
    return root


def without_sidecar(root: Path) -> Path:
    """A view of ``root`` without its sidecar (symlinked folders, so nothing is copied)."""
    view = root.with_name(root.name + "-nosidecar")
    if not view.exists():
        (view / "meta").mkdir(parents=True)
        for item in root.iterdir():
            if item.name != "meta":
                (view / item.name).symlink_to(item.resolve())
        for item in (root / "meta").iterdir():
            if item.name != "mp4_index.bin":
                (view / "meta" / item.name).symlink_to(item.resolve())
    return view


# ------------------------------------------------------------------------------------ the measured child
def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns the numbers."""
    import psutil
    from torch.utils.data import DataLoader

    from lerobot_stream_loader import StreamingLeRobot

    me = psutil.Process()
    log = Path(args.access_log) if args.access_log else None

    def logged() -> int:
        time.sleep(0.3)  # nginx writes a line once its response is done
        return len(log.read_text().splitlines()) if log and log.exists() else 0

    rss0, t0 = me.memory_info().rss, time.perf_counter()
    ds = StreamingLeRobot(args.url, shuffle=True, seed=0, rank=RANK, world_size=WORLD, cache_dir=args.cache_dir,
                          pool_size=args.pool_size)
    out: dict[str, Any] = {"constructor_s": time.perf_counter() - t0,
                           "constructor_mb": (me.memory_info().rss - rss0) / 2**20,
                           "len": len(ds), "pickled_kb": len(pickle.dumps(ds)) / 1024,
                           # episodes a worker keeps open: its pool, unless its shard holds fewer episodes
                           "open_episodes": min(ds.pool_size, -(-len(ds.episodes) // (WORLD * WORKERS)))}
    start_line = logged()
    loader = DataLoader(ds, batch_size=32, num_workers=WORKERS, multiprocessing_context=args.context, timeout=600)
    t1 = time.perf_counter()
    it = iter(loader)
    next(it)
    out["first_batch_s"] = time.perf_counter() - t1
    workers = [psutil.Process(w.pid).memory_full_info() for w in it._workers]  # noqa: SLF001
    out["worker_rss_mb"] = max(w.rss for w in workers) / 2**20
    out["worker_uss_mb"] = max(w.uss for w in workers) / 2**20
    del it, loader
    if log:
        lines = log.read_text().splitlines()[start_line:logged()]
        reads = [line for line in lines if "\tGET\t" in line and ("/data/" in line or ".mp4" in line)]
        out["requests"] = len(lines)
        out["file_reads"] = len(reads)
        out["other_requests_per_worker"] = (len(lines) - len(reads)) / WORKERS
    return out


def run_child(url: str, context: str, cache_dir: Path, access_log: Path | None,
              pool_size: int | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.scale_bench", "--child", url, "--context", context,
           "--cache-dir", str(cache_dir)] + (["--access-log", str(access_log)] if access_log else []) + \
        (["--pool-size", str(pool_size)] if pool_size else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise RuntimeError(f"child failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ the parent
def padding_at_512x8(root: Path) -> dict[str, float]:
    from lerobot_stream_loader.dataset import plan_input
    from lerobot_stream_loader.meta.dataset_meta import load_meta
    from lerobot_stream_loader.plan.shard import assign_shards

    meta = load_meta(root, check_files=False)
    episodes = plan_input(meta, meta.episode_table.index)
    out = {}
    for drop_last in (False, True):
        a = assign_shards(episodes, world_size=512, num_workers=8, shuffle=True, epoch=1, drop_last=drop_last)
        waste = np.abs(a.targets - a.frames_per_shard()).sum()
        out["dropped" if drop_last else "padded"] = float(waste / meta.total_frames)
        out["split_episodes"] = float(len(a.episode) - len(meta.episode_table))
    return out


def metadata_only(episodes: int, url: str, cache: Path) -> dict[str, Any]:
    """Constructor (cold and warm cache), len(), one reader's plan at 512 x 8, pickled size."""
    code = f"""
import json, pickle, time, psutil
from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.plan.shard import plan_shard
me = psutil.Process(); out = {{}}
for phase in ("cold", "warm"):
    rss, t = me.memory_info().rss, time.perf_counter()
    ds = StreamingLeRobot({url!r}, shuffle=True, rank={RANK}, world_size={WORLD}, cache_dir={str(cache)!r},
                          pool_size=64)
    out[phase + "_s"] = time.perf_counter() - t; out[phase + "_mb"] = (me.memory_info().rss - rss) / 2**20
t = time.perf_counter(); plan = plan_shard(ds._plan_episodes, rank={RANK}, world_size={WORLD}, worker_id=3,
    num_workers=8, shuffle=True, pool_size=ds.pool_size)
out["plan_s"] = time.perf_counter() - t; out["len"] = len(ds); out["pickled_kb"] = len(pickle.dumps(ds)) / 1024
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return {"episodes": episodes, **json.loads(done.stdout.strip().splitlines()[-1])}


# ------------------------------------------------------------------------------------ requests to the Hub
HUB_TOKEN = "hf_bench_token_0123456789"
MODES = ("process", "machine", "job")
FREE_TIER = 5_000  # resolves per token per 5 minutes, the Hub's free tier
DROID = {"episodes": 100_000, "episodes_per_file": 100, "cameras": 3, "ranks": 512, "workers": 8,
         "ranks_per_machine": 8, "sampled_mp4s": 8}


def _is_file_read(path: str) -> bool:
    return path.startswith(("data/", "videos/"))


def _split(counts: Any) -> tuple[int, int]:
    """(resolves of data and video files, resolves of everything else) in a Counter of paths."""
    files = sum(n for p, n in counts.items() if _is_file_read(p))
    return files, sum(counts.values()) - files


def hub_epoch(sample: Path, mode: str, cache: Path, nginx_url: str) -> dict[str, Any]:
    """One epoch of 2 ranks x 2 workers (fork) on one machine, against a fresh Hub stand-in."""
    from collections import Counter

    from torch.utils.data import DataLoader

    from lerobot_stream_loader import StreamingLeRobot
    from lerobot_stream_loader.meta.episode_files import files_of_episodes
    from tests.support.servers import FaultProxy, HubStandIn

    cdn = FaultProxy(nginx_url, methods=("GET", "HEAD")).start()
    hub = HubStandIn(sample, cdn, token=HUB_TOKEN, url_lifetime=3600).start()
    hub.add_dataset("bench/sample")
    hub.add_dataset("bench/sample", revision="v3.0")  # LeRobot's tag, as a pushed dataset has it
    saved = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_TOKEN")}
    os.environ.update(HF_ENDPOINT=hub.url, HF_TOKEN=HUB_TOKEN)
    try:
        out: dict[str, Any] = {"mode": mode}
        ranks = []
        for rank in range(2):
            before = Counter(hub.resolve_requests)
            ranks.append(StreamingLeRobot("hf://datasets/bench/sample", rank=rank, world_size=2, shuffle=True,
                                          seed=1, return_uint8=True, cache_dir=cache, resolve=mode))
            out[f"rank{rank}_files"], out[f"rank{rank}_meta"] = _split(hub.resolve_requests - before)
        before = Counter(hub.resolve_requests)
        loaders = [iter(DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")) for ds in ranks]
        samples = 0
        while loaders:
            for it in list(loaders):
                try:
                    samples += len(next(it)["index"])
                except StopIteration:
                    loaders.remove(it)
        out["workers_files"], out["workers_meta"] = _split(hub.resolve_requests - before)
        out["samples"], out["frames"] = samples, ranks[0].meta.total_frames
        out["files"] = len(files_of_episodes(ranks[0].meta.source, ranks[0].episodes))
        out["file_resolves"], out["all_resolves"] = _split(hub.resolve_requests)[0], sum(hub.resolve_requests.values())
        out["per_file"] = out["file_resolves"] / out["files"]
        out["paths"] = {p: n for p, n in sorted(hub.resolve_requests.items()) if not _is_file_read(p)}
        return out
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        hub.stop()
        cdn.stop()


def droid_files_per_reader(epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(data and video files each of the 4,096 readers opens, files each machine's 64 readers open) in one
    epoch at DROID size, from the plan itself (aligned files: episode e is in file e // 100 of every
    camera and of the data)."""
    from lerobot_stream_loader.plan.shard import assign_shards, group_episodes

    n, per, files_per_group = DROID["episodes"], DROID["episodes_per_file"], 1 + DROID["cameras"]
    index = np.arange(n)
    lengths = np.random.default_rng(0).integers(50, 151, size=n)  # as benchmarks/scale_data.py
    group = index // per
    episodes = group_episodes(index, lengths, group, np.repeat(group[:, None], files_per_group, 1))
    a = assign_shards(episodes, world_size=DROID["ranks"], num_workers=DROID["workers"], shuffle=True, epoch=epoch)
    shard = np.repeat(np.arange(a.num_shards), np.diff(a.bounds))
    readers = np.unique(np.stack([shard, a.episode // per], 1), axis=0)
    per_reader = np.bincount(readers[:, 0], minlength=a.num_shards) * files_per_group
    per_machine_readers = DROID["ranks_per_machine"] * DROID["workers"]
    machines = np.unique(np.stack([readers[:, 0] // per_machine_readers, readers[:, 1]], 1), axis=0)
    return per_reader, np.bincount(machines[:, 0]) * files_per_group


def droid_budget(measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Resolves per machine and per job of one epoch at DROID size, per mode: the files from the plan,
    the metadata and per-worker reads as measured per rank and per worker on the stand-in."""
    per_reader, per_machine = droid_files_per_reader()
    machines = len(per_machine)
    total_files = DROID["episodes"] // DROID["episodes_per_file"] * (1 + DROID["cameras"])
    ranks, sampled = DROID["ranks_per_machine"], DROID["sampled_mp4s"]
    readers = ranks * DROID["workers"]
    rows = []
    for mode in MODES:
        m = measured[mode]
        startup = m["rank0_meta"] + (ranks - 1) * m["rank1_meta"]  # the first rank of a machine, then the others
        if mode == "process":  # every process resolves what it opens; workers' other reads (sidecar) each
            machine = startup + ranks * sampled + per_reader.reshape(machines, readers).sum(1) + readers * m["workers_meta"] / 4
            job_level = 0
        elif mode == "machine":  # each file once per machine
            machine = startup + sampled + per_machine + m["workers_meta"]
            job_level = 0
        else:  # rank 0 resolves every file; machines only their metadata
            machine = np.full(machines, startup + m["workers_meta"], dtype=np.float64)
            job_level = total_files
        later = {"process": per_reader.sum(), "machine": per_machine.sum(), "job": 0}[mode]
        rows.append({"mode": mode, "machine_mean": float(np.mean(machine)), "machine_max": float(np.max(machine)),
                     "job_first_epoch": float(machine.sum() + job_level), "job_later_epoch": float(later),
                     "files": total_files, "machines": machines, "readers": int(len(per_reader)),
                     "files_per_reader": float(per_reader.mean()), "files_per_machine": float(per_machine.mean())})
    return rows


def resolves_report(folder: Path) -> None:
    """Measure the 2x2 epoch per mode on the stand-in, compute the DROID-size budget, write hub_budget.md."""
    from lerobot_stream_loader.meta.dataset_meta import open_dataset
    from lerobot_stream_loader.synthetic import write_sample_dataset
    from lerobot_stream_loader.tools.index_sidecar import build_entries, save_sidecar
    from tests.support.servers import NginxServer

    from .scale_report import write_resolve_report

    scratch = Path(tempfile.mkdtemp(prefix="hub-budget-"))
    try:
        sample = write_sample_dataset(scratch / "sample", episodes=8, cameras=2, frames_per_episode=(6, 9),
                                      codec="h264", gop=3, episodes_per_video_file=2, episodes_per_data_file=2,
                                      size=(64, 48), seed=71)
        with open_dataset(sample) as (meta, reader):  # the index sidecar, as DROID-sized data has one
            save_sidecar(meta, build_entries(meta, reader, progress=False))
        with NginxServer(sample, max_lifetime=900) as nginx:
            measured = {mode: hub_epoch(sample, mode, scratch / f"cache-{mode}", nginx.url) for mode in MODES}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for row in measured.values():
        print(f"[scale] hub 2x2: {json.dumps(row)}", flush=True)
    droid = droid_budget(measured)
    for row in droid:
        print(f"[scale] hub DROID: {json.dumps(row)}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"measured": list(measured.values()), "droid": droid, "droid_setting": DROID, "free_tier": FREE_TIER}
    (folder / "hub_budget.json").write_text(json.dumps(saved, indent=1))
    write_resolve_report(folder, saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="2k and 10k episodes; results/small, no targets")
    parser.add_argument("--report-only", action="store_true", help="redraw the report from scale.json")
    parser.add_argument("--resolves-only", action="store_true",
                        help="only the requests to the Hub: hub_budget.md (2x2 on the stand-in, DROID-size budget)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--context", default="fork", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--access-log", help=argparse.SUPPRESS)
    parser.add_argument("--pool-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--million", action="store_true",
                        help="also measure workers at 1M episodes (equal-pool rows; writes a 12 GB dataset once)")
    args = parser.parse_args(argv)
    if args.child:
        args.url = args.child
        print(json.dumps(child(args)))
        return 0
    from .scale_report import write_report

    folder = results_folder(args.small)
    if args.resolves_only:
        resolves_report(folder)
        return 0
    if args.report_only:
        saved = json.loads((folder / "scale.json").read_text())
        write_report(folder, saved["rows"], saved["padding"], saved["metadata"], small=args.small, targets=TARGETS,
                     import_s=saved.get("import_s"))
        return 0
    from tests.support.servers import NginxServer

    sizes = [2_000, 10_000] if args.small else [10_000, 100_000]
    meta_size = 100_000 if args.small else 1_000_000
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        with NginxServer(DATA, max_lifetime=3600) as nginx:
            log = nginx.prefix / "access.log"
            for episodes in sizes:
                root = dataset(episodes)
                for sidecar in (True, False):
                    data = root if sidecar else without_sidecar(root)
                    for where in ("local", "nginx"):
                        url = str(data) if where == "local" else f"{nginx.url}/{data.relative_to(DATA)}"
                        cache = scratch / f"cache-{episodes}-{sidecar}-{where}"
                        for context in ("fork", "spawn"):
                            got = run_child(url, context, cache, log if where == "nginx" else None)
                            row = {"episodes": episodes, "sidecar": sidecar, "where": where, "context": context,
                                   "cache": "cold" if context == "fork" else "warm", **got}
                            print(f"[scale] {json.dumps(row)}", flush=True)
                            rows.append(row)
                    # the same open pool at every size: what a worker holds apart from its pool
                    got = run_child(str(data), "fork", scratch / "cache-pool", None, pool_size=EQUAL_POOL)
                    row = {"episodes": episodes, "sidecar": sidecar, "where": "local", "context": "fork",
                           "cache": "-", "pool": EQUAL_POOL, **got}
                    print(f"[scale] {json.dumps(row)}", flush=True)
                    rows.append(row)
            for sidecar in (True, False) if args.million else ():
                root = dataset(1_000_000)
                data = root if sidecar else without_sidecar(root)
                got = run_child(str(data), "fork", scratch / "cache-million", None, pool_size=EQUAL_POOL)
                row = {"episodes": 1_000_000, "sidecar": sidecar, "where": "local", "context": "fork",
                       "cache": "-", "pool": EQUAL_POOL, **got}
                print(f"[scale] {json.dumps(row)}", flush=True)
                rows.append(row)
            padding = padding_at_512x8(dataset(sizes[-1]))
            print(f"[scale] padding at 512x8: {padding}", flush=True)
            meta_root = dataset(meta_size, metadata_only=True)
            meta_rows = [metadata_only(meta_size, f"{nginx.url}/{meta_root.relative_to(DATA)}", scratch / "meta")]
            print(f"[scale] metadata only: {meta_rows}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, lerobot_stream_loader.dataset"], check=True)
    import_s = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"rows": rows, "padding": padding, "metadata": meta_rows, "import_s": import_s}
    (folder / "scale.json").write_text(json.dumps(saved))
    write_report(folder, rows, padding, meta_rows, small=args.small, targets=TARGETS, import_s=import_s)
    resolves_report(folder, args.small)
    return 0


if __name__ == "__main__":
    sys.exit(main())
