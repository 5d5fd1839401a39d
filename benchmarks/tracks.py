"""The datasets each benchmark track hands to a torch DataLoader, plus per-process stage timing.

Every track reads the same (episode, frame) items: those that ``StreamingLeRobot``'s plan gives
each DataLoader worker (same seed, pool size and worker count). Tracks:

1. ``ours-http``: StreamingLeRobot, native HTTP backend, through the shaping proxy;
2. ``ours-fsspec``: StreamingLeRobot, fsspec HTTP backend, through the proxy;
3. ``ours-local``: StreamingLeRobot on the local folder;
4. ``decode-only``: the same items built from episodes fetched and synthesized into memory before
   the clock starts (no I/O), with a decoder kept open per (episode, camera): the ceiling;
5. ``naive``: a map-style dataset that opens each remote MP4 with torchcodec over an fsspec HTTP
   file handle (LeRobot's decoder cache: ``seek_mode="approximate"``) and seeks to each frame;
   shuffled sampler over the same items;
6. ``lerobot``: LeRobot's ``StreamingLeRobotDataset`` on the local copy, when importable.

:class:`Monitor` samples RSS and CPU of the loader's processes. A :class:`Probe` in each process sums seconds spent waiting for the next item (fetch wait), building
items (decode), and collating, and dumps them with the reader's counters to ``<dir>/<pid>.json``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils.data import Dataset, IterableDataset, default_collate

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.decode import DecoderLRU
from lerobot_stream_loader.episode_cache import EpisodeCache, EpisodeData
from lerobot_stream_loader.file_indexes import FileIndexes
from lerobot_stream_loader.index_sidecar import SidecarLookup
from lerobot_stream_loader.items import EpisodeItems, ItemBuilder
from lerobot_stream_loader.meta import DatasetMeta, load_meta
from lerobot_stream_loader.plan import ShardPlan, plan_episodes, plan_shard
from lerobot_stream_loader.ranks import resolve_worker
from lerobot_stream_loader.storage import open_reader
from lerobot_stream_loader.windows import DEFAULT_TOLERANCE_S

TRACKS = ("ours-http", "ours-fsspec", "ours-local", "decode-only", "naive", "lerobot")


class Monitor(threading.Thread):
    """Samples RSS and CPU time of this process and of its new child processes (the workers)."""

    def __init__(self, servers: set[int], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.servers, self.period = servers, period
        self.me = psutil.Process()
        self.server0 = self._server_seconds()
        self.peak: dict[int, int] = {}
        self.peak_uss: dict[int, int] = {}  # unique pages: a forked worker's RSS also counts its parent's
        self.cpu: dict[int, float] = {}
        self._halt = threading.Event()
        self.main_cpu0 = sum(self.me.cpu_times()[:2])

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.period)

    def sample(self) -> None:
        procs = [self.me] + [p for p in self.me.children(recursive=True) if p.pid not in self.servers]
        for proc in procs:
            try:
                with proc.oneshot():
                    memory, times = proc.memory_full_info(), proc.cpu_times()
            except psutil.Error:
                continue
            self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), memory.rss)
            self.peak_uss[proc.pid] = max(self.peak_uss.get(proc.pid, 0), memory.uss)
            self.cpu[proc.pid] = times.user + times.system

    def stop(self) -> dict[str, float]:
        self.sample()
        self._halt.set()
        self.join()
        workers = [pid for pid in self.peak if pid != self.me.pid]
        cpu = sum(self.cpu[p] for p in workers) + self.cpu[self.me.pid] - self.main_cpu0
        rss = max((self.peak[p] for p in workers), default=self.peak[self.me.pid])
        uss = max((self.peak_uss[p] for p in workers), default=self.peak_uss[self.me.pid])
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


def timed_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate``, timed into this process's probe (which then dumps)."""
    start = time.perf_counter()
    out = default_collate(batch)
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
    plain = builder.item

    def item(episode: EpisodeItems, frame: int) -> dict[str, Any]:
        start = time.perf_counter()
        out = plain(episode, frame)
        Probe.get(probe_folder).seconds["build"] += time.perf_counter() - start
        return out

    builder.item = item  # type: ignore[method-assign]
    return builder


class BenchStreaming(StreamingLeRobot):
    """StreamingLeRobot whose iteration is timed per stage into :class:`Probe` (tracks 1-3)."""

    probe_folder = ""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        probe = Probe.get(self.probe_folder)
        probe.reader_stats = lambda: self._resources.reader.stats.snapshot() if self._resources else None
        yield from _timed_items(probe, super().__iter__())

    def _builder(self):
        return _timed_builder(super()._builder(), self.probe_folder)


def shard_plan(episodes: list, workers: int, worker_id: int, *, seed: int, pool_size: int) -> ShardPlan:
    """The plan StreamingLeRobot follows in DataLoader worker ``worker_id`` of ``workers`` (shuffled)."""
    return plan_shard(episodes, seed=seed, epoch=0, rank=0, world_size=1, worker_id=worker_id,
                      num_workers=max(workers, 1), shuffle=True, pool_size=pool_size)


def planned_items(meta: DatasetMeta, workers: int, per_worker: int, *, seed: int,
                  pool_size: int) -> list[tuple[int, int]]:
    """The first ``per_worker`` (episode, frame) items of every worker's plan."""
    episodes = plan_episodes(meta.episode(i) for i in meta.episode_indices)
    items: list[tuple[int, int]] = []
    for w in range(max(workers, 1)):
        plan = shard_plan(episodes, workers, w, seed=seed, pool_size=pool_size)
        items += list(zip(plan.episode_index[:per_worker].tolist(), plan.frame_index[:per_worker].tolist(),
                          strict=True))
    return items


class DecodeOnly(IterableDataset):
    """Track 4: every needed episode fetched and synthesized before the clock starts; no I/O after."""

    probe_folder = ""

    def __init__(self, root: str, *, workers: int, per_worker: int, seed: int, pool_size: int) -> None:
        super().__init__()
        self.meta = load_meta(root)
        self.per_worker, self.seed, self.pool_size = per_worker, seed, pool_size
        self.episodes = plan_episodes(self.meta.episode(i) for i in self.meta.episode_indices)
        needed = sorted({ep for ep, _ in planned_items(self.meta, workers, per_worker, seed=seed,
                                                       pool_size=pool_size)})
        reader = open_reader(root, backend="fsspec")
        indexes = FileIndexes(reader, root=self.meta.root, sidecar=SidecarLookup(self.meta.root, reader))
        with EpisodeCache(self.meta, reader, indexes=indexes, budget_bytes=1 << 40) as cache:
            for ep in needed:
                cache.prefetch(ep)
            self.data: dict[int, EpisodeData] = {ep: cache.get(ep) for ep in needed}
        reader.close()
        self.decoders = max(8, pool_size * len(self.meta.video_keys) * 2)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = resolve_worker()
        plan = shard_plan(self.episodes, workers, worker, seed=self.seed, pool_size=self.pool_size)
        builder = _timed_builder(ItemBuilder(self.meta, windows=None, tolerance_s=DEFAULT_TOLERANCE_S,
                                             return_uint8=True, image_transforms=None,
                                             decoders=DecoderLRU(self.decoders)), self.probe_folder)
        yield from _timed_items(Probe.get(self.probe_folder), self._items(plan, builder))

    def _items(self, plan: ShardPlan, builder: ItemBuilder) -> Iterator[dict[str, Any]]:
        admit, last_pos = plan.admit_episodes.tolist(), plan.last_pos.tolist()
        resident: dict[int, EpisodeItems] = {}
        for k, (segment, frame) in enumerate(zip(plan.segment.tolist(), plan.frame_index.tolist(), strict=True)):
            if k >= self.per_worker:
                return
            episode = admit[segment]
            items = resident.get(segment)
            if items is None:
                items = resident[segment] = EpisodeItems(self.data[episode], self.meta)
            yield builder.item(items, frame)
            if k == last_pos[segment]:
                del resident[segment]
                builder.decoders.discard(lambda key, ep=episode: key[0] == ep)


class NaiveRemote(Dataset):
    """Track 5: map-style; each item opens (LRU-cached per process) the remote MP4 of each camera
    through an fsspec HTTP file handle, as LeRobot's torchcodec decoder cache does, and seeks."""

    probe_folder = ""

    def __init__(self, url: str, items: list[tuple[int, int]], *, cache_size: int = 8) -> None:
        import pyarrow.parquet as pq

        self.meta = load_meta(url)
        self.items = items
        self.cache_size = cache_size
        tables = []
        for path in self.meta.data_files:
            with self.meta.fs.open(self.meta.url(path), "rb") as handle:
                tables.append(pq.read_table(handle, columns=["index", "episode_index", "frame_index",
                                                             "timestamp", "observation.state", "action",
                                                             "task_index"]))
        self.rows = {name: np.concatenate([t.column(name).to_numpy(zero_copy_only=False) for t in tables])
                     for name in tables[0].column_names}
        self.rows = {k: np.stack(v) if v.dtype == object else v for k, v in self.rows.items()}
        self.row_of = {int(g): i for i, g in enumerate(self.rows["index"])}
        self._decoders: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._pid = -1

    def __len__(self) -> int:
        return len(self.items)

    def _decoder(self, url: str):
        import fsspec
        from torchcodec.decoders import VideoDecoder

        if self._pid != os.getpid():  # never reuse handles across fork
            self._decoders, self._pid = OrderedDict(), os.getpid()
        entry = self._decoders.get(url)
        if entry is None:
            handle = fsspec.open(url).__enter__()
            entry = self._decoders[url] = (VideoDecoder(handle, seek_mode="approximate"), handle)
            while len(self._decoders) > self.cache_size:
                self._decoders.popitem(last=False)[1][1].close()
        else:
            self._decoders.move_to_end(url)
        return entry[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = time.perf_counter()
        probe = Probe.get(self.probe_folder)
        ep_index, frame = self.items[i]
        episode = self.meta.episode(ep_index)
        row = self.row_of[episode.from_index + frame]
        item: dict[str, Any] = {name: torch.as_tensor(values[row]) for name, values in self.rows.items()}
        for key, span in episode.videos.items():
            seconds = span.from_timestamp + float(self.rows["timestamp"][row])
            decoder = self._decoder(self.meta.url(span.path))
            item[key] = decoder.get_frames_played_at(seconds=[seconds]).data[0]
        item["task"] = self.meta.tasks.get(int(self.rows["task_index"][row]), "")
        elapsed = time.perf_counter() - start
        probe.seconds["build"] += elapsed
        probe.seconds["next"] += elapsed
        probe.items += 1
        return item


def naive_needed(meta: Any, local: Path, items: list[tuple[int, int]]) -> int:
    """Bytes of the samples needed to decode ``items`` (keyframe to frame, per camera), overlaps merged."""
    reader = open_reader(str(local), backend="fsspec")
    indexes = FileIndexes(reader, root=str(local), sidecar=SidecarLookup(meta.root, reader))
    ranges: dict[str, list[tuple[int, int]]] = {}
    for ep, frame in items:
        for span in meta.episode(ep).videos.values():
            t = span.from_timestamp + frame / meta.fps
            s = indexes.mp4(span.path).span(t, t + 0.5 / meta.fps)
            ranges.setdefault(span.path, []).append((s.byte_offset, s.byte_offset + s.byte_length))
    reader.close()
    total = 0
    for spans in ranges.values():
        end = -1
        for lo, hi in sorted(spans):
            total += max(0, hi - max(lo, end))
            end = max(end, hi)
    return total


def lerobot_streaming(root: str, seed: int) -> IterableDataset | None:
    """Track 6: LeRobot's StreamingLeRobotDataset on the local copy; None when lerobot is missing."""
    try:
        from lerobot.datasets.streaming_dataset import StreamingLeRobotDataset
    except ImportError:
        return None
    return StreamingLeRobotDataset(Path(root).name, root=root, shuffle=True, seed=seed)
