"""Parquet and JSON files of the sample dataset, laid out as LeRobot v3.0 writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..meta.stats import (
    STAT_KEYS,
    Stats,
    aggregate,
    image_stats,
    sampled_frame_positions,
    to_lists,
    vector_stats,
)
from .extra_columns import extra_arrays, extra_features, extra_fields, numeric_extra_columns
from .images import IMAGE_TYPE, image_column, image_feature, image_key, image_pixels
from .layout import (
    CHUNKS_SIZE,
    DATA_PATH,
    EPISODES_PATH,
    VIDEO_PATH,
    EpisodePlan,
    SampleOptions,
    file_location,
    task_text,
    video_cameras,
    video_key,
)
from .pattern import action_matrix, state_matrix

DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
_INT_COLUMNS = ("frame_index", "episode_index", "index", "task_index")


def features(options: SampleOptions, video_infos: dict[str, dict]) -> dict[str, dict]:
    """The ``features`` block of info.json: robot vectors, cameras, then LeRobot's default columns."""
    width, height = options.size
    result: dict[str, dict] = {
        "action": {
            "dtype": "float32",
            "shape": [options.action_dim],
            "names": [f"motor_{j}" for j in range(options.action_dim)],
        },
        "observation.state": {
            "dtype": "float32",
            "shape": [options.state_dim],
            "names": [f"motor_{j}" for j in range(options.state_dim)],
        },
    }
    if options.extra_columns:
        result.update(extra_features())
    for camera in range(video_cameras(options)):
        key = video_key(options, camera)
        result[key] = {
            "dtype": "video",
            "shape": [height, width, 1 if camera == options.cameras else 3],
            "names": ["height", "width", "channels"],
            "info": video_infos[key],
        }
    for kind in options.image_features:
        result[image_key(kind)] = image_feature(kind, width, height)
    result["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in _INT_COLUMNS:
        result[name] = {"dtype": "int64", "shape": [1], "names": None}
    return result


def episode_columns(plan: EpisodePlan, options: SampleOptions) -> dict[str, np.ndarray]:
    """The per-frame numeric columns of one episode (the rows of the data parquet that get statistics)."""
    frame_index = np.arange(plan.length, dtype=np.int64)
    index = plan.from_index + frame_index
    return {
        "action": action_matrix(index, options.action_dim),
        "observation.state": state_matrix(index, options.state_dim),
        **(numeric_extra_columns(index) if options.extra_columns else {}),
        "timestamp": (frame_index / options.fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.full(plan.length, plan.index, dtype=np.int64),
        "index": index,
        "task_index": np.full(plan.length, plan.task_index, dtype=np.int64),
    }


def _data_schema(options: SampleOptions) -> pa.Schema:
    return pa.schema(
        [
            ("action", pa.list_(pa.float32(), options.action_dim)),
            ("observation.state", pa.list_(pa.float32(), options.state_dim)),
            *[(image_key(kind), IMAGE_TYPE) for kind in options.image_features],
            *(extra_fields() if options.extra_columns else []),
            ("timestamp", pa.float32()),
            *[(name, pa.int64()) for name in _INT_COLUMNS],
        ]
    )


def _episode_table(columns: dict[str, np.ndarray], given: dict[str, pa.Array], schema: pa.Schema) -> pa.Table:
    """One episode's rows; ``given`` holds ready Arrow arrays (images, extra columns) by column name."""
    arrays = []
    for field in schema:
        if field.name in given:
            arrays.append(given[field.name])
            continue
        values = columns[field.name]
        if values.ndim == 2:
            flat = pa.array(values.reshape(-1), type=pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_data_files(root: Path, plans: list[EpisodePlan],
                     options: SampleOptions) -> dict[int, dict[str, Stats]]:
    """Write data/*.parquet (one row group per episode, or per file with ``single_row_group``); return
    each episode's column statistics."""
    schema = _data_schema(options)
    stats: dict[int, dict[str, Stats]] = {}
    files: dict[int, list[EpisodePlan]] = {}
    for plan in plans:
        files.setdefault(plan.data_file, []).append(plan)
    for number, members in files.items():
        chunk, file = file_location(number)
        path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tables = []
        with pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=True) as writer:
            for plan in members:
                columns = episode_columns(plan, options)
                given = {image_key(kind): image_column(kind, columns["index"], *options.size)
                         for kind in options.image_features}
                if options.extra_columns:
                    given.update(extra_arrays(columns["index"], columns["frame_index"], task_text(plan.task_index)))
                stats[plan.index] = {name: vector_stats(values) for name, values in columns.items()}
                stats[plan.index].update({image_key(kind): _image_feature_stats(kind, plan, options)
                                          for kind in options.image_features})
                table = _episode_table(columns, given, schema)
                if options.single_row_group:
                    tables.append(table)
                else:
                    writer.write_table(table, row_group_size=table.num_rows)
            if tables:
                table = pa.concat_tables(tables)
                writer.write_table(table, row_group_size=table.num_rows)
    return stats


def _image_feature_stats(kind: str, plan: EpisodePlan, options: SampleOptions) -> Stats:
    """Image statistics of one episode as LeRobot computes them (depth: per channel in millimetres)."""
    sampled = np.stack([image_pixels(kind, plan.from_index + p, *options.size)
                        for p in sampled_frame_positions(plan.length)])
    return image_stats(sampled) if kind == "rgb" else image_stats(sampled[..., None], scale=1.0)


def write_episodes_table(
    root: Path,
    plans: list[EpisodePlan],
    options: SampleOptions,
    spans: dict[tuple[int, int], tuple[float, float]],
    stats: dict[int, dict[str, Stats]],
    feature_order: list[str],
) -> None:
    """Write meta/episodes/chunk-000/file-000.parquet: one row per episode, every LeRobot column.

    ``spans`` maps (camera, episode) to (from_timestamp, to_timestamp) in that camera's MP4.
    """
    rows: dict[str, list] = {}

    def put(key: str, value: object) -> None:
        rows.setdefault(key, []).append(value)

    for plan in plans:
        put("episode_index", plan.index)
        put("tasks", [task_text(plan.task_index)])
        put("length", plan.length)
        chunk, file = file_location(plan.data_file)
        put("data/chunk_index", chunk)
        put("data/file_index", file)
        put("dataset_from_index", plan.from_index)
        put("dataset_to_index", plan.to_index)
        for camera in range(video_cameras(options)):
            key = video_key(options, camera)
            chunk, file = file_location(plan.video_files[camera])
            put(f"videos/{key}/chunk_index", chunk)
            put(f"videos/{key}/file_index", file)
            put(f"videos/{key}/from_timestamp", spans[camera, plan.index][0])
            put(f"videos/{key}/to_timestamp", spans[camera, plan.index][1])
        for name in feature_order:
            lists = to_lists(stats[plan.index][name])
            for stat in STAT_KEYS:
                put(f"stats/{name}/{stat}", lists[stat])
        put("meta/episodes/chunk_index", 0)
        put("meta/episodes/file_index", 0)
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(rows), path, compression="snappy")


def write_tasks(root: Path, task_count: int) -> None:
    """Write meta/tasks.parquet: a pandas frame indexed by the task string, column ``task_index``.

    The pandas metadata is written by hand so ``pandas.read_parquet`` restores the index.
    """
    tasks = [task_text(i) for i in range(task_count)]
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
             "metadata": {"encoding": "UTF-8"}}
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    table = pa.Table.from_arrays([pa.array(range(task_count), pa.int64()), pa.array(tasks)], schema=schema)
    path = root / "meta" / "tasks.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


# Marks a dataset whose frames carry their global index drawn by ``sample.pattern`` and whose rows
# follow ``testing.expected_state``: ``validate`` checks the one against the other only then.
SAMPLE_PATTERN_KEY = "sample_pattern"
SAMPLE_PATTERN = "lerobot_stream_loader/index-bands-v1"


def info_json(options: SampleOptions, plans: list[EpisodePlan], task_count: int, feats: dict) -> dict:
    """The content of meta/info.json (key order as LeRobot writes it)."""
    return {
        "codebase_version": "v3.0",
        "robot_type": "synthetic",
        "total_episodes": len(plans),
        "total_frames": plans[-1].to_index,
        "total_tasks": task_count,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": options.fps,
        "splits": {"train": f"0:{len(plans)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_cameras(options) else None,
        "features": feats,
        SAMPLE_PATTERN_KEY: SAMPLE_PATTERN,
    }


def write_json(path: Path, content: dict) -> None:
    """JSON with LeRobot's formatting (indent 4, UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def aggregate_stats(stats: dict[int, dict[str, Stats]], feature_order: list[str]) -> dict[str, dict]:
    """meta/stats.json content: every feature's statistics over all episodes."""
    episodes = sorted(stats)
    return {
        name: to_lists(aggregate([stats[e][name] for e in episodes])) for name in feature_order
    }
