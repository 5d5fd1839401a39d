"""Image features of the sample dataset: encoded images in the data parquet, as LeRobot 0.6.1 stores them.

LeRobot saves each frame of an ``image`` feature to a file (PNG for RGB, TIFF for depth maps) and
embeds the file's bytes into the parquet as Hugging Face ``datasets`` does: a struct
``{bytes, path}`` per row. ``rgb`` images show the same kind of frame as the video cameras (index
bands on top); ``depth`` images hold the depth of :func:`.depth.depth_millimetres` as 16-bit TIFF
(``depth_unit: "mm"``).
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from .depth import depth_millimetres
from .pattern import FrameRenderer

IMAGE_KINDS = ("rgb", "depth")
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def image_key(kind: str) -> str:
    """Feature key of the image feature of ``kind``."""
    return {"rgb": "observation.images.still", "depth": "observation.images.depth_image"}[kind]


@lru_cache(maxsize=4)
def image_renderer(width: int, height: int) -> FrameRenderer:
    """The renderer of the RGB image feature (its own camera pattern, not a video camera's); shared."""
    return FrameRenderer(width, height, camera=100)


def image_pixels(kind: str, index: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB or (H, W) uint16 depth in millimetres of global frame ``index``."""
    if kind == "rgb":
        return image_renderer(width, height).render(index)
    return depth_millimetres(index, width, height)


def encode_image(kind: str, pixels: np.ndarray) -> bytes:
    """PNG bytes of an RGB frame, or raw 16-bit TIFF bytes of a depth frame (LeRobot's writer formats)."""
    import PIL.Image

    buffer = io.BytesIO()
    if kind == "rgb":
        PIL.Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    else:
        PIL.Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="TIFF", compression="raw")
    return buffer.getvalue()


def image_column(kind: str, indices: np.ndarray, width: int, height: int) -> pa.Array:
    """The parquet column of one episode: ``{bytes, path}`` per frame."""
    renderer = image_renderer(width, height) if kind == "rgb" else None
    suffix = "png" if kind == "rgb" else "tiff"
    rows = []
    for frame, index in enumerate(indices.tolist()):
        pixels = renderer.render(index) if renderer is not None else depth_millimetres(index, width, height)
        rows.append({"bytes": encode_image(kind, pixels), "path": f"frame-{frame:06d}.{suffix}"})
    return pa.array(rows, type=IMAGE_TYPE)


def image_feature(kind: str, width: int, height: int) -> dict:
    """The info.json feature of an image feature of ``kind``."""
    channels = 3 if kind == "rgb" else 1
    feature: dict[str, Any] = {"dtype": "image", "shape": [height, width, channels],
                               "names": ["height", "width", "channels"]}
    if kind == "depth":
        feature["info"] = {"is_depth_map": True, "depth_unit": "mm"}
    return feature
