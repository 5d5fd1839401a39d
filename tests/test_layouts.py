"""Layouts other writers make, read exactly as LeRobot reads them.

Converters' timing (``to_timestamp`` a frame short, MPEG-4 Part 2 video under an h264 label), other
codecs (VP9, MPEG-4 Part 2), extra column dtypes and language columns, one row group for many
episodes, one episode per file, partial local copies, unknown storage formats and info.json keys.
Every item is compared with the expected tensors (frames with a full-file decode).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.cli import main as cli_main
from lerobot_stream_loader.errors import DatasetFormatError, FrameMismatchError
from lerobot_stream_loader.fetch import assembly as episode_assembly
from lerobot_stream_loader.fetch.assembly import EpisodeAssembler
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.meta.episode_files import files_of_episodes
from lerobot_stream_loader.storage import open_root_reader
from lerobot_stream_loader.synthetic.checks import expected_action, expected_state, read_frame_index
from lerobot_stream_loader.synthetic.extra_columns import expected_extra_row
from tests.support.lerobot_reference import run_check_against_lerobot
from tests.support.reference import ReferenceReader

EPISODES = "meta/episodes/chunk-000/file-000.parquet"
CAM = "observation.images.cam0"
PARTIAL_EPISODES = [4, 5]


@pytest.fixture(scope="module")
def converter(make_sample, tmp_path_factory) -> Path:
    """MPEG-4 Part 2 video labelled h264 in info.json, every to_timestamp one frame short."""
    source = make_sample(episodes=4, cameras=2, frames_per_episode=(6, 12), codec="mpeg4", gop=4,
                         to_timestamp_short=True, episodes_per_video_file=2, episodes_per_data_file=3,
                         size=(64, 48), seed=7)
    root = tmp_path_factory.mktemp("converter") / "ds"
    shutil.copytree(source, root)
    info = json.loads((root / "meta/info.json").read_text())
    for key in (CAM, "observation.images.cam1"):
        info["features"][key]["info"]["video.codec"] = "h264"
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return root


@pytest.fixture(scope="module")
def extra(make_sample) -> Path:
    """float64/int32/bool/string/list<double>/language columns; one row group holding five episodes."""
    return make_sample(episodes=5, cameras=1, frames_per_episode=(5, 9), codec="mpeg4", gop=3,
                       extra_columns=True, single_row_group=True, episodes_per_data_file=5,
                       episodes_per_video_file=5, size=(64, 48), seed=2)


@pytest.fixture(scope="module")
def one_per_file(make_sample) -> Path:
    """100 episodes of 2-3 frames, each in its own data file and its own MP4."""
    return make_sample(episodes=100, cameras=1, frames_per_episode=(2, 3), codec="mpeg4", gop=2,
                       episodes_per_video_file=1, episodes_per_data_file=1, size=(64, 48), seed=9)


@pytest.fixture(scope="module")
def full_and_partial(make_sample, tmp_path_factory) -> tuple[Path, Path]:
    """A dataset and a copy of it holding only the files of episodes 4 and 5."""
    source = make_sample(episodes=6, cameras=2, frames_per_episode=(6, 10), codec="mpeg4", gop=3,
                         episodes_per_video_file=2, stagger_cameras=True, episodes_per_data_file=2,
                         size=(64, 48), seed=5)
    root = tmp_path_factory.mktemp("partial") / "ds"
    shutil.copytree(source, root)
    meta = load_meta(source)
    kept = files_of_episodes(meta, PARTIAL_EPISODES)
    for path in files_of_episodes(meta, meta.episode_indices):
        if path not in kept:
            (root / path).unlink()
    return source, root


def _check_items(root: Path, items: list[dict], ref: ReferenceReader | None = None) -> None:
    """Rows, task and every camera frame (uint8) equal the whole-file reference."""
    ref = ref or ReferenceReader(root)
    assert items
    for item in items:
        i = int(item["index"])
        row = ref.row(i)
        assert int(item["episode_index"]) == row["episode_index"] and int(item["frame_index"]) == row["frame_index"]
        np.testing.assert_array_equal(item["observation.state"].numpy(), expected_state(i, 6))
        np.testing.assert_array_equal(item["action"].numpy(), expected_action(i, 6))
        assert item["task"] == ref.meta.tasks[row["task_index"]]
        for key in ref.meta.video_keys:
            assert item[key].dtype == torch.uint8
            assert torch.equal(item[key], ref.frame(key, i)), f"frame {i} of {key} differs from a full decode"
            assert read_frame_index(item[key]) == i


def _rewrite_episodes(root: Path, change) -> None:
    table = pq.read_table(root / EPISODES)
    pq.write_table(change(table), root / EPISODES)


# -- converters' timing ----------------------------------------------------------------------------
def test_short_to_timestamp_reads_every_frame(converter: Path) -> None:
    meta = load_meta(converter)
    for ep in meta.episodes:
        span = ep.videos[CAM]
        assert span.to_timestamp == pytest.approx(span.from_timestamp + (ep.length - 1) / meta.fps)
    items = list(StreamingLeRobot(converter, return_uint8=True))
    assert len(items) == meta.total_frames
    _check_items(converter, items)


def test_short_to_timestamp_windows_reach_the_last_frame(converter: Path) -> None:
    fps = load_meta(converter).fps
    ref = ReferenceReader(converter)
    dataset = StreamingLeRobot(converter, return_uint8=True, delta_timestamps={CAM: [-2 / fps, 0.0, 3 / fps]})
    for item in dataset:
        i, episode = int(item["index"]), ref.meta.episode(int(item["episode_index"]))
        wanted = np.clip(i + np.array([-2, 0, 3]), episode.from_index, episode.to_index - 1)
        assert torch.equal(item[CAM], torch.stack([ref.frame(CAM, int(k)) for k in wanted]))
        assert item[f"{CAM}_is_pad"].tolist() == [bool(k != i + d) for k, d in zip(wanted, (-2, 0, 3), strict=True)]


def test_rows_beyond_the_read_ahead_are_fetched_again(converter: Path, monkeypatch) -> None:
    monkeypatch.setattr(episode_assembly, "READ_AHEAD_FRAMES", 0)  # the first fetch stops at to_timestamp
    items = list(StreamingLeRobot(converter, return_uint8=True, episodes=[1, 2]))
    _check_items(converter, items)


def test_a_frame_beyond_tolerance_still_raises(converter: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(converter, root)
    fps = load_meta(root).fps
    column = f"videos/{CAM}/from_timestamp"

    def shift(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        values[1] += 0.4 / fps  # episode 1's frames now fall between two frames of the file
        return table.set_column(table.schema.get_field_index(column), column, pa.array(values))

    _rewrite_episodes(root, shift)
    with pytest.raises(FrameMismatchError, match=rf"episode 1, camera {CAM}.*tolerance_s"):
        list(StreamingLeRobot(root, episodes=[1]))


# -- codecs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("codec", "bframes"), [("vp9", False), ("mpeg4", True), ("hevc", True)])
def test_codecs_are_frame_exact(make_sample, codec: str, bframes: bool) -> None:
    root = make_sample(episodes=3, cameras=1, frames_per_episode=(8, 14), codec=codec, gop=5, bframes=bframes,
                       episodes_per_video_file=3, size=(64, 48), seed=4)
    meta = load_meta(root)
    data = (root / meta.episode(0).videos[CAM].path).read_bytes()
    tags = {"vp9": (b"vp09",), "mpeg4": (b"mp4v",), "hevc": (b"hvc1", b"hev1")}[codec]
    assert any(tag in data for tag in tags)
    _check_items(root, list(StreamingLeRobot(root, return_uint8=True, shuffle=True, seed=1)))


# -- extra columns, one row group for many episodes -------------------------------------------------
def test_extra_dtypes_and_language_columns_as_lerobot_returns_them(extra: Path) -> None:
    assert pq.ParquetFile(extra / "data/chunk-000/file-000.parquet").metadata.num_row_groups == 1
    meta = load_meta(extra)
    items = list(StreamingLeRobot(extra, return_uint8=True))
    assert len(items) == meta.total_frames
    _check_items(extra, items)
    for item in items:
        i, frame = int(item["index"]), int(item["frame_index"])
        want = expected_extra_row(i, frame, item["task"])
        for name in ("observation.effort", "extra.value64", "extra.count32", "extra.flag"):
            expected = torch.tensor(want[name])  # what LeRobot's hf_transform_to_torch makes of the value
            assert item[name].dtype == expected.dtype and torch.equal(item[name], expected), name
        assert item["extra.note"] == want["extra.note"]
        assert item["language_persistent"] == want["language_persistent"]
        assert item["language_events"] == want["language_events"]


def test_one_row_group_of_many_episodes_serves_any_subset(extra: Path) -> None:
    items = list(StreamingLeRobot(extra, return_uint8=True, episodes=[3, 1]))
    assert sorted({int(item["episode_index"]) for item in items}) == [1, 3]
    meta = load_meta(extra)
    assert len(items) == meta.episode(1).length + meta.episode(3).length
    _check_items(extra, items)


# -- one episode per file ------------------------------------------------------------------------------
def test_one_episode_per_file(one_per_file: Path) -> None:
    root = one_per_file
    meta = load_meta(root)
    assert len(meta.data_files) == 100 and len(meta.video_files) == 100
    items = list(StreamingLeRobot(root, return_uint8=True, shuffle=True, seed=3))
    assert sorted(int(item["index"]) for item in items) == list(range(meta.total_frames))
    _check_items(root, items)


# -- partial local copies ---------------------------------------------------------------------------------
def test_partial_local_copy_serves_its_episodes(full_and_partial: tuple[Path, Path]) -> None:
    source, root = full_and_partial
    meta = load_meta(source)
    ref = ReferenceReader(source)
    _check_items(source, list(StreamingLeRobot(root, episodes=PARTIAL_EPISODES, return_uint8=True)), ref)
    _check_items(source, list(StreamingLeRobot(root, episodes=[5], return_uint8=True, shuffle=True)), ref)
    missing = meta.episode(3).data_path
    with pytest.raises(DatasetFormatError, match=rf"missing: {missing} \(needed by episodes \[3\]\)"):
        StreamingLeRobot(root, episodes=[3, 4])


# -- info.json --------------------------------------------------------------------------------------------
def test_unknown_storage_refused_and_unknown_keys_tolerated(converter: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(converter, root)
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["a_future_key"] = {"anything": [1, 2]}
    info["features"][CAM]["info"]["video.some_new_field"] = "x"
    info["features"]["action"]["unit"] = "rad"
    info_path.write_text(json.dumps(info))
    assert len(list(StreamingLeRobot(root, episodes=[0]))) == load_meta(root).episode(0).length
    for storage in ("lance", "zarr"):
        info_path.write_text(json.dumps({**info, "storage_format": storage}))
        with pytest.raises(DatasetFormatError, match=rf"storage_format.*'{storage}' is not supported"):
            StreamingLeRobot(root)


# -- the LeRobot-shaped surface -----------------------------------------------------------------------------
def test_meta_and_dataset_surface_as_lerobot(extra: Path) -> None:
    dataset = StreamingLeRobot(extra, episodes=[0, 2])
    meta = dataset.meta
    raw = load_meta(extra)
    assert meta._stats is None  # stats are built on first access
    assert meta.robot_type == "synthetic" and meta.fps == raw.fps == dataset.fps
    assert meta.camera_keys == meta.video_keys == [CAM] and meta.depth_keys == [] and meta.image_keys == []
    assert meta.total_frames == raw.total_frames and meta.total_episodes == raw.total_episodes == 5
    assert dataset.features is meta.features and meta.features == raw.features
    assert dataset.num_episodes == 2
    assert dataset.num_frames == raw.episode(0).length + raw.episode(2).length
    assert meta.shapes["action"] == (6,) and meta.names["action"] == raw.features["action"]["names"]
    stats = meta.stats
    assert set(stats) == set(raw.stats)
    for feature, values in stats.items():
        for name, value in values.items():
            assert isinstance(value, np.ndarray) and value.ndim >= 1, (feature, name)
            np.testing.assert_array_equal(value, np.atleast_1d(np.array(raw.stats[feature][name])))
    assert stats[CAM]["mean"].shape == (3, 1, 1)
    assert meta.task_texts == raw.tasks and meta.get_task_index(raw.tasks[1]) == 1
    assert meta.get_task_index("no such task") is None
    assert meta.episode(2).length == raw.episode(2).length  # everything else passes through
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            _ = meta.tasks
    else:
        frame = meta.tasks
        assert frame.index.name == "task" and frame.loc[raw.tasks[1]].task_index == 1


# -- LeRobot itself (optional) ----------------------------------------------------------------------------
@pytest.mark.timeout(900)
@pytest.mark.parametrize("which", ["converter", "extra", "one_per_file", "partial"])
def test_lerobot_reads_the_same(which: str, request) -> None:
    if which == "partial":
        root, args = request.getfixturevalue("full_and_partial")[1], ["--only-episodes", "4,5"]
    else:
        root, args = request.getfixturevalue(which), []
    result = run_check_against_lerobot(root, *args)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "RESULT: OK" in result.stdout


def test_sample_cli_writes_these_layouts(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    code = cli_main(["sample", str(out), "--episodes", "3", "--cameras", "1", "--size", "64x48",
                     "--frames-per-episode", "4:6", "--codec", "vp9", "--episodes-per-data-file", "3",
                     "--single-row-group", "--to-timestamp-short", "--extra-columns", "--json"])
    assert code == 0
    assert pq.ParquetFile(out / "data/chunk-000/file-000.parquet").metadata.num_row_groups == 1
    meta = load_meta(out)
    assert meta.features["language_events"]["dtype"] == "language"
    assert meta.features[CAM]["info"]["video.codec"] == "vp9"
    for ep in meta.episodes:
        assert ep.videos[CAM].to_timestamp == pytest.approx(ep.videos[CAM].from_timestamp + (ep.length - 1) / meta.fps)
    _check_items(out, list(StreamingLeRobot(out, return_uint8=True)))


def test_a_row_group_of_many_episodes_is_fetched_once(extra: Path) -> None:
    meta = load_meta(extra)
    data_file = meta.episode(0).data_path
    fetched: list[str] = []

    class Counting:
        def __init__(self, reader) -> None:
            self.reader = reader

        def read_many(self, requests):
            requests = list(requests)
            fetched.extend(r[0] for r in requests)
            return self.reader.read_many(requests)

        def __getattr__(self, name):
            return getattr(self.reader, name)

    with open_root_reader(meta.root) as reader:
        assembler = EpisodeAssembler(meta, Counting(reader))
        ref = ReferenceReader(extra)
        for episode in meta.episode_indices:
            rows = assembler(episode).rows
            want = ref.table.slice(meta.episode(episode).from_index, meta.episode(episode).length)
            assert rows.equals(want)
    assert fetched.count(data_file) == 1 and len(assembler.shared) == 1


def test_tools_read_short_to_timestamps(converter: Path, tmp_path: Path) -> None:
    from lerobot_stream_loader.tools import realign_parquets_to_videos, validate

    report = validate(converter)
    assert report.ok, report.problems
    assert any("to_timestamp short" in note for note in report.notes)
    out = tmp_path / "realigned"
    realign_parquets_to_videos(converter, out)
    assert validate(out).ok
    _check_items(converter, list(StreamingLeRobot(out, return_uint8=True)))
