"""Delta windows: LeRobot's ``delta_timestamps`` semantics, as frame indices within an episode.

For ``delta_timestamps = {key: [dt, ...]}`` each ``dt`` must be a multiple of ``1 / fps`` within
``tolerance_s`` (``|dt * fps - round(dt * fps)| / fps <= tolerance_s``, LeRobot's check); its frame
offset is ``round(dt * fps)``. For frame f of an episode of ``length`` frames, query
``f + offset`` is clamped to ``[0, length - 1]`` (the edge frame repeats) and ``<key>_is_pad`` is
true where the query fell outside the episode. Any horizon is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fetch.frame_match import DEFAULT_TOLERANCE_S


@dataclass(frozen=True)
class Window:
    """Clamped frame indices within the episode, and where the query fell outside it.

    Both arrays have shape ``frame.shape + (len(offsets),)``.
    """

    indices: np.ndarray  # int64
    is_pad: np.ndarray  # bool


def pad_key(key: str) -> str:
    """Name of the padding mask LeRobot returns next to a windowed key."""
    return f"{key}_is_pad"


def delta_offsets(
    delta_timestamps: Mapping[str, Sequence[float]], fps: int, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> dict[str, np.ndarray]:
    """Frame offsets ``round(dt * fps)`` per key; ValueError if a dt is not a multiple of 1/fps."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    offsets: dict[str, np.ndarray] = {}
    for key, deltas in delta_timestamps.items():
        if isinstance(deltas, (str, bytes)) or not isinstance(deltas, Sequence | np.ndarray):
            raise ValueError(f"delta_timestamps[{key!r}] must be a list of seconds, got {deltas!r}")
        values = np.asarray(deltas, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ValueError(f"delta_timestamps[{key!r}] is empty; give at least one time offset")
        if not np.isfinite(values).all():
            raise ValueError(f"delta_timestamps[{key!r}] holds a non-finite value: {list(deltas)}")
        steps = values * fps
        rounded = np.rint(steps)
        off = np.abs(steps - rounded) / fps > tolerance_s
        if off.any():
            raise ValueError(
                f"delta_timestamps[{key!r}] values {values[off].tolist()} are not multiples of "
                f"1/{fps} s within tolerance_s={tolerance_s}; nearest valid: {(rounded[off] / fps).tolist()}"
            )
        offsets[key] = rounded.astype(np.int64)
    return offsets


def window(offsets: np.ndarray, frame: int | np.ndarray, length: int | np.ndarray) -> Window:
    """Indices and padding mask of the window at ``frame`` (scalar or array) of an episode."""
    frames = np.asarray(frame, dtype=np.int64)
    lengths = np.asarray(length, dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError(f"episode length must be >= 1, got {length}")
    if ((frames < 0) | (frames >= lengths)).any():
        raise ValueError(f"frame {frame} is outside its episode of length {length}")
    query = frames[..., None] + np.asarray(offsets, dtype=np.int64)
    last = lengths[..., None] - 1
    return Window(np.clip(query, 0, last), (query < 0) | (query > last))


class DeltaWindows:
    """Validated ``delta_timestamps`` of one dataset, answering window queries per key."""

    def __init__(
        self,
        delta_timestamps: Mapping[str, Sequence[float]],
        *,
        fps: int,
        features: Mapping[str, Any],
        tolerance_s: float = DEFAULT_TOLERANCE_S,
    ) -> None:
        unknown = [key for key in delta_timestamps if key not in features]
        if unknown:
            raise ValueError(
                f"delta_timestamps keys {unknown} are not features of this dataset; "
                f"available keys: {sorted(features)}"
            )
        self.fps = fps
        self.offsets = delta_offsets(delta_timestamps, fps, tolerance_s)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.offsets)

    def span(self) -> tuple[int, int]:
        """Smallest and largest frame offset over all keys ((0, 0) without keys)."""
        if not self.offsets:
            return 0, 0
        every = np.concatenate(list(self.offsets.values()))
        return int(every.min()), int(every.max())

    def query(self, frame: int | np.ndarray, length: int | np.ndarray) -> dict[str, Window]:
        """The window of every key at ``frame`` of an episode of ``length`` frames."""
        return {key: window(off, frame, length) for key, off in self.offsets.items()}

    def __repr__(self) -> str:
        shown = {key: off.tolist() for key, off in self.offsets.items()}
        return f"DeltaWindows(fps={self.fps}, offsets={shown})"
