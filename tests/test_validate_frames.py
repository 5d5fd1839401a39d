"""``lerobot-stream validate ROOT --frames all`` names exactly the episodes streaming would fail on.

Each test copies a good dataset (a sample dataset whose frames show their index, or one written by
LeRobot's own writer), plants defects with ``tests/support/defects.py`` (which returns the episodes
each one makes bad) and runs the command for real: the ``bad_episodes`` of its ``--json`` output
must be exactly the planted ones, each with a one-line cause naming the file; a clean dataset has
none, and exit status 1 says a dataset has bad episodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

import pytest

from lerobot_stream_loader.cli import main
from lerobot_stream_loader.meta.dataset_meta import DatasetMeta, load_meta
from lerobot_stream_loader.tools import validate
from lerobot_stream_loader.tools.validate_frames import plan_frame_tasks
from tests.support import defects

pytestmark = pytest.mark.timeout(180)

CAM0, CAM1 = "observation.images.cam0", "observation.images.cam1"
DEPTH = "observation.images.depth"
# two MP4s per camera (episodes 0-2 and 3-5), data files aligned with them
SAMPLE = dict(episodes=6, cameras=2, size=(64, 48), frames_per_episode=(8, 14), episodes_per_video_file=3,
              episodes_per_data_file=3, seed=11)
Plant = Callable[[Path, DatasetMeta], tuple[set[int], str]]  # -> (bad episodes, the file the causes name)


@pytest.fixture
def sample(make_sample, tmp_path: Path) -> Path:
    return defects.copy_dataset(make_sample(**SAMPLE), tmp_path / "sample")


def run_validate(capsys: pytest.CaptureFixture[str], root: str | Path, *options: str) -> tuple[int, dict]:
    """``lerobot-stream validate ROOT --frames all --json OPTIONS``: (exit status, its JSON)."""
    capsys.readouterr()
    status = main(["validate", str(root), "--frames", "all", "--json", *options])
    return status, json.loads(capsys.readouterr().out)


def bad_of(summary: dict) -> dict[int, str]:
    """{episode_index: cause} of a summary's ``bad_episodes`` (each entry exactly those two keys)."""
    assert all(set(entry) == {"episode_index", "cause"} for entry in summary["bad_episodes"])
    causes = {entry["episode_index"]: entry["cause"] for entry in summary["bad_episodes"]}
    assert len(causes) == len(summary["bad_episodes"]), "an episode is named twice"
    return causes


def assert_names_exactly(summary: dict, status: int, expected: set[int], file: str | None = None) -> None:
    causes = bad_of(summary)
    assert set(causes) == expected, summary["bad_episodes"]
    assert status == (1 if expected else 0) and summary["ok"] is (not expected)
    assert summary["unchecked_episodes"] == []
    for cause in causes.values():
        assert cause and "\n" not in cause
        assert file is None or file in cause, cause


def shift(episode: int) -> Plant:
    """Rows of ``episode`` 3 frames later: its last rows play frames of the next episode of the MP4."""
    return lambda root, meta: (defects.shift_rows(root, episode, 3 / meta.fps),
                               meta.episode(episode).videos[CAM0].path)


def drop(episode: int) -> Plant:
    return lambda root, meta: (defects.drop_rows(root, episode), meta.episode(episode).data_path)


def truncate(episode: int, camera: str) -> Plant:
    def plant(root: Path, meta: DatasetMeta) -> tuple[set[int], str]:
        path = meta.episode(episode).videos[camera].path
        return defects.truncate_file(root, path), path
    return plant


def overwrite(episode: int, camera: str) -> Plant:
    return lambda root, meta: (defects.overwrite_episode_bytes(root, episode, camera),
                               meta.episode(episode).videos[camera].path)


SAMPLE_DEFECTS = {
    "rows shifted into the next episode's frames": shift(1),
    "rows shifted past the file's last frame": shift(5),
    "rows missing": drop(4),
    "MP4 truncated": truncate(4, CAM1),
    "episode's bytes overwritten": overwrite(1, CAM0),
}


def test_clean_sample_has_no_bad_episodes_from_the_command_line(sample: Path) -> None:
    """The names checked from outside: the command's stdout is the JSON summary (the progress bar is on
    stderr), ``bad_episodes`` is an empty list, every frame of every camera was decoded."""
    done = subprocess.run([sys.executable, "-m", "lerobot_stream_loader.cli", "validate", str(sample), "--frames",
                           "all", "--json"], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["bad_episodes"] == [] and summary["ok"] is True
    meta = load_meta(sample)
    assert summary["checked"]["frames_decoded"] == meta.total_frames * len(meta.video_keys)
    assert summary["unchecked_episodes"] == []
    assert "row/s" in done.stderr  # the bar


@pytest.mark.parametrize("layout", [
    dict(to_timestamp_short=True), dict(single_row_group=True, stagger_cameras=True),
    dict(codec="h264", bframes=True, gop=30, cameras=1), dict(depth_camera=True, image_features=("rgb", "depth")),
], ids=["to_timestamp short", "one row group, staggered cameras", "h264 B-frames", "depth and images"])
def test_clean_layouts_have_no_bad_episodes(make_sample, layout: dict, capsys) -> None:
    """Other writers' layouts and every camera kind stream exactly, so none of their episodes is bad."""
    root = make_sample(**{**SAMPLE, **layout})
    status, summary = run_validate(capsys, root, "--workers", "1")
    assert_names_exactly(summary, status, set())
    meta = load_meta(root)
    cameras = len(meta.video_keys) + sum(f.get("dtype") == "image" for f in meta.features.values())
    assert summary["checked"]["frames_decoded"] == meta.total_frames * cameras


@pytest.mark.parametrize("defect", list(SAMPLE_DEFECTS))
def test_each_planted_defect_names_its_episodes(sample: Path, defect: str, capsys) -> None:
    expected, file = SAMPLE_DEFECTS[defect](sample, load_meta(sample))
    status, summary = run_validate(capsys, sample, "--workers", "1")
    assert_names_exactly(summary, status, expected, file)


def test_overwritten_bytes_with_b_frames_name_only_their_episode(make_sample, tmp_path: Path, capsys) -> None:
    root = defects.copy_dataset(make_sample(**{**SAMPLE, "codec": "h264", "bframes": True, "gop": 30, "cameras": 1}),
                                tmp_path / "bframes")
    expected = defects.overwrite_episode_bytes(root, 2, CAM0)
    status, summary = run_validate(capsys, root, "--workers", "1")
    assert_names_exactly(summary, status, expected)


@pytest.mark.timeout(240)
def test_defects_together_in_parallel_from_the_command_line(sample: Path) -> None:
    """Several defects in one dataset, checked by two processes: the command names the union."""
    meta = load_meta(sample)
    expected = set()
    for plant in (shift(0), drop(3), overwrite(5, CAM1)):
        expected |= plant(sample, meta)[0]
    assert expected == {0, 3, 5}
    code = "import sys; from lerobot_stream_loader.cli import main; sys.exit(main())"  # spawn-safe main script
    done = subprocess.run([sys.executable, "-c", code, "validate", str(sample), "--frames", "all", "--json",
                           "--workers", "2"], capture_output=True, text=True, timeout=200)
    summary = json.loads(done.stdout)
    assert_names_exactly(summary, done.returncode, expected)
    assert "threads" not in done.stderr  # helpers were processes
    assert summary["unchecked_episodes"] == []


def test_deleted_mp4_behind_http_names_the_episodes_of_that_file(sample: Path, nginx_factory, capsys) -> None:
    """Over HTTP (credentials in the URL, which reach every request and never the output), with a helper
    process: the episodes whose MP4 is gone (404) are bad, the others are decoded."""
    meta = load_meta(sample)
    gone = meta.episode(0).videos[CAM1].path
    expected = defects.delete_file(sample, gone)
    assert expected == {0, 1, 2}
    server = nginx_factory(sample)
    url = server.url.replace("http://", "http://reader:s3cret-pw@")
    status, summary = run_validate(capsys, url, "--workers", "2")
    assert_names_exactly(summary, status, expected, gone)
    assert all("not found" in cause.lower() or "404" in cause for cause in bad_of(summary).values())
    assert "s3cret-pw" not in json.dumps(summary)
    mp4_gets = [e for e in server.access_log() if e.method == "GET" and e.uri.endswith(".mp4")]
    assert {e.uri.lstrip("/") for e in mp4_gets if e.status == 206} >= set(meta.video_files) - {gone}
    assert all(e.authorization.startswith("Basic ") for e in mp4_gets)


def test_s3_dataset(sample: Path, moto_s3) -> None:
    """On S3 (moto), through the storage options: the overwritten episode is named, no other."""
    expected = defects.overwrite_episode_bytes(sample, 4, CAM1)
    url = moto_s3.upload_folder(sample, "validate-frames", "ds")
    report = validate(url, storage_options=moto_s3.storage_options, frames="all", workers=1)
    assert {bad.episode_index for bad in report.bad_episodes} == expected and report.unchecked_episodes == []
    assert "testing" not in json.dumps(report.to_dict())  # the credentials


def test_transient_faults_absorbed_by_retries_are_not_bad_episodes(sample: Path, nginx_factory,
                                                                   fault_proxy_factory) -> None:
    faults = ["503", "drop", "short", "500", "drop_body"]

    def fault_for(method: str, path: str) -> str | None:
        return faults.pop(0) if path.endswith(".mp4") and faults else None

    proxy = fault_proxy_factory(nginx_factory(sample).url, fault_for=fault_for)
    report = validate(proxy.url, frames="all", workers=1)
    assert report.bad_episodes == [] and report.ok, report.problems
    assert not faults and sum(n for kind, n in proxy.counts.items() if kind != "pass") == 5


class CountingExecutor(Executor):
    """Hands every call on to ``inner``, counting them."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.submitted = inner, 0

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 -- Executor's signature
        self.submitted += 1
        return self.inner.submit(fn, *args, **kwargs)


def test_an_executor_runs_every_task(sample: Path) -> None:
    """``executor=`` (here a Dask cluster's executor) gets every task; bad episodes are named as by default."""
    distributed = pytest.importorskip("distributed")
    meta = load_meta(sample)
    expected = drop(2)(sample, meta)[0] | overwrite(4, CAM0)(sample, meta)[0]
    tasks = plan_frame_tasks(meta, workers=os.cpu_count() or 1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        executor = CountingExecutor(client.get_executor())
        report = validate(sample, frames="all", executor=executor)
    assert executor.submitted == len(tasks) > 1
    assert {bad.episode_index for bad in report.bad_episodes} == expected == {2, 4}
    assert report.unchecked_episodes == []


def test_rows_that_disagree_with_the_drawn_index_are_bad_only_on_marked_sample_datasets(sample: Path) -> None:
    """A sample-writer dataset (marked in info.json) also has the index drawn in decoded frames checked
    against the rows' ``observation.state``: episode 2, whose rows' states are negated, is named.
    Unmarked, the same rows are within every rule streaming applies: no bad episode."""
    import pyarrow as pa

    def negated_state(group: pa.Table, mask) -> pa.Table:  # noqa: ANN001 -- a numpy mask
        where = group.schema.get_field_index("observation.state")
        values = group.column(where).to_pylist()
        values = [[-v for v in value] if mine else value for mine, value in zip(mask, values, strict=True)]
        return group.set_column(where, group.schema.field(where), pa.array(values, group.schema.field(where).type))

    expected = defects.edit_episode_rows(sample, 2, negated_state)
    report = validate(sample, frames="all", workers=1)
    assert {bad.episode_index for bad in report.bad_episodes} == expected
    assert "pattern index" in report.bad_episodes[0].cause
    info = json.loads((sample / "meta/info.json").read_text())
    del info["sample_pattern"]
    (sample / "meta/info.json").write_text(json.dumps(info))
    assert validate(sample, frames="all", workers=1).bad_episodes == []


def test_default_frames_stay_sampled(sample: Path) -> None:
    """Without ``frames="all"`` nothing changes: a few frames per file, no bad_episodes."""
    report = validate(sample)
    assert report.ok and report.bad_episodes == []
    assert report.checked["frames_decoded"] == 3 * len(load_meta(sample).video_files)


# ------------------------------------------------------------------------------ LeRobot's own writer
@pytest.fixture(scope="module")
def lerobot_written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 episodes written by LeRobot 0.6.1 (:func:`~tests.support.lerobot_reference.write_with_lerobot`)."""
    from tests.support.lerobot_reference import write_with_lerobot

    return write_with_lerobot(tmp_path_factory.mktemp("lerobot") / "written", episodes=4, frames=(8, 12))


LEROBOT_DEFECTS = {
    "clean": lambda root, meta: (set(), None),
    "rows shifted into the next episode's frames": shift(1),
    "rows missing": drop(2),
    "episode's bytes overwritten": overwrite(2, "observation.images.cam0"),
    "depth MP4 truncated": truncate(0, DEPTH),
}


@pytest.mark.timeout(400)
@pytest.mark.parametrize("defect", list(LEROBOT_DEFECTS))
def test_lerobot_written_dataset(lerobot_written: Path, tmp_path: Path, defect: str, capsys) -> None:
    root = defects.copy_dataset(lerobot_written, tmp_path / "copy")
    meta = load_meta(root)
    assert meta.total_episodes == 4 and DEPTH in meta.video_keys
    expected, file = LEROBOT_DEFECTS[defect](root, meta)
    status, summary = run_validate(capsys, root, "--workers", "1")
    assert_names_exactly(summary, status, expected, file)
    if defect == "depth MP4 truncated":
        assert expected == set(meta.episode_indices)
