"""Cameras stored as images in the data parquet (``dtype: image``), decoded as LeRobot 0.6.1 returns them.

Each row holds an encoded image (PNG, JPEG, TIFF...) the way Hugging Face ``datasets`` stores an
``Image`` feature: a struct ``{bytes, path}``. A row decodes like ``datasets.Image`` (Pillow,
EXIF orientation applied) and converts like LeRobot's ``pil_to_chw_tensor``: 16-bit images
(raw depth) become float32 ``(1, H, W)`` values, 8-bit images float32 ``(C, H, W)`` in [0, 1]
(torchvision's ``to_tensor``). Depth images are then converted from their ``depth_unit`` to the
output unit. Only embedded images are read: a row with a path and no bytes raises.
"""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DatasetFormatError
from ..meta.depth import convert_image_unit

if TYPE_CHECKING:
    from PIL.Image import Image

    from .episode import EpisodeItems

UINT16_MODES = ("I;16", "I;16B", "I;16L")
_TO_TENSOR_TYPES = {"I": np.int32, ("I;16" if sys.byteorder == "little" else "I;16B"): np.int16, "F": np.float32}


def decode_image(data: bytes) -> Image:
    """A PIL image from encoded bytes, as ``datasets.Image().decode_example`` gives it."""
    import PIL.Image
    import PIL.ImageOps

    image: Image = PIL.Image.open(io.BytesIO(data))
    image.load()
    if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
        image = PIL.ImageOps.exif_transpose(image)
    return image


def image_tensor(image: Image) -> torch.Tensor:
    """LeRobot's ``pil_to_chw_tensor``: 16-bit modes as float32 values, others as torchvision's ``to_tensor``."""
    if image.mode in UINT16_MODES:
        return torch.from_numpy(np.array(image, dtype=np.float32))[None, ...]
    pixels = torch.from_numpy(np.array(image, _TO_TENSOR_TYPES.get(image.mode, np.uint8), copy=True))
    if image.mode == "1":
        pixels = 255 * pixels
    pixels = pixels.view(image.size[1], image.size[0], len(image.getbands())).permute((2, 0, 1)).contiguous()
    if pixels.dtype == torch.uint8:
        return pixels.to(dtype=torch.get_default_dtype()).div(255)
    return pixels


class ImageCamera:
    """A camera stored as images in the rows: float32 ``(T, C, H, W)``."""

    squeeze_single = False  # LeRobot stacks a one-frame window of a parquet column: (1, C, H, W)
    transformable = True

    def __init__(self, key: str, *, root: str) -> None:
        self.key = key
        self.root = root

    def frames(self, episode: EpisodeItems, frames: np.ndarray) -> torch.Tensor:
        """The decoded images of rows ``frames`` (0-based within the episode) of ``episode``."""
        column = episode.data.rows.column(self.key)
        cache: dict[int, torch.Tensor] = {}
        for row in np.unique(frames).tolist():
            cache[row] = self._decode(column[row].as_py(), episode, row)
        return torch.stack([cache[row] for row in frames.tolist()])

    def _decode(self, value: dict | None, episode: EpisodeItems, row: int) -> torch.Tensor:
        where = (f"{self.root}: episode {episode.data.episode.index} ({episode.data.episode.data_path}), "
                 f"image feature {self.key!r}, frame {row}")
        data = (value or {}).get("bytes")
        if data is None:
            path = (value or {}).get("path")
            raise DatasetFormatError(f"{where}: the row holds no image bytes (path {path!r}); only images "
                                     "embedded in the parquet file are read")
        try:
            return image_tensor(decode_image(data))
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetFormatError(f"{where}: not a readable image ({exc})") from exc


class DepthImageCamera(ImageCamera):
    """A depth map stored as images: float32 ``(T, 1, H, W)`` converted from ``depth_unit`` to ``unit``."""

    transformable = False

    def __init__(self, key: str, *, root: str, recorded_unit: str | None, unit: str) -> None:
        super().__init__(key, root=root)
        self.recorded_unit = recorded_unit
        self.unit = unit

    def frames(self, episode: EpisodeItems, frames: np.ndarray) -> torch.Tensor:
        return convert_image_unit(super().frames(episode, frames), self.recorded_unit, self.unit)
