"""MP4 core benchmark: index speed, mini-MP4 synthesis vs decoding, padding ratio per codec.

Run from the repository root: `python -m benchmarks.mp4_bench` (writes benchmarks/results/mp4.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torchcodec.decoders import VideoDecoder

from lerobot_stream_loader.mp4 import index_mp4, synthesize_mp4
from tests.support.mp4_files import build_mp4, make_mp4

from .report import machine_section, publish

RESULTS = Path(__file__).parent / "results" / "mp4.md"
CODECS = {
    "av1 (g=2)": dict(codec="av1", gop=2, bframes=False),
    "h264 (libx264 defaults, B-frames)": dict(codec="h264", gop=None, bframes=None),
    "h264 (g=2)": dict(codec="h264", gop=2, bframes=False),
    "hevc (libx265 defaults)": dict(codec="hevc", gop=None, bframes=None),
}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def index_speed(samples: int) -> tuple[int, float]:
    """Seconds to index a synthetic moov of `samples` samples (B-frame ctts, keyframe every 2, 5 per chunk)."""
    rng = np.random.default_rng(0)
    cts = np.tile([1024, 2048, 512, 512, 1536], samples // 5 + 1)[:samples]
    sync = np.zeros(samples, dtype=bool)
    sync[::2] = True
    data = build_mp4(np.full(samples, 512), cts, rng.integers(20, 60, samples), sync, per_chunk=(5,))
    return len(data), best_of(lambda: index_mp4(data), 7)


def codec_row(label: str, options: dict, frames: int, workdir: Path) -> dict[str, float]:
    made = make_mp4(workdir, episodes=(frames, frames, frames), size=(96, 72), **options)
    data = made.data
    index = index_mp4(data)
    spans = [index.span(lo, hi) for lo, hi in made.bounds]
    mid = spans[1]
    payload = data[mid.byte_offset : mid.byte_offset + mid.byte_length]
    lo, hi = made.bounds[1]
    synth = best_of(lambda: synthesize_mp4(index, index.span(lo, hi), payload), 200)
    mini = synthesize_mp4(index, mid, payload)

    def decode() -> None:
        decoder = VideoDecoder(mini, seek_mode="exact")
        decoder.get_frames_in_range(0, len(decoder))

    times = index.frame_times()
    first = int(np.searchsorted(times, lo)) + frames // 3
    window = index.span(times[first], times[first + 30])
    return {
        "codec": label,
        "window_padding": window.padding_ratio,
        "span_synth_ms": synth * 1e3,
        "decode_ms": best_of(decode, 3) * 1e3,
        "padding": statistics.mean(s.padding_ratio for s in spans),
        "padding_max": max(s.padding_ratio for s in spans),
        "lead_in": statistics.mean(s.samples - s.frames for s in spans),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100_000, help="samples in the synthetic moov")
    parser.add_argument("--frames", type=int, default=300, help="frames per episode")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start_load = os.getloadavg()

    size, seconds = index_speed(args.samples)
    lines = [
        "# MP4 core benchmark",
        "",
        "| index | samples | file bytes | time (ms) | samples/s |",
        "|---|---:|---:|---:|---:|",
        f"| synthetic moov (bytes in memory) | {args.samples} | {size} | {seconds * 1e3:.2f} | {args.samples / seconds:,.0f} |",
        "",
        f"Episodes of {args.frames} frames at 96x72, 3 per file; synthesis = span + mini-MP4 of the middle episode;",
        "decode = torchcodec (exact mode) opening the mini-MP4 and decoding all its frames; padding = bytes",
        "fetched / bytes of presented frames; the window starts a third into the middle episode.",
        "",
        "| codec | span + synth (ms) | decode (ms) | synth / decode | episode padding mean | max | lead-in samples | 30-frame window padding |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in CODECS.items():
            r = codec_row(label, options, args.frames, Path(tmp))
            lines.append(
                f"| {r['codec']} | {r['span_synth_ms']:.3f} | {r['decode_ms']:.1f} | "
                f"{r['span_synth_ms'] / r['decode_ms']:.4f} | {r['padding']:.3f} | {r['padding_max']:.3f} | "
                f"{r['lead_in']:.1f} | {r['window_padding']:.2f} |"
            )
    lines += machine_section((start_load, os.getloadavg()))
    publish(args.output, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
