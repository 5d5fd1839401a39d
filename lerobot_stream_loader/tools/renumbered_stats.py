"""Per-episode stats of the columns a shuffle renumbers (``index``, ``episode_index``), computed from
the new numbers alone: the same floats, bit for bit, as ``meta.stats.vector_stats`` of the column.

An episode's ``index`` is the run ``start, start + 1, ..., start + count - 1`` and its
``episode_index`` one number repeated; their sums, spreads and order statistics have closed forms
that numpy's own arithmetic reproduces exactly while every partial sum is an integer (or a quarter)
below 2**53. Outside that range the column is built and measured instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..meta.stats import QUANTILES, STAT_KEYS, Stats, to_lists, vector_stats

_EXACT = 2**52  # integers (and half-integers, quarters) below this are floats without rounding
_QS = np.array(list(QUANTILES.values()))


def constant_stats(value: int, count: int) -> Stats:
    """``vector_stats`` of ``count`` copies of the integer ``value``, computed without the column
    (every statistic of a constant is the constant, its spread 0: the same floats numpy returns)."""
    one = np.array([float(value)])
    return {key: (np.array([count]) if key == "count" else np.zeros(1) if key == "std" else one)
            for key in STAT_KEYS}


def run_stats(starts: list[int], counts: list[int]) -> list[dict[str, Any]]:
    """``to_lists(vector_stats(np.arange(start, start + count)))`` of each run, computed for all runs
    at once from ``start`` and ``count`` (each ``count`` >= 1)."""
    start, n = np.asarray(starts, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    exact = (start >= 0) & (start + n < _EXACT) & (n.astype(np.float64) ** 3 < _EXACT)
    total = n * start + n * (n - 1) // 2  # numpy's (pairwise) sum of the run: exact integers here
    mean = np.where(exact, total, 0).astype(np.float64) / n
    squares = np.where(exact, (n - 1) * n * (n + 1) // 3, 0).astype(np.float64) / 4  # sum of (k - mean)**2
    std = np.sqrt(squares / n)
    quantiles = _run_quantiles(start.astype(np.float64), n)
    out = []
    for i, count in enumerate(n.tolist()):
        if not exact[i]:
            out.append(to_lists(vector_stats(np.arange(starts[i], starts[i] + count))))
            continue
        first = float(start[i])
        stats = {"min": [first], "max": [float(start[i] + count - 1)], "mean": [float(mean[i])],
                 "std": [float(std[i])], "count": [count]}
        stats.update((key, [float(q)]) for key, q in zip(QUANTILES, quantiles[i]))
        out.append({key: stats[key] for key in STAT_KEYS})
    return out


def _run_quantiles(start: np.ndarray, n: np.ndarray) -> np.ndarray:
    """numpy's linear quantiles (virtual index ``(n - 1) * q``, then its ``_lerp``) of each run, shape
    (runs, quantiles): the sorted run's k-th value is ``start + k``."""
    virtual = (n - 1)[:, None] * _QS[None, :]
    previous = np.floor(virtual)
    above = virtual >= (n - 1)[:, None]  # the last value itself
    previous = np.where(above, (n - 1)[:, None], previous)
    gamma = np.where(above, virtual + 1, virtual - previous)  # numpy's (irrelevant) weight there: a == b
    a = start[:, None] + previous
    b = np.where(above, a, a + 1)
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
