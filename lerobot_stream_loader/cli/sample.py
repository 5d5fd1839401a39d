"""``lerobot-stream sample OUT``: write a synthetic LeRobot v3.0 dataset whose frames show their index."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from ..synthetic import write_sample_dataset
from ..synthetic.images import IMAGE_KINDS
from ..synthetic.layout import SampleOptions, plan_episodes, video_cameras
from .common import print_json


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 96x72, got {text!r}") from None
    return width, height


def _range(text: str) -> tuple[int, int]:
    try:
        low, _, high = text.partition(":")
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX such as 20:40, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sample`` subcommand."""
    defaults = SampleOptions()
    parser = subparsers.add_parser(
        "sample",
        help="write a synthetic LeRobot v3.0 dataset (frame index drawn in every video frame)",
        description=(
            "Write a LeRobot v3.0 dataset: parquet rows, multi-episode MP4s per camera, full metadata. "
            "Every video frame shows its global index (read it with lerobot_stream_loader.synthetic.checks)."
        ),
    )
    parser.add_argument("out", metavar="OUT", help="folder to create (must be absent or empty)")
    parser.add_argument("--episodes", type=int, default=defaults.episodes, help="number of episodes")
    parser.add_argument("--cameras", type=int, default=defaults.cameras, help="number of cameras")
    parser.add_argument("--fps", type=int, default=defaults.fps, help="frames per second")
    parser.add_argument("--size", type=_size, default=defaults.size, metavar="WxH", help="frame size (96x72)")
    parser.add_argument("--frames-per-episode", type=_range, default=defaults.frames_per_episode,
                        metavar="MIN:MAX", help="episode length range, inclusive (20:40)")
    parser.add_argument("--codec", choices=("av1", "h264", "hevc", "vp9", "mpeg4"), default=defaults.codec,
                        help="video codec (av1 = libsvtav1 crf 30 preset 12, LeRobot's default; mpeg4 = "
                             "MPEG-4 Part 2, as some converters write)")
    parser.add_argument("--gop", type=int, default=defaults.gop, help="keyframe interval in frames")
    parser.add_argument("--bframes", action="store_true", help="h264/hevc/mpeg4: use B-frames")
    parser.add_argument("--episodes-per-video-file", type=int, default=defaults.episodes_per_video_file,
                        help="episodes appended to one MP4 before a new file starts")
    parser.add_argument("--stagger-cameras", action="store_true",
                        help="camera k's first MP4 holds k fewer episodes, so cameras roll over apart")
    parser.add_argument("--episodes-per-data-file", type=int, default=defaults.episodes_per_data_file,
                        help="episodes per data parquet file")
    parser.add_argument("--single-row-group", action="store_true",
                        help="write each data file as one row group holding all its episodes")
    parser.add_argument("--to-timestamp-short", action="store_true",
                        help="declare every episode's to_timestamp one frame short, as some converters do")
    parser.add_argument("--extra-columns", action="store_true",
                        help="add float64, int32, bool, string, list<double> and language columns")
    parser.add_argument("--no-faststart", dest="faststart", action="store_false",
                        help="leave the MP4 moov box at the end of each file")
    parser.add_argument("--tasks", type=int, default=defaults.tasks, help="number of task strings")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the episode lengths")
    parser.add_argument("--state-dim", type=int, default=defaults.state_dim, help="observation.state size")
    parser.add_argument("--action-dim", type=int, default=defaults.action_dim, help="action size")
    parser.add_argument("--depth-camera", action="store_true",
                        help="add observation.images.depth, a depth camera as LeRobot 0.6.1 writes one "
                             "(HEVC Main 12 gray12le, lossless, log-quantized 12-bit codes)")
    parser.add_argument("--image-feature", dest="image_features", action="append", nargs="?", const="rgb",
                        choices=IMAGE_KINDS, default=[], metavar="{rgb,depth}",
                        help="add an image feature stored in the data parquet: rgb (PNG, the default) or "
                             "depth (16-bit TIFF in mm); repeat for both")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is not empty")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary, no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the dataset with a progress bar; print a one-line summary (or ``--json``)."""
    options = {
        "episodes": args.episodes, "cameras": args.cameras, "fps": args.fps, "size": args.size,
        "frames_per_episode": args.frames_per_episode, "codec": args.codec, "gop": args.gop,
        "bframes": args.bframes, "episodes_per_video_file": args.episodes_per_video_file,
        "stagger_cameras": args.stagger_cameras, "episodes_per_data_file": args.episodes_per_data_file,
        "faststart": args.faststart, "tasks": args.tasks, "seed": args.seed,
        "state_dim": args.state_dim, "action_dim": args.action_dim,
        "depth_camera": args.depth_camera, "image_features": tuple(args.image_features),
        "single_row_group": args.single_row_group, "to_timestamp_short": args.to_timestamp_short,
        "extra_columns": args.extra_columns,
    }
    sample_options = SampleOptions(**options)
    sample_options.validate()
    total_frames = plan_episodes(sample_options)[-1].to_index
    _check_out(Path(args.out), args.overwrite)
    started = time.perf_counter()
    with tqdm(total=total_frames * video_cameras(sample_options), unit="frame", desc="encoding",
              disable=True if args.json else None) as bar:
        out = write_sample_dataset(args.out, overwrite=args.overwrite, progress=bar.update, **options)
    elapsed = time.perf_counter() - started
    if args.json:
        print_json({"output": str(out), "episodes": args.episodes, "frames": total_frames,
                    "cameras": args.cameras, "codec": args.codec, "seconds": round(elapsed, 3)})
    else:
        print(f"wrote {out}: {args.episodes} episodes, {total_frames} frames, {args.cameras} cameras "
              f"in {elapsed:.1f} s")
    return 0


def _check_out(out: Path, overwrite: bool) -> None:
    if overwrite:
        return
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; pass --overwrite to replace it")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
