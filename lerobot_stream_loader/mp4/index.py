"""Sample table of an MP4's video track: times, sizes, offsets and sync flags, vectorized with numpy.

Presentation times follow FFmpeg's mov demuxer: pts = dts + ctts (signed, any ctts version), then the
edit list shifts them by (leading empty edits - media_time) and hides what lies outside the edit.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .boxes import (
    Box,
    Mp4FormatError,
    all_children,
    children,
    full_box_table,
    iter_boxes,
    locate_moov,
    parse_header,
    require,
)
from .span import Span, compute_span

ReadRange = Callable[[int, int], bytes]

STTS = np.dtype([("count", ">u4"), ("value", ">u4")])
CTTS = np.dtype([("count", ">u4"), ("value", ">i4")])
STSC = np.dtype([("first", ">u4"), ("per_chunk", ">u4"), ("sdi", ">u4")])
ELST0 = np.dtype([("duration", ">u4"), ("media_time", ">i4"), ("rate", ">i4")])
ELST1 = np.dtype([("duration", ">u8"), ("media_time", ">i8"), ("rate", ">i4")])


@dataclass
class TrackInfo:
    """Per-track scalars kept beside the sample arrays."""

    timescale: int
    track_id: int
    width: int
    height: int
    codec: str
    language: int
    stsd: bytes  # the whole 'stsd' box, copied verbatim into synthesized files
    edit_start: int  # media time where presentation begins (elst media_time)
    edit_duration: int  # media ticks the edit presents, -1 for "to the end"
    edit_shift: int  # ticks added to dts + ctts to get the presented time
    file_size: int


def _expand(values: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """`np.repeat(values, counts)` cut to at most n items without ever materializing more; also the
    total the counts claim."""
    counts = counts.astype(np.int64)
    claimed = int(counts.sum())
    if claimed > n:
        before = np.cumsum(counts) - counts
        counts = np.clip(n - before, 0, counts)
    return np.repeat(values, counts), claimed


def _parse_stsz(buf: bytes, stsz: Box, file_size: int) -> np.ndarray:
    if stsz.end - stsz.start < 12:
        raise Mp4FormatError(f"'stsz' box at byte {stsz.offset} is too short")
    const, n = struct.unpack_from(">II", buf, stsz.start + 4)
    if n == 0:
        raise Mp4FormatError("'stsz': the video track has no samples")
    if const:
        if const * n > file_size:
            raise Mp4FormatError(f"'stsz': {n} samples of {const} bytes exceed the file size {file_size}")
        return np.full(n, const, dtype=np.int64)
    _, _, sizes, _ = full_box_table(buf, stsz, ">u4", head=4)
    return sizes.astype(np.int64)


def _parse_offsets(buf: bytes, stbl: dict[str, Box]) -> np.ndarray:
    if "co64" in stbl:
        return full_box_table(buf, stbl["co64"], ">u8")[2].astype(np.int64)
    return full_box_table(buf, require(stbl, "stco", "stbl"), ">u4")[2].astype(np.int64)


def _sample_offsets(buf: bytes, stbl: dict[str, Box], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """File offset and sample-description index of every sample, from stsc + stco/co64 + sizes."""
    n = len(sizes)
    chunk_offsets = _parse_offsets(buf, stbl)
    n_chunks = len(chunk_offsets)
    entries = full_box_table(buf, require(stbl, "stsc", "stbl"), STSC)[2]
    first = entries["first"].astype(np.int64)
    if len(first) == 0 or first[0] != 1 or np.any(np.diff(first) <= 0) or first[-1] > n_chunks:
        raise Mp4FormatError(
            f"'stsc': first-chunk numbers must start at 1, increase and stay <= {n_chunks} chunks"
        )
    runs = np.diff(np.append(first, n_chunks + 1))
    per_chunk, _ = _expand(entries["per_chunk"].astype(np.int64), runs, n_chunks)
    sdi_chunk, _ = _expand(entries["sdi"].astype(np.int64), runs, n_chunks)
    chunk_of_sample, claimed = _expand(np.arange(n_chunks, dtype=np.int64), per_chunk, n)
    if claimed < n:
        raise Mp4FormatError(f"'stsc'/'stco': {n_chunks} chunks hold {claimed} samples, 'stsz' lists {n}")
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=start[1:])
    first_in_chunk = np.zeros(n_chunks, dtype=np.int64)
    np.cumsum(np.minimum(per_chunk, n)[:-1], out=first_in_chunk[1:])
    first_in_chunk = np.minimum(first_in_chunk, n)
    offsets = chunk_offsets[chunk_of_sample] + start[:-1] - start[first_in_chunk[chunk_of_sample]]
    return offsets, sdi_chunk[chunk_of_sample]


def _parse_edits(buf: bytes, trak: dict[str, Box], movie_ts: int, media_ts: int) -> tuple[int, int, int]:
    """(edit_start, edit_duration, edit_shift) in media ticks, as FFmpeg applies a simple edit list."""
    if "edts" not in trak:
        return 0, -1, 0
    elst = children(buf, trak["edts"]).get("elst")
    if elst is None:
        return 0, -1, 0
    version = buf[elst.start] if elst.end > elst.start else 0
    entries = full_box_table(buf, elst, ELST1 if version == 1 else ELST0)[2]
    empty = 0
    edits: list[tuple[int, int]] = []
    for duration, media_time, rate in entries.tolist():
        if media_time == -1:
            if edits:
                raise Mp4FormatError("'elst': an empty edit after a media edit is not supported")
            empty += duration
        elif media_time < -1 or rate != 0x10000:
            raise Mp4FormatError(f"'elst': unsupported edit (media_time {media_time}, rate {rate / 65536})")
        else:
            edits.append((duration, media_time))
    if len(edits) > 1:
        raise Mp4FormatError(f"'elst': {len(edits)} media edits; only a single edit is supported")
    if not edits:
        raise Mp4FormatError("'elst': the edit list presents no media")
    duration, media_time = edits[0]
    if movie_ts <= 0:
        raise Mp4FormatError("'mvhd': movie timescale is 0")
    empty_media = empty * media_ts // movie_ts
    edit_duration = duration * media_ts // movie_ts if duration else -1
    return media_time, edit_duration, empty_media - media_time


def _mdhd(buf: bytes, mdhd: Box) -> tuple[int, int]:
    version = buf[mdhd.start] if mdhd.end > mdhd.start else 0
    need = 4 + (28 if version == 1 else 16) + 2
    if mdhd.end - mdhd.start < need:
        raise Mp4FormatError(f"'mdhd' box at byte {mdhd.offset} is too short")
    pos = mdhd.start + 4 + (16 if version == 1 else 8)
    (timescale,) = struct.unpack_from(">I", buf, pos)
    (language,) = struct.unpack_from(">H", buf, pos + (12 if version == 1 else 8))
    if timescale == 0:
        raise Mp4FormatError("'mdhd': media timescale is 0")
    return timescale, language


def _mvhd_timescale(buf: bytes, mvhd: Box) -> int:
    version = buf[mvhd.start] if mvhd.end > mvhd.start else 0
    pos = mvhd.start + 4 + (16 if version == 1 else 8)
    if mvhd.end - pos < 4:
        raise Mp4FormatError(f"'mvhd' box at byte {mvhd.offset} is too short")
    return struct.unpack_from(">I", buf, pos)[0]


def _handler(buf: bytes, mdia: dict[str, Box]) -> str:
    hdlr = mdia.get("hdlr")
    if hdlr is None or hdlr.end - hdlr.start < 12:
        return ""
    return bytes(buf[hdlr.start + 8 : hdlr.start + 12]).decode("latin-1")


def _stsd_info(buf: bytes, stsd: Box) -> tuple[str, int, int, int]:
    """(codec fourcc, width, height, entry count) of the sample description box."""
    if stsd.end - stsd.start < 8:
        raise Mp4FormatError(f"'stsd' box at byte {stsd.offset} is too short")
    (count,) = struct.unpack_from(">I", buf, stsd.start + 4)
    entries = list(iter_boxes(buf, stsd.start + 8, stsd.end, where="stsd"))
    if count == 0 or len(entries) < count:
        raise Mp4FormatError(f"'stsd' claims {count} sample descriptions but holds {len(entries)}")
    entry = entries[0]
    width = height = 0
    if entry.end - entry.start >= 28:
        width, height = struct.unpack_from(">HH", buf, entry.start + 24)
    return entry.type, width, height, count


def parse_video_track(moov_buf: bytes, file_size: int) -> tuple[TrackInfo, dict[str, np.ndarray]]:
    """Scalars and per-sample arrays (decode order) of the first video track in a 'moov' payload buffer."""
    moov = parse_header(moov_buf, 0, len(moov_buf), where="moov")
    top = children(moov_buf, moov)
    if "mvex" in top:
        raise Mp4FormatError("'moov' holds 'mvex': fragmented MP4 ('moof') is not supported")
    movie_ts = _mvhd_timescale(moov_buf, require(top, "mvhd", "moov"))
    for trak_box in all_children(moov_buf, moov, "trak"):
        trak = children(moov_buf, trak_box)
        mdia = children(moov_buf, require(trak, "mdia", "trak"))
        if _handler(moov_buf, mdia) == "vide":
            break
    else:
        raise Mp4FormatError("'moov' has no video track (no 'trak' whose 'hdlr' is 'vide')")
    media_ts, language = _mdhd(moov_buf, require(mdia, "mdhd", "mdia"))
    minf = children(moov_buf, require(mdia, "minf", "mdia"))
    stbl = children(moov_buf, require(minf, "stbl", "minf"))
    if "stz2" in stbl and "stsz" not in stbl:
        raise Mp4FormatError("'stz2' (compact sample sizes) is not supported")
    stsd = require(stbl, "stsd", "stbl")
    codec, width, height, n_desc = _stsd_info(moov_buf, stsd)

    sizes = _parse_stsz(moov_buf, require(stbl, "stsz", "stbl"), file_size)
    n = len(sizes)
    stts = full_box_table(moov_buf, require(stbl, "stts", "stbl"), STTS)[2]
    durations, claimed = _expand(stts["value"].astype(np.int64), stts["count"], n)
    if claimed != n:
        raise Mp4FormatError(f"'stts' covers {claimed} samples but 'stsz' lists {n}")
    cts = np.zeros(n, dtype=np.int64)
    if "ctts" in stbl:
        ctts = full_box_table(moov_buf, stbl["ctts"], CTTS)[2]
        values, _ = _expand(ctts["value"].astype(np.int64), ctts["count"], n)
        cts[: len(values)] = values
    sync = np.zeros(n, dtype=bool)
    if "stss" in stbl:
        numbers = full_box_table(moov_buf, stbl["stss"], ">u4")[2].astype(np.int64)
        if len(numbers) and (numbers.min() < 1 or numbers.max() > n):
            raise Mp4FormatError(f"'stss': sync sample numbers must lie in 1..{n}")
        sync[numbers - 1] = True
        sync[0] |= len(numbers) == 0
    else:
        sync[:] = True
    offsets, sdi = _sample_offsets(moov_buf, stbl, sizes)
    if sdi.min() < 1 or sdi.max() > n_desc:
        raise Mp4FormatError(f"'stsc': sample description index outside 1..{n_desc}")
    ends = offsets + sizes
    if offsets.min() < 0 or ends.max() > file_size:
        bad = int(np.argmax((offsets < 0) | (ends > file_size)))
        raise Mp4FormatError(
            f"'stco'/'stsz': sample {bad} at bytes {int(offsets[bad])}..{int(ends[bad])} lies outside "
            f"the file ({file_size} bytes)"
        )
    tkhd = trak.get("tkhd")
    track_id = 1
    if tkhd is not None and tkhd.end - tkhd.start >= 24:
        track_id = struct.unpack_from(">I", moov_buf, tkhd.start + (20 if moov_buf[tkhd.start] == 1 else 12))[0]
    edit_start, edit_duration, edit_shift = _parse_edits(moov_buf, trak, movie_ts, media_ts)
    info = TrackInfo(
        timescale=media_ts, track_id=track_id, width=width, height=height, codec=codec, language=language,
        stsd=bytes(moov_buf[stsd.offset : stsd.end]), edit_start=edit_start, edit_duration=edit_duration,
        edit_shift=edit_shift, file_size=file_size,
    )
    arrays = {"duration": durations, "cts": cts, "size": sizes, "offset": offsets, "sync": sync, "sdi": sdi}
    return info, arrays


def read_moov(source: bytes | ReadRange, size: int | None) -> tuple[bytes, int]:
    """The whole 'moov' box (header included) and the file size, with as few reads as possible."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return locate_moov(lambda off, length: data[off : off + length], len(data))[0], len(data)
    if size is None:
        raise ValueError("index_mp4: 'size' is required when 'source' is a read_range callable")
    return locate_moov(source, size)[0], size


INDEX_VERSION = 1
_SCALARS = ("timescale", "track_id", "width", "height", "language", "edit_start", "edit_duration",
            "edit_shift", "file_size")


class Mp4Index:
    """The video track's sample table in decode order, with FFmpeg's presentation times.

    Arrays (length `n`): `duration`, `cts`, `size`, `offset`, `sync`, `sdi`, and derived `dts`
    (ticks from 0), `pts` (presented ticks, edit list applied), `presented` (shown by FFmpeg).
    """

    def __init__(self, info: TrackInfo, arrays: dict[str, np.ndarray], name: str | None = None) -> None:
        self.info = info
        self.name = name
        self.duration = np.asarray(arrays["duration"], dtype=np.int64)
        self.cts = np.asarray(arrays["cts"], dtype=np.int64)
        self.size = np.asarray(arrays["size"], dtype=np.int64)
        self.offset = np.asarray(arrays["offset"], dtype=np.int64)
        self.sync = np.asarray(arrays["sync"], dtype=bool)
        self.sdi = np.asarray(arrays["sdi"], dtype=np.int64)
        n = len(self.duration)
        self.dts = np.zeros(n, dtype=np.int64)
        np.cumsum(self.duration[:-1], out=self.dts[1:])
        raw_pts = self.dts + self.cts
        self.presented = raw_pts >= info.edit_start
        if info.edit_duration >= 0:
            self.presented &= raw_pts < info.edit_start + info.edit_duration
        self.pts = raw_pts + info.edit_shift
        shown = np.flatnonzero(self.presented)
        order = np.argsort(self.pts[shown], kind="stable")
        self.display_order = shown[order]  # sample numbers of presented frames, by presentation time
        self.display_pts = self.pts[self.display_order]
        self.display_seconds = self.display_pts / info.timescale
        self.sync_samples = np.flatnonzero(self.sync)

    def __len__(self) -> int:
        return len(self.duration)

    def __repr__(self) -> str:
        return (f"Mp4Index({self.name or '<bytes>'}: {self.info.codec}, {len(self)} samples, "
                f"timescale {self.info.timescale})")

    @property
    def timescale(self) -> int:
        return self.info.timescale

    @property
    def pts_seconds(self) -> np.ndarray:
        """Presentation time in seconds of each sample (decode order)."""
        return self.pts / self.info.timescale

    def frame_times(self) -> np.ndarray:
        """Times in seconds of the frames FFmpeg presents, sorted: what a full-file decode reports."""
        return self.display_seconds.copy()

    def span(self, from_ts: float, to_ts: float, *, tolerance: float = 1e-4) -> Span:
        """Samples and bytes needed to decode every frame presented in [from_ts, to_ts) (seconds, the
        source file's timeline; both ends moved down by `tolerance` to absorb rounding)."""
        return compute_span(self, from_ts, to_ts, tolerance=tolerance)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (no objects) that `from_arrays` turns back into an equal index."""
        info = self.info
        return {
            "version": np.array(INDEX_VERSION, dtype=np.int64),
            "scalars": np.array([getattr(info, k) for k in _SCALARS], dtype=np.int64),
            "codec": np.frombuffer(info.codec.encode("latin-1"), dtype=np.uint8),
            "stsd": np.frombuffer(info.stsd, dtype=np.uint8),
            "duration": self.duration.astype(np.uint32),
            "cts": self.cts.astype(np.int32),
            "size": self.size.astype(np.uint32),
            "offset": self.offset.astype(np.uint64),
            "sync": self.sync.copy(),
            "sdi": self.sdi.astype(np.uint16),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], name: str | None = None) -> Mp4Index:
        """Rebuild an index saved with `to_arrays`."""
        version = int(arrays["version"])
        if version != INDEX_VERSION:
            raise Mp4FormatError(f"index arrays have version {version}, expected {INDEX_VERSION}")
        scalars = dict(zip(_SCALARS, (int(v) for v in arrays["scalars"]), strict=True))
        info = TrackInfo(codec=bytes(arrays["codec"]).decode("latin-1"), stsd=bytes(arrays["stsd"]), **scalars)
        return cls(info, {k: arrays[k] for k in ("duration", "cts", "size", "offset", "sync", "sdi")}, name)


def index_mp4(source: bytes | ReadRange, *, size: int | None = None, name: str | None = None) -> Mp4Index:
    """Index the first video track of an MP4 given as bytes or as `read_range(offset, length)` + `size`.

    Raises Mp4FormatError (naming the file and the box) for malformed, fragmented or video-less files.
    """
    try:
        moov, file_size = read_moov(source, size)
        info, arrays = parse_video_track(moov, file_size)
    except Mp4FormatError as exc:
        if name:
            raise Mp4FormatError(f"{name}: {exc}") from None
        raise
    return Mp4Index(info, arrays, name)

