"""Shuffled order of one shard: decode each frame once, in order; mix after decoding.

Two orders are drawn for the samples of a shard (episodes given in admission order):

* **decode order**: ``pool_size`` episodes are open at once; repeatedly one of them decodes its
  next ``run`` frames (in frame order, so every decoder only moves forward); an exhausted episode
  leaves and another is admitted in its slot. The slots, each dealt a similar share of the
  episodes, take turns at an even, jittered pace and end together (see :func:`decode_order`).
  Every frame is decoded exactly once and each episode's decoder reads its frames sequentially.
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

import heapq

import numpy as np

DEFAULT_SHUFFLE_BUFFER = 256


def run_length(pool_size: int, shuffle_buffer: int) -> int:
    """Frames an open episode decodes per turn."""
    return max(1, shuffle_buffer // (2 * max(1, pool_size)))


def decode_order(lengths: np.ndarray, pool_size: int, run: int, rng: np.random.Generator) -> np.ndarray:
    """Flat sample numbers (segment-major) in decode order: runs of ``run`` frames from ``pool_size``
    open episodes.

    The episodes (in admission order) are dealt to ``pool_size`` slots, each to the slot with the
    fewest runs so far; a slot decodes its episodes one after the other. A slot with ``R`` runs has
    its k-th run at time ``(k + u) / R`` of the shard (``u`` uniform in [0, 1), drawn per run), and
    runs are decoded by increasing time: every slot moves through its work at an even pace, so any
    stretch of turns holds every slot about in proportion to its work (the most episodes a stretch
    can hold) and all slots end together, near the end of the shard (the episodes open stay
    ``pool_size`` almost to the last batch, instead of thinning out to the few long ones left).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(lengths):
        return np.empty(0, dtype=np.int64)
    runs = -(-lengths // run)
    slot = _deal(runs, min(max(1, pool_size), len(lengths)))
    run_segment = np.repeat(np.arange(len(lengths)), runs)  # every run, segment-major (frame order)
    in_chain = np.argsort(slot[run_segment], kind="stable")  # each slot's runs in its decode order
    per_slot = np.bincount(slot[run_segment])
    chain_slot = np.repeat(np.arange(len(per_slot)), per_slot)
    k = np.arange(len(in_chain)) - np.repeat(np.cumsum(per_slot) - per_slot, per_slot)
    due = (k + rng.random(len(in_chain))) / per_slot[chain_slot]
    run_of_turn = in_chain[np.argsort(due, kind="stable")]
    seg_start = np.cumsum(lengths) - lengths
    first_run = np.cumsum(runs) - runs
    within = np.arange(len(run_segment)) - first_run[run_segment]
    run_start = seg_start[run_segment] + within * run
    run_size = np.minimum(run, lengths[run_segment] - within * run)
    start, size = run_start[run_of_turn], run_size[run_of_turn]
    return np.repeat(start - (np.cumsum(size) - size), size) + np.arange(int(size.sum()))


def _deal(runs: np.ndarray, slots: int) -> np.ndarray:
    """The slot of each episode: in turn, the one with the fewest runs so far (the lowest on ties)."""
    load = [(0, k) for k in range(slots)]
    slot = np.empty(len(runs), dtype=np.int64)
    for i, count in enumerate(runs.tolist()):
        total, k = heapq.heappop(load)
        slot[i] = k
        heapq.heappush(load, (total + count, k))
    return slot


def mixed_order(lengths: np.ndarray, pool_size: int, shuffle_buffer: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(yield order as flat sample numbers, decode position of every flat sample number)."""
    decoded = decode_order(lengths, pool_size, run_length(pool_size, shuffle_buffer), rng)
    position = np.empty_like(decoded)
    position[decoded] = np.arange(len(decoded))
    key = position + rng.random(len(decoded)) * shuffle_buffer
    return np.argsort(key, kind="stable"), position
