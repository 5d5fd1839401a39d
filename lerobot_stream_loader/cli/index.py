"""``lerobot-stream index ROOT``: build the MP4 index sidecar of a dataset."""

from __future__ import annotations

import argparse
import time

from ..tools.index_sidecar import build_entries, save_sidecar
from .common import add_dataset_arguments, open_dataset, positive_int, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="index every MP4 of a dataset and save the sidecar",
        description="Read every MP4's sample table (range reads of its moov only) and save them in one "
                    "file: meta/mp4_index.bin inside the dataset when writable, else a local cache.")
    add_dataset_arguments(parser)
    parser.add_argument("--output", "-o", help="write the sidecar to this local path instead")
    parser.add_argument("--threads", type=positive_int, default=8, help="files indexed in parallel (default 8)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    meta, reader = open_dataset(args, max_workers=args.threads)
    try:
        entries = build_entries(meta, reader, threads=args.threads, progress=not args.json)
        where = save_sidecar(meta, entries, args.output)
    finally:
        reader.close()
    summary = {
        "sidecar": where,
        "files": len(entries),
        "samples": sum(len(e.index.size) for e in entries.values()),
        "requests": reader.stats.fetches,
        "bytes_read": reader.stats.fetched_bytes,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if args.json:
        print_json(summary)
    else:
        print(f"indexed {summary['files']} MP4 files ({summary['samples']} samples) reading "
              f"{summary['bytes_read']} bytes in {summary['seconds']} s -> {where}")
    return 0
