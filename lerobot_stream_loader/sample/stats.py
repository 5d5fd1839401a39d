"""Per-episode and aggregate feature statistics, computed the way LeRobot v3.0 computes them.

Every feature gets ``min, max, mean, std, count, q01, q10, q50, q90, q99``. Vectors reduce over
frames (shape ``(dim,)``, or ``(1,)`` for scalars); camera frames are sampled like LeRobot does,
reduced per channel and scaled to [0, 1] (shape ``(3, 1, 1)``, ``count`` = sampled frames).
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILES)

Stats = dict[str, np.ndarray]


def sampled_frame_positions(length: int) -> list[int]:
    """Which frames of an episode LeRobot reads for image statistics (evenly spaced)."""
    wanted = length if length < 100 else max(100, min(int(length**0.75), 10_000))
    return np.round(np.linspace(0, length - 1, wanted)).astype(int).tolist()


def _downsample(frames: np.ndarray) -> np.ndarray:
    """LeRobot's stride-downsampling of large images (N, C, H, W) before image statistics."""
    height, width = frames.shape[2:]
    if max(height, width) < 300:
        return frames
    factor = int(width / 150) if width > height else int(height / 150)
    return frames[:, :, ::factor, ::factor]


def vector_stats(values: np.ndarray) -> Stats:
    """Statistics over the first axis of ``values`` (frames x dim, or frames)."""
    flat = values.reshape(len(values), -1)
    stats = {
        "min": flat.min(axis=0),
        "max": flat.max(axis=0),
        "mean": flat.mean(axis=0, dtype=np.float64),
        "std": flat.std(axis=0, dtype=np.float64),
        "count": np.array([len(values)]),
    }
    for key, q in QUANTILES.items():
        stats[key] = np.quantile(flat.astype(np.float64), q, axis=0)
    return stats


def image_stats(frames_hwc: np.ndarray, scale: float = 255.0) -> Stats:
    """Per-channel statistics of sampled frames (N, H, W, C), divided by ``scale`` (uint8 to [0, 1] by
    default; 1 for depth maps, which keep their unit), shape (C, 1, 1)."""
    chw = _downsample(np.ascontiguousarray(frames_hwc.transpose(0, 3, 1, 2)))
    pixels = chw.transpose(0, 2, 3, 1).reshape(-1, chw.shape[1]).astype(np.float64)
    stats = {
        "min": pixels.min(axis=0),
        "max": pixels.max(axis=0),
        "mean": pixels.mean(axis=0),
        "std": pixels.std(axis=0),
    }
    stats.update({key: np.quantile(pixels, q, axis=0) for key, q in QUANTILES.items()})
    scaled = {key: (value / scale).reshape(-1, 1, 1) for key, value in stats.items()}
    scaled["count"] = np.array([len(frames_hwc)])
    return {key: scaled[key] for key in STAT_KEYS}


def aggregate(stats_list: list[Stats]) -> Stats:
    """Combine per-episode statistics of one feature (count-weighted, pooled variance)."""
    counts = np.stack([s["count"] for s in stats_list]).astype(np.float64)
    means = np.stack([s["mean"] for s in stats_list])
    weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    total = counts.sum(axis=0)
    mean = (means * weights).sum(axis=0) / total
    variances = np.stack([s["std"] ** 2 for s in stats_list])
    variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total
    result = {
        "min": np.min(np.stack([s["min"] for s in stats_list]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats_list]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.stack([s["count"] for s in stats_list]).sum(axis=0),
    }
    for key in QUANTILES:
        result[key] = (np.stack([s[key] for s in stats_list]) * weights).sum(axis=0) / total
    return result


def to_lists(stats: Stats) -> dict[str, list]:
    """JSON/parquet-ready nested lists."""
    return {key: np.asarray(value).tolist() for key, value in stats.items()}
