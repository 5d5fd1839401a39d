"""realign_parquets_to_videos on real sample datasets: aligned output, identical samples, safety."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.tools import ToolError, realign_parquets_to_videos, validate
from tests.support.reference import ReferenceReader

SMALL = {"episodes": 5, "cameras": 2, "size": (64, 48), "frames_per_episode": (6, 10),
         "episodes_per_video_file": 2, "episodes_per_data_file": 3}
SOURCES = {
    "av1-staggered": dict(SMALL, stagger_cameras=True),
    "h264-bframes-staggered": dict(SMALL, codec="h264", bframes=True, gop=8, stagger_cameras=True),
}


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(output: Path) -> list[str]:
    """Temporary folders a tool left beside ``output``."""
    return [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


def assert_same_samples(source: Path, output: Path) -> None:
    """Item for item: equal rows, equal (bit-exact) frames for every camera."""
    src, out = ReferenceReader(source), ReferenceReader(output)
    assert len(out) == len(src)
    for i in range(len(src)):
        assert out.row(i) == src.row(i), f"row {i}"
        for key in src.meta.video_keys:
            assert torch.equal(out.frame(key, i), src.frame(key, i)), f"frame {i} of {key}"


def assert_aligned(output: Path) -> None:
    report = validate(output)
    assert report.ok, report.problems
    assert report.aligned is True
    meta = load_meta(output)
    assert meta.info["data_files"] == sorted({e.data_path for e in meta.episodes})
    for path in meta.data_files:  # one row group per episode
        episodes = {e.index for e in meta.episodes if e.data_path == path}
        assert pq.ParquetFile(output / path).metadata.num_row_groups == len(episodes)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_realign_cuts_staggered_cameras_and_keeps_every_sample(make_sample, tmp_path, name):
    source = make_sample(**SOURCES[name])
    before = tree_hashes(source)
    result = realign_parquets_to_videos(source, tmp_path / "out")
    assert tree_hashes(source) == before
    out = Path(result.output)
    assert "observation.images.cam1" in result.remuxed_cameras
    assert result.cut_video_files > 0
    assert_aligned(out)
    assert_same_samples(source, out)
    src_meta, out_meta = load_meta(source), load_meta(out)
    assert out_meta.total_episodes == src_meta.total_episodes and out_meta.tasks == src_meta.tasks
    assert (out / "meta/stats.json").read_bytes() == (source / "meta/stats.json").read_bytes()
    for a, b in zip(src_meta.episodes, out_meta.episodes):
        assert (a.index, a.length, a.from_index, a.tasks) == (b.index, b.length, b.from_index, b.tasks)


@pytest.mark.timeout(120)
def test_realign_copies_videos_byte_for_byte_when_cameras_agree(make_sample, tmp_path):
    source = make_sample(**SMALL)
    result = realign_parquets_to_videos(source, tmp_path / "out")
    out = Path(result.output)
    assert result.remuxed_cameras == [] and result.cut_video_files == 0
    assert_aligned(out)
    src_meta = load_meta(source)
    for path in src_meta.video_files:
        assert (out / path).read_bytes() == (source / path).read_bytes()
    assert len(load_meta(out).data_files) == len(src_meta.video_files) // 2 > len(src_meta.data_files)
    assert_same_samples(source, out)


@pytest.mark.timeout(60)
def test_copy_videos_false_uses_videos_already_in_place(make_sample, tmp_path):
    source = make_sample(**SMALL)
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="put the videos in place"):
        realign_parquets_to_videos(source, out, copy_videos=False)
    assert not out.exists()
    shutil.copytree(source / "videos", out / "videos")
    realign_parquets_to_videos(source, out, copy_videos=False)
    assert_aligned(out)
    staggered = make_sample(**SOURCES["av1-staggered"])
    with pytest.raises(ValueError, match="must be cut"):
        realign_parquets_to_videos(staggered, tmp_path / "other", copy_videos=False)


@pytest.mark.timeout(60)
def test_refuses_a_non_empty_output_unless_overwrite(make_sample, tmp_path):
    source = make_sample(**SMALL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        realign_parquets_to_videos(source, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="overlaps the source"):
        realign_parquets_to_videos(source, source / "inside")
    realign_parquets_to_videos(source, out, overwrite=True)
    assert not (out / "keep.txt").exists() and validate(out).ok
    assert leftovers(out) == []


@pytest.mark.timeout(60)
def test_a_failure_mid_run_leaves_no_output(make_sample, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(make_sample(**SMALL), source)
    broken = sorted((source / "data").rglob("*.parquet"))[-1]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    out = tmp_path / "out"
    with pytest.raises(ToolError, match=r"realign of .* failed, nothing was written to .*out"):
        realign_parquets_to_videos(source, out)
    assert not out.exists()
    assert leftovers(out) == []


def test_common_layout_is_the_union_of_rollover_points(make_sample):
    from lerobot_stream_loader.tools.realign import common_runs

    meta = load_meta(make_sample(**SOURCES["av1-staggered"]))
    runs = common_runs(meta)
    assert [e for run in runs for e in run] == list(range(meta.total_episodes))
    for run in runs:  # inside one file of every camera
        for key in meta.video_keys:
            assert len({meta.episode(e).videos[key].path for e in run}) == 1
    assert len(runs) > len(meta.video_files) // 2
    assert np.all(np.diff([run[0] for run in runs]) > 0)
