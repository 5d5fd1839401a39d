"""``lerobot-stream bench SOURCE``: how fast a dataset streams here, and what bounds it."""

from __future__ import annotations

import argparse

from .common import add_dataset_arguments, positive_int, print_json


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure streaming speed against this machine's decode limit; say what bounds it",
        description="Decode a few of the dataset's MP4s in sequence (this machine's decode limit), then stream "
                    "it shuffled through StreamingDataLoader for --seconds, and print one line: samples/s, the "
                    "ratio to the limit, and what bounds it (network, decode, collate or shuffle).")
    add_dataset_arguments(parser)
    parser.add_argument("--workers", type=positive_int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--seconds", type=_seconds, default=20.0, help="how long to stream (default 20)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tools.bench import bench

    report = bench(args.root, workers=args.workers, seconds=args.seconds, batch_size=args.batch_size,
                   revision=args.revision, backend=args.backend, storage_options=args.storage_options)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.line())
    return 0
