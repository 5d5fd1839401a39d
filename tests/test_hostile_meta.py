"""Hostile metadata gets a clear error naming file and cause, quickly and without large allocations:
format specs and conversions in path templates, JSON nested or sized absurdly, unknown task indices,
negative or overlapping frame ranges, parquet footers that would abort pyarrow."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import DatasetFormatError
from lerobot_stream_loader.meta import files as meta_files
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.parquet.footer_check import check_footer
from tests.test_bad_datasets import (
    INFO,
    _edit_data_rows,
    add_to,
    copy,
    edit_episodes,
    edit_info,
    good,
    set_column,
)

__all__ = ["copy", "good"]  # fixtures used here

pytestmark = pytest.mark.timeout(120)

TEMPLATES = {
    "huge width": "data/chunk-{chunk_index:999999999d}/file-{file_index:03d}.parquet",
    "huge zero-padded width": "data/chunk-{chunk_index:0999999d}/file-{file_index:03d}.parquet",
    "conversion": "data/chunk-{chunk_index!r}/file-{file_index:03d}.parquet",
    "attribute": "data/chunk-{chunk_index.__class__}/file-{file_index:03d}.parquet",
    "item": "data/chunk-{chunk_index[0]}/file-{file_index:03d}.parquet",
    "nested spec": "data/chunk-{chunk_index:{file_index}}/file-{file_index:03d}.parquet",
    "positional": "data/chunk-{0}/file-{file_index:03d}.parquet",
    "unknown field": "data/{episode_index}/file-{file_index:03d}.parquet",
    "float spec": "data/chunk-{chunk_index:e}/file-{file_index:03d}.parquet",
    "long template": "data/" + "x" * 5000 + "/file-{file_index:03d}.parquet",
}


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_path_templates_allow_only_plain_fields_and_short_widths(copy: Path, case: str) -> None:
    edit_info(copy, lambda info: info.__setitem__("data_path", TEMPLATES[case]))
    start = time.monotonic()
    with pytest.raises(DatasetFormatError, match=r"meta/info.json: key 'data_path': .* not a usable path template"):
        load_meta(copy)
    assert time.monotonic() - start < 2.0


def test_video_key_takes_no_format_spec(copy: Path) -> None:
    edit_info(copy, lambda info: info.__setitem__(
        "video_path", "videos/{video_key:>99999999}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"))
    with pytest.raises(DatasetFormatError, match=r"key 'video_path': .*format spec '>99999999' in \{video_key\}"):
        load_meta(copy)


def test_usual_templates_still_load(copy: Path) -> None:
    edit_info(copy, lambda info: info.__setitem__("data_path", "data/chunk-{chunk_index}/file-{file_index:3d}.parquet"))
    with pytest.raises(DatasetFormatError, match="missing"):  # the files have other names: parsed, then not found
        load_meta(copy)


def test_json_nested_too_deeply(copy: Path) -> None:
    text = (copy / INFO).read_text().rstrip()
    (copy / INFO).write_text(text[:-1] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(DatasetFormatError, match=r"meta/info.json: JSON nested too deeply"):
        load_meta(copy)


def test_json_larger_than_the_limit(copy: Path, monkeypatch) -> None:
    monkeypatch.setattr(meta_files, "MAX_JSON_BYTES", 1000)
    edit_info(copy, lambda info: info.__setitem__("padding", "x" * 2000))
    with pytest.raises(DatasetFormatError, match=r"meta/info.json: \d+ bytes, more than the 0 MiB"):
        load_meta(copy)


def test_negative_frame_range(copy: Path) -> None:
    edit_episodes(copy, lambda t: add_to(add_to(t, "dataset_from_index", 0, -5), "dataset_to_index", 0, -5))
    with pytest.raises(DatasetFormatError, match=r"meta/episodes: key 'dataset_from_index': episode 0 starts at -5"):
        load_meta(copy)


def test_overlapping_frame_ranges(copy: Path) -> None:
    edit_episodes(copy, lambda t: add_to(add_to(t, "dataset_from_index", 1, -2), "dataset_to_index", 1, -2))
    with pytest.raises(DatasetFormatError, match=r"key 'dataset_from_index': episodes 0 \[0, \d+\) and 1 .* overlap"):
        load_meta(copy)


def test_duplicate_episode_indices(copy: Path) -> None:
    edit_episodes(copy, lambda t: set_column(t, "episode_index", [0, 1, 1, 3]))
    with pytest.raises(DatasetFormatError, match=r"key 'episode_index': duplicate episode indices"):
        load_meta(copy)


def test_unknown_task_index_is_an_error_not_an_empty_task(copy: Path) -> None:
    meta = load_meta(copy)
    episode = meta.episode(1)

    def unknown_task(table):
        values = table.column("task_index").to_pylist()
        values[table.column("episode_index").to_pylist().index(1)] = 999
        return set_column(table, "task_index", __import__("pyarrow").array(values, table.schema.field("task_index").type))

    _edit_data_rows(copy, episode.data_path, unknown_task)
    with pytest.raises(DatasetFormatError, match=rf"episode 1: {episode.data_path}: task_index 999 in row 0 of the "
                                                 r"episode is not in meta/tasks.parquet"):
        list(StreamingLeRobot(copy, episodes=[1], return_uint8=True))


def _footer(path: Path) -> tuple[bytes, int]:
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, len(data) - 8)
    return data, length


def test_footer_whose_schema_disagrees_with_its_level_histograms_is_refused_not_fatal(copy: Path) -> None:
    """A REQUIRED column in place of an OPTIONAL one makes pyarrow's C++ throw where nothing catches it
    (the process aborts); the footer check refuses the file first."""
    meta = load_meta(copy)
    path = copy / meta.episode(0).data_path
    data, length = _footer(path)
    footer = bytearray(data[len(data) - 8 - length:-8])
    schema = pq.read_metadata(path).schema
    name = schema.column(0).name.encode()
    at = bytes(footer).index(name)  # the field before a schema element's name is its repetition type
    assert footer[at - 4] == 0x25 and footer[at - 3] == 0x02, "field 3 (repetition) = OPTIONAL before the name"
    footer[at - 3] = 0x03  # zigzag -2: no such repetition type
    with pytest.raises(ValueError, match="unknown repetition type -2"):
        check_footer(bytes(footer))
    path.write_bytes(data[:len(data) - 8 - length] + bytes(footer) + data[-8:])
    with pytest.raises(DatasetFormatError, match=rf"{meta.episode(0).data_path}: unreadable parquet footer"):
        list(StreamingLeRobot(copy, episodes=[0], return_uint8=True))


def test_info_json_with_a_huge_feature_name_is_bounded(copy: Path) -> None:
    edit_info(copy, lambda info: info["features"].__setitem__("f" * 1_000_000, {"dtype": "float32", "shape": [2**40]}))
    start = time.monotonic()
    try:
        load_meta(copy)
    except DatasetFormatError as exc:
        assert "meta/info.json" in str(exc) or "meta/episodes" in str(exc)
    assert time.monotonic() - start < 5.0
    assert json.loads((copy / INFO).read_text())  # still the file we wrote
