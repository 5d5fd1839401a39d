"""Cheap counters of where a process's loading time goes, per pass: seconds per stage and counts.

One :class:`StageClock` per process (:func:`clock`), started again at each pass a reader begins.
Stages add seconds with :meth:`StageClock.timed` (two ``perf_counter`` calls per decoded run or per
batch, never per frame) and counts with :meth:`StageClock.add`. The datasets report the snapshot in
their state, so the training process reads every worker's (``StreamingDataLoader.stats()``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STAGES = ("fetch_wait", "decode", "decoder", "collate")  # "decoder": the part of "decode" inside the decoders


class StageClock:
    """Seconds per stage and counters of one process since the start of its current pass."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.start()

    def start(self) -> None:
        """A new pass: everything from zero."""
        self.started = time.perf_counter()
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.counts: dict[str, int] = {}

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time the block takes to ``stage``."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - begin

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def snapshot(self) -> dict[str, Any]:
        """``{"wall": seconds since the pass began, "seconds": {stage: s}, <counter>: n, ...}``."""
        return {"wall": time.perf_counter() - self.started, "seconds": dict(self.seconds), **self.counts}


_CLOCK: StageClock | None = None


def clock() -> StageClock:
    """This process's clock (a forked process gets its own)."""
    global _CLOCK
    if _CLOCK is None or _CLOCK.pid != os.getpid():
        _CLOCK = StageClock()
    return _CLOCK


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' snapshots as one: counts and stage seconds summed, ``wall`` the longest, and
    rates: ``samples_per_s``, ``fetch_mb_per_s`` (over ``wall``), ``decode_frames_per_s`` (frames per
    second of decoding, all processes together)."""
    out: dict[str, Any] = {"wall": 0.0, "seconds": dict.fromkeys(STAGES, 0.0), "processes": len(parts)}
    for part in parts:
        out["wall"] = max(out["wall"], float(part.get("wall", 0.0)))
        for stage, seconds in part.get("seconds", {}).items():
            out["seconds"][stage] = out["seconds"].get(stage, 0.0) + float(seconds)
        for name, value in part.items():
            if name not in ("wall", "seconds") and isinstance(value, int | float):
                out[name] = out.get(name, 0) + value
    wall = out["wall"] or float("nan")
    out["samples_per_s"] = out.get("samples", 0) / wall
    out["fetch_mb_per_s"] = out.get("fetched_bytes", 0) / 1e6 / wall
    decode = out["seconds"]["decode"]
    out["decode_frames_per_s"] = out.get("frames_decoded", 0) / decode if decode else 0.0
    return out


def describe(stats: dict[str, Any]) -> str:
    """One log line of merged stats: rates, where each process's time went, cache and requests."""
    busy = stats["wall"] * max(1, stats.get("processes", 1)) or float("nan")
    shares = ", ".join(f"{stage} {100 * seconds / busy:.0f}%" for stage, seconds in stats["seconds"].items()
                       if stage != "decoder")
    shares += f" (in the decoders {100 * stats['seconds'].get('decoder', 0.0) / busy:.0f}%)"
    return (f"{stats.get('samples', 0)} samples in {stats['wall']:.1f} s ({stats['samples_per_s']:.1f}/s); "
            f"time: {shares}; decode {stats['decode_frames_per_s']:.0f} frames/s; fetched "
            f"{stats.get('fetched_bytes', 0) / 1e6:.1f} MB ({stats['fetch_mb_per_s']:.1f} MB/s) in "
            f"{stats.get('fetches', 0)} requests, {stats.get('retries', 0)} retries; episode cache "
            f"{stats.get('cache_hits', 0)} hits / {stats.get('cache_misses', 0)} misses; disk cache "
            f"{stats.get('disk_cache_hits', 0)} hits; skipped episodes {stats.get('skipped_episodes', 0)}")
