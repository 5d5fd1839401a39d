"""LeRobot's own readers as benchmark tracks, run with the LeRobot reference environment's Python.

``<lerobot venv>/bin/python benchmarks/lerobot_track.py ROOT {map,map-uint8,streaming} SAMPLES WORKERS BATCH SEED``
prints one JSON line: steady samples/s (from the batch that completes the first round of workers),
seconds to the first batch, and the distinct episodes of every batch. ``map`` is ``LeRobotDataset``
(local files, float32 frames) behind a shuffling DataLoader, ``map-uint8`` the same with
``return_uint8=True`` (what LeRobot's training script reads); ``streaming`` is LeRobot's
``StreamingLeRobotDataset`` on the same folder.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:
    import tvshim  # noqa: F401  (lets LeRobot's torchvision import beside CPU torch)
except ImportError:
    pass


def main(argv: list[str]) -> int:
    root, kind, samples, workers, batch, seed = argv[0], argv[1], *map(int, argv[2:6])
    import torch
    from torch.utils.data import DataLoader

    start = time.perf_counter()
    if kind in ("map", "map-uint8"):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        dataset = LeRobotDataset(repo_id="local/bench", root=root, return_uint8=kind == "map-uint8")
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(seed))
    else:
        from lerobot.datasets.streaming_dataset import StreamingLeRobotDataset

        dataset = StreamingLeRobotDataset("local/bench", root=root, shuffle=True, seed=seed)
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers)
    arrivals, distinct, count = [], [], 0
    for batch_items in loader:
        count += len(batch_items["index"])
        arrivals.append((time.perf_counter(), count))
        distinct.append(len(set(batch_items["episode_index"].tolist())))
        if count >= samples:
            break
    warm = max(1, workers)
    (t0, n0), (t1, n1) = arrivals[warm - 1], arrivals[-1]
    print(json.dumps({"rate": (n1 - n0) / (t1 - t0), "ttfb": arrivals[0][0] - start, "samples": count,
                      "distinct": distinct, "wall": arrivals[-1][0] - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
