"""The ``lerobot-stream`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> None``; the module adds its parser and sets ``func`` (a callable taking
the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import StreamLoaderError

_COMMAND_MODULES = (
    "sample",
    "index",
    "clip",
    "tools_commands",
    "train",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="lerobot-stream",
        description="Prepare, inspect and stream LeRobot v3.0 datasets.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lerobot-stream`` console script.

    Expected failures (bad input, unreachable or refused storage, a tool that could not finish) print
    one line naming the cause and exit with status 1; ``LEROBOT_STREAM_DEBUG=1`` shows the traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (StreamLoaderError, OSError, ValueError) as exc:
        if os.environ.get("LEROBOT_STREAM_DEBUG"):
            raise
        print(f"lerobot-stream {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
