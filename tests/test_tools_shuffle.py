"""shuffle_episodes on real sample datasets: a seeded permutation, re-encoded, every sample kept."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.synthetic.checks import read_frame_index
from lerobot_stream_loader.tools import ToolError, shuffle_episodes, shuffle_order, validate
from tests.support.reference import shuffled_frames
from tests.test_tools_realign import SOURCES, leftovers, tree_hashes

TINY = {"episodes": 4, "cameras": 2, "size": (64, 48), "frames_per_episode": (5, 8),
        "episodes_per_video_file": 2, "episodes_per_data_file": 3, "stagger_cameras": True}
H264 = dict(SOURCES["h264-bframes-staggered"], episodes=4, frames_per_episode=(5, 8))
MAX_MEAN_ABS_DIFF = 5.0  # pixel levels, after a second lossy encode at crf 30


def assert_shuffled_samples(source: Path, output: Path, order: list[int]) -> None:
    """Output episode k holds source episode order[k]: same rows (renumbered) and the same frames."""
    for key, j, i, frame, original in shuffled_frames(source, output, order):
        assert read_frame_index(frame) == i, f"frame {j} of {key}"
        diff = (frame.float() - original.float()).abs().mean().item()
        assert diff < MAX_MEAN_ABS_DIFF, f"frame {j} of {key}: mean abs diff {diff:.2f}"


@pytest.mark.timeout(180)
def test_shuffle_writes_a_seeded_permutation_with_every_sample(make_sample, tmp_path):
    source = make_sample(**TINY)
    before = tree_hashes(source)
    result = shuffle_episodes(source, tmp_path / "out", seed=7, max_episodes_per_file=2, max_workers=2)
    assert tree_hashes(source) == before
    out = Path(result.output)
    src_meta, out_meta = load_meta(source), load_meta(out, all_columns=True)
    assert result.order == [src_meta.episode_indices[p] for p in shuffle_order(4, 7)]
    assert sorted(result.order) == list(range(4)) and result.order != list(range(4))
    report = validate(out)
    assert report.ok, report.problems
    assert report.aligned is True and len(out_meta.data_files) == 2
    assert out_meta.tasks == src_meta.tasks and out_meta.total_frames == src_meta.total_frames
    info = out_meta.features["observation.images.cam0"]["info"]
    assert (info["video.codec"], info["video.g"], info["video.crf"], info["video.preset"]) == ("av1", 2, 30, 12)
    assert_shuffled_samples(source, out, result.order)
    image = out_meta.stats["observation.images.cam0"]
    assert np.asarray(image["mean"]).shape == (3, 1, 1) and image["count"] == [out_meta.total_frames]
    assert 0 <= np.min(image["q01"]) <= np.max(image["q99"]) <= 1
    index_stats = out_meta.episodes_table.column("stats/index/min").to_pylist()
    assert [v[0] for v in index_stats] == [e.from_index for e in out_meta.episodes]


def test_shuffle_order_is_a_pure_function_of_the_seed():
    assert shuffle_order(50, 1) == shuffle_order(50, 1)
    assert shuffle_order(50, 1) != shuffle_order(50, 2)
    assert sorted(shuffle_order(50, 3)) == list(range(50))


@pytest.mark.timeout(240)
def test_dask_executor_gives_the_same_bytes_as_the_default_pool(make_sample, tmp_path):
    distributed = pytest.importorskip("distributed")
    source = make_sample(**H264)
    default = Path(shuffle_episodes(source, tmp_path / "default", seed=3, max_episodes_per_file=2,
                                    max_workers=2).output)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        dask = Path(shuffle_episodes(source, tmp_path / "dask", seed=3, max_episodes_per_file=2,
                                     executor=client.get_executor()).output)
    assert tree_hashes(dask) == tree_hashes(default)
    assert validate(dask).ok
    assert_shuffled_samples(source, dask, [load_meta(source).episode_indices[p] for p in shuffle_order(4, 3)])


class FailingExecutor(ThreadPoolExecutor):
    """Runs tasks, except that the ``fail_at``-th submitted one raises."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(max_workers=2)
        self.fail_at, self.count = fail_at, 0

    def submit(self, fn, /, *args, **kwargs):
        self.count += 1
        if self.count == self.fail_at:
            return super().submit(_explode)
        return super().submit(fn, *args, **kwargs)


def _explode() -> None:
    raise RuntimeError("injected failure")


@pytest.mark.timeout(120)
def test_a_failing_task_leaves_no_output_and_names_the_task(make_sample, tmp_path):
    source = make_sample(**TINY)
    out = tmp_path / "out"
    with FailingExecutor(fail_at=3) as executor, pytest.raises(ToolError) as caught:
        shuffle_episodes(source, out, seed=1, max_episodes_per_file=2, executor=executor)
    message = str(caught.value)
    assert "injected failure" in message and "shuffle task" in message and "nothing was written" in message
    assert not out.exists()
    assert leftovers(out) == []


@pytest.mark.timeout(120)
def test_a_broken_source_video_fails_cleanly_in_process(make_sample, tmp_path):
    import shutil

    source = tmp_path / "src"
    shutil.copytree(make_sample(**TINY), source)
    victim = sorted(source.glob("videos/*/chunk-000/file-000.mp4"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    out = tmp_path / "out"
    with pytest.raises(Exception, match=rf"{victim.name}.*'moov'"):
        shuffle_episodes(source, out, seed=1, max_episodes_per_file=2, max_workers=1)
    assert not out.exists()
    assert leftovers(out) == []
