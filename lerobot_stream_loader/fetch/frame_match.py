"""Rows matched to video frames: the one place a row's time becomes a frame position.

A row plays the frame presented nearest to ``from_timestamp + timestamp`` on the source MP4's
timeline, as LeRobot decodes it, and that frame must lie within ``tolerance_s`` of the time. The
assembler matches every row of an episode once, when the episode is fetched (:class:`RowFrames`);
cameras then only look positions up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FrameMismatchError

DEFAULT_TOLERANCE_S = 1e-4


def nearest_frames(presented: np.ndarray, requested: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the frames nearest to ``requested`` times among the sorted ``presented`` times,
    their distance in seconds)."""
    requested = np.asarray(requested, dtype=np.float64)
    right = np.clip(np.searchsorted(presented, requested), 0, len(presented) - 1)
    left = np.clip(right - 1, 0, len(presented) - 1)
    pick = np.where(np.abs(presented[left] - requested) <= np.abs(presented[right] - requested), left, right)
    return pick, np.abs(presented[pick] - requested)


def match_frames(presented: np.ndarray, requested: np.ndarray, tolerance_s: float, what: str) -> np.ndarray:
    """Positions of the frames nearest to ``requested`` times (source timeline) among the sorted
    ``presented`` times; raise :class:`FrameMismatchError` when one is further than the tolerance."""
    return RowFrames.match(presented, requested).positions_of(None, tolerance_s, what)


@dataclass(frozen=True)
class RowFrames:
    """Every row's frame in one camera's fetched video: the time the row plays, the nearest frame's
    position among the sorted ``presented`` times and its distance in seconds."""

    presented: np.ndarray
    requested: np.ndarray
    positions: np.ndarray
    error: np.ndarray

    @classmethod
    def match(cls, presented: np.ndarray, requested: np.ndarray) -> RowFrames:
        requested = np.asarray(requested, dtype=np.float64)
        positions, error = nearest_frames(presented, requested)
        return cls(presented, requested, positions, error)

    def within(self, tolerance_s: float) -> bool:
        """Whether every row has its frame within ``tolerance_s``."""
        return not len(self.error) or bool(self.error.max() <= tolerance_s)

    def positions_of(self, rows: np.ndarray | None, tolerance_s: float, what: str) -> np.ndarray:
        """Frame positions of ``rows`` (all rows for None); :class:`FrameMismatchError` naming the
        worst time when one of them has no frame within ``tolerance_s``."""
        error = self.error if rows is None else self.error[rows]
        worst = int(np.argmax(error)) if len(error) else 0
        if len(error) and error[worst] > tolerance_s:
            row = worst if rows is None else int(rows[worst])
            presented = self.presented
            raise FrameMismatchError(
                f"{what}: no frame within tolerance_s={tolerance_s} of t={self.requested[row]:.6f}s; nearest "
                f"frame is at {presented[self.positions[row]]:.6f}s (the video holds "
                f"{presented[0]:.6f}..{presented[-1]:.6f}s)")
        return self.positions if rows is None else self.positions[rows]
