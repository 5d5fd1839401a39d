"""Helpers to check samples of a dataset written by ``lerobot_stream_loader.synthetic``.

- ``read_frame_index(frame)``: the global frame ``index`` drawn in a video frame.
- ``expected_state(index, dim)`` / ``expected_action(index, dim)``: the row values of that frame.
- ``expected_depth(index, size, unit)``, ``expected_depth_image(index, size, unit)``,
  ``expected_image(index, size)``: what LeRobot returns for the depth camera, the depth image and
  the RGB image feature (``--depth-camera``, ``--image-feature``) at global frame ``index``.
- ``read_depth_index(depth, unit)``, ``read_depth_codes_index(codes)``: the global frame ``index``
  drawn in a depth map, or in the 12-bit codes of a depth video frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..meta.depth import METRE, MM_PER_METRE, DepthQuantization, convert_image_unit
from .depth import FAR_M, NEAR_M, QUANTIZATION, depth_codes, depth_millimetres
from .images import image_renderer
from .pattern import action_matrix, read_index_from_luma, state_matrix

if TYPE_CHECKING:
    import torch


def read_frame_index(frame: Any, *, strict: bool = True) -> int:
    """The 16-bit global frame index drawn in ``frame``.

    ``frame`` is a numpy array or torch tensor, channel-first (C, H, W) or channel-last (H, W, C)
    with C = 1 or 3, or a plain (H, W) image; uint8 in [0, 255] or float in [0, 1]. The index is
    drawn as 16 vertical bands over the top half, most significant bit first, white = 1; each band
    is sampled in its inner part (the middle half of its width, rows H/8 to 3H/8) and thresholded
    at mid-grey. With ``strict`` a band that is neither clearly dark nor clearly bright (mean level
    between 0.3 and 0.7) raises ValueError, so a blended or damaged frame is not mistaken for another.
    """
    array = _to_numpy(frame)
    scale = 255.0 if np.issubdtype(array.dtype, np.integer) else 1.0
    if array.ndim == 3:
        if array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.mean(axis=0, dtype=np.float64)
        elif array.shape[-1] in (1, 3):
            array = array.mean(axis=-1, dtype=np.float64)
        else:
            raise ValueError(f"frame of shape {tuple(array.shape)} is neither (C, H, W) nor (H, W, C)")
    elif array.ndim != 2:
        raise ValueError(f"frame of shape {tuple(array.shape)} is not an image")
    return read_index_from_luma(array.astype(np.float64) / scale, strict=strict)


def expected_state(index: int, dim: int) -> np.ndarray:
    """``observation.state`` of global frame ``index``: ``state[j] = sin(0.05 * index + 0.9 * j)``.

    Computed in float64 and cast to float32, shape ``(dim,)``.
    """
    return state_matrix(np.array([index]), dim)[0]


def expected_action(index: int, dim: int) -> np.ndarray:
    """``action`` of global frame ``index``: ``action[j] = 0.5 * cos(0.03 * index + 1.3 * j)``.

    Computed in float64 and cast to float32, shape ``(dim,)``.
    """
    return action_matrix(np.array([index]), dim)[0]


def expected_depth(index: int, size: tuple[int, int], unit: str = "mm") -> torch.Tensor:
    """float32 (1, H, W) depth of the sample depth camera at ``index`` (``size`` = (width, height)),
    dequantized from the 12-bit codes it stores as LeRobot does, in ``unit``."""
    import torch

    codes = torch.from_numpy(depth_codes(index, *size)[None, None].astype(np.int32))
    return QUANTIZATION.dequantize(codes, unit)[0]


def expected_depth_image(index: int, size: tuple[int, int], unit: str = "mm") -> torch.Tensor:
    """float32 (1, H, W) depth of the sample depth image feature at ``index`` (recorded in mm), in ``unit``."""
    import torch

    raw = torch.from_numpy(depth_millimetres(index, *size).astype(np.float32))[None]
    return convert_image_unit(raw, "mm", unit)


def expected_image(index: int, size: tuple[int, int]) -> torch.Tensor:
    """float32 (3, H, W) in [0, 1] of the sample RGB image feature at ``index``."""
    import torch

    pixels = torch.from_numpy(image_renderer(*size).render(index)).permute(2, 0, 1).contiguous()
    return pixels.to(torch.float32).div(255)


def read_depth_index(depth: Any, unit: str = "mm") -> int:
    """The 16-bit global frame index drawn in a sample depth map ((1, H, W) or (H, W); near = 1)."""
    array = _to_numpy(depth).astype(np.float64)
    array = array.reshape(array.shape[-2:])
    metres = array if unit == METRE else array / MM_PER_METRE
    threshold = (NEAR_M + FAR_M) / 2
    return read_index_from_luma((metres < threshold).astype(np.float64))


def read_depth_codes_index(codes: np.ndarray, quantization: DepthQuantization = QUANTIZATION) -> int:
    """The global frame index drawn in a sample depth video frame given as its 12-bit codes (H, W)."""
    threshold = quantization.quantize(np.array([(NEAR_M + FAR_M) / 2], np.float32))[0]
    return read_index_from_luma((np.asarray(codes) < threshold).astype(np.float64))


def _to_numpy(frame: Any) -> np.ndarray:
    if hasattr(frame, "detach"):  # torch tensor, any device
        return frame.detach().cpu().numpy()
    return np.asarray(frame)

