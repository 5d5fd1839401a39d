"""Pieces shared by the subcommands: dataset arguments, opening a dataset, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..meta.dataset_meta import DatasetMeta, load_meta
from ..storage import RangeReader


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (fsspec storage options)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"anon\": true}}', got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_storage_options(parser: argparse.ArgumentParser, *, output: bool = False) -> None:
    """--storage-options (and with ``output``, --output-storage-options): fsspec options as JSON."""
    parser.add_argument("--storage-options", type=json_object, default=None, metavar="JSON",
                        help="fsspec options of the source, e.g. "
                             "'{\"client_kwargs\": {\"endpoint_url\": \"http://127.0.0.1:9000\"}}'")
    if output:
        parser.add_argument("--output-storage-options", type=json_object, default=None, metavar="JSON",
                            help="fsspec options of OUT (default: the source's when both use one protocol)")


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """ROOT plus --revision, --backend and --storage-options."""
    parser.add_argument("root", metavar="ROOT", help="dataset root: local folder, hf://, s3://, https:// URL")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    parser.add_argument("--backend", choices=("auto", "http", "fsspec"), default="auto",
                        help="range reader backend (default: auto)")
    add_storage_options(parser)


def open_dataset(args: argparse.Namespace, **reader_options: Any) -> tuple[DatasetMeta, RangeReader]:
    """Metadata and a range reader of the dataset named by ``args``."""
    meta = load_meta(args.root, revision=args.revision, storage_options=args.storage_options,
                     backend=args.backend)
    return meta, meta.location.open_reader(**reader_options)


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
