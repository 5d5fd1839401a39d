"""Cameras stored as video: RGB frames (torchcodec) and depth maps (12-bit codes through PyAV).

Both find the frames a request needs the same way: each row's frame was matched when the episode
was fetched (:class:`~lerobot_stream_loader.fetch.frame_match.RowFrames`); a row whose frame lies
beyond ``tolerance_s`` raises when it is asked for, and the decoder is asked for frames by position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import av
import numpy as np
import torch

from ..errors import DatasetFormatError, StreamLoaderError
from ..meta.depth import DepthQuantization
from ..util.stage_clock import clock
from .decode import DecoderLRU, EpisodeVideoDecoder
from .depth_video import DepthVideoDecoder
from .planar import as_planar

if TYPE_CHECKING:
    from ..fetch.episode_cache import EpisodeVideo
    from .episode import EpisodeItems


class VideoCamera:
    """An RGB video camera: float32 ``(T, 3, H, W)`` in [0, 1], or uint8 with ``return_uint8``."""

    squeeze_single = True  # LeRobot returns a one-frame window of a video camera as (C, H, W)
    transformable = True  # image_transforms apply
    deferred = True  # frames(convert=False) gives uint8 frames that convert() finishes later

    def __init__(self, key: str, *, root: str, tolerance_s: float, decoders: DecoderLRU,
                 return_uint8: bool = False, image_size: tuple[int, int] | None = None) -> None:
        self.key = key
        self.image_size = image_size
        self.root = root
        self.tolerance_s = tolerance_s
        self.decoders = decoders
        self.return_uint8 = return_uint8

    def frames(self, episode: EpisodeItems, frames: np.ndarray, *, convert: bool = True) -> torch.Tensor:
        """The camera's frames for rows ``frames`` (0-based within the episode) of ``episode``
        (as decoded, before :meth:`convert`, with ``convert=False``)."""
        video = episode.data.videos[self.key]
        ep_index = episode.data.episode.index
        positions = self._positions(episode, frames)
        try:
            decoder = self.decoders.get((ep_index, self.key), lambda: self.open(video, self._what(episode)))
            with clock().timed("decoder"):
                pixels = decoder.frames(positions)
        except StreamLoaderError:
            raise
        except (RuntimeError, av.error.FFmpegError) as exc:  # the decoders' word for bytes they cannot decode
            raise DatasetFormatError(f"{self._what(episode)}: the episode's video does not decode "
                                     f"({type(exc).__name__}: {exc})") from exc
        return self.convert(pixels) if convert else pixels

    def _positions(self, episode: EpisodeItems, frames: np.ndarray) -> np.ndarray:
        """Positions in the episode's video of the frames rows ``frames`` play; a row whose frame is
        beyond ``tolerance_s`` raises :class:`~lerobot_stream_loader.errors.FrameMismatchError`."""
        matched = episode.data.videos[self.key].row_frames
        if matched is None:
            raise DatasetFormatError(f"{self._what(episode)}: the rows have no timestamp column to match "
                                     "video frames with")
        return matched.positions_of(frames, self.tolerance_s, self._what(episode))

    def _what(self, episode: EpisodeItems) -> str:
        video = episode.data.videos[self.key]
        return f"{self.root}: episode {episode.data.episode.index}, camera {self.key} ({video.path})"

    def open(self, video: EpisodeVideo, what: str) -> Any:
        """A decoder of the episode's mini-MP4 answering ``frames(positions)``."""
        return EpisodeVideoDecoder(video.mini_mp4, video.presented - video.time_offset, name=what,
                                   size=self.image_size)

    def convert(self, pixels: torch.Tensor) -> torch.Tensor:
        """The decoder's output as LeRobot returns it."""
        if self.return_uint8:
            return pixels
        return float_frames(pixels, torch.empty(pixels.shape, dtype=torch.float32))


def float_frames(pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """uint8 frames as float32 in [0, 1], written into ``out``: bit for bit LeRobot's
    ``frames.float() / 255``, one fused pass (about 4x faster than converting, then dividing in
    place). Interleaved frames are first deinterleaved (:mod:`~lerobot_stream_loader.items.planar`) when
    OpenCV is there: the division then runs on contiguous planes (1.4x faster for 640x480 RGB).
    The batch collate writes straight into the batch with it."""
    return torch.div(as_planar(pixels), 255.0, out=out)


class DepthVideoCamera(VideoCamera):
    """A depth video camera: float32 ``(T, 1, H, W)`` depth in ``unit`` (``return_uint8`` does not apply)."""

    transformable = False  # LeRobot leaves depth maps out of image_transforms
    deferred = False

    def __init__(self, key: str, *, quantization: DepthQuantization, unit: str, **options: Any) -> None:
        super().__init__(key, **options)
        self.quantization = quantization
        self.unit = unit

    def open(self, video: EpisodeVideo, what: str) -> Any:
        return DepthVideoDecoder(video.mini_mp4, video.presented - video.time_offset, name=what)

    def convert(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.quantization.dequantize(pixels, self.unit)
