"""The datasets each benchmark track hands to a torch DataLoader, plus per-process stage timing.

Tracks (``python -m benchmarks stream``; all shuffled, ``num_workers`` workers, batch 32):

- ``limit``: sequential decode of the dataset's MP4s to uint8 RGB, one process per core
  (:mod:`benchmarks.limit_track`): what the CPU can decode, the ceiling every ratio refers to;
- ``ours-local`` / ``ours-local-f32``: StreamingLeRobot on the local folder, uint8 / float32 frames;
- ``ours-local-224``: the same, frames decoded straight to 224x224 (``image_size``), uint8;
- ``ours-http`` / ``ours-http-f32``: StreamingLeRobot over HTTP (native backend) through the
  shaping proxy, uint8 / float32;
- ``ours-http-disk``: over HTTP with ``disk_cache_bytes``, the cache filled by an earlier epoch
  (uint8): the second epoch of a multi-epoch remote run;
- ``lerobot`` / ``lerobot-streaming``: LeRobot 0.6.1's ``LeRobotDataset`` (local files, float32,
  shuffling sampler) and ``StreamingLeRobotDataset`` (:mod:`benchmarks.lerobot_track`), run with
  the LeRobot reference environment when there is one.

:class:`Monitor` takes peak memory and CPU time of the loader's processes. A :class:`Probe` in each process
sums seconds spent waiting for the next item (fetch wait), building items (decode), and collating,
and dumps them with the reader's counters to ``<dir>/<pid>.json``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from torch.utils.data import default_collate

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.fetch.episode_cache import EpisodeCache
from lerobot_stream_loader.items.builder import ItemBuilder

TRACKS = ("limit", "ours-local", "ours-local-f32", "ours-local-224", "ours-http", "ours-http-f32", "ours-http-disk",
          "ours-local-plain", "ours-local-f32-plain", "lerobot", "lerobot-uint8", "lerobot-streaming")
# DROID's shape (3 cameras 320x180): the limit, our fast path and the one-liner, LeRobot as its trainer reads
DROID_TRACKS = ("limit", "ours-local", "ours-local-plain", "lerobot-uint8")


class Monitor(threading.Thread):
    """Peak memory and CPU time of this process and of its new child processes (the workers).

    On 2 cores what the monitor costs is taken from the loader it measures. Reading a worker's unique
    memory (USS) parses its smaps: 43 ms for a worker of 1 GB, during which the worker's memory map
    is locked; listing the child processes takes 7 ms. Sampling everything every 50 ms (USS every
    second) cost a fifth of a core. So: peak RSS is the kernel's high-water mark (``VmHWM``,
    exact, reset for this process at the start), CPU times are cumulative (the last sample counts:
    call :meth:`sample` once more before the workers exit), and every ``period`` the process list is
    refreshed and the workers' USS read (the main process's only when there are no workers)."""

    def __init__(self, servers: set[int], period: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.servers, self.period = servers, period
        self.me = psutil.Process()
        _reset_peak_rss(self.me.pid)
        self.server0 = self._server_seconds()
        self.peak: dict[int, int] = {}
        self.peak_uss: dict[int, int] = {}  # unique pages: a forked worker's RSS also counts its parent's
        self.cpu: dict[int, float] = {}
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.main_cpu0 = sum(self.me.cpu_times()[:2])

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.period)

    def sample(self) -> None:
        """Read every process once (the thread does every ``period``)."""
        with self._lock:
            workers = [p for p in self.me.children(recursive=True) if p.pid not in self.servers]
            for proc in [self.me, *workers]:
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        uss = proc.memory_full_info().uss if proc is not self.me or not workers else None
                    peak = _peak_rss(proc.pid)
                except (psutil.Error, OSError):
                    continue
                self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), peak)
                if uss is not None:
                    self.peak_uss[proc.pid] = max(self.peak_uss.get(proc.pid, 0), uss)
                self.cpu[proc.pid] = times.user + times.system

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        workers = [pid for pid in self.peak if pid != self.me.pid]
        if not workers:
            self.sample()
        cpu = sum(self.cpu[p] for p in workers) + self.cpu[self.me.pid] - self.main_cpu0
        rss = max((self.peak[p] for p in workers), default=self.peak[self.me.pid])
        uss = max((self.peak_uss.get(p, 0) for p in workers), default=self.peak_uss.get(self.me.pid, 0))
        return {"cpu_seconds": cpu, "peak_rss": rss, "peak_uss": uss, "main_rss": self.peak[self.me.pid],
                "server_seconds": self._server_seconds() - self.server0}

    def _server_seconds(self) -> float:
        """CPU seconds so far of the processes that were running before the pass (nginx, the proxy)."""
        total = 0.0
        for pid in self.servers:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total


class Probe:
    """Stage seconds and counters of the current process, dumped as JSON into one folder per run."""

    _current: Probe | None = None

    def __init__(self, folder: str) -> None:
        self.folder, self.pid = folder, os.getpid()
        self.seconds = {"next": 0.0, "build": 0.0, "collate": 0.0}
        self.items = 0
        self.reader_stats: Any = None  # callable -> dict, set by tracks that have a range reader

    @classmethod
    def get(cls, folder: str) -> Probe:
        probe = cls._current
        if probe is None or probe.pid != os.getpid() or probe.folder != folder:
            probe = cls._current = Probe(folder)
        return probe

    @classmethod
    def current(cls) -> Probe | None:
        probe = cls._current
        return probe if probe is not None and probe.pid == os.getpid() else None

    def dump(self) -> None:
        record = {"pid": self.pid, "items": self.items, "seconds": self.seconds,
                  "reader": self.reader_stats() if self.reader_stats else None}
        tmp = Path(self.folder) / f".{self.pid}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, Path(self.folder) / f"{self.pid}.json")


class TimedCollate:
    """A collate function (the dataset's own ``collate_fn`` where it has one, as
    ``StreamingDataLoader`` uses it; else ``default_collate``), timed into this process's probe."""

    def __init__(self, dataset: Any) -> None:
        # the one-liner's tracks (plain_collate): what a plain DataLoader collates with, torch's default_collate
        plain = getattr(dataset, "plain_collate", False)
        self.inner = default_collate if plain else getattr(dataset, "collate_fn", default_collate)

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        out = self.inner(batch)
        probe = Probe.current()
        if probe is not None:
            probe.seconds["collate"] += time.perf_counter() - start
            probe.dump()
        return out


def read_probes(folder: str | Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def _timed_items(probe: Probe, items: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    while True:
        start = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            probe.dump()
            return
        probe.seconds["next"] += time.perf_counter() - start
        probe.items += 1
        yield item


def _timed_builder(builder: ItemBuilder, probe_folder: str) -> ItemBuilder:
    """``builder`` whose decoding (``items``) and finishing (float conversion) count as build time."""
    for name in ("items", "finish"):
        plain = getattr(builder, name)

        def timed(*args: Any, plain: Any = plain) -> Any:
            start = time.perf_counter()
            out = plain(*args)
            Probe.get(probe_folder).seconds["build"] += time.perf_counter() - start
            return out

        setattr(builder, name, timed)
    return builder


class BenchStreaming(StreamingLeRobot):
    """StreamingLeRobot whose iteration is timed per stage into :class:`Probe` (the ``ours-*`` tracks)."""

    probe_folder = ""
    plain_collate = False  # collate as a plain DataLoader does (torch's default_collate)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        probe = Probe.get(self.probe_folder)
        probe.reader_stats = lambda: self._resources.reader.stats.snapshot() if self._resources else None
        yield from _timed_items(probe, super().__iter__())

    def _builder(self, *args: Any, **kwargs: Any) -> ItemBuilder:
        return _timed_builder(super()._builder(*args, **kwargs), self.probe_folder)


def _peak_rss(pid: int) -> int:
    """Peak resident bytes of a process (``VmHWM``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss(pid: int) -> None:
    """Restart a process's ``VmHWM`` from its current RSS (so each pass reports its own peak)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass  # older kernels: the peak then covers the whole run


def uniform_distinct(lengths: np.ndarray, batch: int) -> float:
    """Expected distinct episodes in a batch a uniform random sampler draws (without replacement)
    from all frames: sum over episodes of 1 - C(N - L, b) / C(N, b)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    total = lengths.sum()
    steps = np.arange(batch, dtype=np.float64)
    missed = np.prod((total - lengths[:, None] - steps[None, :]) / (total - steps[None, :]), axis=1)
    return float(np.sum(1.0 - np.clip(missed, 0.0, 1.0)))


def lerobot_python() -> Path | None:
    """The LeRobot reference environment's Python: ``$LEROBOT_REFERENCE_VENV``, else ``.lerobot-venv`` at
    the repository root; None when absent."""
    configured = os.environ.get("LEROBOT_REFERENCE_VENV")
    venv = Path(configured) if configured else Path(__file__).resolve().parent.parent / ".lerobot-venv"
    python = venv / "bin" / "python"
    return python if python.exists() else None


def run_lerobot(root: Path, kind: str, *, samples: int, workers: int, batch: int, seed: int) -> dict[str, Any]:
    """One pass of LeRobot's reader ``kind`` ("map" or "streaming") in the LeRobot environment."""
    import subprocess

    python = lerobot_python()
    if python is None:
        raise RuntimeError("no LeRobot environment (set LEROBOT_REFERENCE_VENV)")
    script = Path(__file__).with_name("lerobot_track.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(python), "-P", str(script), str(root), kind, str(samples), str(workers), str(batch),
                           str(seed)], capture_output=True, text=True, timeout=1800, env={**env, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"LeRobot {kind} track failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_disk_cache(url: str, cache_dir: str, disk_cache_bytes: int) -> None:
    """Fetch every episode of ``url`` once through the disk cache (what an earlier epoch leaves behind)."""
    from lerobot_stream_loader.stream import WorkerResources

    dataset = StreamingLeRobot(url, backend="http", cache_dir=cache_dir, disk_cache_bytes=disk_cache_bytes)
    resources = WorkerResources.open(dataset.meta.source, **dataset.settings)
    try:
        with EpisodeCache(dataset.meta.source, resources.reader, indexes=resources.indexes, budget_bytes=64 << 20,
                          prefetch_depth=8, threads=8) as cache:
            for episode in dataset.episodes:
                cache.prefetch(episode)
            for episode in dataset.episodes:
                cache.get(episode)
                cache.release(episode)
    finally:
        resources.close()
