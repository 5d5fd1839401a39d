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
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import av
import numpy as np

from .stats import RunningImageStats, Stats

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

    def resolved(self) -> CodecSettings:
        """The same settings with ``vcodec="auto"`` replaced by the encoder it picks."""
        if self.vcodec != "auto":
            return self
        return CodecSettings(pick_vcodec(), self.pix_fmt, self.g, self.crf, self.preset, self.options)

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
        context = av.CodecContext.create(name, "w")
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


_END_EPISODE = object()
_CLOSE = object()


class CameraEncoder:
    """One camera's encoder thread writing one MP4 (``path``), fed through a bounded queue."""

    def __init__(self, path: str, width: int, height: int, fps: int, settings: CodecSettings,
                 queue_size: int = 64) -> None:
        self.path = path
        self.settings = settings.resolved()
        self._width, self._height, self._fps = width, height, fps
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._closed = False
        self._lengths: list[int] = []
        self._stats: list[Stats] = []
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
        return CameraResult(self.path, self._lengths, self._stats)

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
        settings = self.settings
        with av.open(self.path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream(settings.vcodec, rate=self._fps, options=settings.encoder_options())
            stream.width, stream.height, stream.pix_fmt = self._width, self._height, settings.pix_fmt
            pts, in_episode, stats = 0, 0, RunningImageStats()
            while (item := self._queue.get()) is not _CLOSE:
                if item is _END_EPISODE:
                    if in_episode:
                        self._lengths.append(in_episode)
                        self._stats.append(stats.result())
                    in_episode, stats = 0, RunningImageStats()
                    continue
                frame = self._prepare(item, stats)
                frame.pts = pts
                frame.time_base = Fraction(1, self._fps)
                frame.pict_type = av.video.frame.PictureType.I if in_episode == 0 else \
                    av.video.frame.PictureType.NONE
                container.mux(stream.encode(frame))
                pts += 1
                in_episode += 1
            self._closed = True
            if in_episode:
                self._lengths.append(in_episode)
                self._stats.append(stats.result())
            container.mux(stream.encode(None))

    def _prepare(self, item: av.VideoFrame | np.ndarray, stats: RunningImageStats) -> av.VideoFrame:
        if isinstance(item, av.VideoFrame):
            rgb = item.to_ndarray(format="rgb24")
            if item.format.name == self.settings.pix_fmt and (item.width, item.height) == (
                    self._width, self._height):
                stats.update(rgb)
                return item
        else:
            rgb = np.ascontiguousarray(item, dtype=np.uint8)
        if rgb.shape[:2] != (self._height, self._width):
            raise ValueError(f"{self.path}: frame of {rgb.shape[1]}x{rgb.shape[0]} pixels, the file is "
                             f"{self._width}x{self._height}")
        stats.update(rgb)
        return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=self.settings.pix_fmt)


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
