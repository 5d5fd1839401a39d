"""Validation of LeRobot v3.0 metadata: every failure names the file and the key."""

from __future__ import annotations

import re
import string
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DatasetFormatError
from ..storage.paths import PathEscapeError, check_relative

SUPPORTED_VERSIONS = ("v3.0",)
SUPPORTED_STORAGE = ("parquet",)
_INT_KEYS = ("fps", "total_episodes", "total_frames")
_REQUIRED_EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index",
                             "dataset_from_index", "dataset_to_index")


MAX_TEMPLATE_CHARS = 1024
MAX_TEMPLATE_WIDTH = 32
_INDEX_SPEC = re.compile(r"(0?([1-9]|[12]\d|3[0-2]))?d?")  # {x}, {x:d}, {x:3d}, {x:03d} ... up to 32
_SPEC = {"chunk_index": _INDEX_SPEC, "file_index": _INDEX_SPEC, "video_key": re.compile("")}
_TEMPLATE_FIELDS = {"data_path": {"chunk_index", "file_index"},
                    "video_path": {"chunk_index", "file_index", "video_key"}}


def _fail(where: str, key: str, problem: str) -> DatasetFormatError:
    return DatasetFormatError(f"{where}: key {key!r}: {problem}")


def check_info(info: dict[str, Any], where: str) -> None:
    """Raise :class:`DatasetFormatError` unless ``info`` is a usable v3.0 info.json."""
    version = info.get("codebase_version")
    if version is None:
        raise _fail(where, "codebase_version", "missing")
    if version not in SUPPORTED_VERSIONS:
        hint = ""
        if isinstance(version, str) and version.startswith("v2"):
            hint = ("; convert the dataset with LeRobot's script: python -m "
                    "lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=USER/NAME [--root=FOLDER "
                    "--push-to-hub=false] (LeRobot >= 0.4; a v2.0 dataset needs its v2.0 -> v2.1 step first)")
        raise _fail(where, "codebase_version",
                    f"{version!r} is not supported (expected one of {', '.join(SUPPORTED_VERSIONS)}){hint}")
    storage = info.get("storage_format", "parquet")
    if storage not in SUPPORTED_STORAGE:
        raise _fail(where, "storage_format",
                    f"{storage!r} is not supported: this reader reads data files stored as "
                    f"{', '.join(SUPPORTED_STORAGE)} (LeRobot v3.0's layout)")
    for key in (*_INT_KEYS, "features", "data_path"):
        if key not in info:
            raise _fail(where, key, "missing")
    for key in _INT_KEYS:
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(where, key, f"expected a non-negative integer, got {value!r}")
    if info["fps"] <= 0:
        raise _fail(where, "fps", f"must be positive, got {info['fps']}")
    if not isinstance(info["data_path"], str):
        raise _fail(where, "data_path", f"expected a string, got {type(info['data_path']).__name__}")
    _check_template(where, "data_path", info["data_path"], video_key=None)
    features = info["features"]
    if not isinstance(features, dict) or not features:
        raise _fail(where, "features", "expected a non-empty object")
    for name, feature in features.items():
        _check_feature(where, name, feature)
    video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
    if video_keys:
        if not isinstance(info.get("video_path"), str):
            raise _fail(where, "video_path",
                        f"must be a path template when there are video features ({', '.join(video_keys)})")
        for key in video_keys:
            _check_template(where, "video_path", info["video_path"], video_key=key)
    data_files = info.get("data_files")
    if data_files is not None:
        if not isinstance(data_files, list) or not all(isinstance(p, str) for p in data_files):
            raise _fail(where, "data_files", "expected a list of relative paths")
        for path in data_files:
            try:
                check_relative(path, what="data_files entry")
            except PathEscapeError as exc:
                raise _fail(where, "data_files", str(exc)) from exc
    chunks_size = info.get("chunks_size")
    if chunks_size is not None and (not isinstance(chunks_size, int) or chunks_size <= 0):
        raise _fail(where, "chunks_size", f"expected a positive integer, got {chunks_size!r}")


def _check_feature(where: str, name: str, feature: Any) -> None:
    key = f"features.{name}"
    if not isinstance(feature, dict):
        raise _fail(where, key, "expected an object")
    if not isinstance(feature.get("dtype"), str):
        raise _fail(where, f"{key}.dtype", "missing or not a string")
    shape = feature.get("shape")
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _fail(where, f"{key}.shape", f"expected a list of non-negative integers, got {shape!r}")


def _check_template(where: str, key: str, template: str, video_key: str | None) -> None:
    """A path template may only name its fields plainly or with a short integer width (``{chunk_index:03d}``):
    no conversions, attribute or item lookups, nor widths that would build huge strings."""
    allowed = _TEMPLATE_FIELDS[key]
    try:
        if len(template) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"longer than {MAX_TEMPLATE_CHARS} characters")
        for _, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            if field not in allowed:
                raise ValueError(f"unknown field {{{field}}} (allowed: {', '.join(sorted(allowed))})")
            if conversion is not None:
                raise ValueError(f"conversion !{conversion} in {{{field}}}")
            if not _SPEC[field].fullmatch(spec or ""):
                raise ValueError(f"format spec {spec!r} in {{{field}}} (allowed: an integer width up to "
                                 f"{MAX_TEMPLATE_WIDTH}, as in {{{field}:03d}})" if field != "video_key"
                                 else f"format spec {spec!r} in {{video_key}} (none allowed)")
        path = template.format(chunk_index=0, file_index=0, video_key=video_key or "x")
        check_relative(path, what=key)
    except (KeyError, IndexError, ValueError) as exc:
        raise _fail(where, key, f"{template[:200]!r} is not a usable path template ({exc})") from exc


def check_episodes_table(table: pa.Table, info: dict[str, Any], root: str) -> None:
    """The episodes table has the needed columns, agrees with info.json totals, and is contiguous."""
    where = f"{root}/meta/episodes"
    video_keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    needed = list(_REQUIRED_EPISODE_COLUMNS)
    for key in video_keys:
        needed += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    for column in needed:
        if column not in table.column_names:
            raise _fail(where, column, "missing column")
    for column in needed:
        kind = table.schema.field(column).type
        want_float = column.endswith("_timestamp")
        ok = pa.types.is_floating(kind) or pa.types.is_integer(kind) if want_float else pa.types.is_integer(kind)
        if not ok:
            raise _fail(where, column, f"expected {'numbers' if want_float else 'integers'}, got {kind}")
    for column in needed:
        if table.column(column).null_count:
            raise _fail(where, column, "null values")
    if table.num_rows != info["total_episodes"]:
        raise DatasetFormatError(
            f"{root}/meta/info.json: key 'total_episodes' is {info['total_episodes']} but "
            f"{where} has {table.num_rows} episodes")
    lengths = np.asarray(table.column("length").to_pylist(), dtype=np.int64)
    if int(lengths.sum()) != info["total_frames"]:
        raise DatasetFormatError(
            f"{root}/meta/info.json: key 'total_frames' is {info['total_frames']} but the episodes "
            f"in {where} have {int(lengths.sum())} frames")
    indices = np.asarray(table.column("episode_index").to_pylist(), dtype=np.int64)
    if len(np.unique(indices)) != len(indices):
        raise _fail(where, "episode_index", "duplicate episode indices")
    starts = np.asarray(table.column("dataset_from_index").to_pylist(), dtype=np.int64)
    ends = np.asarray(table.column("dataset_to_index").to_pylist(), dtype=np.int64)
    bad = np.nonzero((ends - starts != lengths) | (lengths <= 0))[0]
    if len(bad):
        i = int(bad[0])
        raise _fail(where, "dataset_to_index",
                    f"episode {int(indices[i])}: [{int(starts[i])}, {int(ends[i])}) does not hold its "
                    f"length {int(lengths[i])}")
    _check_disjoint_ranges(where, indices, starts, ends)
    for key in video_keys:
        lo = np.asarray(table.column(f"videos/{key}/from_timestamp").to_pylist(), dtype=np.float64)
        hi = np.asarray(table.column(f"videos/{key}/to_timestamp").to_pylist(), dtype=np.float64)
        bad = np.nonzero(~(hi > lo) | (lo < 0))[0]
        if len(bad):
            i = int(bad[0])
            raise _fail(where, f"videos/{key}/to_timestamp",
                        f"episode {int(indices[i])}: span [{lo[i]}, {hi[i]}) is empty or negative")
        # A length far beyond what the video span can hold is corrupt metadata (and would make the
        # planner allocate for frames that do not exist); small rounding differences are fine.
        room = np.ceil((hi - lo) * info["fps"] * 1.05) + 2
        bad = np.nonzero(lengths > room)[0]
        if len(bad):
            i = int(bad[0])
            raise _fail(where, "length", f"episode {int(indices[i])} claims {int(lengths[i])} frames but its "
                        f"{key} span [{lo[i]}, {hi[i]}) s holds about {int(round((hi[i] - lo[i]) * info['fps']))}")


def _check_disjoint_ranges(where: str, indices: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Global frame ranges start at 0 or later and no two episodes share a frame index."""
    negative = np.flatnonzero(starts < 0)
    if len(negative):
        i = int(negative[0])
        raise _fail(where, "dataset_from_index", f"episode {int(indices[i])} starts at {int(starts[i])} (negative)")
    order = np.argsort(starts, kind="stable")
    overlap = np.flatnonzero(starts[order][1:] < ends[order][:-1])
    if len(overlap):
        a, b = int(order[overlap[0]]), int(order[overlap[0] + 1])
        raise _fail(where, "dataset_from_index",
                    f"episodes {int(indices[a])} [{int(starts[a])}, {int(ends[a])}) and {int(indices[b])} "
                    f"[{int(starts[b])}, {int(ends[b])}) overlap")
