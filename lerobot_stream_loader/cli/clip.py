"""``lerobot-stream clip ROOT --episode N --camera KEY -o out.mp4``: one episode's video, no re-encode."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..mp4 import index_mp4, synthesize_mp4
from ..util.local_files import write_file_atomically
from .common import add_dataset_arguments, open_dataset, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "clip", help="write one episode's video as a standalone MP4 (stream copy)",
        description="Cut one episode of one camera out of its multi-episode MP4 by byte range and write it "
                    "as a small valid MP4, without re-encoding. Times in the clip start at its first "
                    "sample: source time = clip time + time_offset.")
    add_dataset_arguments(parser)
    parser.add_argument("--episode", type=int, required=True, help="episode index")
    parser.add_argument("--camera", required=True, help="video key, e.g. observation.images.top")
    parser.add_argument("--output", "-o", required=True, help="output .mp4 path")
    parser.add_argument("--json", action="store_true", help="print the span, byte counts and time offset")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.is_dir():
        raise IsADirectoryError(f"{output} is a folder; give the path of the .mp4 file to write")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output}: the folder {output.parent} does not exist; create it first")
    meta, reader = open_dataset(args)
    try:
        try:
            episode = meta.episode(args.episode)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        if args.camera not in episode.videos:
            raise ValueError(f"{meta.root}: unknown camera {args.camera!r}; "
                             f"cameras: {', '.join(meta.video_keys) or 'none'}")
        video = episode.videos[args.camera]
        size = reader.size(video.path)
        index = index_mp4(lambda offset, length: reader.read(video.path, offset, length), size=size,
                          name=f"{meta.root}/{video.path}")
        span = index.span(video.from_timestamp, video.to_timestamp)
        payload = reader.read(video.path, span.byte_offset, span.byte_length)
        clip = synthesize_mp4(index, span, payload)
    finally:
        reader.close()
    write_file_atomically(output, clip)
    summary = {"source": f"{meta.root}/{video.path}", "output": str(output), "episode": args.episode,
               "camera": args.camera, "from_timestamp": video.from_timestamp, "to_timestamp": video.to_timestamp,
               **span.to_dict(), "clip_bytes": len(clip), "source_bytes": size}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {output} ({len(clip)} bytes, {span.samples} samples, time offset {span.time_offset:.6f} s)")
    return 0
