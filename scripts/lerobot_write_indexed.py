"""Write a dataset with LeRobot's own writer whose frames show their global index (run in LeRobot's venv).

Every camera frame shows its global frame index drawn by ``lerobot_stream_loader.synthetic.pattern`` and
``observation.state[0]`` holds the same index, so every frame of anything derived from the dataset can
be checked against its row. Needs LeRobot (see shared/tools/lerobot-reference) and this package on
PYTHONPATH:

    PYTHONPATH=. LEROBOT_VENV/bin/python scripts/lerobot_write_indexed.py OUT --episodes 24
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import tvshim  # noqa: E402,F401  (lets LeRobot's torchvision import beside CPU torch)
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from lerobot_stream_loader.synthetic.pattern import FrameRenderer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--frames-per-episode", default="37:53", help="MIN:MAX")
    parser.add_argument("--size", default="256x192", help="WxH")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video-files-size-in-mb", type=int, default=1)
    parser.add_argument("--robot-type", default="synthetic")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    lo, hi = (int(v) for v in args.frames_per_episode.split(":"))
    cameras = [f"observation.images.cam{k}" for k in range(args.cameras)]
    features = {"observation.state": {"dtype": "float32", "shape": (1,), "names": None}}
    features.update({key: {"dtype": "video", "shape": (height, width, 3), "names": ["height", "width", "channels"]}
                     for key in cameras})
    dataset = LeRobotDataset.create("local/indexed", fps=30, features=features, root=args.out,
                                    robot_type=args.robot_type, video_files_size_in_mb=args.video_files_size_in_mb)
    renderers = {key: FrameRenderer(width, height, k) for k, key in enumerate(cameras)}
    rng = np.random.default_rng(args.seed)
    index = 0
    for episode in range(args.episodes):
        for _ in range(int(rng.integers(lo, hi + 1))):
            frame = {"observation.state": np.array([index], np.float32), "task": f"task {episode % 3}"}
            frame.update({key: renderers[key].render(index) for key in cameras})
            dataset.add_frame(frame)
            index += 1
        dataset.save_episode()
    dataset.finalize()
    print(f"wrote {args.out}: {args.episodes} episodes, {index} frames")


if __name__ == "__main__":
    main()
