"""What ``lerobot-stream train`` takes from LeRobot: its version, its argument parser, its dataset settings.

LeRobot is imported here only, and only when training runs; it is no dependency of this package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from .build import DatasetRequest, DeltaTimestamps

SUPPORTED = ((0, 6, 1), (0, 7, 0))  # first version supported, first one not
SUPPORTED_TEXT = "0.6.1 and later 0.6.x"
INSTALL = ('LeRobot is not installed: pip install --no-deps "lerobot==0.6.1", then the packages docs/training.md '
           "lists (LeRobot's own pins would replace this package's torch and torchcodec)")


class LeRobotMissing(RuntimeError):
    """LeRobot is not installed (the message says how to install it)."""


def require_lerobot() -> str:
    """The installed LeRobot version, checked against :data:`SUPPORTED`."""
    if importlib.util.find_spec("lerobot") is None:
        raise LeRobotMissing(INSTALL)
    try:
        version = importlib.metadata.version("lerobot")
    except importlib.metadata.PackageNotFoundError:
        import lerobot

        version = str(getattr(lerobot, "__version__", "0"))
    if not supported(version):
        raise ValueError(f"LeRobot {version} is installed; lerobot-stream train supports LeRobot {SUPPORTED_TEXT} "
                         '(pip install --no-deps "lerobot==0.6.1", see docs/training.md)')
    return version


def supported(version: str) -> bool:
    """Whether LeRobot ``version`` is one ``lerobot-stream train`` supports."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    return SUPPORTED[0] <= numbers < SUPPORTED[1]


@contextmanager
def lerobot_argv(args: Sequence[str]) -> Iterator[None]:
    """``sys.argv`` as ``lerobot-train ARGS``: LeRobot's parser and config checks read it."""
    saved = sys.argv
    sys.argv = ["lerobot-train", *args]
    try:
        yield
    finally:
        sys.argv = saved


def parse_config() -> Any:
    """lerobot-train's ``TrainPipelineConfig`` from ``sys.argv``, parsed by LeRobot's own parser
    (plugins, ``--policy.path``, ``--config_path`` as ``lerobot-train`` handles them)."""
    import lerobot.scripts.lerobot_train  # noqa: F401  (registers the policy and env config types)
    from lerobot.configs import parser
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()

    def parsed(cfg: Any) -> Any:
        return cfg

    parsed.__annotations__ = {"cfg": TrainPipelineConfig}  # the parser reads the config class from here
    return parser.wrap()(parsed)()


def check_config(cfg: Any) -> None:
    """Refuse what this loader does not do, before anything starts; streaming is implied."""
    if cfg.job.is_remote:
        raise ValueError(f"--job.target={cfg.job.target}: a remote job runs lerobot-train on LeRobot's own "
                         "datasets; run lerobot-stream train where it should train")
    if cfg.dataset.eval_split:
        raise ValueError(f"--dataset.eval_split={cfg.dataset.eval_split}: held-out evaluation episodes are read "
                         "by LeRobot's map-style dataset; train with eval_split=0 (the default)")
    cfg.dataset.streaming = True


def dataset_request(cfg: Any) -> DatasetRequest:
    """The dataset settings of a ``TrainPipelineConfig``."""
    from lerobot.transforms import ImageTransforms

    data = cfg.dataset
    transforms = ImageTransforms(data.image_transforms) if data.image_transforms.enable else None
    return DatasetRequest(repo_id=str(data.repo_id), root=data.root, repo_type=data.repo_type,
                          episodes=data.episodes, revision=data.revision, image_transforms=transforms,
                          depth_output_unit=data.depth_output_unit, tolerance_s=cfg.tolerance_s, seed=cfg.seed,
                          num_workers=cfg.num_workers)


def delta_timestamps(cfg: Any) -> DeltaTimestamps:
    """Each dataset's windows from the policy's delta indices and the dataset's own fps (LeRobot's rule)."""
    from lerobot.datasets.factory import resolve_delta_timestamps

    return lambda meta: resolve_delta_timestamps(cfg.trainable_config, meta)


def use_imagenet_stats(meta: Any) -> None:
    """ImageNet's mean and std as every RGB camera's stats (``--dataset.use_imagenet_stats``, LeRobot's default)."""
    from lerobot.utils.constants import IMAGENET_STATS

    for key in meta.camera_keys:
        if key in meta.depth_keys:
            continue
        for name, value in IMAGENET_STATS.items():
            meta.stats[key][name] = torch.tensor(value, dtype=torch.float32)


def process_place() -> tuple[int, int]:
    """(rank, world size) of this process as accelerate sees it (torch.distributed under ``accelerate launch``)."""
    from accelerate import PartialState

    state = PartialState()
    return int(state.process_index), int(state.num_processes)
