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
    position among the sorted ``presented`` times, its distance in seconds, and whether that frame
    lies outside the episode's own part of the MP4 (``part``: [start, end) seconds)."""

    presented: np.ndarray
    requested: np.ndarray
    positions: np.ndarray
    error: np.ndarray
    outside: np.ndarray
    part: tuple[float, float] = (-np.inf, np.inf)

    @classmethod
    def match(cls, presented: np.ndarray, requested: np.ndarray,
              part: tuple[float, float] = (-np.inf, np.inf)) -> RowFrames:
        """Match rows to frames; a frame presented before ``part[0]`` or from ``part[1]`` on belongs to
        another episode of the same file."""
        requested = np.asarray(requested, dtype=np.float64)
        positions, error = nearest_frames(presented, requested)
        shown = presented[positions] if len(presented) else requested
        outside = (shown < part[0]) | (shown >= part[1])
        return cls(presented, requested, positions, error, outside, part)

    def within(self, tolerance_s: float) -> bool:
        """Whether every row has its frame within ``tolerance_s``."""
        return not len(self.error) or bool(self.error.max() <= tolerance_s)

    def positions_of(self, rows: np.ndarray | None, tolerance_s: float, what: str) -> np.ndarray:
        """Frame positions of ``rows`` (all rows for None); :class:`FrameMismatchError` naming the
        worst time when one of them has no frame within ``tolerance_s``, or naming the first row whose
        frame belongs to another episode of the file."""
        picked = np.arange(len(self.error)) if rows is None else np.asarray(rows)
        error = self.error[picked]
        worst = int(np.argmax(error)) if len(error) else 0
        presented = self.presented
        if len(error) and error[worst] > tolerance_s:
            row = int(picked[worst])
            raise FrameMismatchError(
                f"{what}: no frame within tolerance_s={tolerance_s} of t={self.requested[row]:.6f}s; nearest "
                f"frame is at {presented[self.positions[row]]:.6f}s (the video holds "
                f"{presented[0]:.6f}..{presented[-1]:.6f}s)")
        foreign = np.flatnonzero(self.outside[picked])
        if len(foreign):
            row = int(picked[foreign[0]])
            start, end = self.part
            raise FrameMismatchError(
                f"{what}: row {row} of the episode plays t={self.requested[row]:.6f}s, which lies outside the "
                f"episode's part of the MP4 [{start:.6f}, {end:.6f}) s: that frame belongs to another episode "
                f"(the row's timestamp is wrong)")
        return self.positions[picked]
