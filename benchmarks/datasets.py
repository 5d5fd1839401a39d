"""Benchmark datasets: generated once with the sample writer and cached under ``benchmarks/.data/``.

``python -m benchmarks.datasets [--small] [--variant av1|h264]`` builds one ahead of a run; the
stream benchmark calls :func:`ensure_dataset` itself. A finished dataset is never rebuilt unless
its folder is deleted (the writer renames it into place only when complete). Every dataset also
gets its MP4 index sidecar, as ``lerobot-stream index`` writes it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / ".data"
SIDECAR = "meta/mp4_index.bin"


@dataclass(frozen=True)
class DatasetSpec:
    """Options of :func:`lerobot_stream_loader.synthetic.write_sample_dataset` for one benchmark dataset."""

    name: str
    episodes: int
    size: tuple[int, int]
    frames_per_episode: tuple[int, int]
    codec: str
    gop: int
    bframes: bool
    episodes_per_video_file: int
    episodes_per_data_file: int
    cameras: int = 2
    fps: int = 30

    def writer_options(self) -> dict:
        options = asdict(self)
        options.pop("name")
        return options


SPECS = {
    # 60 episodes, 640x480, 2 cameras, AV1 g=2 crf 30 (LeRobot's defaults): 6 MP4s per camera, 4
    # parquet files. Episodes hold 100..200 frames (not 200..400): the sample writer renders about
    # 25 frames/s at this size on a 2-core machine, and the benchmark reads a fixed sample count anyway.
    ("full", "av1"): DatasetSpec("full-av1", 60, (640, 480), (100, 200), "av1", 2, False, 10, 15),
    # H.264 with B-frames (libx264 defaults, keyframe every 30 frames), fewer episodes.
    ("full", "h264"): DatasetSpec("full-h264", 20, (640, 480), (100, 200), "h264", 30, True, 5, 5),
    # DROID's shape: 3 cameras 320x180 at 15 fps, episodes of 150..300 frames, 20 per MP4.
    ("full", "droid"): DatasetSpec("full-droid", 160, (320, 180), (150, 300), "av1", 2, False, 20, 20,
                                   cameras=3, fps=15),
    # Smoke-run size: a couple of files per camera, a few seconds of decoding in all.
    ("small", "av1"): DatasetSpec("small-av1", 12, (320, 240), (40, 80), "av1", 2, False, 4, 5),
    ("small", "h264"): DatasetSpec("small-h264", 12, (320, 240), (40, 80), "h264", 30, True, 4, 5),
    ("small", "droid"): DatasetSpec("small-droid", 16, (320, 180), (40, 80), "av1", 2, False, 4, 4,
                                    cameras=3, fps=15),
}


def spec_for(small: bool, variant: str = "av1") -> DatasetSpec:
    """The spec of the benchmark dataset of that size and codec variant."""
    try:
        return SPECS[("small" if small else "full", variant)]
    except KeyError:
        raise ValueError(f"unknown dataset variant {variant!r}: expected 'av1', 'h264' or 'droid'") from None


def ensure_dataset(spec: DatasetSpec, *, root: Path = DATA_DIR, log=print) -> Path:
    """The dataset folder of ``spec``, written first when missing (with its index sidecar)."""
    from lerobot_stream_loader.synthetic import write_sample_dataset

    path = root / spec.name
    if not (path / "meta" / "info.json").is_file():
        if path.exists():
            shutil.rmtree(path)
        log(f"[datasets] writing {spec.name} ({spec.episodes} episodes, {spec.size[0]}x{spec.size[1]}, "
            f"{spec.codec}) to {path} ...")
        start = time.perf_counter()
        write_sample_dataset(path, **spec.writer_options())
        log(f"[datasets] {spec.name} written in {time.perf_counter() - start:.0f} s")
    if not (path / SIDECAR).is_file():
        build_sidecar(path)
    return path


def build_sidecar(path: Path) -> Path:
    """Write ``meta/mp4_index.bin`` of the local dataset at ``path``."""
    from lerobot_stream_loader.meta.dataset_meta import load_meta
    from lerobot_stream_loader.storage import open_reader
    from lerobot_stream_loader.tools.index_sidecar import build_entries, save_sidecar

    meta = load_meta(str(path))
    reader = open_reader(str(path), backend="fsspec")
    try:
        entries = build_entries(meta, reader, progress=False)
    finally:
        reader.close()
    return Path(save_sidecar(meta, entries, output=str(path / SIDECAR)))


def without_sidecar(path: Path) -> Path:
    """A sibling view of the dataset without its sidecar: symlinks to everything but the sidecar."""
    view = path.parent / f"{path.name}-nosidecar"
    if view.exists():
        return view
    staging = path.parent / f".{view.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for item in path.rglob("*"):
        if item.is_dir() or item.relative_to(path).as_posix() == SIDECAR:
            continue
        target = staging / item.relative_to(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(item.resolve())
    staging.rename(view)
    return view


def dataset_bytes(path: Path) -> dict[str, int]:
    """Bytes of the videos, the parquet data files and the number of MP4 files."""
    videos = list((path / "videos").rglob("*.mp4"))
    data = list((path / "data").rglob("*.parquet"))
    return {"video_bytes": sum(p.stat().st_size for p in videos), "video_files": len(videos),
            "data_bytes": sum(p.stat().st_size for p in data), "data_files": len(data)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="the smoke-run dataset")
    parser.add_argument("--variant", choices=["av1", "h264", "droid", "all"], default="all")
    args = parser.parse_args(argv)
    for variant in (["av1", "h264", "droid"] if args.variant == "all" else [args.variant]):
        path = ensure_dataset(spec_for(args.small, variant))
        print(path, dataset_bytes(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
