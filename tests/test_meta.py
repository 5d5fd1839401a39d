"""The metadata reader on real sample datasets, and its error for each kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lerobot_stream_loader.errors import DatasetFormatError
from lerobot_stream_loader.meta.dataset_meta import load_meta


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=5, cameras=2, frames_per_episode=(8, 14), episodes_per_video_file=2,
                       stagger_cameras=True, episodes_per_data_file=3, size=(64, 48))


@pytest.fixture()
def copy(sample: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(sample, out)
    return out


def _edit_info(root: Path, **changes) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            del info[key]
        else:
            info[key] = value
    path.write_text(json.dumps(info))


_DELETE = object()


def test_reads_sample_dataset(sample: Path) -> None:
    meta = load_meta(sample)
    assert meta.fps == 30
    assert meta.total_episodes == 5 == len(meta.episodes)
    assert meta.video_keys == ["observation.images.cam0", "observation.images.cam1"]
    assert sum(ep.length for ep in meta.episodes) == meta.total_frames
    starts = [ep.from_index for ep in meta.episodes]
    assert starts[0] == 0 and all(a.to_index == b.from_index for a, b in zip(meta.episodes, meta.episodes[1:]))
    for ep in meta.episodes:
        assert ep.tasks and all(t in meta.tasks.values() for t in ep.tasks)
        assert (sample / ep.data_path).is_file()
        for span in ep.videos.values():
            assert (sample / span.path).is_file()
            assert span.to_timestamp > span.from_timestamp >= 0
    assert meta.data_files == sorted({ep.data_path for ep in meta.episodes})
    # staggered cameras: the two cameras' file layouts differ
    cam0 = [ep.videos["observation.images.cam0"].path.split("/")[-1] for ep in meta.episodes]
    cam1 = [ep.videos["observation.images.cam1"].path.split("/")[-1] for ep in meta.episodes]
    assert cam0 != cam1


def test_reads_file_url(sample: Path) -> None:
    meta = load_meta(f"file://{sample}")
    assert meta.total_frames == load_meta(sample).total_frames


def test_uses_data_files_without_listing(copy: Path) -> None:
    _edit_info(copy, data_files=["data/chunk-000/file-000.parquet"])
    assert load_meta(copy, check_files=False).data_files == ["data/chunk-000/file-000.parquet"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"codebase_version": "v2.1"}, "codebase_version"),
        ({"codebase_version": _DELETE}, "codebase_version"),
        ({"fps": "thirty"}, "'fps'"),
        ({"features": _DELETE}, "'features'"),
        ({"total_frames": 3}, "total_frames"),
        ({"total_episodes": 99}, "total_episodes"),
        ({"data_files": ["../outside.parquet"]}, "escapes"),
        ({"data_files": ["/etc/passwd"]}, "absolute"),
        ({"data_path": "../data/{chunk_index}/{file_index}.parquet"}, "data_path"),
        ({"video_path": None}, "video_path"),
    ],
)
def test_bad_info_names_file_and_key(copy: Path, changes: dict, message: str) -> None:
    _edit_info(copy, **changes)
    with pytest.raises(DatasetFormatError, match=message) as info:
        load_meta(copy)
    assert "meta/info.json" in str(info.value) or "meta/episodes" in str(info.value)


def test_corrupt_info_json(copy: Path) -> None:
    (copy / "meta/info.json").write_text('{"codebase_version": "v3.0", ')
    with pytest.raises(DatasetFormatError, match=r"meta/info.json: not valid JSON"):
        load_meta(copy)


def test_missing_info_json(copy: Path) -> None:
    (copy / "meta/info.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"meta/info.json: file not found"):
        load_meta(copy)


def test_missing_episodes(copy: Path) -> None:
    shutil.rmtree(copy / "meta/episodes")
    with pytest.raises(DatasetFormatError, match=r"meta/episodes/chunk-000/file-000.parquet: file not found"):
        load_meta(copy)


def test_missing_data_file(copy: Path) -> None:
    (copy / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(DatasetFormatError, match=r"missing, first: data/chunk-000/file-000.parquet"):
        load_meta(copy)


def test_wrong_column_type(copy: Path) -> None:
    path = copy / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    i = table.column_names.index("length")
    table = table.set_column(i, "length", pa.array([str(v) for v in table.column("length").to_pylist()]))
    pq.write_table(table, path)
    with pytest.raises(DatasetFormatError, match=r"meta/episodes: key 'length': expected integers"):
        load_meta(copy)


def test_inconsistent_index_range(copy: Path) -> None:
    path = copy / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    i = table.column_names.index("dataset_to_index")
    values = table.column("dataset_to_index").to_pylist()
    values[1] += 1
    table = table.set_column(i, "dataset_to_index", pa.array(values, type=pa.int64()))
    pq.write_table(table, path)
    with pytest.raises(DatasetFormatError, match=r"episode 1: .* does not hold its length"):
        load_meta(copy)


def test_unknown_episode(sample: Path) -> None:
    with pytest.raises(KeyError, match="no episode 77"):
        load_meta(sample).episode(77)


def test_length_beyond_the_video_span(copy: Path) -> None:
    path = copy / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_pylist()
    extra = 10_000_000
    lengths[-1] += extra
    ends = table.column("dataset_to_index").to_pylist()
    ends[-1] += extra
    table = table.set_column(table.column_names.index("length"), "length", pa.array(lengths, type=pa.int64()))
    table = table.set_column(table.column_names.index("dataset_to_index"), "dataset_to_index",
                             pa.array(ends, type=pa.int64()))
    pq.write_table(table, path)
    info = json.loads((copy / "meta/info.json").read_text())
    _edit_info(copy, total_frames=info["total_frames"] + extra)
    with pytest.raises(DatasetFormatError, match=r"key 'length': episode 4 claims \d+ frames but its"):
        load_meta(copy)
