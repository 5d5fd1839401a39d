"""The limit track: sequential decode of the dataset's MP4s to uint8 RGB, one process per core.

What the CPU can decode when nothing else happens: every process decodes whole files front to
back with torchcodec (one FFmpeg thread, frames as uint8 RGB, as our loader asks for them), no
seeking, no I/O beyond the local page cache. A sample is one frame of every camera, so samples/s
is frames/s over the number of cameras.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path


def _decode(paths: list[str], frames_wanted: int, start: float, queue) -> None:
    from torchcodec.decoders import VideoDecoder

    decoded = 0
    while decoded < frames_wanted:
        for path in paths:
            decoder = VideoDecoder(path, num_ffmpeg_threads=1, seek_mode="approximate")
            total = int(decoder.metadata.num_frames or 0)
            for lo in range(0, total, 32):
                decoded += len(decoder.get_frames_in_range(lo, min(total, lo + 32)).data)
                if decoded >= frames_wanted:
                    break
            if decoded >= frames_wanted:
                break
    queue.put((decoded, time.perf_counter() - start))


def sequential_decode_rate(video_files: list[Path], cameras: int, samples: int,
                           processes: int | None = None) -> dict[str, float]:
    """samples/s of ``processes`` (default: one per core) decoding ``samples * cameras`` frames in all."""
    processes = processes or os.cpu_count() or 1
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    share = [[str(p) for p in video_files[i::processes]] or [str(video_files[0])] for i in range(processes)]
    per_process = -(-samples * cameras // processes)
    start = time.perf_counter()
    workers = [context.Process(target=_decode, args=(paths, per_process, start, queue)) for paths in share]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join()
    frames = sum(n for n, _ in results)
    wall = max(t for _, t in results)
    return {"rate": frames / cameras / wall, "frames": frames, "wall": wall, "processes": processes}
