"""Depth content of the sample dataset, written the way LeRobot 0.6.1 writes depth cameras.

Depth frame ``index`` (metres, float32) carries the index like the RGB frames: 16 bands over the
top half, near (``NEAR_M``) for a 1 bit and far (``FAR_M``) for a 0 bit; the bottom half is a
smooth slope that moves with the index. A depth camera is log-quantized to 12-bit codes with
LeRobot's default parameters and encoded losslessly as HEVC Main 12 ``gray12le`` (libx265,
``lossless=1``, LeRobot's ``DepthEncoderConfig``), so its decoded codes are exactly the codes
written; a depth image holds the depth in whole millimetres (uint16), as LeRobot stores an
integer depth image.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from ..errors import StreamLoaderError
from ..meta.depth import DepthQuantization
from ..util.encoder_open import open_encoder
from .pattern import INDEX_BITS, MAX_INDEX, band_edges

NEAR_M = 0.5
FAR_M = 4.0
DEPTH_CRF = 30
DEPTH_X265_PARAMS = "lossless=1"
QUANTIZATION = DepthQuantization()  # LeRobot's defaults: 0.01..10 m, shift 3.5, log


def depth_metres(index: int, width: int, height: int) -> np.ndarray:
    """Depth frame (H, W) float32 in metres of global frame ``index``."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"frame index {index} does not fit in {INDEX_BITS} bits")
    frame = np.empty((height, width), np.float32)
    top = height // 2
    for bit, (x0, x1) in enumerate(band_edges(width)):
        frame[:top, x0:x1] = NEAR_M if (index >> (INDEX_BITS - 1 - bit)) & 1 else FAR_M
    ys, xs = np.mgrid[0:height - top, 0:width].astype(np.float32)
    slope = 0.3 + 2.5 * xs / width + 1.5 * ys / height + 0.4 * (1 + np.sin(0.1 * index))
    frame[top:] = slope.astype(np.float32)
    return frame


def depth_codes(index: int, width: int, height: int) -> np.ndarray:
    """12-bit codes (H, W) uint16 the depth camera stores for frame ``index``."""
    return QUANTIZATION.quantize(depth_metres(index, width, height))


def depth_millimetres(index: int, width: int, height: int) -> np.ndarray:
    """Depth image (H, W) uint16 in whole millimetres of frame ``index``."""
    return np.rint(depth_metres(index, width, height) * 1000.0).astype(np.uint16)


def depth_video_options(gop: int) -> dict[str, str]:
    """libx265 options of LeRobot's depth encoder (x265 defaults otherwise, B-frames included)."""
    return {"g": str(gop), "crf": str(DEPTH_CRF), "x265-params": f"{DEPTH_X265_PARAMS}:log-level=error"}


def encode_depth_episode(first_index: int, length: int, fps: int, width: int, height: int, gop: int,
                         where: str) -> bytes:
    """Frames ``first_index ..`` as a standalone lossless gray12le HEVC MP4, checked code for code."""
    time_base = Fraction(1, fps)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx265", rate=fps, options=depth_video_options(gop))
        stream.width, stream.height, stream.pix_fmt = width, height, "gray12le"
        open_encoder(stream)
        for offset in range(length):
            frame = av.VideoFrame.from_ndarray(depth_codes(first_index + offset, width, height), format="gray12le")
            frame.pts, frame.time_base = offset, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = buffer.getvalue()
    with av.open(io.BytesIO(data)) as container:
        decoded = [f.to_ndarray(format="gray12le") for f in container.decode(video=0)]
    wrong = [k for k, codes in enumerate(decoded) if not np.array_equal(codes, depth_codes(first_index + k, width, height))]
    if len(decoded) != length or wrong:
        raise StreamLoaderError(f"{where}: the depth encode is not lossless ({len(decoded)} frames decoded of "
                                f"{length}, first wrong frame {wrong[:1]})")
    return data


def depth_video_info(stream_info: dict, gop: int) -> dict:
    """The feature ``info`` block LeRobot 0.6.1 writes for a depth camera (stream fields from the file)."""
    return {
        "is_depth_map": True,
        "depth_unit": "m",
        **{key: value for key, value in stream_info.items() if key not in ("video.is_depth_map", "video.channels")},
        "video.channels": 1,
        "video.g": gop,
        "video.crf": DEPTH_CRF,
        "video.preset": None,
        "video.fast_decode": 0,
        "video.video_backend": "pyav",
        "video.extra_options": {"x265-params": DEPTH_X265_PARAMS},
        "video.depth_min": QUANTIZATION.depth_min,
        "video.depth_max": QUANTIZATION.depth_max,
        "video.shift": QUANTIZATION.shift,
        "video.use_log": QUANTIZATION.use_log,
    }
