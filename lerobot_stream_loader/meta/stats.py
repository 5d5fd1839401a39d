"""Feature statistics with LeRobot v3.0's keys and shapes: computed, aggregated, combined over datasets.

Keys: ``min, max, mean, std, count, q01, q10, q50, q90, q99``. Vectors reduce over frames (shape
``(dim,)``, or ``(1,)`` for scalars). Camera statistics are per channel, shaped ``(C, 1, 1)``, over
frames sampled and stride-downsampled as LeRobot does (stride ``W // 150`` once the larger side
reaches 300 pixels), uint8 pixels scaled to [0, 1]; ``count`` is the number of frames.
:class:`RunningImageStats` keeps a 256-bin histogram per channel, which gives the same statistics
one frame at a time (quantiles interpolate linearly between order statistics, like
``numpy.quantile``). Aggregation follows LeRobot's ``aggregate_stats`` (over episodes, and over the
sources of a mixture): count-weighted means and quantiles, pooled variance, min of mins, max of maxes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILES)
_REQUIRED = ("min", "max", "mean", "std", "count")

Stats = dict[str, np.ndarray]


def sampled_frame_positions(length: int) -> list[int]:
    """Which frames of an episode LeRobot reads for image statistics (evenly spaced)."""
    wanted = length if length < 100 else max(100, min(int(length**0.75), 10_000))
    return np.round(np.linspace(0, length - 1, wanted)).astype(int).tolist()


def _stride(height: int, width: int, target: int = 150, threshold: int = 300) -> int:
    if max(height, width) < threshold:
        return 1
    return int(width / target) if width > height else int(height / target)


def downsample(frame_hwc: np.ndarray) -> np.ndarray:
    """LeRobot's stride downsampling of a large frame (H, W, C) before image statistics."""
    step = _stride(*frame_hwc.shape[:2])
    return frame_hwc if step == 1 else frame_hwc[::step, ::step]


def downsampled_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of a frame after :func:`downsample`; such a frame is never downsampled again."""
    step = _stride(height, width)
    return -(-width // step), -(-height // step)


def vector_stats(values: np.ndarray) -> Stats:
    """Statistics over frames (axis 0) of a column; shape (dim,), or (1,) for scalars."""
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {"min": flat.min(axis=0), "max": flat.max(axis=0), "mean": flat.mean(axis=0),
             "std": flat.std(axis=0), "count": np.array([len(values)])}
    stats.update({key: np.quantile(flat, q, axis=0) for key, q in QUANTILES.items()})
    return {key: stats[key] for key in STAT_KEYS}


def image_stats(frames_hwc: np.ndarray, scale: float = 255.0) -> Stats:
    """Per-channel statistics of sampled frames (N, H, W, C), divided by ``scale`` (uint8 to [0, 1] by
    default; 1 for depth maps, which keep their unit), shape (C, 1, 1)."""
    step = _stride(*frames_hwc.shape[1:3])
    small = frames_hwc[:, ::step, ::step] if step > 1 else frames_hwc
    pixels = small.reshape(-1, small.shape[-1]).astype(np.float64)
    stats = {"min": pixels.min(axis=0), "max": pixels.max(axis=0), "mean": pixels.mean(axis=0),
             "std": pixels.std(axis=0)}
    stats.update({key: np.quantile(pixels, q, axis=0) for key, q in QUANTILES.items()})
    scaled = {key: (value / scale).reshape(-1, 1, 1) for key, value in stats.items()}
    scaled["count"] = np.array([len(frames_hwc)])
    return {key: scaled[key] for key in STAT_KEYS}


class RunningImageStats:
    """Per-channel histograms of uint8 frames, updated one frame at a time (:func:`image_stats` of
    the same frames)."""

    def __init__(self, channels: int = 3) -> None:
        self.hist = np.zeros((channels, 256), dtype=np.int64)
        self.frames = 0

    def update(self, frame_hwc: np.ndarray) -> None:
        """Add one RGB uint8 frame (H, W, C)."""
        small = downsample(frame_hwc)
        for c in range(self.hist.shape[0]):
            self.hist[c] += np.bincount(small[..., c].ravel(), minlength=256)
        self.frames += 1

    def result(self) -> Stats:
        """The statistics so far (at least one frame needed)."""
        if not self.frames:
            raise ValueError("image statistics need at least one frame")
        values = np.arange(256, dtype=np.float64)
        total = self.hist.sum(axis=1).astype(np.float64)
        mean = (self.hist * values).sum(axis=1) / total
        var = (self.hist * (values - mean[:, None]) ** 2).sum(axis=1) / total
        present = self.hist > 0
        stats = {
            "min": np.array([values[p].min() for p in present]),
            "max": np.array([values[p].max() for p in present]),
            "mean": mean,
            "std": np.sqrt(var),
        }
        for key, q in QUANTILES.items():
            stats[key] = np.array([_hist_quantile(h, q) for h in self.hist])
        out = {key: (value / 255.0).reshape(-1, 1, 1) for key, value in stats.items()}
        out["count"] = np.array([self.frames])
        return {key: out[key] for key in STAT_KEYS}


def _hist_quantile(hist: np.ndarray, q: float) -> float:
    """``numpy.quantile(values, q)`` (linear) of the values a histogram counts."""
    cumulative = np.cumsum(hist)
    position = q * (cumulative[-1] - 1)
    below = int(np.floor(position))
    low = int(np.searchsorted(cumulative, below, side="right"))
    high = int(np.searchsorted(cumulative, min(below + 1, cumulative[-1] - 1), side="right"))
    return low + (position - below) * (high - low)


def aggregate(stats_list: Sequence[Mapping[str, Any]]) -> Stats:
    """Combine statistics of one feature (per episode, or per dataset); a quantile is kept when every
    part has it."""
    counts = np.stack([np.asarray(s["count"]) for s in stats_list]).astype(np.float64)
    means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in stats_list])
    weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    total = counts.sum(axis=0).reshape((-1,) + (1,) * (means.ndim - counts.ndim))[0]
    mean = (means * weights).sum(axis=0) / total
    variances = np.stack([np.asarray(s["std"], dtype=np.float64) ** 2 for s in stats_list])
    out = {
        "min": np.min(np.stack([np.asarray(s["min"]) for s in stats_list]), axis=0),
        "max": np.max(np.stack([np.asarray(s["max"]) for s in stats_list]), axis=0),
        "mean": mean,
        "std": np.sqrt(((variances + (means - mean) ** 2) * weights).sum(axis=0) / total),
        "count": np.stack([np.asarray(s["count"]) for s in stats_list]).sum(axis=0),
    }
    for key in QUANTILES:
        if all(key in s for s in stats_list):
            out[key] = (np.stack([np.asarray(s[key], dtype=np.float64) for s in stats_list]) * weights
                        ).sum(axis=0) / total
    return out


def combine_datasets(per_dataset: Iterable[Mapping[str, Mapping[str, Any]]], keys: Iterable[str]) -> dict[str, Stats]:
    """``keys``' statistics over every dataset whose stats hold them complete (a mixture's stats)."""
    datasets = list(per_dataset)
    out = {}
    for key in keys:
        having = [d[key] for d in datasets if key in d and all(n in d[key] for n in _REQUIRED)]
        if having:
            out[key] = aggregate(having)
    return out


def to_lists(stats: Mapping[str, Any]) -> dict[str, Any]:
    """JSON- and parquet-ready nested lists."""
    return {key: np.asarray(value).tolist() for key, value in stats.items()}
