"""How fast a dataset streams on this machine, against what its CPU can decode, and what bounds it.

:func:`bench` measures two things in one run: the *decode limit* -- a few of the dataset's MP4s,
fetched to a temporary folder first, decoded front to back to uint8 RGB with torchcodec, one process
per worker, no seeking -- and the loader: ``StreamingDataLoader(StreamingLeRobot(source, shuffle=True,
return_uint8=True))`` for some seconds. The loader's own counters (``loader.stats()``) then say what
bounds it: the network (workers wait on fetched episodes), the collate, the work per sample outside
the decoders (``items``), the shuffle (decoding runs from many open episodes costs more per frame than
decoding in sequence), or the decoder itself.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dataset import StreamingLeRobot
from ..loader import StreamingDataLoader
from ..meta.dataset_meta import DatasetMeta

LIMIT_BYTES = 128 << 20  # MP4 bytes fetched for the decode limit
WAIT_SHARE = 0.2  # of the workers' time spent waiting on fetches: the network bounds
COLLATE_SHARE = 0.2
NEAR_LIMIT = 0.75  # of the decode limit: the decoder bounds
SHUFFLE_COST = 1.3  # decode seconds per frame over the limit's: the shuffle's decoding pattern bounds


@dataclass
class BenchReport:
    """What :func:`bench` measured: samples/s of the loader and of the decode limit, and the bound."""

    source: str
    workers: int
    samples_per_s: float
    limit_samples_per_s: float
    bound: str
    why: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.samples_per_s / self.limit_samples_per_s if self.limit_samples_per_s else float("nan")

    def line(self) -> str:
        """The one-line verdict."""
        return (f"{self.source}: {self.samples_per_s:.0f} samples/s with {self.workers} workers = {self.ratio:.2f}x "
                f"this machine's decode limit ({self.limit_samples_per_s:.0f} samples/s); bound: {self.bound} "
                f"({self.why})")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "workers": self.workers, "samples_per_s": self.samples_per_s,
                "limit_samples_per_s": self.limit_samples_per_s, "ratio": self.ratio, "bound": self.bound,
                "why": self.why, "stats": self.stats}


def bench(source: str, *, workers: int = 2, seconds: float = 20.0, batch_size: int = 32,
          **options: Any) -> BenchReport:
    """Measure ``source`` (``options`` go to :class:`StreamingLeRobot`) for about ``seconds``."""
    dataset = StreamingLeRobot(source, shuffle=True, return_uint8=True, **options)
    limit = decode_limit(dataset.meta.source, processes=max(1, workers), seconds=min(10.0, seconds / 2))
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    samples, started, deadline = 0, None, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for batch in loader:
            if started is None:  # steady state: from the first batch on
                started = time.perf_counter()
            else:
                samples += len(batch["index"])
            if time.perf_counter() >= deadline:
                break
    rate = samples / (time.perf_counter() - started) if started is not None and samples else 0.0
    stats = loader.stats()
    bound, why = classify(stats, rate, limit)
    return BenchReport(dataset.meta.root, workers, rate, limit, bound, why, stats)


def classify(stats: dict[str, Any], rate: float, limit: float) -> tuple[str, str]:
    """(bound, why): ``network``, ``collate``, ``shuffle`` or ``decode``, from a loader's merged stats."""
    busy = stats["wall"] * max(1, stats.get("processes", 1)) or float("nan")
    seconds = stats["seconds"]
    wait, collate, decode, decoder = (seconds.get(k, 0.0) / busy
                                      for k in ("fetch_wait", "collate", "decode", "decoder"))
    shares = (f"waiting on fetches {wait:.0%}, in the decoders {decoder:.0%}, building items {decode - decoder:.0%}, "
              f"collating {collate:.0%} of the workers' time")
    if wait >= WAIT_SHARE:
        return "network", f"{shares}; {stats.get('fetch_mb_per_s', 0.0):.1f} MB/s fetched"
    if limit and rate >= NEAR_LIMIT * limit:
        return "decode", f"at {rate / limit:.2f}x what the CPU decodes in sequence; {shares}"
    if collate >= COLLATE_SHARE:
        return "collate", shares
    if decode - decoder > decoder:
        return "items", f"the work per sample outside the decoders costs more than decoding; {shares}"
    samples = stats.get("samples_decoded", 0)
    per_sample = seconds.get("decoder", 0.0) / samples if samples else 0.0
    limit_per_sample = stats.get("processes", 1) / limit if limit else 0.0
    if limit_per_sample and per_sample > SHUFFLE_COST * limit_per_sample:
        return "shuffle", (f"{per_sample * 1e3:.2f} ms in the decoders per sample against {limit_per_sample * 1e3:.2f} "
                           f"in sequence (runs from many open episodes: a larger shuffle_buffer or a smaller "
                           f"pool_size decodes longer runs); {shares}")
    return "decode", shares


def decode_limit(meta: DatasetMeta, *, processes: int, seconds: float) -> float:
    """samples/s of ``processes`` processes decoding a few of the dataset's MP4s in sequence (fetched
    to a temporary folder first, up to :data:`LIMIT_BYTES`)."""
    cameras = max(1, len(meta.video_keys))
    with tempfile.TemporaryDirectory(prefix="lerobot-stream-bench-") as folder, meta.location.open_reader() as reader:
        paths: list[str] = []
        fetched = 0
        for relative in meta.video_files:
            size = reader.size(relative)
            if paths and fetched + size > LIMIT_BYTES:
                break
            local = Path(folder) / relative.replace("/", "__")
            local.write_bytes(reader.read(relative, 0, size))
            paths.append(str(local))
            fetched += size
        if not paths:
            return 0.0
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes) as pool:
            results = pool.starmap(_decode_for, [(paths[i::processes] or paths, seconds) for i in range(processes)])
    frames = sum(n for n, _ in results)
    wall = max(t for _, t in results)
    return frames / cameras / wall if wall else 0.0


def _decode_for(paths: list[str], seconds: float) -> tuple[int, float]:
    """(frames, seconds) of decoding ``paths`` front to back, again and again, for about ``seconds``."""
    from torchcodec.decoders import VideoDecoder

    decoded, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for path in paths:
            decoder = VideoDecoder(path, num_ffmpeg_threads=1, seek_mode="approximate")
            total = int(decoder.metadata.num_frames or 0)
            for lo in range(0, total, 32):
                decoded += len(decoder.get_frames_in_range(lo, min(total, lo + 32)).data)
                if time.perf_counter() - start >= seconds:
                    return decoded, time.perf_counter() - start
    return decoded, time.perf_counter() - start
