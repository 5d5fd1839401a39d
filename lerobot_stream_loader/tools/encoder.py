"""Streaming video encoder: decoded frames go straight to one encoder thread per camera.

No image files: frames travel in memory through a bounded queue to the camera's thread, which
encodes them with PyAV (FFmpeg releases the GIL while it encodes) and keeps running image
statistics of each episode on downsampled frames. Each episode starts with a forced keyframe, so
any episode can be cut out of the file and decoded on its own.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from typing import Any, cast

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from ..meta.stats import RunningImageStats, Stats, downsampled_size
from ..util.encoder_open import open_encoder
from .verify import THUMBNAIL, Fingerprinter

os.environ.setdefault("SVT_LOG", "1")  # keep the AV1 encoder's banner quiet

HARDWARE_ENCODERS = ("av1_nvenc", "hevc_nvenc", "h264_nvenc", "av1_qsv", "hevc_qsv", "h264_qsv",
                     "av1_vaapi", "hevc_vaapi", "h264_vaapi", "hevc_videotoolbox", "h264_videotoolbox")
_CODEC_NAMES = {"libsvtav1": "av1", "libaom-av1": "av1", "libx264": "h264", "libx265": "hevc"}


@dataclass(frozen=True)
class CodecSettings:
    """Encoder settings; LeRobot's defaults: libsvtav1, yuv420p, g=2, crf=30, preset 12."""

    vcodec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    g: int = 2
    crf: int = 30
    preset: int | str = 12
    options: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    threads: int = 0  # encoder threads per file; 0: the encoder's default (every core); never changes the bytes

    def resolved(self) -> CodecSettings:
        """The same settings with ``vcodec="auto"`` replaced by the encoder it picks."""
        if self.vcodec != "auto":
            return self
        return replace(self, vcodec=pick_vcodec())

    def encoder_options(self) -> dict[str, str]:
        """FFmpeg options for this encoder."""
        name = self.vcodec
        opts = {"g": str(self.g)}
        if name in ("libsvtav1", "libx264", "libx265", "libaom-av1"):
            opts["crf"] = str(self.crf)
            if name == "libsvtav1":
                opts["preset"] = str(self.preset)
            elif isinstance(self.preset, str):
                opts["preset"] = self.preset
            if name == "libx264":
                opts["x264-params"] = "forced-idr=1"
            if name == "libx265":
                opts["x265-params"] = "forced-idr=1:log-level=none"
        elif name.endswith("_nvenc"):
            opts.update({"rc": "constqp", "qp": str(self.crf), "forced-idr": "1"})
        elif name.endswith(("_qsv", "_vaapi")):
            opts["qp"] = str(self.crf)
        opts.update(dict(self.options))
        if self.threads > 0:
            if name == "libsvtav1":  # SVT-AV1's level of parallelism; its output does not depend on it
                params = opts.get("svtav1-params", "")
                if "lp=" not in params:
                    opts["svtav1-params"] = f"{params}:lp={self.threads}" if params else f"lp={self.threads}"
            else:
                opts.setdefault("threads", str(self.threads))
        return opts

    def feature_info(self) -> dict[str, Any]:
        """What a video feature's ``info`` records about the encoding."""
        return {"video.codec": _CODEC_NAMES.get(self.vcodec, self.vcodec.split("_")[0]),
                "video.pix_fmt": self.pix_fmt, "video.encoder": self.vcodec, "video.g": self.g,
                "video.crf": self.crf, "video.preset": self.preset}


@lru_cache(maxsize=1)
def pick_vcodec() -> str:
    """The first hardware encoder that really encodes a frame here, else ``libsvtav1``."""
    for name in HARDWARE_ENCODERS:
        if name in av.codecs_available and _encodes(name):
            return name
    return "libsvtav1"


def _encodes(name: str) -> bool:
    try:
        context = cast(VideoCodecContext, av.CodecContext.create(name, "w"))  # a video encoder's name
        context.width, context.height, context.pix_fmt = 64, 64, "yuv420p"
        context.time_base = Fraction(1, 30)
        context.open()
        frame = av.VideoFrame(64, 64, "yuv420p")
        frame.pts = 0
        list(context.encode(frame))
        list(context.encode(None))
        return True
    except Exception:  # any failure means "not usable here"
        return False


@dataclass
class CameraResult:
    """One camera's encoded file: episode lengths and image statistics in order."""

    path: str
    lengths: list[int]
    stats: list[Stats]
    fingerprints: np.ndarray  # (frames, h, w) grey thumbnails of the frames given, in order (tools.verify)


class FileEncoder:
    """Encodes frames into one MP4 (``path``) in the calling thread; each episode starts with a
    keyframe and gets running image statistics. A process or thread that owns one camera's file
    uses it directly: no hand-over between threads, so no GIL ping-pong with the decoder."""

    def __init__(self, path: str, width: int, height: int, fps: int, settings: CodecSettings) -> None:
        self.path = path
        self.settings = settings.resolved()
        self._width, self._height = width, height
        self._time_base = Fraction(1, fps)
        self._container = av.open(path, "w", format="mp4", options={"movflags": "+faststart"})
        try:
            self._stream = cast(VideoStream, self._container.add_stream(  # vcodec names a video encoder
                self.settings.vcodec, rate=fps, options=self.settings.encoder_options()))
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = self.settings.pix_fmt
            open_encoder(self._stream)
        except BaseException:
            self._container.close()
            raise
        self._pts, self._in_episode, self._stats = 0, 0, RunningImageStats()
        self._scaler, self._stats_scaler = VideoReformatter(), VideoReformatter()
        self._stats_size = downsampled_size(width, height)
        self._fingerprint = Fingerprinter()
        self._prints: list[np.ndarray] = []
        self._lengths: list[int] = []
        self._episode_stats: list[Stats] = []

    @property
    def frames(self) -> int:
        """Frames encoded so far (a progress counter a watchdog can read from another thread)."""
        return self._pts

    def add(self, item: av.VideoFrame | np.ndarray) -> None:
        """Encode one frame (a decoded PyAV frame or an RGB uint8 array)."""
        frame = self._prepare(item)
        frame.pts, frame.time_base = self._pts, self._time_base
        frame.pict_type = _KEY if self._in_episode == 0 else _ANY
        self._container.mux(self._stream.encode(frame))
        self._pts += 1
        self._in_episode += 1

    def end_episode(self) -> None:
        """Close the current episode (the next frame starts a new one, with a keyframe)."""
        if self._in_episode:
            self._lengths.append(self._in_episode)
            self._episode_stats.append(self._stats.result())
        self._in_episode, self._stats = 0, RunningImageStats()

    def close(self) -> CameraResult:
        """Flush the encoder, finish the file and return what it holds."""
        self.end_episode()
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
        return CameraResult(self.path, self._lengths, self._episode_stats, np.stack(self._prints) if self._prints
                            else np.zeros((0, THUMBNAIL[1], THUMBNAIL[0]), np.float32))

    def abort(self) -> None:
        """Close the file; its content is not usable. The encoder still gets its end of stream (SVT-AV1
        complains on stderr when torn down without one); the packets it drains are dropped."""
        for finish in (lambda: self._stream.encode(None), self._container.close):
            try:
                finish()
            except Exception:  # the file is thrown away; a failure to finish it changes nothing
                pass

    def _prepare(self, item: av.VideoFrame | np.ndarray) -> av.VideoFrame:
        """The frame to encode; its downsampled RGB pixels go to the episode's statistics.

        One reformatter serves every frame, so FFmpeg's scaler is set up once per file, not per frame.
        """
        if isinstance(item, av.VideoFrame):
            if (item.width, item.height) != (self._width, self._height):
                raise ValueError(f"{self.path}: frame of {item.width}x{item.height} pixels, the file is "
                                 f"{self._width}x{self._height}")
            small = self._stats_scaler.reformat(item, width=self._stats_size[0], height=self._stats_size[1],
                                                format="rgb24", interpolation="POINT")
            self._stats.update(small.to_ndarray())
            self._prints.append(self._fingerprint(item))
            if item.format.name == self.settings.pix_fmt:
                return item
            return self._scaler.reformat(item, format=self.settings.pix_fmt)
        rgb = np.ascontiguousarray(item, dtype=np.uint8)
        if rgb.shape[:2] != (self._height, self._width):
            raise ValueError(f"{self.path}: frame of {rgb.shape[1]}x{rgb.shape[0]} pixels, the file is "
                             f"{self._width}x{self._height}")
        self._stats.update(rgb)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        self._prints.append(self._fingerprint(frame))
        return self._scaler.reformat(frame, format=self.settings.pix_fmt)


_KEY, _ANY = av.video.frame.PictureType.I, av.video.frame.PictureType.NONE
_END_EPISODE = object()
_CLOSE = object()


class CameraEncoder:
    """One camera's encoder thread writing one MP4 (``path``), fed through a bounded queue."""

    def __init__(self, path: str, width: int, height: int, fps: int, settings: CodecSettings,
                 queue_size: int = 64) -> None:
        self.path = path
        self.settings = settings.resolved()
        self._size, self._fps = (width, height), fps
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._closed = False
        self._result: CameraResult | None = None
        self._thread = threading.Thread(target=self._run, name=f"encode {os.path.basename(path)}", daemon=True)
        self._thread.start()

    def add(self, frame: av.VideoFrame | np.ndarray) -> None:
        """Queue one frame (a decoded PyAV frame or an RGB uint8 array)."""
        self._put(frame)

    def end_episode(self) -> None:
        """Close the current episode (the next frame starts a new one, with a keyframe)."""
        self._put(_END_EPISODE)

    def close(self) -> CameraResult:
        """Flush the encoder, finish the file and return what it holds."""
        self._put(_CLOSE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def abort(self) -> None:
        """Stop the thread without waiting for queued frames."""
        self._error = self._error or RuntimeError("aborted")
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put(_CLOSE)
        self._thread.join()

    def _put(self, item: Any) -> None:
        if self._error is not None:
            raise RuntimeError(f"{self.path}: the encoder thread failed: {self._error}") from self._error
        self._queue.put(item)

    def _run(self) -> None:
        try:
            self._encode_all()
        except BaseException as exc:  # reported to the producer on its next call
            self._error = exc
            while not self._closed:
                self._closed = self._queue.get() is _CLOSE

    def _encode_all(self) -> None:
        encoder = FileEncoder(self.path, *self._size, self._fps, self.settings)
        try:
            while (item := self._queue.get()) is not _CLOSE:
                if item is _END_EPISODE:
                    encoder.end_episode()
                elif self._error is None:
                    encoder.add(item)
        except BaseException:
            encoder.abort()
            raise
        self._closed = True
        if self._error is not None:
            encoder.abort()
            return
        self._result = encoder.close()


class StreamingEncoder:
    """One :class:`CameraEncoder` per camera; ``add_frame(key, frame)`` never encodes in the caller."""

    def __init__(self, outputs: dict[str, str], width: int, height: int, fps: int,
                 settings: CodecSettings | None = None) -> None:
        settings = (settings or CodecSettings()).resolved()
        self.cameras = {key: CameraEncoder(path, width, height, fps, settings) for key, path in outputs.items()}

    def add_frame(self, key: str, frame: av.VideoFrame | np.ndarray) -> None:
        self.cameras[key].add(frame)

    def end_episode(self, key: str | None = None) -> None:
        """End the current episode of one camera (``None``: of every camera)."""
        for name in [key] if key else list(self.cameras):
            self.cameras[name].end_episode()

    def close(self) -> dict[str, CameraResult]:
        """Finish every file; the first encoder error is raised after all threads stopped."""
        results, error = {}, None
        for key, camera in self.cameras.items():
            try:
                results[key] = camera.close()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error
        return results

    def abort(self) -> None:
        for camera in self.cameras.values():
            camera.abort()
