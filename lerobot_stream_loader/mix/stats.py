"""Statistics of a mixture: the sources' ``meta/stats.json`` combined as LeRobot's ``aggregate_stats`` does.

Per key, over the sources that have it: min of mins, max of maxes, means and quantiles weighted by
``count`` (frames), and the pooled standard deviation. Keys are the mixture's (renamed) names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def aggregate_feature_stats(stats: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """One feature's statistics combined over several datasets (LeRobot's ``aggregate_feature_stats``)."""
    arrays = [{k: np.asarray(v, dtype=np.float64) for k, v in s.items()} for s in stats]
    means = np.stack([s["mean"] for s in arrays])
    variances = np.stack([s["std"] for s in arrays]) ** 2
    counts = np.stack([s["count"] for s in arrays])
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    mean = (means * counts).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
    out = {
        "min": np.min(np.stack([s["min"] for s in arrays]), axis=0),
        "max": np.max(np.stack([s["max"] for s in arrays]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": total,
    }
    for key in arrays[0]:
        if key.startswith("q") and key[1:].isdigit() and all(key in s for s in arrays):
            out[key] = (np.stack([s[key] for s in arrays]) * counts).sum(axis=0) / total
    return out


def mixture_stats(per_source: Iterable[Mapping[str, Mapping[str, Any]]], keys: Iterable[str]) -> dict[str, dict]:
    """``keys``' statistics over every source whose stats hold them (complete entries only)."""
    sources = list(per_source)
    needed = ("min", "max", "mean", "std", "count")
    out = {}
    for key in keys:
        having = [s[key] for s in sources if key in s and all(n in s[key] for n in needed)]
        if having:
            out[key] = aggregate_feature_stats(having)
    return out
