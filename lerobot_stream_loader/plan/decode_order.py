"""Shuffled order of one shard: decode each frame once, in order; mix after decoding.

Two orders are drawn for the samples of a shard (episodes given in admission order):

* **decode order**: ``pool_size`` episodes are open at once; repeatedly one of them, chosen
  uniformly at random, decodes its next ``run`` frames (in frame order, so every decoder only
  moves forward); an exhausted episode leaves and the next one is admitted. Every frame is decoded
  exactly once and each episode's decoder reads its frames sequentially.
* **yield order**: sample at decode position ``p`` gets the key ``p + U * shuffle_buffer``
  (``U`` uniform in [0, 1)) and samples are yielded by increasing key. When the sample of key
  ``x`` is yielded every sample decoded so far has a position below ``x`` + one run and every
  sample still waiting has a key above ``x``, hence a position above ``x - shuffle_buffer``: at
  most ``shuffle_buffer + run`` decoded samples wait at any time (the decoded-frame budget), and a
  batch draws about uniformly from the last ``shuffle_buffer`` decoded samples, i.e. from about
  ``min(pool_size, shuffle_buffer / run)`` episodes.

``run = max(1, shuffle_buffer // (2 * pool_size))``, so that the window holds about two runs of
every open episode. Both orders are pure functions of the lengths, the two sizes and the
generator: a reader resumes by recomputing them and skipping what it already yielded.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SHUFFLE_BUFFER = 256


def run_length(pool_size: int, shuffle_buffer: int) -> int:
    """Frames an open episode decodes per turn."""
    return max(1, shuffle_buffer // (2 * max(1, pool_size)))


def decode_order(lengths: np.ndarray, pool_size: int, run: int, rng: np.random.Generator) -> np.ndarray:
    """Flat sample numbers (segment-major) in decode order: runs of ``run`` frames from ``pool_size``
    open episodes, one chosen uniformly at random per run."""
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(lengths)
    cursor = (ends - lengths).tolist()
    ends_list = ends.tolist()
    draws = rng.random(int(np.sum(-(-lengths // run)))).tolist()
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    open_ = list(range(min(pool_size, len(lengths))))
    admitted, filled, turn = len(open_), 0, 0
    while open_:
        j = int(draws[turn] * len(open_))
        turn += 1
        s = open_[j]
        a = cursor[s]
        b = min(a + run, ends_list[s])
        out[filled:filled + b - a] = np.arange(a, b)
        filled += b - a
        cursor[s] = b
        if b == ends_list[s]:
            if admitted < len(lengths):
                open_[j] = admitted
                admitted += 1
            else:
                open_[j] = open_[-1]
                open_.pop()
    return out


def mixed_order(lengths: np.ndarray, pool_size: int, shuffle_buffer: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(yield order as flat sample numbers, decode position of every flat sample number)."""
    decoded = decode_order(lengths, pool_size, run_length(pool_size, shuffle_buffer), rng)
    position = np.empty_like(decoded)
    position[decoded] = np.arange(len(decoded))
    key = position + rng.random(len(decoded)) * shuffle_buffer
    return np.argsort(key, kind="stable"), position
