"""Write a small dataset with LeRobot's own writer (``LeRobotDataset.create``, ``add_frame``,
``save_episode``, ``finalize``), with every camera kind LeRobot 0.6.1 stores.

Features: ``observation.state`` and ``action`` rows; ``observation.images.cam0``, an RGB video
camera; ``observation.images.depth``, a depth video camera (``is_depth_map``, fed float32 metres, so
LeRobot records ``depth_unit: "m"`` and encodes 12-bit HEVC); ``observation.images.still``, an RGB
image feature (PNG in the parquet); ``observation.images.depth_image``, a depth image feature
(uint16 millimetres, TIFF in the parquet). Frame contents are the sample writer's, so every camera
frame shows its global index (``lerobot_stream_loader.synthetic.checks``).

Needs LeRobot importable (``tvshim`` first where the reference environment has it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def write_lerobot_dataset(out: Path, *, episodes: int = 3, frames: tuple[int, int] = (6, 12),
                          size: tuple[int, int] = (64, 48), fps: int = 30, seed: int = 0,
                          overwrite: bool = False) -> Path:
    """Write the dataset to ``out`` with LeRobot's writer; return ``out``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from lerobot_stream_loader.synthetic.depth import depth_metres, depth_millimetres
    from lerobot_stream_loader.synthetic.images import image_renderer
    from lerobot_stream_loader.synthetic.pattern import FrameRenderer, action_matrix, state_matrix

    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
        shutil.rmtree(out)
    width, height = size
    names = ["height", "width", "channels"]
    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": [f"motor_{j}" for j in range(6)]},
        "action": {"dtype": "float32", "shape": (6,), "names": [f"motor_{j}" for j in range(6)]},
        "observation.images.cam0": {"dtype": "video", "shape": (height, width, 3), "names": names},
        "observation.images.depth": {"dtype": "video", "shape": (height, width, 1), "names": names,
                                     "info": {"is_depth_map": True}},
        "observation.images.still": {"dtype": "image", "shape": (height, width, 3), "names": names},
        "observation.images.depth_image": {"dtype": "image", "shape": (height, width, 1), "names": names,
                                           "info": {"is_depth_map": True}},
    }
    dataset = LeRobotDataset.create("local/written-by-lerobot", fps=fps, features=features, root=out,
                                    use_videos=True)
    camera, still = FrameRenderer(width, height, 0), image_renderer(width, height)
    lengths = np.random.default_rng(seed).integers(frames[0], frames[1] + 1, size=episodes).tolist()
    index = 0
    for episode, length in enumerate(lengths):
        for _ in range(length):
            dataset.add_frame({
                "observation.state": state_matrix(np.array([index]), 6)[0],
                "action": action_matrix(np.array([index]), 6)[0],
                "observation.images.cam0": camera.render(index),
                "observation.images.depth": depth_metres(index, width, height)[..., None],
                "observation.images.still": still.render(index),
                "observation.images.depth_image": depth_millimetres(index, width, height)[..., None],
                "task": f"task {episode % 2}",
            })
            index += 1
        dataset.save_episode()
    dataset.finalize()
    return out
