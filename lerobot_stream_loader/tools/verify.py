"""Tools check what they wrote before it is moved into place.

- Re-encoded video (``shuffle``): every output frame is decoded and its fingerprint (a small grey
  thumbnail) compared with the fingerprint of the source frame it must hold. A frame clearly closer
  to another source frame of its episode, or far from its own, fails the check. A lossy encode
  leaves every frame near its source; a wrong frame (or one the encoder mangled into a copy of its
  neighbour, as SVT-AV1's fastest preset sometimes does) stands out by far.
- Stream copies (``realign``): a cut file's samples must be the source's, byte for byte, in order
  (equal sample bytes under the same sample entry decode to the same frames, bit for bit); a whole
  file copied must hash to the bytes read.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import StreamLoaderError
from ..mp4 import Mp4Index, Span, index_mp4

THUMBNAIL = (32, 24)  # width, height of a fingerprint
NEIGHBOURS = 2  # source frames on each side a wrong frame is compared with
MIN_NOISE = 0.5  # grey levels: the smallest per-frame encode error the checks assume
GARBAGE_FACTOR = 10.0  # an error this many times the file's median error ...
GARBAGE_LEVELS = 8.0  # ... and above this many grey levels marks a mangled frame


class OutputCheckError(StreamLoaderError):
    """A tool's output does not hold the frames it must (nothing is moved into place)."""


class Fingerprinter:
    """Small grey thumbnails of video frames, one reused scaler (area averaging)."""

    def __init__(self) -> None:
        self._scaler = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        small = self._scaler.reformat(frame, width=THUMBNAIL[0], height=THUMBNAIL[1], format="gray",
                                      interpolation="AREA")
        return small.to_ndarray().astype(np.float32)


@dataclass(frozen=True)
class WrongFrame:
    """One frame that fails the check."""

    position: int  # in the file
    episode: int  # position of its episode in the file
    frame: int  # position in its episode
    own_error: float  # mean grey-level distance to the source frame it must hold
    closest: int  # position in the episode of the source frame it is closest to
    closest_error: float

    def describe(self) -> str:
        where = f"episode #{self.episode} of the file, frame {self.frame}"
        if self.closest != self.frame:
            return (f"{where}: closer to source frame {self.closest} ({self.closest_error:.1f} grey levels) than "
                    f"to its own ({self.own_error:.1f})")
        return (f"{where}: {self.own_error:.1f} grey levels from its source frame, far beyond the file's "
                "usual encode error (a mangled frame)")


def decode_fingerprints(data: bytes) -> np.ndarray:
    """Fingerprints of every frame of an MP4, in presentation order."""
    fingerprint = Fingerprinter()
    with av.open(io.BytesIO(data)) as container:
        prints = [fingerprint(frame) for frame in container.decode(video=0)]
    return np.stack(prints) if prints else np.zeros((0, THUMBNAIL[1], THUMBNAIL[0]), np.float32)


def find_wrong_frames(output: np.ndarray, expected: np.ndarray, lengths: list[int]) -> list[WrongFrame]:
    """Frames of ``output`` (fingerprints) that are not the ``expected`` source frames.

    A frame is wrong when a source frame of its episode within ``NEIGHBOURS`` is closer to it than its
    own by more than the file's median encode error, or when its own error exceeds both
    ``GARBAGE_FACTOR`` times that median and ``GARBAGE_LEVELS``.
    """
    if output.shape != expected.shape:
        raise ValueError(f"{len(output)} frames decoded, {len(expected)} expected")
    errors = np.abs(output - expected).mean(axis=(1, 2))
    noise = max(float(np.median(errors)) if len(errors) else 0.0, MIN_NOISE)
    wrong = []
    start = 0
    for episode, length in enumerate(lengths):
        for k in range(length):
            i = start + k
            lo, hi = max(0, k - NEIGHBOURS), min(length, k + NEIGHBOURS + 1)
            distances = np.abs(output[i] - expected[start + lo:start + hi]).mean(axis=(1, 2))
            closest = lo + int(np.argmin(distances))
            own = float(errors[i])
            if float(distances[closest - lo]) < own - noise or (own > GARBAGE_FACTOR * noise
                                                                and own > GARBAGE_LEVELS):
                wrong.append(WrongFrame(i, episode, k, own, closest, float(distances[closest - lo])))
        start += length
    return wrong


def check_reencoded(path: str | Path, data: bytes, expected: np.ndarray, lengths: list[int]) -> None:
    """Raise ``OutputCheckError`` unless every frame of ``data`` matches its ``expected`` fingerprint."""
    output = decode_fingerprints(data)
    if len(output) != len(expected):
        raise OutputCheckError(f"{path}: decodes to {len(output)} frames, {len(expected)} were encoded")
    wrong = find_wrong_frames(output, expected, lengths)
    if wrong:
        raise OutputCheckError(f"{path}: {len(wrong)} of {len(output)} frames do not show the source frame "
                               f"they must; first: {wrong[0].describe()}")


def check_stream_copy(path: str | Path, data: bytes, source: Mp4Index, span: Span, payload: bytes) -> None:
    """Raise ``OutputCheckError`` unless ``data`` holds exactly the span's samples of ``source``, in
    order; ``payload`` is the source's bytes of the span. Equal sample bytes under the same sample
    entry decode to the same frames."""
    index = index_mp4(data, name=str(path))
    frames = span.sample_hi - span.sample_lo
    if len(index.size) != frames:
        raise OutputCheckError(f"{path}: holds {len(index.size)} frames, the source span {frames}")
    base = span.byte_offset
    for k, (offset, size) in enumerate(zip(index.offset.tolist(), index.size.tolist())):
        s = span.sample_lo + k
        lo = int(source.offset[s]) - base
        if size != int(source.size[s]) or data[offset:offset + size] != payload[lo:lo + size]:
            raise OutputCheckError(f"{path}: sample {k} differs from the source's (stream copy damaged)")


def check_copied_file(path: Path, sha256: str) -> None:
    """Raise ``OutputCheckError`` unless the file at ``path`` has the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(8 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise OutputCheckError(f"{path}: differs from the bytes copied into it")
