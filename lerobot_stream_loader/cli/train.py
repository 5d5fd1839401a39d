"""``lerobot-stream train ARGS``: LeRobot's ``lerobot-train`` on datasets this package streams."""

from __future__ import annotations

import argparse
import sys
import textwrap

USAGE = """\
usage: lerobot-stream train LEROBOT_TRAIN_ARGS [--stream.NAME=VALUE ...] [--mix.NAME=VALUE ...]

Runs LeRobot's own training script (lerobot-train; LeRobot {supported}) on datasets
this package streams. Every argument is lerobot-train's (lerobot-train --help), with:

  --dataset.repo_id   a Hub id, an hf://, s3://, http(s):// URL or a local path;
                      a list '[a,b,c]' trains on a weighted mixture of those datasets
  --stream.NAME=VALUE a StreamingLeRobot argument LeRobot has no flag for:
                      {stream}
  --mix.NAME=VALUE    for a mixture: {mix}
                      (weights: '[0.5,0.3,0.2]', default in proportion to frames;
                      features: intersection (default) or union)

Streaming is implied. Checkpoints (--save_freq) also hold the loader's state; --resume=true
continues the data stream where it stopped. Several GPUs: accelerate launch ... lerobot-stream train ...
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand (its arguments go to lerobot-train unparsed)."""
    parser = subparsers.add_parser("train", help="train with LeRobot's lerobot-train on streamed datasets",
                                   add_help=False, prefix_chars="+")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_run)


def _usage() -> str:
    from ..train.lerobot_api import SUPPORTED_TEXT  # the training side (torch) only when asked for
    from ..train.options import mixture_names, stream_names

    wrap = "\n" + " " * 22
    return USAGE.format(supported=SUPPORTED_TEXT,
                        stream=wrap.join(textwrap.wrap(", ".join(stream_names()), 70)),
                        mix=", ".join(mixture_names()))


def _run(args: argparse.Namespace) -> int:
    if not args.args or args.args[0] in ("-h", "--help"):
        print(_usage(), end="")
        return 0 if args.args else 2
    from ..train.lerobot_api import LeRobotMissing
    from ..train.run import run_training

    try:
        return run_training(args.args)
    except LeRobotMissing as exc:
        print(f"lerobot-stream train: {exc}", file=sys.stderr)
        return 1
