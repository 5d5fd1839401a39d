"""Dataset preparation subcommands: data-files, realign, shuffle, prepare, validate."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import add_storage_options, positive_int, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data-files", help="list the data parquet files in meta/info.json",
        description="Add 'data_files' (every data parquet path, from the episodes table) to meta/info.json, "
                    "so readers never list a directory. Running it again changes nothing.")
    parser.add_argument("root", metavar="ROOT", help="dataset root (local folder or writable fsspec URL)")
    add_storage_options(parser)
    _json(parser)
    parser.set_defaults(func=_data_files)

    parser = subparsers.add_parser(
        "realign", help="align data/video/meta files without re-encoding",
        description="Write a copy of SRC to OUT whose data parquet files follow the video files' episode "
                    "boundaries (cameras rolling over at different points are cut onto a common layout by "
                    "stream copy). Videos are never re-encoded.")
    _source_output(parser)
    parser.add_argument("--no-copy-videos", dest="copy_videos", action="store_false",
                        help="videos are already in OUT at the source's paths; do not copy them")
    parser.set_defaults(func=_realign)

    parser = subparsers.add_parser(
        "shuffle", help="write episodes in a seeded random order (stream copy or re-encode)",
        description="Write a copy of SRC to OUT with its episodes physically in a seeded random order; "
                    "videos are stream-copied (--vcodec copy: lossless, needs every episode to start on a "
                    "keyframe) or re-encoded by a streaming encoder, one task per output file and camera. "
                    "A killed run continues where it stopped when run again with --resume.")
    _source_output(parser)
    parser.add_argument("--seed", type=int, required=True, help="seed of the episode order")
    _shuffle_options(parser, prepare=False)
    parser.set_defaults(func=_shuffle)

    parser = subparsers.add_parser(
        "prepare", help="shuffle (or realign), data_files, MP4 index sidecar and validate",
        description="Make a streaming-ready copy of SRC in OUT: shuffle (default) or realign "
                    "(--no-shuffle), list data_files, save the MP4 index sidecar, validate.")
    _source_output(parser)
    parser.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="realign only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episode order (default 0)")
    _shuffle_options(parser, prepare=True)
    parser.set_defaults(func=_prepare)

    parser = subparsers.add_parser(
        "validate", help="check a dataset (exit status 1 on problems)",
        description="Check counts, referenced files, data/video/meta alignment (reported), video spans "
                    "and a few decoded frames per video file; with --frames all, every frame of every "
                    "episode, as streaming reads it, naming the bad episodes ('bad_episodes' in --json).")
    parser.add_argument("root", metavar="ROOT", help="dataset root: local folder or fsspec URL")
    parser.add_argument("--frames", choices=("sample", "all"), default="sample",
                        help="decode a few frames per video file (sample, default) or every frame (all)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="processes decoding with --frames all (default: one per CPU)")
    add_storage_options(parser)
    _json(parser)
    parser.set_defaults(func=_validate)


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")


def _source_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="source dataset: local folder or fsspec URL")
    parser.add_argument("output", metavar="OUT",
                        help="output folder or writable fsspec URL, e.g. s3:// (must be empty or absent)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    add_storage_options(parser, output=True)
    _json(parser)


def _shuffle_options(parser: argparse.ArgumentParser, *, prepare: bool) -> None:
    """Shuffle's options; ``prepare``: encoder options default to none given (copy where possible)."""
    if prepare:
        parser.add_argument("--vcodec", default=None,
                            help="'copy' (stream copy), an encoder, or 'auto' (default: copy when every episode "
                                 "starts on a keyframe and no --crf/--g/--preset is given, else libsvtav1)")
    else:
        parser.add_argument("--vcodec", default="libsvtav1",
                            help="'copy' (stream copy, lossless), an encoder, or 'auto' (default libsvtav1)")
    parser.add_argument("--crf", type=int, default=None if prepare else 30, help="quality (default 30)")
    parser.add_argument("--g", type=int, default=None if prepare else 2, help="keyframe interval (default 2)")
    parser.add_argument("--preset", default=None if prepare else "12", help="encoder preset (default 12)")
    parser.add_argument("--workers", type=positive_int, default=None, help="processes (default: one per CPU)")
    parser.add_argument("--max-episodes-per-file", type=positive_int, default=None,
                        help="also roll files over after this many episodes")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run of the same arguments from the files it finished")


def _shuffle_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"vcodec": args.vcodec, "crf": args.crf, "g": args.g, "max_workers": args.workers,
                               "max_episodes_per_file": args.max_episodes_per_file}
    if args.preset is not None:
        options["preset"] = int(args.preset) if args.preset.lstrip("-").isdigit() else args.preset
    return {name: value for name, value in options.items() if value is not None or name == "max_workers"}


def _storage_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"storage_options": args.storage_options, "output_storage_options": args.output_storage_options}


def _finish(args: argparse.Namespace, summary: dict[str, Any], line: str) -> int:
    if args.json:
        print_json(summary)
    else:
        print(line)
    return 0


def _data_files(args: argparse.Namespace) -> int:
    from ..tools import update_info_with_data_files

    files = update_info_with_data_files(args.root, storage_options=args.storage_options)
    return _finish(args, {"root": args.root, "data_files": files},
                   f"{args.root}: info.json lists {len(files)} data files")


def _realign(args: argparse.Namespace) -> int:
    from ..tools import realign_parquets_to_videos

    result = realign_parquets_to_videos(args.source, args.output, args.copy_videos, overwrite=args.overwrite,
                                        progress=not args.json, **_storage_kwargs(args))
    remux = f"; cut by stream copy: {', '.join(result.remuxed_cameras)}" if result.remuxed_cameras else ""
    return _finish(args, result.to_dict(),
                   f"realigned {result.episodes} episodes into {result.data_files} files in {result.output} "
                   f"({result.seconds} s{remux})")


def _shuffle(args: argparse.Namespace) -> int:
    from ..tools import shuffle_episodes

    result = shuffle_episodes(args.source, args.output, args.seed, overwrite=args.overwrite,
                              progress=not args.json, resume=args.resume, **_storage_kwargs(args),
                              **_shuffle_kwargs(args))
    kept = f", {result.resumed} files kept from the unfinished run" if result.resumed else ""
    return _finish(args, result.to_dict(),
                   f"shuffled {result.episodes} episodes ({result.frames} frames, {result.vcodec}) into "
                   f"{result.data_files} files in {result.output} ({result.seconds} s{kept})")


def _prepare(args: argparse.Namespace) -> int:
    from ..tools import prepare

    options = _shuffle_kwargs(args) if args.shuffle else {}
    result = prepare(args.source, args.output, shuffle=args.shuffle, seed=args.seed, overwrite=args.overwrite,
                     progress=not args.json, resume=args.resume, **_storage_kwargs(args), **options)
    how = "shuffled" if result.shuffled else "realigned"
    return _finish(args, result.to_dict(),
                   f"prepared {result.output} ({how}, sidecar {result.sidecar}, validation ok)")


def _validate(args: argparse.Namespace) -> int:
    from ..tools import validate

    report = validate(args.root, storage_options=args.storage_options, frames=args.frames, workers=args.workers,
                      progress=args.frames == "all")  # the bar goes to stderr: --json output stays clean
    if args.json:
        print_json(report.to_dict())
    else:
        for note in report.notes:
            print(f"note: {note}")
        for problem in report.problems:
            print(f"problem: {problem}", file=sys.stderr)
        count = len(report.problems)
        verdict = "ok" if report.ok else f"{count} problem{'s' if count != 1 else ''}"
        checked = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in report.checked.items())
        print(f"{report.root}: {verdict}" + (f" (checked {checked})" if checked else ""))
    return 0 if report.ok else 1
