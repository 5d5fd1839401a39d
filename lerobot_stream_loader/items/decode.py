"""Decode frames of one camera of one episode from its synthesized mini-MP4.

The decoder is asked for frames by position in the mini-MP4 (rows were matched to positions once,
when the episode was fetched: :mod:`~lerobot_stream_loader.fetch.frame_match`), which avoids any
rounding at frame boundaries; it checks that every frame it returns is the one asked for.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchcodec.decoders import VideoDecoder

from ..errors import FrameMismatchError

_PTS_SLACK_S = 1e-3

# A decoder's key in a DecoderLRU: (episode, camera); (source, (episode, camera)) in a mixture's shared one.
DecoderKey = tuple[Any, ...]


class EpisodeVideoDecoder:
    """Frames of a mini-MP4 by position (0 = first presented frame), uint8 NCHW.

    ``expected_pts`` (seconds on the mini-MP4's timeline, one per frame) are checked against what
    the decoder reports for every frame it returns: a decoder that lands on the wrong frame raises
    :class:`FrameMismatchError` instead of returning it.
    """

    def __init__(self, mini_mp4: bytes, expected_pts: np.ndarray, *, name: str,
                 size: tuple[int, int] | None = None) -> None:
        """``size``: (height, width) the frames are resized to (:func:`resize_frames`)."""
        self.name = name
        self.expected_pts = np.asarray(expected_pts, dtype=np.float64)
        self._size = size
        self._decoder = VideoDecoder(mini_mp4, seek_mode="exact", num_ffmpeg_threads=1,  # parallelism comes from the workers
                                     dimension_order="NCHW")
        self.num_frames = int(self._decoder.metadata.num_frames or 0)

    def frames(self, positions: np.ndarray) -> torch.Tensor:
        """Frames at the given positions (any order, repeats allowed)."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        ordered = len(positions) < 2 or bool((positions[1:] > positions[:-1]).all())
        unique, inverse = (positions, None) if ordered else np.unique(positions, return_inverse=True)
        if len(unique) and (unique[0] < 0 or unique[-1] >= self.num_frames):
            bad = int(unique[0] if unique[0] < 0 else unique[-1])
            raise FrameMismatchError(f"{self.name}: frame position {bad} outside the "
                                     f"{self.num_frames} frames of the episode's video")
        batch = self._decoder.get_frames_at(indices=unique.tolist())
        got = batch.pts_seconds.numpy()
        want = self.expected_pts[unique]
        wrong = np.flatnonzero(np.abs(got - want) > _PTS_SLACK_S)
        if len(wrong):
            k = int(wrong[0])
            raise FrameMismatchError(f"{self.name}: the decoder returned the frame at {got[k]:.6f}s for frame "
                                     f"{int(unique[k])} at {want[k]:.6f}s (episode-local times)")
        data = batch.data if self._size is None else resize_frames(batch.data, self._size)
        return data if inverse is None else data[torch.from_numpy(inverse.reshape(-1))]


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 NCHW frames resized to (height, width): ``interpolate(..., mode="bilinear", antialias=True)``
    on the uint8 frames, as torchvision's ``Resize`` does with uint8 tensors (torch's vectorized uint8
    path: decode plus resize ran at about 1.7x the frame rate of torchcodec's decoder-side ``Resize``
    on 640x480 AV1 to 224x224 here)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return torch.nn.functional.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)


class DecoderLRU:
    """A small LRU of open decoders, separate from the byte cache; evicted decoders are dropped."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: OrderedDict[DecoderKey, EpisodeVideoDecoder] = OrderedDict()

    def get(self, key: DecoderKey, open_decoder: Callable[[], EpisodeVideoDecoder]) -> EpisodeVideoDecoder:
        """The decoder for ``key``, opened with ``open_decoder`` when absent."""
        decoder = self._items.get(key)
        if decoder is None:
            decoder = open_decoder()
            self._items[key] = decoder
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return decoder

    def discard(self, predicate: Callable[[DecoderKey], bool]) -> None:
        """Drop every decoder whose key matches."""
        for key in [k for k in self._items if predicate(k)]:
            del self._items[key]

    def clear(self) -> None:
        self._items.clear()

    def keys(self) -> list[DecoderKey]:
        """Keys of the open decoders, least recently used first."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
