"""The camera interface and the camera object of every ``video`` and ``image`` feature.

Every camera answers ``frames(episode, rows) -> (T, C, H, W)`` for rows of a fetched episode and
says whether LeRobot squeezes a one-frame window (``squeeze_single``) and whether
``image_transforms`` apply to it (``transformable``; not to depth maps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypedDict, TypeGuard

import numpy as np
import torch

from ..errors import DatasetFormatError
from ..meta.depth import DepthQuantization, check_unit, is_depth_feature, stored_unit
from .image import DepthImageCamera, ImageCamera
from .video import DepthVideoCamera, VideoCamera

if TYPE_CHECKING:
    from ..meta.dataset_meta import DatasetMeta
    from .decode import DecoderLRU
    from .episode import EpisodeItems


class Camera(Protocol):
    """What :class:`lerobot_stream_loader.items.builder.ItemBuilder` asks of every camera feature."""

    key: str
    squeeze_single: bool
    transformable: bool

    def frames(self, episode: EpisodeItems, frames: np.ndarray) -> torch.Tensor: ...


class DeferringCamera(Camera, Protocol):
    """A camera whose ``frames(..., convert=False)`` gives frames as decoded, finished by ``convert``."""

    deferred: bool

    def frames(self, episode: EpisodeItems, frames: np.ndarray, *, convert: bool = True) -> torch.Tensor: ...

    def convert(self, pixels: torch.Tensor) -> torch.Tensor: ...


def defers(camera: Camera) -> TypeGuard[DeferringCamera]:
    """Whether ``camera`` leaves its frames to be converted later (its ``deferred``, False when absent)."""
    return bool(getattr(camera, "deferred", False))


class _VideoOptions(TypedDict):
    """The keywords every video camera takes."""

    root: str
    tolerance_s: float
    decoders: DecoderLRU
    return_uint8: bool


def camera_features(meta: DatasetMeta, *, tolerance_s: float, return_uint8: bool, decoders: DecoderLRU,
                    depth_output_unit: str,
                    image_size: tuple[int, int] | None = None) -> dict[str, Camera]:
    """One camera object per ``video`` and ``image`` feature of ``meta``, in info.json order
    (``image_size``: RGB video cameras decode to that (height, width))."""
    unit = check_unit(depth_output_unit)
    cameras: dict[str, Camera] = {}
    for key, feature in meta.features.items():
        dtype = feature.get("dtype")
        depth = is_depth_feature(feature)
        if dtype == "video":
            options: _VideoOptions = dict(root=meta.root, tolerance_s=tolerance_s, decoders=decoders,
                                          return_uint8=return_uint8)
            try:
                cameras[key] = (DepthVideoCamera(key, quantization=DepthQuantization.from_feature(key, feature),
                                                 unit=unit, **options) if depth
                                else VideoCamera(key, image_size=image_size, **options))
            except DatasetFormatError as exc:
                raise DatasetFormatError(f"{meta.root}: {exc}") from exc
        elif dtype == "image":
            cameras[key] = (DepthImageCamera(key, root=meta.root, recorded_unit=stored_unit(feature), unit=unit)
                            if depth else ImageCamera(key, root=meta.root))
    return cameras
