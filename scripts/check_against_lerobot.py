#!/usr/bin/env python
"""Check that StreamingLeRobot returns exactly what LeRobot's own ``LeRobotDataset`` returns.

Both readers open the same local dataset in one process. Every item StreamingLeRobot yields is
matched by its ``index`` to LeRobot's item at that row and compared: the same keys, the same dtypes
and shapes, ``torch.equal`` values (camera frames pixel for pixel, float32 in [0, 1]) and the same
task string. Three checks run by default:

- ``plain``: no ``delta_timestamps``;
- ``windows``: a window of past and future frames of one camera and an action chunk reaching past
  both episode ends (``<key>_is_pad`` included);
- ``single``: a one-offset window (``[0.0]``) of one camera and of ``observation.state``.

Every camera kind LeRobot 0.6.1 stores is compared the same way: RGB video, depth video (float32
``(1, H, W)`` in ``--depth-output-unit``), and image features stored in the parquet (RGB and depth);
the windowed checks also window the first depth camera and the first image feature. The stats both
readers expose (depth stats rescaled to the output unit) are compared too. ``--make-lerobot OUT``
writes a dataset with LeRobot's own writer holding each of these kinds (``lerobot_written.py``).
``--return-uint8`` and ``--flip-transform`` (a horizontal flip as ``image_transforms``) are given to
both readers. Item comparison lives in ``lerobot_compare.py`` beside this script.

Items are read in row order, or with ``--shuffle SEED`` in StreamingLeRobot's shuffled order (LeRobot
is then read in that random order too, as under a shuffling DataLoader; its cached video decoders
see the same random access). ``--only-episodes 1,3`` gives both readers ``episodes=[1, 3]``.

Needs an environment where both ``lerobot`` and this package import (docs/lerobot-compatibility.md
says how to build one). No network is used: the Hub is put offline before LeRobot is imported.

    python scripts/check_against_lerobot.py ROOT
    python scripts/check_against_lerobot.py --make-sample /tmp/s --codec h264 --bframes --size 64x48
    python scripts/check_against_lerobot.py --make-sample /tmp/s --depth-camera --image-feature rgb \
        --image-feature depth
    python scripts/check_against_lerobot.py --make-lerobot /tmp/l --depth-output-unit m

Exit status: 0 when every item is equal, 1 on any mismatch, 2 when LeRobot cannot load the dataset.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # the reference environment's shim that lets a CUDA torchvision import beside CPU torch
    import tvshim  # noqa: F401
except ImportError:
    pass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

try:  # the reference environment's torchvision shim must be imported before LeRobot
    import tvshim  # noqa: E402, F401
except ImportError:
    pass

from lerobot_compare import compare_items  # noqa: E402  (beside this script)

CHECKS = ("plain", "windows", "single")


@dataclass
class Mismatch:
    """Every item where one key differs, and what differed at the first of them."""

    count: int = 0
    first: str = ""


@dataclass
class CheckResult:
    name: str
    delta_timestamps: dict[str, list[float]] | None
    items: int = 0
    mismatches: dict[str, Mismatch] = field(default_factory=dict)
    order_note: str = ""

    def add(self, key: str, index: int | None, what: str) -> None:
        entry = self.mismatches.setdefault(key, Mismatch())
        entry.count += 1
        if not entry.first:
            entry.first = f"index {index}: {what}" if index is not None else what


class LogCapture(logging.Handler):
    """Collects warnings (and worse) logged by any library while LeRobot runs."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")


# -- running one check ------------------------------------------------------------------------------
def delta_configs(fps: int, camera: str | None, features: dict[str, Any],
                  others: list[str] = ()) -> dict[str, dict[str, list[float]] | None]:
    """The ``delta_timestamps`` of each check (keys the dataset lacks are left out); ``others`` are
    further cameras (a depth camera, an image feature) windowed like ``camera``."""
    windows: dict[str, list[float]] = {}
    single: dict[str, list[float]] = {}
    for key in ([camera] if camera is not None else []) + [k for k in others if k != camera]:
        windows[key] = [k / fps for k in (-3, -1, 0, 2)]
        single[key] = [0.0]
    if "action" in features:
        windows["action"] = [k / fps for k in range(-2, 12)]
    if "observation.state" in features:
        single["observation.state"] = [0.0]
    return {"plain": None, "windows": windows or None, "single": single or None}


@dataclass(frozen=True)
class Options:
    """What both readers are given besides ``delta_timestamps``."""

    tolerance_s: float
    episodes: list[int] | None
    shuffle_seed: int | None
    depth_output_unit: str = "mm"
    return_uint8: bool = False
    flip_transform: bool = False

    @property
    def image_transforms(self) -> Any:
        return _flip if self.flip_transform else None


def _flip(frame: torch.Tensor) -> torch.Tensor:
    """A deterministic image transform (horizontal flip) given to both readers."""
    return frame.flip(-1)


def _lerobot_dataset(root: Path, delta: dict[str, list[float]] | None, options: Options) -> Any:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id="local/x", root=root, episodes=options.episodes, delta_timestamps=delta,
                          tolerance_s=options.tolerance_s, depth_output_unit=options.depth_output_unit,
                          return_uint8=options.return_uint8, image_transforms=options.image_transforms)


def _row_positions(lerobot_ds: Any) -> dict[int, int]:
    """Global ``index`` -> row position in LeRobot's concatenated data files."""
    column = np.asarray(lerobot_ds.hf_dataset.with_format("numpy")["index"]).reshape(-1)
    return {int(value): position for position, value in enumerate(column)}


def _streamed(root: Path, delta: dict[str, list[float]] | None, options: Options) -> Iterator[dict[str, Any]]:
    from lerobot_stream_loader import StreamingLeRobot

    ours = StreamingLeRobot(root, return_uint8=options.return_uint8, image_transforms=options.image_transforms,
                            episodes=options.episodes, delta_timestamps=delta,
                            tolerance_s=options.tolerance_s, shuffle=options.shuffle_seed is not None,
                            seed=options.shuffle_seed or 0, depth_output_unit=options.depth_output_unit)
    try:
        yield from ours
    finally:
        ours.close()


def run_check(root: Path, name: str, delta: dict[str, list[float]] | None, options: Options,
              cameras: set[str]) -> CheckResult:
    result = CheckResult(name, delta)
    lerobot_ds = _lerobot_dataset(root, delta, options)
    positions = _row_positions(lerobot_ds)
    seen: list[int] = []
    try:
        for item in _streamed(root, delta, options):
            index = int(item["index"])
            seen.append(index)
            if index not in positions:
                result.add("<index>", index, "yielded by StreamingLeRobot, absent from LeRobot's rows")
                continue
            try:
                ref = lerobot_ds[positions[index]]
            except Exception as exc:  # any failure of LeRobot on this item is a finding
                result.add("<LeRobot error>", index, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            result.items += 1
            for key, what in compare_items(item, ref, cameras):
                result.add(key, index, what)
    except Exception as exc:  # report where StreamingLeRobot stopped
        result.add("<StreamingLeRobot error>", seen[-1] if seen else None,
                   f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    missing = sorted(set(positions) - set(seen))
    if missing:
        result.add("<index>", missing[0], f"{len(missing)} LeRobot rows never yielded by StreamingLeRobot")
    repeated = len(seen) - len(set(seen))
    if repeated:
        result.add("<index>", None, f"{repeated} items yielded more than once")
    lerobot_order = sorted(positions, key=positions.__getitem__)
    result.order_note = ("StreamingLeRobot yields LeRobot's row order" if seen == lerobot_order else
                         "StreamingLeRobot's order differs from LeRobot's row order (items matched by index)")
    return result


# -- command line -----------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _span(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high or low)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="local LeRobot v3.0 dataset folder")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {CHECKS}")
    parser.add_argument("--camera", help="camera key of the windowed checks (default: the first video key)")
    parser.add_argument("--tolerance-s", type=float, default=1e-4, help="tolerance_s given to both readers")
    parser.add_argument("--only-episodes", type=_ints, dest="select", metavar="I,J,...",
                        help="only these episodes (the episodes= argument of both readers)")
    parser.add_argument("--depth-output-unit", choices=("mm", "m"), default="mm",
                        help="depth_output_unit given to both readers (LeRobot's default: mm)")
    parser.add_argument("--return-uint8", action="store_true", help="return_uint8=True for both readers")
    parser.add_argument("--flip-transform", action="store_true",
                        help="both readers get image_transforms=horizontal flip (LeRobot skips depth maps)")
    parser.add_argument("--shuffle", type=int, metavar="SEED", dest="shuffle_seed",
                        help="StreamingLeRobot shuffles with this seed, and LeRobot is read in that random "
                             "order too (as a shuffling DataLoader would), instead of row order")
    sample = parser.add_argument_group("write a sample dataset first (lerobot_stream_loader.synthetic)")
    sample.add_argument("--make-sample", type=Path, metavar="OUT", help="write a sample dataset to OUT and check it")
    sample.add_argument("--episodes", type=int, default=6)
    sample.add_argument("--cameras", type=int, default=2)
    sample.add_argument("--size", type=_size, default=(64, 48), metavar="WxH")
    sample.add_argument("--frames-per-episode", type=_span, default=(10, 30), metavar="MIN:MAX")
    sample.add_argument("--codec", default="av1", choices=("av1", "h264", "hevc"))
    sample.add_argument("--gop", type=int, default=2)
    sample.add_argument("--bframes", action="store_true")
    sample.add_argument("--episodes-per-video-file", type=int, default=2)
    sample.add_argument("--stagger-cameras", action="store_true")
    sample.add_argument("--episodes-per-data-file", type=int, default=2)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--depth-camera", action="store_true", help="the sample gets a depth camera")
    sample.add_argument("--image-feature", dest="image_features", action="append", choices=("rgb", "depth"),
                        default=[], help="the sample gets an image feature of this kind (repeatable)")
    sample.add_argument("--overwrite", action="store_true")
    parser.add_argument("--make-lerobot", type=Path, metavar="OUT",
                        help="write a dataset with LeRobot's own writer (RGB and depth video, RGB and depth "
                             "images in parquet; --episodes, --size, --seed apply) to OUT and check it")
    args = parser.parse_args(argv)
    if [args.root, args.make_sample, args.make_lerobot].count(None) != 2:
        parser.error("give one of ROOT, --make-sample OUT or --make-lerobot OUT")
    unknown = set(args.checks.split(",")) - set(CHECKS)
    if unknown:
        parser.error(f"unknown checks {sorted(unknown)}; choose from {CHECKS}")
    return args


def make_sample(args: argparse.Namespace) -> Path:
    from lerobot_stream_loader.synthetic import write_sample_dataset

    return write_sample_dataset(
        args.make_sample, episodes=args.episodes, cameras=args.cameras, size=args.size,
        frames_per_episode=args.frames_per_episode, codec=args.codec, gop=args.gop, bframes=args.bframes,
        episodes_per_video_file=args.episodes_per_video_file, stagger_cameras=args.stagger_cameras,
        episodes_per_data_file=args.episodes_per_data_file, seed=args.seed, overwrite=args.overwrite,
        depth_camera=args.depth_camera, image_features=tuple(args.image_features))


def make_lerobot(args: argparse.Namespace) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lerobot_written import write_lerobot_dataset

    return write_lerobot_dataset(args.make_lerobot, episodes=args.episodes, frames=args.frames_per_episode,
                                 size=args.size, seed=args.seed, overwrite=args.overwrite)


def print_result(result: CheckResult) -> None:
    total = sum(m.count for m in result.mismatches.values())
    print(f"check {result.name}: delta_timestamps={result.delta_timestamps}")
    print(f"  {result.items} items compared, {total} key mismatches; {result.order_note}")
    for key, entry in sorted(result.mismatches.items()):
        print(f"  MISMATCH {key}: {entry.count} items; first {entry.first}")


def _load_and_check(root: Path, args: argparse.Namespace) -> list[CheckResult] | None:
    """Load the dataset with LeRobot (None if it cannot) and run the selected checks."""
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    version = getattr(lerobot, "__version__", "?")
    options = Options(args.tolerance_s, args.select, args.shuffle_seed, args.depth_output_unit,
                      args.return_uint8, args.flip_transform)
    try:
        meta = LeRobotDatasetMetadata("local/x", root=root)
        probe = _lerobot_dataset(root, None, options)
        first = probe[0]
    except Exception:  # the whole point is to report it
        print(f"LeRobot {version} could not load {root}:")
        traceback.print_exc(file=sys.stdout)
        return None
    print(f"dataset {root}: LeRobot {version} loaded {len(probe)} frames, {probe.num_episodes} episodes, "
          f"video backend {getattr(probe, 'video_backend', getattr(probe, '_video_backend', '?'))}")
    dropped = [k for k in meta.features if k not in first]
    print(f"  features in info.json absent from LeRobot's item: {dropped or 'none'}")
    cameras = set(meta.camera_keys)
    rgb_videos = [k for k in meta.video_keys if k not in meta.depth_keys]
    camera = args.camera or (rgb_videos[0] if rgb_videos else None)
    others = [keys[0] for keys in ([k for k in meta.video_keys if k in meta.depth_keys],
                                   [k for k in meta.image_keys if k not in meta.depth_keys],
                                   [k for k in meta.image_keys if k in meta.depth_keys]) if keys]
    configs = delta_configs(meta.fps, camera, meta.features, others)
    results = [run_check(root, name, configs[name], options, cameras) for name in args.checks.split(",")]
    results.append(compare_stats(root, probe, options))
    return results


def compare_stats(root: Path, lerobot_ds: Any, options: Options) -> CheckResult:
    """LeRobot's ``meta.stats`` (depth rescaled to the output unit) against StreamingLeRobot's ``meta.stats``."""
    from lerobot_stream_loader import StreamingLeRobot

    result = CheckResult("stats", None)
    ours = StreamingLeRobot(root, episodes=options.episodes, depth_output_unit=options.depth_output_unit)
    for key, stats in (lerobot_ds.meta.stats or {}).items():
        for stat, value in stats.items():
            mine = ours.meta.stats.get(key, {}).get(stat)
            result.items += 1
            if mine is None or np.shape(mine) != np.shape(value) or not np.allclose(mine, value, rtol=1e-12):
                result.add(key, None, f"{stat}: ours {np.asarray(mine).ravel()[:3]} vs LeRobot "
                                      f"{np.asarray(value).ravel()[:3]}")
    ours.close()
    return result


def check_dataset(root: Path, args: argparse.Namespace) -> int:
    """Run the selected checks on ``root``; print a summary; return the exit status."""
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = _load_and_check(root, args)
    finally:
        logging.getLogger().removeHandler(capture)
    for result in results or []:
        print_result(result)
    notes = sorted({f"{w.category.__name__}: {w.message}" for w in caught} | set(capture.messages))
    print(f"warnings while loading and reading: {len(notes) or 'none'}")
    for note in notes:
        print(f"  {note[:300]}")
    if results is None:
        return 2
    failed = any(r.mismatches for r in results)
    print("RESULT:", "MISMATCH" if failed else "OK (every item equal)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_lerobot is not None:
        root = make_lerobot(args)
    else:
        root = make_sample(args) if args.make_sample is not None else args.root.resolve()
    own_cache = "HF_DATASETS_CACHE" not in os.environ
    cache = Path(tempfile.mkdtemp(prefix="lerobot-check-cache-")) if own_cache else None
    if cache is not None:  # LeRobot converts the parquet files into a datasets cache: keep it private
        os.environ["HF_DATASETS_CACHE"] = str(cache)
    try:
        return check_dataset(root, args)
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
