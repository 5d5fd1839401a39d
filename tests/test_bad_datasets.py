"""Bad datasets get clear errors at the right moment.

Each case copies a good sample dataset, breaks one thing, and checks the error: metadata problems
at construction, file contents while streaming (naming episode, camera and file). A corrupt MP4
index sidecar is never trusted: it is ignored or its entry rebuilt, with a warning, and the items
stay exact.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import DatasetFormatError, FrameMismatchError, StreamLoaderError
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.mp4 import Mp4Index
from lerobot_stream_loader.synthetic.checks import expected_state, read_frame_index

pytestmark = pytest.mark.timeout(120)

CAM = "observation.images.cam0"
INFO = "meta/info.json"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"


@pytest.fixture(scope="module")
def good(make_sample) -> Path:
    return make_sample(episodes=4, cameras=1, frames_per_episode=(8, 12), codec="h264", gop=4,
                       episodes_per_video_file=2, episodes_per_data_file=2, size=(64, 48), seed=2)


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    shutil.copytree(good, root)
    return root


def edit_info(root: Path, change: Callable[[dict], None]) -> None:
    info = json.loads((root / INFO).read_text())
    change(info)
    (root / INFO).write_text(json.dumps(info))


def edit_episodes(root: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    path = root / EPISODES
    pq.write_table(change(pq.read_table(path)), path)


def set_column(table: pa.Table, name: str, values: list | pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, pa.array(values) if isinstance(values, list)
                            else values)


def add_to(table: pa.Table, name: str, row: int, delta: float) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] += delta
    return set_column(table, name, pa.array(values, type=table.schema.field(name).type))


def stream(root: Path, **options) -> list[dict]:
    return list(StreamingLeRobot(root, return_uint8=True, **options))


# ---------------------------------------------------------------------------------------- construction
def _drop(name: str) -> Callable[[dict], None]:
    return lambda info: info.pop(name)


def _put(name: str, value: object) -> Callable[[dict], None]:
    return lambda info: info.__setitem__(name, value)


INFO_CASES = {
    "fps_as_text": (_put("fps", "30"), r"meta/info.json: key 'fps': expected a non-negative integer, got '30'"),
    "features_as_list": (_put("features", ["a"]), r"meta/info.json: key 'features': expected a non-empty object"),
    "unknown_version": (_put("codebase_version", "v2.1"),
                        r"meta/info.json: key 'codebase_version': 'v2.1' is not supported .*"
                        r"python -m lerobot.scripts.convert_dataset_v21_to_v30"),
    "no_version": (_drop("codebase_version"), r"meta/info.json: key 'codebase_version': missing"),
    "total_frames_off": (lambda info: info.__setitem__("total_frames", info["total_frames"] + 1),
                         r"key 'total_frames' is \d+ but the episodes in .*meta/episodes have \d+ frames"),
    "total_episodes_off": (lambda info: info.__setitem__("total_episodes", 5),
                           r"key 'total_episodes' is 5 but .*meta/episodes has 4 episodes"),
    "video_without_video_path": (_drop("video_path"),
                                 r"key 'video_path': must be a path template when there are video features "
                                 rf"\({CAM}\)"),
    "data_path_escapes": (_put("data_path", "../../outside/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"),
                          r"key 'data_path': .*escapes the dataset root"),
    "video_path_absolute": (_put("video_path", "/etc/{video_key}/{chunk_index}/{file_index}.mp4"),
                            r"key 'video_path': .*is absolute"),
    "data_files_escape": (_put("data_files", ["data/../../x.parquet"]),
                          r"key 'data_files': .*escapes the dataset root"),
}


@pytest.mark.parametrize("case", sorted(INFO_CASES))
def test_bad_info_fails_at_construction(copy: Path, case: str) -> None:
    change, message = INFO_CASES[case]
    edit_info(copy, change)
    with pytest.raises(DatasetFormatError, match=message) as err:
        StreamingLeRobot(copy)
    assert str(copy) in str(err.value), "the error names the dataset"


def test_missing_info_json(copy: Path) -> None:
    (copy / INFO).unlink()
    with pytest.raises(DatasetFormatError, match=rf"{copy}/meta/info.json: file not found"):
        StreamingLeRobot(copy)


def test_info_json_not_json(copy: Path) -> None:
    (copy / INFO).write_text("{ not json")
    with pytest.raises(DatasetFormatError, match=rf"{copy}/meta/info.json: not valid JSON"):
        StreamingLeRobot(copy)


def test_missing_episodes_file(copy: Path) -> None:
    (copy / EPISODES).unlink()
    with pytest.raises(DatasetFormatError, match=rf"{copy}/{EPISODES}: file not found"):
        StreamingLeRobot(copy)


def test_missing_data_file_is_named_at_construction(copy: Path) -> None:
    (copy / "data/chunk-000/file-001.parquet").unlink()
    with pytest.raises(DatasetFormatError,
                       match=r"missing: data/chunk-000/file-001.parquet \(needed by episodes \[2, 3\]\)"):
        StreamingLeRobot(copy)
    assert len(list(StreamingLeRobot(copy, episodes=[0, 1]))) > 0  # the other episodes' files are all there


EPISODE_CASES = {
    "length_as_float": (lambda t: set_column(t, "length", pa.array(t.column("length").to_pylist(), pa.float64())),
                        r"meta/episodes: key 'length': expected integers, got double"),
    "timestamp_as_text": (lambda t: set_column(t, f"videos/{CAM}/from_timestamp",
                                               [str(v) for v in t.column(f"videos/{CAM}/from_timestamp").to_pylist()]),
                          rf"key 'videos/{CAM}/from_timestamp': expected numbers, got string"),
    "missing_column": (lambda t: t.drop_columns(["dataset_to_index"]),
                       r"key 'dataset_to_index': missing column"),
    "range_disagrees_with_length": (lambda t: add_to(t, "dataset_to_index", 1, 1),
                                    r"episode 1: \[\d+, \d+\) does not hold its length"),
    "negative_span": (lambda t: add_to(t, f"videos/{CAM}/to_timestamp", 2, -100.0),
                      rf"key 'videos/{CAM}/to_timestamp': episode 2: span .* is empty or negative"),
}


@pytest.mark.parametrize("case", sorted(EPISODE_CASES))
def test_bad_episodes_table_fails_at_construction(copy: Path, case: str) -> None:
    change, message = EPISODE_CASES[case]
    edit_episodes(copy, change)
    with pytest.raises(DatasetFormatError, match=message):
        StreamingLeRobot(copy)


# ------------------------------------------------------------------------------------------- streaming
def _remux_dropping_last_frames(path: Path, drop: int) -> None:
    frames = len(load_mp4_index(path).duration)
    out = path.with_suffix(".cut.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-c", "copy", "-frames:v", str(frames - drop),
                    "-movflags", "+faststart", str(out)], check=True)
    out.replace(path)


def load_mp4_index(path: Path) -> Mp4Index:
    from lerobot_stream_loader.mp4 import index_mp4

    return index_mp4(path.read_bytes(), name=str(path))


def _episode_in_video(root: Path, which: int) -> tuple[int, str]:
    """(episode, video path) of the ``which``-th episode (0 first, -1 last) of the first MP4."""
    meta = load_meta(root)
    path = meta.episode(0).videos[CAM].path
    eps = [ep.index for ep in meta.episodes if ep.videos[CAM].path == path]
    return eps[which], path


def test_mp4_with_fewer_frames_than_the_episode_claims(copy: Path) -> None:
    episode, path = _episode_in_video(copy, -1)
    _remux_dropping_last_frames(copy / path, drop=3)
    with pytest.raises(StreamLoaderError) as err:
        stream(copy, episodes=[episode])
    message = str(err.value)
    assert f"episode {episode}" in message and f"camera {CAM}" in message and path in message, message
    assert isinstance(err.value, FrameMismatchError | DatasetFormatError)


def test_timestamps_outside_the_video(copy: Path) -> None:
    episode, path = _episode_in_video(copy, -1)
    position = load_meta(copy).episode_indices.index(episode)
    edit_episodes(copy, lambda t: add_to(add_to(t, f"videos/{CAM}/from_timestamp", position, 50.0),
                                         f"videos/{CAM}/to_timestamp", position, 50.0))
    meta = StreamingLeRobot(copy).meta  # the metadata alone is consistent
    assert meta.episode(episode).videos[CAM].from_timestamp > 50
    with pytest.raises(StreamLoaderError) as err:
        stream(copy, episodes=[episode])
    message = str(err.value)
    assert f"episode {episode}" in message and f"camera {CAM}" in message and path in message, message


def test_row_timestamps_beyond_the_episode_span(copy: Path) -> None:
    meta = load_meta(copy)
    episode = meta.episode(1)
    _edit_data_rows(copy, episode.data_path, lambda t: _shift_episode_column(t, episode.index, "timestamp", 3.0))
    with pytest.raises(FrameMismatchError) as err:
        stream(copy, episodes=[1])
    message = str(err.value)
    assert f"episode 1, camera {CAM} ({episode.videos[CAM].path})" in message and "tolerance_s" in message


def test_one_row_between_frames_fails_when_it_is_reached(copy: Path) -> None:
    """Rows are matched to frames once per episode; the row with no frame within tolerance_s raises
    (naming its time) when the run of frames holding it is decoded, never returning a frame."""
    meta = load_meta(copy)
    episode = meta.episode(1)
    last = episode.to_index - 1

    def shift_last_row(table: pa.Table) -> pa.Table:
        mine = pc.equal(table.column("index"), last)
        column = table.column("timestamp")
        shifted = pc.if_else(mine, pc.add(column, pa.scalar(0.5 / meta.fps, column.type)), column)
        return set_column(table, "timestamp", shifted.combine_chunks())

    _edit_data_rows(copy, episode.data_path, shift_last_row)
    seen = []
    with pytest.raises(FrameMismatchError, match="no frame within tolerance_s") as err:
        for item in StreamingLeRobot(copy, episodes=[1], return_uint8=True):
            seen.append(int(item["index"]))
    assert last not in seen
    bad_time = episode.videos[CAM].from_timestamp + (last - episode.from_index) / meta.fps + 0.5 / meta.fps
    assert f"episode 1, camera {CAM} ({episode.videos[CAM].path})" in str(err.value)
    assert f"t={bad_time:.6f}s" in str(err.value)


@pytest.mark.parametrize("shuffle", [False, True])
def test_rows_shifted_into_the_next_episodes_frames_never_yield_them(copy: Path, shuffle: bool) -> None:
    """Episode 0's last rows moved 0.1 s later point at frames of episode 1, which follows it in the same
    MP4 (within tolerance_s of them): a row must play a frame of its own episode's part of the file,
    so they raise when their run of frames is decoded, naming the part; nothing wrong is yielded."""
    meta = load_meta(copy)
    episode, after = meta.episode(0), meta.episode(1)
    assert after.videos[CAM].path == episode.videos[CAM].path
    assert episode.videos[CAM].next_from_timestamp == after.videos[CAM].from_timestamp
    moved = 3
    first_moved = episode.to_index - moved
    shift = round(0.1 * meta.fps) / meta.fps  # whole frames: the moved rows land exactly on frames

    def shift_last_rows(table: pa.Table) -> pa.Table:
        mine = pc.greater_equal(table.column("index"), first_moved)
        mine = pc.and_(mine, pc.equal(table.column("episode_index"), 0))
        column = table.column("timestamp")
        shifted = pc.if_else(mine, pc.add(column, pa.scalar(shift, column.type)), column)
        return set_column(table, "timestamp", shifted.combine_chunks())

    _edit_data_rows(copy, episode.data_path, shift_last_rows)
    seen = []
    with pytest.raises(FrameMismatchError, match="outside the episode's part of the MP4") as err:
        for item in StreamingLeRobot(copy, episodes=[0], return_uint8=True, shuffle=shuffle):
            seen.append(item)
    assert f"episode 0, camera {CAM} ({episode.videos[CAM].path})" in str(err.value)
    assert not any(int(item["index"]) >= first_moved for item in seen)
    assert all(read_frame_index(item[CAM]) == int(item["index"]) for item in seen)


def _edit_data_rows(root: Path, data_path: str, change: Callable[[pa.Table], pa.Table]) -> None:
    path = root / data_path
    groups = pq.ParquetFile(path).metadata.num_row_groups
    table = change(pq.read_table(path))
    pq.write_table(table, path, row_group_size=max(1, table.num_rows // groups))


def _shift_episode_column(table: pa.Table, episode: int, name: str, delta: float) -> pa.Table:
    mine = pc.equal(table.column("episode_index"), episode)
    column = table.column(name)
    shifted = pc.if_else(mine, pc.add(column, pa.scalar(delta, column.type)), column)
    return set_column(table, name, shifted.combine_chunks())


def test_row_group_missing_rows_of_the_episode(copy: Path) -> None:
    meta = load_meta(copy)
    episode = meta.episode(1)
    keep = np.ones(0, dtype=bool)

    def drop_last_row(table: pa.Table) -> pa.Table:
        nonlocal keep
        rows = np.asarray(table.column("episode_index").to_pylist())
        keep = np.ones(len(rows), dtype=bool)
        keep[np.flatnonzero(rows == 1)[-1]] = False
        return table.filter(pa.array(keep))

    _edit_data_rows(copy, episode.data_path, drop_last_row)
    with pytest.raises(DatasetFormatError, match=rf"episode 1: {episode.data_path} holds {episode.length - 1} rows "
                                                 rf"of the episode, the episodes table says {episode.length}"):
        stream(copy, episodes=[1])


def test_rows_whose_index_disagrees_with_the_episodes_table(copy: Path) -> None:
    meta = load_meta(copy)
    episode = meta.episode(1)
    _edit_data_rows(copy, episode.data_path, lambda t: _shift_episode_column(t, 1, "index", 1))
    with pytest.raises(DatasetFormatError) as err:
        stream(copy, episodes=[1])
    message = str(err.value)
    assert f"episode 1: {episode.data_path}" in message and "'index'" in message, message
    assert f"[{episode.from_index}, {episode.to_index})" in message, message


def test_rows_whose_frame_index_disagrees_with_the_episodes_table(copy: Path) -> None:
    meta = load_meta(copy)
    episode = meta.episode(2)
    _edit_data_rows(copy, episode.data_path, lambda t: _shift_episode_column(t, 2, "frame_index", 5))
    with pytest.raises(DatasetFormatError, match=rf"episode 2: {episode.data_path}: column 'frame_index'"):
        stream(copy, episodes=[2])


# --------------------------------------------------------------------------------------------- rows
def _check_exact(items: list[dict]) -> None:
    assert items and all(read_frame_index(item[CAM]) == int(item["index"]) for item in items)


def test_episode_rows_spanning_row_groups_are_read_exactly(copy: Path) -> None:
    """Not broken, but unusual: small row groups, so one episode's rows straddle several of them."""
    meta = load_meta(copy)
    path = copy / meta.episode(0).data_path
    pq.write_table(pq.read_table(path), path, row_group_size=5)
    items = stream(copy)
    assert sorted(int(x["index"]) for x in items) == list(range(meta.total_frames))
    _check_exact(items)
    state = items[7]["observation.state"]
    np.testing.assert_array_equal(state.numpy(), expected_state(int(items[7]["index"]), state.shape[0]))
