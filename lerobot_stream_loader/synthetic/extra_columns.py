"""Optional extra per-frame columns of the sample dataset: the dtypes other writers use.

``float64``, ``int32``, ``bool`` and ``string`` scalars, a ``float64`` vector stored as a variable-size
``list<double>``, and LeRobot's two language columns (``language_persistent``, ``language_events``,
dtype ``language``: lists of structs whose ``tool_calls`` are JSON values). Every value is a function
of the frame's global index, so readers can be checked against :func:`expected_extra_row`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

EFFORT_DIM = 3
LANGUAGE_COLUMNS = ("language_persistent", "language_events")


def _json_type() -> pa.DataType:
    return pa.json_() if hasattr(pa, "json_") else pa.string()


def _row_struct(with_timestamp: bool) -> pa.StructType:
    fields = [pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string()),
              pa.field("style", pa.string())]
    if with_timestamp:
        fields.append(pa.field("timestamp", pa.float32(), nullable=False))
    fields += [pa.field("camera", pa.string()), pa.field("tool_calls", pa.list_(_json_type()))]
    return pa.struct(fields)


def extra_fields() -> list[pa.Field]:
    """Arrow fields of the extra columns, in column order."""
    return [
        pa.field("observation.effort", pa.list_(pa.float64())),
        pa.field("extra.value64", pa.float64()),
        pa.field("extra.count32", pa.int32()),
        pa.field("extra.flag", pa.bool_()),
        pa.field("extra.note", pa.string()),
        pa.field("language_persistent", pa.list_(_row_struct(True))),
        pa.field("language_events", pa.list_(_row_struct(False))),
    ]


def extra_features() -> dict[str, dict[str, Any]]:
    """The info.json ``features`` entries of the extra columns (as LeRobot declares such columns)."""
    return {
        "observation.effort": {"dtype": "float64", "shape": [EFFORT_DIM],
                               "names": [f"joint_{j}" for j in range(EFFORT_DIM)]},
        "extra.value64": {"dtype": "float64", "shape": [1], "names": None},
        "extra.count32": {"dtype": "int32", "shape": [1], "names": None},
        "extra.flag": {"dtype": "bool", "shape": [1], "names": None},
        "extra.note": {"dtype": "string", "shape": [1], "names": None},
        "language_persistent": {"dtype": "language", "shape": [1], "names": None},
        "language_events": {"dtype": "language", "shape": [1], "names": None},
    }


def numeric_extra_columns(index: np.ndarray) -> dict[str, np.ndarray]:
    """The numeric extra columns of frames ``index`` (global indices): these get statistics."""
    index = index.astype(np.int64)
    return {
        "observation.effort": index[:, None] / 7.0 + np.arange(EFFORT_DIM) * 0.1,
        "extra.value64": index / 3.0 + 0.1,
        "extra.count32": (index * 7 - 100).astype(np.int32),
        "extra.flag": index % 3 == 0,
    }


def _language_rows(index: int, frame: int, task: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    persistent: list[dict[str, Any]] = [
        {"role": "user", "content": task, "style": "task_aug", "timestamp": 0.0, "camera": None,
         "tool_calls": None}]
    if frame % 5:
        return persistent, []
    call = json.dumps({"type": "function", "function": {"name": "say", "arguments": {"text": f"at {index}"}}})
    events: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "style": None, "camera": None, "tool_calls": [call]},
        {"role": "user", "content": f"look at {index}", "style": "vqa",
         "camera": "observation.images.cam0", "tool_calls": []}]
    return persistent, events


def extra_arrays(index: np.ndarray, frame_index: np.ndarray, task: str) -> dict[str, pa.Array]:
    """Every extra column of one episode as Arrow arrays of the types of :func:`extra_fields`."""
    fields = {field.name: field for field in extra_fields()}
    numeric = numeric_extra_columns(index)
    arrays: dict[str, pa.Array] = {
        name: pa.array(list(values) if values.ndim == 2 else values, type=fields[name].type)
        for name, values in numeric.items()
    }
    arrays["extra.note"] = pa.array([f"frame {i}" for i in index.tolist()], type=pa.string())
    language = [_language_rows(i, f, task) for i, f in zip(index.tolist(), frame_index.tolist(), strict=True)]
    for position, name in enumerate(LANGUAGE_COLUMNS):
        values = [rows[position] for rows in language]
        arrays[name] = _language_array(values, fields[name].type)
    return arrays


def _language_array(values: list[list[dict]], kind: pa.ListType) -> pa.Array:
    """Lists of row structs; JSON values are built as strings and cast to the JSON type."""
    struct = kind.value_type
    plain = pa.struct([pa.field(f.name, pa.list_(pa.string()) if f.name == "tool_calls" else f.type,
                                nullable=f.nullable) for f in struct])
    return pa.array(values, type=pa.list_(plain)).cast(kind)


def expected_extra_row(index: int, frame: int, task: str) -> dict[str, Any]:
    """What LeRobot returns for the extra columns of global frame ``index`` (frame ``frame`` of its
    episode): numbers as Python values (the reader's tensors must equal ``torch.tensor`` of them),
    the note as a string, language columns as lists of dicts with ``tool_calls`` parsed from JSON."""
    numeric = numeric_extra_columns(np.array([index]))
    persistent, events = _language_rows(index, frame, task)
    for row in events:
        row["tool_calls"] = [json.loads(c) for c in row["tool_calls"]] if row["tool_calls"] is not None else None
    return {
        **{name: values[0].tolist() for name, values in numeric.items()},
        "extra.note": f"frame {index}",
        "language_persistent": persistent,
        "language_events": events,
    }
