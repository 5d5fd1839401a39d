"""Cost bounds at a size CI affords: metadata of 20k episodes, a worker's start on a 2k-episode dataset.

Generous bounds (the benchmark, ``python -m benchmarks scale``, measures the real numbers at 100k).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.scale_data import write_scale_dataset

REPO = Path(__file__).resolve().parents[1]

_CONSTRUCT = textwrap.dedent(
    """
    import json, pickle, sys, time, psutil
    from lerobot_stream_loader import StreamingLeRobot
    me = psutil.Process()
    out = {}
    for phase in ("cold", "warm"):
        rss, t = me.memory_info().rss, time.perf_counter()
        ds = StreamingLeRobot(sys.argv[1], shuffle=True, rank=311, world_size=512, pool_size=16,
                              cache_dir=sys.argv[2])
        out[phase] = {"s": time.perf_counter() - t, "mb": (me.memory_info().rss - rss) / 2**20}
    out["pickled"] = len(pickle.dumps(ds))
    copy = pickle.loads(pickle.dumps(ds))
    out["same_after_pickling"] = bool(len(copy) == len(ds) and copy.num_frames == ds.num_frames and \
        (copy.episodes == ds.episodes).all())
    out["len"] = len(ds)
    out["stats_columns"] = [c for c in ds.meta.episode_table.columns if c.startswith("stats/")]
    print(json.dumps(out))
    """
)


@pytest.mark.timeout(240)
def test_metadata_of_20k_episodes(tmp_path: Path, nginx_factory) -> None:
    root = tmp_path / "ds"
    write_scale_dataset(root, 20_000, metadata_only=True, log=lambda *_: None)
    server = nginx_factory(root)
    before = len(server.access_log())
    done = subprocess.run([sys.executable, "-c", _CONSTRUCT, server.url, str(tmp_path / "cache")], cwd=REPO,
                          capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    requests = [e.uri for e in server.access_log()[before:]]
    print(f"20k episodes: {out}; {len(requests)} requests for a cold and a warm start")
    assert out["stats_columns"] == [], "per-episode stats are not loaded"
    assert out["cold"]["mb"] < 150 and out["warm"]["mb"] < 100
    # under a pipe's 64 KiB: spawned workers then start together (a larger pickle waits for each to import)
    assert out["pickled"] < 64 * 1024, "a worker receives a reference to the metadata, not its arrays"
    assert out["same_after_pickling"]
    frames = json.loads((root / "meta/info.json").read_text())["total_frames"]
    assert out["len"] == -(-frames // 512)
    assert len(requests) <= 20, requests


_FIRST_BATCH = textwrap.dedent(
    """
    import json, sys, time, psutil
    from torch.utils.data import DataLoader
    from lerobot_stream_loader import StreamingLeRobot
    ds = StreamingLeRobot(sys.argv[1], shuffle=True, rank=311, world_size=512, cache_dir=sys.argv[2])
    print("constructed", flush=True)
    sys.stdin.readline()
    it = iter(DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork"))
    next(it)
    uss = max(psutil.Process(w.pid).memory_full_info().uss for w in it._workers) / 2**20
    print(json.dumps({"worker_uss_mb": uss}), flush=True)
    """
)


@pytest.mark.timeout(300)
def test_a_worker_before_its_first_batch(tmp_path: Path, nginx_factory) -> None:
    root = tmp_path / "ds"
    write_scale_dataset(root, 2_000, log=lambda *_: None)
    server = nginx_factory(root)
    proc = subprocess.Popen([sys.executable, "-c", _FIRST_BATCH, server.url, str(tmp_path / "cache")], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "constructed", proc.stderr.read()[-3000:]
    import time

    time.sleep(0.3)
    before = len(server.access_log())
    out, err = proc.communicate("go\n", timeout=240)
    assert proc.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    time.sleep(0.3)
    log = server.access_log()[before:]
    reads = [e for e in log if e.method == "GET" and ("/data/" in e.uri or e.uri.endswith(".mp4"))
             and "bytes=" in e.range and not e.range.startswith("bytes=-")]
    other = len(log) - len(reads)
    print(f"2 workers before the first batch: {len(log)} requests, {len(reads)} file reads, "
          f"{other / 2:.1f} others per worker; worker USS {got['worker_uss_mb']:.0f} MB")
    assert other / 2 <= 20
    assert got["worker_uss_mb"] < 800
