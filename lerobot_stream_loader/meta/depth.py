"""Depth maps as LeRobot 0.6.1 stores and returns them.

A depth feature is a ``video`` or ``image`` feature whose ``info`` carries ``is_depth_map: true``
(or the legacy ``video.is_depth_map``, also inside a ``video_info`` block). Depth videos hold 12-bit
codes (HEVC Main 12 ``gray12le``) quantized from metres with ``video.depth_min``,
``video.depth_max``, ``video.shift`` and ``video.use_log`` (LeRobot's defaults when absent);
:func:`dequantize` turns codes into float32 ``(..., 1, H, W)`` depth in the output unit, with the
same torch operations in the same order as LeRobot's ``dequantize_depth``. Depth images in parquet
hold raw depth in their ``depth_unit``; :func:`convert_image_unit` converts them as LeRobot does.
Statistics are rescaled from ``depth_unit`` to the output unit by :func:`rescale_depth_stats`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DatasetFormatError

if TYPE_CHECKING:
    import torch

METRE = "m"
MILLIMETRE = "mm"
DEPTH_UNITS = (METRE, MILLIMETRE)
DEFAULT_DEPTH_UNIT = MILLIMETRE
MM_PER_METRE = 1000.0
DEPTH_QMAX = (1 << 12) - 1
GRAY12_FORMATS = ("gray12le", "gray12be")  # pixel formats whose planes are the codes themselves
_UINT16_MAX = 65535

DEFAULT_DEPTH_MIN = 0.01
DEFAULT_DEPTH_MAX = 10.0
DEFAULT_DEPTH_SHIFT = 3.5
DEFAULT_DEPTH_USE_LOG = True


def is_depth_feature(feature: Mapping[str, Any]) -> bool:
    """Whether a feature of info.json is a depth map (LeRobot's ``depth_keys`` rule)."""
    info = feature.get("info") or {}
    video_info = feature.get("video_info") or {}
    return bool(info.get("is_depth_map", False) or info.get("video.is_depth_map", False)
                or video_info.get("video.is_depth_map", False))


def depth_keys(features: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Keys of the depth features (videos and images), in info.json order."""
    return [key for key, feature in features.items() if is_depth_feature(feature)]


def check_unit(unit: str) -> str:
    """``unit`` if it is ``"m"`` or ``"mm"``, else ValueError."""
    if unit not in DEPTH_UNITS:
        raise ValueError(f"depth_output_unit must be {METRE!r} or {MILLIMETRE!r}, got {unit!r}")
    return unit


def stored_unit(feature: Mapping[str, Any]) -> str | None:
    """The ``depth_unit`` a depth feature was recorded in (None when info.json does not say)."""
    return (feature.get("info") or {}).get("depth_unit")


@dataclass(frozen=True)
class DepthQuantization:
    """How metres map to 12-bit codes (all in metres)."""

    depth_min: float = DEFAULT_DEPTH_MIN
    depth_max: float = DEFAULT_DEPTH_MAX
    shift: float = DEFAULT_DEPTH_SHIFT
    use_log: bool = DEFAULT_DEPTH_USE_LOG

    @classmethod
    def from_feature(cls, key: str, feature: Mapping[str, Any]) -> DepthQuantization:
        """The parameters in a feature's ``info`` (``video.depth_min`` ...), defaults where absent."""
        info = feature.get("info") or {}
        values: dict[str, Any] = {}
        for name in ("depth_min", "depth_max", "shift", "use_log"):
            value = info.get(f"video.{name}")
            if value is not None:
                values[name] = value
        try:
            parsed: dict[str, Any] = {name: (bool(v) if name == "use_log" else float(v))
                                      for name, v in values.items()}
            quant = cls(**parsed)
        except (TypeError, ValueError) as exc:
            raise DatasetFormatError(f"depth feature {key!r}: unreadable quantization parameters {values}") \
                from exc
        if not all(math.isfinite(v) for v in (quant.depth_min, quant.depth_max, quant.shift)) \
                or quant.depth_max <= quant.depth_min:
            raise DatasetFormatError(f"depth feature {key!r}: depth range [{quant.depth_min}, {quant.depth_max}] "
                                     "is empty or not finite")
        if quant.use_log and quant.depth_min + quant.shift <= 0:
            raise DatasetFormatError(f"depth feature {key!r}: depth_min + shift must be positive for log "
                                     f"quantization, got {quant.depth_min} + {quant.shift}")
        return quant

    def _scale_offset(self) -> tuple[float, float]:
        if self.use_log:
            log_min = math.log(self.depth_min + self.shift)
            log_max = math.log(self.depth_max + self.shift)
            return (log_max - log_min) / DEPTH_QMAX, log_min
        return (self.depth_max - self.depth_min) / DEPTH_QMAX, self.depth_min

    def quantize(self, metres: np.ndarray) -> np.ndarray:
        """12-bit codes (uint16) of float depth in metres, as LeRobot's ``quantize_depth`` computes them."""
        depth = np.asarray(metres).astype(np.float32)
        depth_min, depth_max, shift = np.float32(self.depth_min), np.float32(self.depth_max), np.float32(self.shift)
        if self.use_log:
            log_min = math.log(float(depth_min + shift))
            log_max = math.log(float(depth_max + shift))
            norm = (np.log(depth + shift) - log_min) / (log_max - log_min)
        else:
            norm = (depth - depth_min) / (depth_max - depth_min)
        return np.rint(norm * DEPTH_QMAX).clip(0, DEPTH_QMAX).astype(np.uint16)

    def dequantize(self, codes: torch.Tensor, unit: str) -> torch.Tensor:
        """float32 depth ``(..., 1, H, W)`` in ``unit`` from integer codes ``(..., 1, H, W)``.

        The operations are LeRobot 0.6.1's (``dequantize_depth``, torch path, channel-first output):
        millimetres are rounded to whole numbers and clamped to [0, 65535].
        """
        import torch

        scale, offset = self._scale_offset()
        buf = codes.squeeze(-3).to(dtype=torch.float32, copy=True)
        buf.mul_(scale).add_(offset)
        if self.use_log:
            buf.exp_().sub_(float(self.shift))
        buf.clamp_(float(self.depth_min), float(self.depth_max))
        buf.unsqueeze_(-3)
        if unit == METRE:
            return buf
        return buf.mul_(MM_PER_METRE).round_().clamp_(0.0, _UINT16_MAX)


def check_depth_features(root: str, features: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`DatasetFormatError` naming the dataset and feature if a depth video's
    quantization parameters cannot be dequantized."""
    for key in depth_keys(features):
        if features[key].get("dtype") == "video":
            try:
                DepthQuantization.from_feature(key, features[key])
            except DatasetFormatError as exc:
                raise DatasetFormatError(f"{root}: {exc}") from exc


def convert_image_unit(depth: torch.Tensor, recorded: str | None, unit: str) -> torch.Tensor:
    """A raw depth image (stack) in ``recorded`` units, converted to ``unit`` as LeRobot does."""
    if recorded is None or recorded == unit:
        return depth
    return depth * MM_PER_METRE if recorded == METRE else depth / MM_PER_METRE


def rescale_depth_stats(stats: Mapping[str, Any], features: Mapping[str, Mapping[str, Any]],
                        unit: str) -> dict[str, Any]:
    """``stats`` with every depth feature's entries (except ``count``) moved from ``depth_unit`` to ``unit``.

    Values keep their container type (nested lists stay lists, arrays stay arrays); features
    without a recorded ``depth_unit`` are left as they are, as LeRobot does.
    """
    result = dict(stats)
    for key in depth_keys(features):
        recorded = stored_unit(features[key])
        if recorded is None or recorded == unit or key not in result:
            continue
        factor = MM_PER_METRE if recorded == METRE else 1.0 / MM_PER_METRE
        result[key] = {stat: value if stat == "count" else _scaled(value, factor)
                       for stat, value in result[key].items()}
    return result


def _scaled(value: Any, factor: float) -> Any:
    scaled = np.asarray(value, dtype=np.float64) * factor
    return scaled.tolist() if isinstance(value, list | tuple | float | int) else scaled
