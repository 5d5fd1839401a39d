"""Run in LeRobot's reference venv: stream a broken copy of a LeRobot-written dataset with
``on_bad_episode="skip"`` on 2 ranks x 2 workers and compare every yielded item with LeRobot's own
``LeRobotDataset`` item of the intact dataset; then resume rank 0 from a checkpoint.

    python tests/support/skip_against_lerobot.py BROKEN INTACT

Prints one JSON object: per rank the yielded ``index`` values, ``len(dataset)`` and the skipped
episodes read from the loader state; the mismatches found (key, index, what); whether the resumed
stream equals the uninterrupted one.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

try:  # the reference environment's shim that lets a CUDA torchvision import beside CPU torch
    import tvshim  # noqa: F401
except ImportError:
    pass

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from lerobot_compare import compare_items  # noqa: E402

from lerobot_stream_loader import SkippedEpisodeWarning, StreamingDataLoader, StreamingLeRobot  # noqa: E402
from lerobot_stream_loader import skipped_episodes as skipped_in  # noqa: E402


def _loader(root: Path, rank: int) -> StreamingDataLoader:
    dataset = StreamingLeRobot(root, on_bad_episode="skip", max_bad_fraction=1.0, shuffle=True, seed=5,
                               pool_size=3, rank=rank, world_size=2)
    return StreamingDataLoader(dataset, batch_size=None, num_workers=2)


def _indices(items: list[dict[str, Any]]) -> list[int]:
    return [int(item["index"]) for item in items]


def main(broken: Path, intact: Path) -> dict[str, Any]:
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    reference = LeRobotDataset(repo_id="local/x", root=intact)
    column = np.asarray(reference.hf_dataset.with_format("numpy")["index"]).reshape(-1)
    positions = {int(value): position for position, value in enumerate(column)}
    cameras = set(reference.meta.camera_keys)
    out: dict[str, Any] = {"ranks": [], "mismatches": []}
    warnings.simplefilter("ignore", SkippedEpisodeWarning)
    for rank in range(2):
        loader = _loader(broken, rank)
        items = list(loader)
        out["ranks"].append({"indices": _indices(items), "len": len(loader.dataset),
                             "skipped": sorted(e["episode_index"] for e in skipped_in(loader.state_dict()))})
        for item in items:
            index = int(item["index"])
            out["mismatches"] += [[key, index, what] for key, what in
                                  compare_items(item, reference[positions[index]], cameras)]
    whole = out["ranks"][0]["indices"]
    first = _loader(broken, 0)
    it = iter(first)
    head = _indices([next(it) for _ in range(len(whole) // 3)])
    state = first.state_dict()
    resumed = _loader(broken, 0)
    resumed.load_state_dict(state)
    out["resumed_equal"] = head + _indices(list(resumed)) == whole
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
