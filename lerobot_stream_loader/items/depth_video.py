"""12-bit depth frames of an episode's mini-MP4, decoded with PyAV (torchcodec outputs 8-bit RGB only).

Frames are asked for by position (0 = first presented frame), like
:class:`lerobot_stream_loader.items.decode.EpisodeVideoDecoder`. A request decodes forward from the open
decoder when the frames lie a little ahead of it, else seeks to the keyframe before the first
frame wanted; when a seek lands past a wanted frame (with B-frames the container seeks by decode
time), it seeks again one, two, four... frames earlier, and as a last resort decodes the episode
from its start. Every returned frame's time is checked against the sample table's, and a stream that
does not decode to 12-bit grey raises instead of being converted.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from typing import cast

import av
import numpy as np
import torch

from ..errors import DatasetFormatError, FrameMismatchError
from ..meta.depth import GRAY12_FORMATS

_PTS_SLACK_S = 1e-3
_FORWARD_FRAMES = 32  # decode on instead of seeking when the next frame wanted is this close ahead


class DepthVideoDecoder:
    """uint16 codes ``(N, 1, H, W)`` of a depth mini-MP4 by frame position."""

    def __init__(self, mini_mp4: bytes, expected_pts: np.ndarray, *, name: str) -> None:
        self.name = name
        self.expected_pts = np.asarray(expected_pts, dtype=np.float64)
        self.num_frames = len(self.expected_pts)
        self._data = mini_mp4
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._last = -1  # position of the last frame the open decoder returned
        self._landed: int | None = None  # position of the first frame decoded after the last seek

    def frames(self, positions: np.ndarray) -> torch.Tensor:
        """Codes at the given positions (any order, repeats allowed) as a uint16 tensor."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.num_frames):
            raise FrameMismatchError(f"{self.name}: frame position {positions.max()} outside the "
                                     f"{self.num_frames} frames of the episode's video")
        unique, inverse = np.unique(positions, return_inverse=True)
        found = self._decode(unique.tolist())
        stack = np.stack([found[int(p)] for p in unique])[:, None]
        return torch.from_numpy(stack[inverse.reshape(-1)])

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._last, self._landed = None, None, -1, None

    def __del__(self) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------
    def _decode(self, wanted: list[int]) -> dict[int, np.ndarray]:
        first = wanted[0]
        if not (self._frames is not None and self._last < first <= self._last + _FORWARD_FRAMES):
            self._seek(self._ticks(first))
        found = self._collect(wanted)
        target, step = self._ticks(first), self._frame_ticks()
        while len(found) < len(wanted) and self._landed is not None and self._landed > first \
                and target > self._ticks(0):
            target, step = target - step, 2 * step  # the seek landed past a wanted frame: seek earlier
            self._seek(target)
            found.update(self._collect(wanted))
        if len(found) < len(wanted):  # decode the episode from its start
            self.close()
            self._seek(None)
            found.update(self._collect(wanted))
        if len(found) < len(wanted):
            missing = sorted(set(wanted) - set(found))
            raise FrameMismatchError(f"{self.name}: the decoder never returned frame {missing[0]} at "
                                     f"{self.expected_pts[missing[0]]:.6f}s (episode-local time)")
        return found

    def _frame_ticks(self) -> int:
        return max(1, self._ticks(1) - self._ticks(0)) if self.num_frames > 1 else 1

    def _ticks(self, position: int) -> int:
        return int(round(self.expected_pts[position] / self._stream().time_base))

    def _stream(self) -> av.video.stream.VideoStream:
        if self._container is None:
            self._container = av.open(io.BytesIO(self._data), "r")
            self._container.streams.video[0].thread_count = 1
        return self._container.streams.video[0]

    def _seek(self, ticks: int | None) -> None:
        """Seek to a keyframe at or before ``ticks`` (stream time base; None: stay at the start)."""
        stream = self._stream()
        container = cast(av.container.InputContainer, self._container)  # opened by _stream()
        if ticks is not None:
            container.seek(ticks, stream=stream, backward=True, any_frame=False)
        self._frames = container.decode(stream)
        self._last, self._landed = -1, None

    def _collect(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode forward until the last wanted position; keep the wanted frames."""
        assert self._frames is not None
        want = set(wanted)
        found: dict[int, np.ndarray] = {}
        for frame in self._frames:
            if frame.pts is None:
                continue
            position = self._position(frame)
            if self._landed is None:
                self._landed = position
            if frame.format.name not in GRAY12_FORMATS:
                raise DatasetFormatError(f"{self.name}: depth video decodes to {frame.format.name}, not 12-bit "
                                         f"grey ({'/'.join(GRAY12_FORMATS)}); it cannot be dequantized exactly")
            self._last = position
            if position in want:
                found[position] = frame.to_ndarray(format="gray12le")
            if position >= wanted[-1]:
                break
        return found

    def _position(self, frame: av.VideoFrame) -> int:
        # _collect skips frames without pts; a decoded frame has its stream's time base
        seconds = float(cast(int, frame.pts) * cast(Fraction, frame.time_base))
        position = int(np.clip(np.searchsorted(self.expected_pts, seconds), 0, self.num_frames - 1))
        if position > 0 and abs(self.expected_pts[position - 1] - seconds) < abs(self.expected_pts[position] - seconds):
            position -= 1
        if abs(self.expected_pts[position] - seconds) > _PTS_SLACK_S:
            raise FrameMismatchError(f"{self.name}: the decoder returned a frame at {seconds:.6f}s, which is "
                                     "not a frame of the episode's sample table")
        return position
