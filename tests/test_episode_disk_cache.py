"""Disk cache of episode bytes: atomic, checksummed, LRU-evicted, shared by processes, safe under kill -9."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.fetch.disk_cache import DiskCachedReader, EpisodeDiskCache, entry_key
from lerobot_stream_loader.fetch.sidecar import SIDECAR_PATH
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.storage import open_reader
from lerobot_stream_loader.tools.index_sidecar import build_entries, save_sidecar

REPO = Path(__file__).resolve().parents[1]


def blob(path: str, offset: int, length: int) -> bytes:
    """Deterministic bytes standing for a file's range."""
    seed = hashlib.sha256(f"{path}:{offset}".encode()).digest()
    return (seed * (length // 32 + 1))[:length]


class CountingReader:
    """A range reader over ``blob``: counts the ranges it serves (what would cross the network)."""

    def __init__(self) -> None:
        self.fetched = 0

    def read_many(self, requests):
        self.fetched += len(requests)
        return [blob(p, o, n) for p, o, n in requests]


REQUESTS = [("data/chunk-000/file-000.parquet", 100, 300), ("videos/cam/file-000.mp4", 4000, 5000)]


def test_roundtrip_and_hit_reads_no_network(tmp_path):
    reader = CountingReader()
    cached = DiskCachedReader(reader, EpisodeDiskCache(tmp_path, 1 << 20))
    first = cached.read_many(REQUESTS)
    assert reader.fetched == 2 and first == [blob(*r) for r in REQUESTS]
    again = DiskCachedReader(reader, EpisodeDiskCache(tmp_path, 1 << 20)).read_many(REQUESTS)
    assert again == first and reader.fetched == 2, "a second process reads the entry, not the network"


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
def test_torn_or_corrupt_entry_is_refetched_never_returned(tmp_path, damage):
    reader = CountingReader()
    cache = EpisodeDiskCache(tmp_path, 1 << 20)
    DiskCachedReader(reader, cache).read_many(REQUESTS)
    entry = tmp_path / entry_key(REQUESTS)
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[-17] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "empty":
        data = bytearray()
    else:
        data[:8] = b"garbage!"
    entry.write_bytes(bytes(data))
    got = DiskCachedReader(reader, cache).read_many(REQUESTS)
    assert got == [blob(*r) for r in REQUESTS]
    assert reader.fetched == 4 and cache.stats["corrupt"] == 1
    assert cache.get(entry_key(REQUESTS), [300, 5000]) == got, "the entry was written again, whole"


def test_least_recently_used_entries_are_evicted_under_the_budget(tmp_path):
    cache = EpisodeDiskCache(tmp_path, 3 * 1100)
    keys = [f"k{i}" for i in range(5)]
    for i, key in enumerate(keys[:3]):
        cache.put(key, [bytes([i]) * 1000])
        os.utime(tmp_path / key, (time.time() - 100 + i, time.time() - 100 + i))
    assert cache.get("k0", [1000]) is not None  # k0 becomes the most recently used
    cache.put("k3", [b"3" * 1000])
    cache.put("k4", [b"4" * 1000])
    cache.evict()
    present = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert sum((tmp_path / name).stat().st_size for name in present) <= 3 * 1100
    assert "k0" in present and "k1" not in present, present
    assert cache.stats["evicted"] >= 2


_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from lerobot_stream_loader.fetch import disk_cache as m
    where = sys.argv[2]
    if where == "publish":
        def replace(src, dst):
            print("writing", flush=True)
            time.sleep(60)
        m.os.replace = replace
    else:
        plain = m.encode_entry
        def encode(blobs):
            pieces = plain(blobs)
            yield pieces[0]
            yield pieces[1][: len(pieces[1]) // 2]
            print("writing", flush=True)
            time.sleep(60)
        m.encode_entry = encode
    cache = m.EpisodeDiskCache(sys.argv[1], 1 << 30)
    cache.put("victim", [b"x" * 100000, b"y" * 100000])
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["payload", "publish"])
def test_kill_9_mid_write_leaves_no_entry(tmp_path, where):
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), where], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.readline().strip() == "writing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    names = [p.name for p in tmp_path.iterdir()]
    assert "victim" not in names and any(n.endswith(".tmp") for n in names), names
    cache = EpisodeDiskCache(tmp_path, 1 << 30)
    assert cache.get("victim", [100000, 100000]) is None
    cache.evict(stale_tmp_s=3600)
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "a writer's fresh temporary file stays"
    cache.evict(stale_tmp_s=0)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "a dead writer's file is removed"
    cache.put("victim", [b"x" * 100000, b"y" * 100000])
    assert cache.get("victim", [100000, 100000]) == [b"x" * 100000, b"y" * 100000]


def _hammer(folder: str, budget: int, seed: int, queue) -> None:
    import random

    rng = random.Random(seed)
    reader = CountingReader()
    cached = DiskCachedReader(reader, EpisodeDiskCache(folder, budget))
    wrong = 0
    for _ in range(120):
        k = rng.randrange(24)
        requests = [(f"videos/file-{k}.mp4", 1000 * k, 3000 + 97 * k), (f"data/{k}.parquet", 7, 500)]
        wrong += cached.read_many(requests) != [blob(*r) for r in requests]
    queue.put((wrong, reader.fetched))


@pytest.mark.timeout(120)
def test_concurrent_processes_share_entries_and_the_budget(tmp_path):
    budget = 12 * 4000
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_hammer, args=(str(tmp_path), budget, seed, queue)) for seed in range(4)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=100) for _ in workers]
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0
    assert all(wrong == 0 for wrong, _ in results), results
    assert sum(fetched for _, fetched in results) < 4 * 120 * 2, "processes served each other's entries"
    EpisodeDiskCache(tmp_path, budget).evict()
    held = sum(p.stat().st_size for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert held <= budget


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=4, cameras=2, frames_per_episode=(10, 16), episodes_per_video_file=2,
                       size=(64, 48), seed=31)


@pytest.mark.timeout(240)
def test_second_epoch_reads_no_episode_bytes_from_the_network(sample, nginx_factory, tmp_path):
    served = shutil.copytree(sample, tmp_path / "served")
    meta = load_meta(str(served))
    with open_reader(str(served), backend="fsspec") as reader:  # an index sidecar: no MP4 index reads
        save_sidecar(meta, build_entries(meta, reader, progress=False), output=str(served / SIDECAR_PATH))
    server = nginx_factory(served)
    dataset = StreamingLeRobot(server.url, backend="http", shuffle=True, seed=3, return_uint8=True,
                               cache_dir=tmp_path / "cache", disk_cache_bytes=64 << 20)
    # one process keeps its file indexes across epochs: what epoch 2 asks of the server is episode bytes
    # only (processes sharing entries: test_concurrent_processes_share_entries_and_the_budget)
    loader = DataLoader(dataset, batch_size=4, num_workers=0, collate_fn=list)
    epochs = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        before = len(server.access_log())
        items = [item for batch in loader for item in batch]
        time.sleep(0.2)
        epochs.append((items, [e for e in server.access_log()[before:] if e.method == "GET"]))
    (first, fetched), (second, refetched) = epochs
    assert fetched and not refetched, f"epoch 2 sent {[(e.uri, e.range) for e in refetched]}"
    key = "observation.images.cam0"
    by_index = {int(x["index"]): x[key] for x in first}
    assert sorted(by_index) == sorted(int(x["index"]) for x in second) == list(range(dataset.meta.total_frames))
    assert all(torch.equal(by_index[int(x["index"])], x[key]) for x in second)
    assert any((tmp_path / "cache").rglob("episodes/*")), "entries live under the dataset's episodes/ folder"
