"""One fetched episode's rows as LeRobot returns them: tensors with LeRobot's dtypes, Python values
for strings and language structs (JSON parsed as Hugging Face ``datasets`` parses it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..errors import DatasetFormatError
from ..fetch.episode_cache import EpisodeData
from ..meta.dataset_meta import DatasetMeta


def is_image_column(kind: pa.DataType) -> bool:
    """Whether an Arrow type is the ``{bytes, path}`` struct of an image feature."""
    return pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0


def _is_json(kind: pa.DataType) -> bool:
    return isinstance(kind, pa.BaseExtensionType) and kind.extension_name == "arrow.json" \
        or type(kind).__name__ == "JsonType"


def _nested(kind: pa.DataType) -> list[pa.DataType]:
    if pa.types.is_struct(kind):
        return [kind.field(i).type for i in range(kind.num_fields)]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [kind.value_type]
    return []


def _holds(kind: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    return test(kind) or any(_holds(inner, test) for inner in _nested(kind))


def _parse_json(value: Any, kind: pa.DataType) -> Any:
    """``value`` (from ``to_pylist``) with its JSON strings parsed, as HF ``datasets.Json`` decodes them."""
    if value is None:
        return None
    if _is_json(kind):
        return json.loads(value)
    if pa.types.is_struct(kind):
        return {kind.field(i).name: _parse_json(value[kind.field(i).name], kind.field(i).type)
                for i in range(kind.num_fields)}
    if _nested(kind):
        return [_parse_json(v, kind.value_type) for v in value]
    return value


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    """Rows of a column LeRobot returns as Python values (strings, language structs), one per frame."""
    values = column.to_pylist()
    if _holds(column.type, _is_json):
        values = [_parse_json(v, column.type) for v in values]
    return values


def _column_tensor(column: pa.ChunkedArray, name: str, where: str) -> torch.Tensor | list[Any]:
    """One parquet column as a tensor with a leading frame axis; strings and structs (language columns)
    stay Python values, as LeRobot returns them."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or _holds(kind, pa.types.is_struct):
        return _python_values(column)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape: list[int] = []
    while pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) \
            or pa.types.is_large_list(array.type):
        width = len(array[0]) if len(array) and array[0].is_valid else 0
        shape.append(width)
        array = array.flatten()
    values = array.to_numpy(zero_copy_only=False)
    try:
        values = values.reshape(len(column), *shape)
    except ValueError as exc:
        raise DatasetFormatError(f"{where}: column {name!r} has rows of different lengths") from exc
    if values.dtype == np.bool_:
        return torch.from_numpy(values.copy())
    if np.issubdtype(values.dtype, np.floating):
        return torch.from_numpy(values.astype(np.float32, copy=False).copy())
    if np.issubdtype(values.dtype, np.integer):
        return torch.from_numpy(values.astype(np.int64, copy=False).copy())
    raise DatasetFormatError(f"{where}: column {name!r} of type {kind} is not supported")


class EpisodeItems:
    """Items of one fetched episode; row columns are converted to tensors once per episode."""

    def __init__(self, data: EpisodeData, meta: DatasetMeta) -> None:
        self.data = data
        episode = data.episode
        where = f"{meta.root}: episode {episode.index} ({episode.data_path})"
        self.columns = {name: _column_tensor(data.rows.column(name), name, where)
                        for name in data.rows.column_names
                        if not is_image_column(data.rows.schema.field(name).type)}  # images: cameras
