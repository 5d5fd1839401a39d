"""``lerobot-stream train ARGS``: LeRobot's training script, unchanged, on a dataset this package streams.

The run: split off ``--stream.*`` and ``--mix.*``; parse the rest with lerobot-train's own parser;
check the datasets and options by reading their metadata (a mistake is one error line before
anything starts); then run ``lerobot.scripts.lerobot_train.train`` with the hooks of
:mod:`lerobot_stream_loader.train.hooks` in place.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import lerobot_api
from .build import build_dataset
from .hooks import TrainingHooks, installed
from .options import split_arguments


def run_training(argv: Sequence[str]) -> int:
    """Train with lerobot-train's arguments ``argv`` (plus ``--stream.*``, ``--mix.*``); the exit status.

    Raises :class:`~lerobot_stream_loader.train.lerobot_api.LeRobotMissing` without LeRobot and
    ``ValueError`` (or the loader's errors) for a bad option or source.
    """
    lerobot_args, options = split_arguments(argv)
    options.stream_values()  # names checked before LeRobot is imported
    lerobot_api.require_lerobot()
    with lerobot_api.lerobot_argv(lerobot_args):
        cfg = lerobot_api.parse_config()
        lerobot_api.check_config(cfg)
        build_dataset(lerobot_api.dataset_request(cfg), options, check_only=True)
        from lerobot.scripts.lerobot_train import train

        with installed(TrainingHooks(options)):
            train(cfg)
    return 0

