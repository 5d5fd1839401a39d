"""Build LeRobot-shaped items (what ``LeRobotDataset[i]`` returns) from a fetched episode.

Row features become tensors with LeRobot's dtypes (scalars as 0-d tensors), each camera gives the
frame played at ``timestamp + from_timestamp`` of the episode's MP4, ``task`` is the task string,
and ``delta_timestamps`` keys hold stacked windows with ``<key>_is_pad``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .decode import DecoderLRU
from .episode_cache import EpisodeData
from .errors import DatasetFormatError
from .features.cameras import camera_features
from .features.depth import DEFAULT_DEPTH_UNIT
from .features.image import is_image_column
from .meta import DatasetMeta
from .windows import DeltaWindows, pad_key


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
                        if not is_image_column(data.rows.schema.field(name).type)}  # images: features/
        self.timestamps = np.asarray(data.rows.column("timestamp").to_numpy(zero_copy_only=False),
                                     dtype=np.float32).astype(np.float64)
        # camera key -> (position in its video of every row's frame, whether within tolerance_s)
        self.matched: dict[str, tuple[np.ndarray, np.ndarray]] = {}


class ItemBuilder:
    """Turns (episode, frame) into an item, decoding camera frames through a decoder LRU."""

    def __init__(
        self,
        meta: DatasetMeta,
        *,
        windows: DeltaWindows | None,
        tolerance_s: float,
        return_uint8: bool,
        image_transforms: Callable[[torch.Tensor], torch.Tensor] | None,
        decoders: DecoderLRU,
        decoder_threads: int = 1,
        depth_output_unit: str = DEFAULT_DEPTH_UNIT,
        image_size: tuple[int, int] | None = None,
        collate_converts: set[str] | None = None,
    ) -> None:
        self.meta = meta
        self.windows = windows
        self.tolerance_s = tolerance_s
        self.return_uint8 = return_uint8
        self.image_transforms = image_transforms
        self.decoders = decoders
        self.decoder_threads = decoder_threads
        # RGB video keys left uint8 because the batch's collate converts them (a live set: a worker's
        # collate fills it in on its first batch)
        self.collate_converts = collate_converts if collate_converts is not None else set()
        self.cameras = camera_features(meta, tolerance_s=tolerance_s, return_uint8=return_uint8,
                                       decoders=decoders, threads=decoder_threads,
                                       depth_output_unit=depth_output_unit, image_size=image_size)

    def float_frame_keys(self) -> list[str]:
        """Keys of the RGB video cameras whose frames become float32 here (no ``image_transforms``):
        the ones a batch's collate may convert instead."""
        if self.return_uint8 or self.image_transforms is not None:
            return []
        return [key for key, camera in self.cameras.items() if getattr(camera, "deferred", False)]

    def item(self, episode: EpisodeItems, frame: int) -> dict[str, Any]:
        """The item of ``frame`` (0-based within the episode)."""
        return self.finish(self.items(episode, np.array([frame]))[0])

    def items(self, episode: EpisodeItems, frames: np.ndarray) -> list[dict[str, Any]]:
        """The items of ``frames`` (0-based within the episode), to be completed by :meth:`finish`
        (RGB video frames stay uint8 until then); each camera decodes the frames of all of them in
        one forward pass (sorted, each frame once)."""
        length = episode.data.episode.length
        if self.windows is None:
            windows: list[dict[str, Any]] = [{}] * len(frames)
            wanted, bounds = frames, list(range(len(frames) + 1))
        else:
            windows = [self.windows.query(int(f), length) for f in frames]
        pixels: dict[str, list[torch.Tensor]] = {}
        for key, camera in self.cameras.items():
            if self.windows is not None:
                parts = [w[key].indices if key in w else np.array([f]) for f, w in zip(frames, windows, strict=True)]
                wanted, bounds = np.concatenate(parts), np.cumsum([0] + [len(x) for x in parts]).tolist()
            if getattr(camera, "deferred", False):
                decoded = camera.frames(episode, wanted, convert=False)
            else:
                decoded = camera.frames(episode, wanted)
            # each item owns its frames: a view would keep the whole run's pixels alive while it waits
            pixels[key] = [decoded[lo:hi].clone() if len(frames) > 1 else decoded[lo:hi]
                           for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        return [self._item(episode, int(f), w, {key: pixels[key][i] for key in self.cameras})
                for i, (f, w) in enumerate(zip(frames, windows, strict=True))]

    def _item(self, episode: EpisodeItems, frame: int, windows: dict[str, Any],
              pixels: dict[str, torch.Tensor]) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for name, column in episode.columns.items():
            window = windows.get(name)
            if window is None:
                value = column[frame]
                item[name] = value.clone() if isinstance(value, torch.Tensor) else value
            else:
                idx = window.indices
                item[name] = column[torch.from_numpy(idx)] if isinstance(column, torch.Tensor) \
                    else [column[i] for i in idx]
                item[pad_key(name)] = torch.from_numpy(window.is_pad.copy())
        for key, camera in self.cameras.items():
            window = windows.get(key)
            frames = pixels[key]
            single = window is None or (len(frames) == 1 and camera.squeeze_single)  # as LeRobot shapes them
            item[key] = frames[0] if single else frames
            if window is not None:
                item[pad_key(key)] = torch.from_numpy(window.is_pad.copy())
        task_index = int(episode.columns["task_index"][frame]) if "task_index" in episode.columns else None
        item["task"] = self.meta.tasks.get(task_index, "") if task_index is not None else \
            (episode.data.episode.tasks[0] if episode.data.episode.tasks else "")
        return item

    def finish(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item from :meth:`items` as returned: deferred RGB frames converted (uint8 as decoded,
        or float32 in [0, 1]: one new tensor, divided in place), then ``image_transforms``. Items
        wait in uint8 (a quarter of the float32 bytes); keys in ``collate_converts`` stay uint8 for
        the collate to convert into the batch."""
        for key, camera in self.cameras.items():
            if getattr(camera, "deferred", False) and key not in self.collate_converts:
                item[key] = camera.convert(item[key])
            if self.image_transforms is not None and camera.transformable:
                item[key] = self.image_transforms(item[key])
        return item
