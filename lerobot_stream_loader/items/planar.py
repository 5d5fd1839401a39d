"""Planar copies of interleaved frames: the ``(C, H, W)`` frames the decoder returns are views of
``(H, W, C)`` pixels (RGB bytes side by side), and a batch stores them plane by plane.

torch copies such a view one byte at a time (about 3.5 GB/s here); OpenCV's ``cv2.split``
deinterleaves with SIMD shuffles (about 17 GB/s), which for 640x480 RGB batches is a tenth of a
DataLoader worker's time. OpenCV is optional (``pip install lerobot-stream-loader[fast]``, or any
installed ``opencv-python`` variant): without it the same bytes come from torch's copy.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_MAX_PLANES = 4  # RGB, RGBA; a single plane is a plain copy


def _load_cv2() -> Any:
    try:
        import cv2
    except ImportError:  # optional: torch copies the frames instead
        log.debug("OpenCV is not installed: frames are deinterleaved by torch's copy")
        return None
    return cv2


_cv2 = _load_cv2()


def fast_deinterleave() -> bool:
    """Whether frames are deinterleaved by OpenCV (the fast path) rather than torch."""
    return _cv2 is not None


def is_interleaved(frames: torch.Tensor) -> bool:
    """Whether ``frames`` (``(..., C, H, W)`` uint8) are views of interleaved ``(..., H, W, C)`` pixels
    with 2 to 4 channels, each frame's rows contiguous."""
    if frames.dtype != torch.uint8 or frames.dim() < 3:
        return False
    channels, height, width = frames.shape[-3:]
    c_stride, h_stride, w_stride = frames.stride()[-3:]
    return (2 <= channels <= _MAX_PLANES and c_stride == 1 and w_stride == channels
            and (height == 1 or h_stride == width * channels))


def copy_planar(frames: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out.copy_(frames)`` for uint8 ``frames`` and a C-contiguous uint8 ``out`` of their shape,
    deinterleaved by OpenCV when ``frames`` are interleaved views and OpenCV is there."""
    if (_cv2 is None or not is_interleaved(frames) or out.dtype != torch.uint8 or out.shape != frames.shape
            or not out.is_contiguous()):
        return out.copy_(frames)
    channels, height, width = frames.shape[-3:]
    sources = frames.reshape(-1, channels, height, width)  # a view: leading dims of an interleaved view merge
    targets = out.view(-1, channels, height, width)
    for source, target in zip(sources, targets, strict=True):
        if not _split(source.permute(1, 2, 0).numpy(), list(target.numpy())):
            target.copy_(source)
    return out


def stack_planar(frames: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """``torch.stack(frames, out=out)`` for uint8 frames of one shape and a C-contiguous uint8
    ``out``, each interleaved ``(C, H, W)`` frame deinterleaved by OpenCV straight into its slot
    (the per-frame work is one ``cv2.split``: a batch of small frames is mostly that call)."""
    if len(frames) != len(out):
        raise ValueError(f"{len(frames)} frames for a batch of {len(out)}")
    if _cv2 is None or out.dtype != torch.uint8 or not out.is_contiguous():
        return torch.stack(frames, out=out)
    slots = out.numpy()
    for i, frame in enumerate(frames):
        if frame.shape == out.shape[1:] and frame.dim() == 3 and is_interleaved(frame):
            if _split(frame.numpy().transpose(1, 2, 0), list(slots[i])):
                continue
        copy_planar(frame, out[i])  # more leading dims (frame windows), or OpenCV refused
    return out


def as_planar(frames: torch.Tensor) -> torch.Tensor:
    """``frames`` as they are, or a planar copy of them where OpenCV deinterleaves interleaved ones
    (operations on contiguous planes run on vectorized paths)."""
    if _cv2 is None or not is_interleaved(frames):
        return frames
    return copy_planar(frames, torch.empty(frames.shape, dtype=torch.uint8))


def _split(pixels: np.ndarray, planes: list[np.ndarray]) -> bool:
    """Whether OpenCV split ``pixels`` ``(H, W, C)`` into the given ``(H, W)`` planes, in place (it
    refuses, or writes elsewhere, when a plane does not fit: the caller then copies)."""
    try:
        written = _cv2.split(pixels, planes)
    except _cv2.error:
        return False
    return all(w is p or w.ctypes.data == p.ctypes.data for w, p in zip(written, planes, strict=True))
