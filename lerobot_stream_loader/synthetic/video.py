"""Video side of the sample writer: per-episode encoding and stream-copy concatenation.

Each episode is encoded on its own into an in-memory MP4 (so it starts with a keyframe), then the
episodes of one output file are appended by stream copy (no re-encode), as LeRobot does.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import cast

import av
import numpy as np

from ..errors import StalledError, StreamLoaderError
from ..util.deadline import run_with_deadline
from ..util.encoder_open import open_encoder
from .pattern import FrameRenderer, read_index_from_luma

_log = logging.getLogger(__name__)

# SVT-AV1 prints its configuration banner on stderr unless told otherwise (1 = errors only).
os.environ.setdefault("SVT_LOG", "1")

ENCODERS = {"av1": "libsvtav1", "h264": "libx264", "hevc": "libx265", "mpeg4": "mpeg4", "vp9": "libvpx-vp9"}

# AV1 presets tried in turn when preset 12 loses the index pattern of a frame. The sequence header
# (the MP4 sample entry) does not depend on the preset, so such episodes still concatenate by stream
# copy. x264/x265 headers change with any rate option, so h264/hevc get a single attempt.
_AV1_PRESETS = ("12", "10", "8")

# The SVT-AV1 bundled with PyAV occasionally deadlocks inside an encode or flush call (all of its
# threads wait on semaphores, the CPU idles) and the same encode succeeds when run again. Each episode
# encode therefore runs under a time limit of ``STALL_BASE_S + STALL_PER_FRAME_S * frames``, scaled up
# for frames larger than 640x480, and a stalled one is started again with a fresh encoder at most
# ``STALL_RETRIES`` more times.
STALL_BASE_S = 60.0
STALL_PER_FRAME_S = 0.25
STALL_RETRIES = 2
_REFERENCE_AREA = 640 * 480


@dataclass(frozen=True)
class VideoSettings:
    """How every episode of every camera is encoded."""

    codec: str
    fps: int
    width: int
    height: int
    gop: int
    bframes: bool

    @property
    def encoder(self) -> str:
        """The FFmpeg encoder name for ``codec``."""
        return ENCODERS[self.codec]

    @property
    def attempts(self) -> int:
        """How many encoder settings are tried before giving up on an episode."""
        return len(_AV1_PRESETS) if self.codec == "av1" else 1

    def options(self, attempt: int = 0) -> dict[str, str]:
        """Encoder options; ``attempt`` 0 gives LeRobot's defaults (crf 30, AV1 preset 12)."""
        options = {"g": str(self.gop)}
        if self.codec == "av1":
            options.update(crf="30", preset=_AV1_PRESETS[attempt])
        elif self.codec == "mpeg4":  # MPEG-4 Part 2 ('mp4v'), as some converters write
            options.update(qmin="2", qmax="4", bf="2" if self.bframes else "0")
        elif self.codec == "vp9":
            options.update(crf="30", b="0", deadline="realtime", **{"cpu-used": "8"})
        elif self.codec == "h264":
            options["crf"] = "30"
            if not self.bframes:
                options["bf"] = "0"
        else:
            options["crf"] = "30"
            # Closed GOPs: LeRobot's approximate-mode reader loses open-GOP leading frames after a seek.
            options["x265-params"] = "log-level=error:open-gop=0" + ("" if self.bframes else ":bframes=0")
        return options


def encode_episode(
    renderer: FrameRenderer, first_index: int, length: int, settings: VideoSettings, attempt: int = 0
) -> bytes:
    """Encode frames ``first_index .. first_index + length - 1`` into a standalone MP4 (bytes)."""
    time_base = Fraction(1, settings.fps)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(settings.encoder, rate=settings.fps, options=settings.options(attempt))
        stream.width, stream.height, stream.pix_fmt = settings.width, settings.height, "yuv420p"
        open_encoder(stream)
        for offset in range(length):
            frame = av.VideoFrame.from_ndarray(renderer.render(first_index + offset), format="rgb24")
            frame.pts, frame.time_base = offset, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def encode_time_limit(length: int, settings: VideoSettings) -> float:
    """Seconds an encode of ``length`` frames may take before it counts as stalled."""
    scale = max(1.0, settings.width * settings.height / _REFERENCE_AREA)
    return (STALL_BASE_S + STALL_PER_FRAME_S * length) * scale


def encode_watched_episode(
    renderer: FrameRenderer, first_index: int, length: int, settings: VideoSettings, attempt: int, where: str
) -> bytes:
    """``encode_episode`` under ``encode_time_limit``, started again when it stalls.

    Raises ``StalledError`` naming ``where`` once ``1 + STALL_RETRIES`` encodes have stalled.
    """
    limit = encode_time_limit(length, settings)
    what = f"{where}: {settings.encoder} encode of {length} frames"
    call = partial(encode_episode, renderer, first_index, length, settings, attempt)  # fresh encoder per call
    stalls = 0
    while True:
        try:
            return run_with_deadline(call, limit, what)
        except StalledError as error:
            stalls += 1
            if stalls > STALL_RETRIES:
                raise StalledError(
                    f"{where}: the {settings.encoder} encoder stalled {stalls} times in a row "
                    f"(limit {limit:g} s each); giving up on this episode"
                ) from error
            _log.warning("%s; encoding it again (retry %d of %d)", str(error), stalls, STALL_RETRIES)


def find_bad_frame(data: bytes, first_index: int, length: int) -> str | None:
    """Decode an encoded episode; describe the first frame whose pattern is wrong, or None."""
    count = 0
    with av.open(io.BytesIO(data)) as container:
        for position, frame in enumerate(container.decode(video=0)):
            luma = frame.to_ndarray(format="gray").astype(np.float32) / 255.0
            try:
                found = read_index_from_luma(luma)
            except ValueError as error:
                return f"frame {position}: {error}"
            if found != first_index + position:
                return f"frame {position} reads index {found}, expected {first_index + position}"
            count += 1
    return None if count == length else f"{count} frames decoded, expected {length}"


def encode_checked_episode(
    renderer: FrameRenderer, first_index: int, length: int, settings: VideoSettings, where: str
) -> bytes:
    """``encode_episode`` whose every decoded frame is verified to carry its index.

    SVT-AV1 preset 12 occasionally copies a flat block unchanged where it turned from white to
    black; such an episode is encoded again with a slower preset. Each encode is watched for stalls
    (``encode_watched_episode``). ``where`` names the episode in logs and errors.
    """
    problem = None
    for attempt in range(settings.attempts):
        data = encode_watched_episode(renderer, first_index, length, settings, attempt, where)
        problem = find_bad_frame(data, first_index, length)
        if problem is None:
            if attempt:
                _log.info("%s: encoded with fallback options %s", where, settings.options(attempt))
            return data
    raise StreamLoaderError(f"{where}: the {settings.codec} encoder loses the index pattern ({problem})")


def concatenate_episodes(
    parts: Sequence[bytes], lengths: Sequence[int], out_path: Path, fps: int, faststart: bool
) -> list[tuple[float, float]]:
    """Append encoded episodes into ``out_path`` by stream copy; return each one's (from, to) seconds.

    The spans are measured on the written file (presentation timestamps as demuxed), so that
    ``from_timestamp + k / fps`` is exactly where frame ``k`` of an episode plays.
    """
    options = {"movflags": "faststart"} if faststart else {}
    inputs = [av.open(io.BytesIO(part), "r") for part in parts]
    try:
        template = inputs[0].streams.video[0]
        header = bytes(template.codec_context.extradata or b"")
        for number, container in enumerate(inputs):
            if bytes(container.streams.video[0].codec_context.extradata or b"") != header:
                raise StreamLoaderError(f"{out_path}: part {number} has other codec headers than part 0")
        time_base = cast(Fraction, template.time_base)  # a demuxed MP4 stream has a time base
        ticks = time_base.denominator / (fps * time_base.numerator)
        if ticks != int(ticks):
            raise StreamLoaderError(f"{out_path}: time base {time_base} is not a multiple of 1/{fps} s")
        ticks = int(ticks)
        with av.open(str(out_path), "w", format="mp4", options=options) as output:
            stream = output.add_stream_from_template(template, opaque=True)
            stream.time_base = time_base
            offset = 0
            for container, length in zip(inputs, lengths, strict=True):
                for packet in container.demux(container.streams.video[0]):
                    if packet.dts is None:
                        continue
                    packet.pts = cast(int, packet.pts) + offset  # an MP4 packet with a dts has a pts
                    packet.dts += offset
                    packet.duration = ticks
                    packet.stream = stream
                    output.mux(packet)
                offset += length * ticks
    finally:
        for container in inputs:
            container.close()
    return measure_spans(out_path, lengths)


def measure_spans(path: Path, lengths: Sequence[int]) -> list[tuple[float, float]]:
    """(from, to) seconds of consecutive episodes of ``lengths`` frames, from the file's packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.pts is not None]
        time_base = stream.time_base
    packets.sort()
    if len(packets) != sum(lengths):
        raise StreamLoaderError(f"{path}: {len(packets)} video packets, expected {sum(lengths)} frames")
    starts, position = [], 0
    for length in lengths:
        starts.append(packets[position][0])
        position += length
    last_pts, last_duration = packets[-1]
    ends = starts[1:] + [last_pts + last_duration]
    return [(float(s * time_base), float(e * time_base)) for s, e in zip(starts, ends, strict=True)]


def video_info(path: Path) -> dict:
    """The feature ``info`` block LeRobot derives from a camera's first video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.base_rate or stream.average_rate
        has_audio = len(container.streams.audio) > 0
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(round(float(rate))),
            "video.channels": 3,
            "has_audio": has_audio,
        }
