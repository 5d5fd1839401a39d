"""Pieces shared by the subcommands: dataset arguments, opening a dataset, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..meta import DatasetMeta, load_meta
from ..storage import RangeReader, open_reader


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """ROOT plus --revision and --backend."""
    parser.add_argument("root", metavar="ROOT", help="dataset root: local folder, hf://, s3://, https:// URL")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    parser.add_argument("--backend", choices=("auto", "http", "fsspec"), default="auto",
                        help="range reader backend (default: auto)")


def open_dataset(args: argparse.Namespace, **reader_options: Any) -> tuple[DatasetMeta, RangeReader]:
    """Metadata and a range reader of the dataset named by ``args``."""
    meta = load_meta(args.root, revision=args.revision)
    return meta, open_reader(meta.root, backend=args.backend, **reader_options)


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
