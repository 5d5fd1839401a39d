"""Build LeRobot-shaped items (what ``LeRobotDataset[i]`` returns) from a fetched episode.

Row features become tensors with LeRobot's dtypes (scalars as 0-d tensors), each camera gives the
frame played at ``timestamp + from_timestamp`` of the episode's MP4, ``task`` is the task string,
and ``delta_timestamps`` keys hold stacked windows with ``<key>_is_pad``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..meta.dataset_meta import DatasetMeta
from ..meta.depth import DEFAULT_DEPTH_UNIT
from .cameras import camera_features, defers
from .decode import DecoderLRU
from .episode import EpisodeItems
from .item import Item
from .windows import DeltaWindows, pad_key


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
        # RGB video keys left uint8 because the batch's collate converts them (a live set: a worker's
        # collate fills it in on its first batch)
        self.collate_converts = collate_converts if collate_converts is not None else set()
        self.cameras = camera_features(meta, tolerance_s=tolerance_s, return_uint8=return_uint8,
                                       decoders=decoders,
                                       depth_output_unit=depth_output_unit, image_size=image_size)

    def float_frame_keys(self) -> list[str]:
        """Keys of the RGB video cameras whose frames become float32 here (no ``image_transforms``):
        the ones a batch's collate may convert instead."""
        if self.return_uint8 or self.image_transforms is not None:
            return []
        return [key for key, camera in self.cameras.items() if getattr(camera, "deferred", False)]

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
            if defers(camera):
                decoded = camera.frames(episode, wanted, convert=False)
            else:
                decoded = camera.frames(episode, wanted)
            # each item owns its frames: a view would keep the whole run's pixels alive while it waits
            pixels[key] = [own_copy(decoded[lo:hi]) if len(frames) > 1 else decoded[lo:hi]
                           for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        if self.windows is None:
            return self._plain_items(episode, frames, pixels)
        return [self._item(episode, int(f), w, {key: pixels[key][i] for key in self.cameras})
                for i, (f, w) in enumerate(zip(frames, windows, strict=True))]

    def _plain_items(self, episode: EpisodeItems, frames: np.ndarray,
                     pixels: dict[str, list[torch.Tensor]]) -> list[dict[str, Any]]:
        """Items without ``delta_timestamps`` windows, as :meth:`_item` makes them: each tensor column
        is gathered once for all of them (a new tensor: no item shares memory with the episode's
        column or with another item) and split into views."""
        picks = torch.from_numpy(np.asarray(frames, dtype=np.int64))
        names = list(episode.columns)
        columns = [column[picks].unbind(0) if isinstance(column, torch.Tensor) else [column[int(f)] for f in frames]
                   for column in episode.columns.values()]
        cameras = [(key, pixels[key]) for key in self.cameras]
        items: list[dict[str, Any]] = []
        for i, frame in enumerate(frames.tolist()):
            item = Item(zip(names, [values[i] for values in columns]))
            for key, camera_frames in cameras:
                item[key] = camera_frames[i][0]
            item["task"] = self._task(episode, frame)
            items.append(item)
        return items

    def _task(self, episode: EpisodeItems, frame: int) -> str:
        """The task string of a row, as LeRobot gives it."""
        if "task_index" in episode.columns:
            return self.meta.tasks.get(int(episode.columns["task_index"][frame]), "")
        return episode.data.episode.tasks[0] if episode.data.episode.tasks else ""

    def _item(self, episode: EpisodeItems, frame: int, windows: dict[str, Any],
              pixels: dict[str, torch.Tensor]) -> dict[str, Any]:
        item: dict[str, Any] = Item()
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
        item["task"] = self._task(episode, frame)
        return item

    def finish(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item from :meth:`items` as returned: deferred RGB frames converted (uint8 as decoded,
        or float32 in [0, 1]: one new tensor, divided in place), then ``image_transforms``. Items
        wait in uint8 (a quarter of the float32 bytes); keys in ``collate_converts`` stay uint8 for
        the collate to convert into the batch."""
        for key, camera in self.cameras.items():
            if defers(camera) and key not in self.collate_converts:
                item[key] = camera.convert(item[key])
            if self.image_transforms is not None and camera.transformable:
                item[key] = self.image_transforms(item[key])
        return item


def own_copy(frames: torch.Tensor) -> torch.Tensor:
    """A copy of ``frames`` with the same strides, made by numpy: one plain memcpy. (``Tensor.clone``
    splits a copy this size over torch's intra-op threads; in a busy main process, as with
    ``num_workers=0``, their hand-offs made it 10-100x slower.)"""
    return torch.from_numpy(frames.numpy().copy(order="K"))
