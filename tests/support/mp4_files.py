"""Real multi-episode MP4 files for tests, made with PyAV.

Each episode is encoded on its own (so it starts with a keyframe), then the episodes are joined by a
stream copy through FFmpeg's concat demuxer, the way LeRobot builds its video files. Ground truth
(episode time bounds, frames, pixels) comes from decoding the joined file with PyAV, never from
our own index.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lerobot_stream_loader.util.encoder_open import open_encoder

os.environ.setdefault("SVT_LOG", "1")  # keep the AV1 encoder's banner out of test logs
ENCODERS = {"av1": "libsvtav1", "h264": "libx264", "hevc": "libx265"}


@dataclass
class MadeMp4:
    """A generated MP4 and what a full decode of it shows."""

    path: Path
    data: bytes
    codec: str
    episode_frames: list[int]
    bounds: list[tuple[float, float]] = field(default_factory=list)  # (from_ts, to_ts) per episode
    frame_pts: list[float] = field(default_factory=list)  # presented times, full-file decode
    frames: list[np.ndarray] = field(default_factory=list)  # RGB pictures, full-file decode (PyAV)


def frame_image(index: int, size: tuple[int, int]) -> np.ndarray:
    """A distinct RGB picture for global frame `index`: index bits as blocks over a moving gradient."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = (x * 4 + index * 9) % 256
    img[..., 1] = (y * 4 + index * 5) % 256
    img[..., 2] = (x + y + index * 17) % 256
    for bit in range(8):
        on = (index >> bit) & 1
        r, c = divmod(bit, 4)
        img[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] = 255 if on else 0
    return img


def _encoder_options(codec: str, gop: int | None, bframes: bool | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if codec == "av1":
        opts.update({"crf": "35", "preset": "12"})
    elif codec == "h264":
        opts.update({"preset": "ultrafast" if bframes is False else "medium"})
    elif codec == "hevc":
        opts.update({"preset": "ultrafast", "x265-params": "log-level=none"})
    if gop is not None:
        opts["g"] = str(gop)
    if bframes is False:
        opts["bf"] = "0"
    return opts


def encode_episode(
    path: Path,
    first_index: int,
    frames: int,
    *,
    codec: str,
    fps: int,
    size: tuple[int, int],
    gop: int | None,
    bframes: bool | None,
    audio: bool,
) -> None:
    """Encode `frames` pictures (global indices from `first_index`) into one MP4 at `path`."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(ENCODERS[codec], rate=fps, options=_encoder_options(codec, gop, bframes))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        open_encoder(stream)  # SVT-AV1 run as root would leave this thread real-time
        astream = None
        if audio:
            astream = out.add_stream("aac", rate=8000)
            astream.layout = "mono"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(first_index + k, size), format="rgb24")
            frame.pts = k
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            total = int(round(frames / fps * 8000))
            t = np.arange(total) / 8000.0
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = pcm[start : start + 1024][None, :]
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                aframe.sample_rate = 8000
                aframe.pts = start
                aframe.time_base = Fraction(1, 8000)
                out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))


def concat_copy(
    parts: Sequence[Path], dest: Path, *, faststart: bool, movflags: str = "", shift_s: float = 0.0
) -> None:
    """Join MP4 files by stream copy with FFmpeg's concat demuxer; `shift_s` delays every stream."""
    listing = dest.with_suffix(".txt")
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in parts))
    flags = "+".join(f for f in (("faststart" if faststart else ""), movflags) if f)
    options = {"movflags": flags} if flags else {}
    with av.open(str(listing), "r", format="concat", options={"safe": "0"}) as src:
        with av.open(str(dest), "w", format="mp4", options=options) as out:
            mapping = {s.index: out.add_stream_from_template(s, opaque=True) for s in src.streams}
            last_dts: dict[int, int] = {}
            for packet in src.demux():
                index = packet.stream.index
                if packet.dts is None:
                    continue
                if packet.stream.type == "audio" and packet.dts <= last_dts.get(index, -(2**62)):
                    continue  # audio priming at a joint overlaps the previous part: drop it
                last_dts[index] = packet.dts
                if shift_s:
                    ticks = int(round(shift_s / packet.time_base))
                    packet.pts += ticks
                    packet.dts += ticks
                packet.stream = mapping[index]
                out.mux(packet)
    listing.unlink()


def cut_copy(src_path: Path, dest: Path, start_ts: float, *, faststart: bool = True) -> None:
    """Stream-copy `src_path` from `start_ts` on: packets from the keyframe at or before it are kept and
    shifted so that `start_ts` becomes time 0, which makes the muxer hide the lead-in with an edit list."""
    with av.open(str(src_path)) as src:
        vin = src.streams.video[0]
        tb = vin.time_base
        start = int(round(start_ts / tb))
        packets = [p for p in src.demux(vin) if p.dts is not None]
        keys = [p.pts for p in packets if p.is_keyframe and p.pts <= start]
        key_dts = min(p.dts for p in packets if p.pts == max(keys))
        options = {"movflags": "faststart"} if faststart else {}
        with av.open(str(dest), "w", format="mp4", options=options) as out:
            vout = out.add_stream_from_template(vin, opaque=True)
            for p in packets:
                if p.dts < key_dts:
                    continue
                p.pts -= start
                p.dts -= start
                p.stream = vout
                out.mux(p)


def decode_pyav(data: bytes) -> list[tuple[float, np.ndarray]]:
    """Every presented frame of the first video track: (time in seconds, RGB array), in time order."""
    out = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            out.append((float(frame.pts * stream.time_base), frame.to_ndarray(format="rgb24")))
    out.sort(key=lambda item: item[0])
    return out


def make_mp4(
    workdir: Path,
    *,
    codec: str = "av1",
    episodes: Sequence[int] = (10, 12, 8),
    fps: int = 30,
    size: tuple[int, int] = (64, 64),
    gop: int | None = 2,
    bframes: bool | None = False,
    faststart: bool = True,
    audio: bool = False,
    movflags: str = "",
    shift_s: float = 0.0,
    name: str | None = None,
) -> MadeMp4:
    """Encode one MP4 per episode, join them by stream copy and decode the result for ground truth.

    `gop=None` and `bframes=None` keep the encoder's defaults (libx264: long GOP with B-frames).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stem = name or (
        f"{codec}_g{gop}_b{bframes}_fs{int(faststart)}_a{int(audio)}_{movflags}_{shift_s}_{'-'.join(map(str, episodes))}"
    )
    parts = []
    first = 0
    for k, n in enumerate(episodes):
        part = workdir / f"{stem}.ep{k}.mp4"
        encode_episode(part, first, n, codec=codec, fps=fps, size=size, gop=gop, bframes=bframes, audio=audio)
        parts.append(part)
        first += n
    dest = workdir / f"{stem}.mp4"
    concat_copy(parts, dest, faststart=faststart, movflags=movflags, shift_s=shift_s)
    for part in parts:
        part.unlink()
    data = dest.read_bytes()
    frames = decode_pyav(data)
    pts = [t for t, _ in frames]
    if len(pts) != sum(episodes):
        raise RuntimeError(f"{dest}: decoded {len(pts)} frames, encoded {sum(episodes)}")
    starts = np.cumsum([0, *episodes])
    step = 1.0 / fps
    bounds = []
    for k in range(len(episodes)):
        lo = pts[starts[k]]
        hi = pts[starts[k + 1]] if k + 1 < len(episodes) else pts[-1] + step
        bounds.append((lo, hi))
    return MadeMp4(dest, data, codec, list(episodes), bounds, pts, [img for _, img in frames])


CONFIGS: dict[str, dict] = {
    "av1_g2": dict(codec="av1", episodes=(10, 12, 8)),
    "av1_g2_moov_end": dict(codec="av1", episodes=(9, 11), faststart=False),
    "h264_bframes": dict(codec="h264", gop=None, bframes=None, episodes=(30, 25, 12)),
    "h264_bframes_moov_end": dict(codec="h264", gop=None, bframes=None, episodes=(20, 14), faststart=False),
    "h264_g2": dict(codec="h264", gop=2, episodes=(10, 12, 8)),
    "hevc": dict(codec="hevc", gop=None, bframes=None, episodes=(16, 12)),
    "h264_negative_cts": dict(codec="h264", gop=None, bframes=None, movflags="negative_cts_offsets", episodes=(12, 10)),
    "h264_empty_edit": dict(codec="h264", gop=2, shift_s=0.5, episodes=(8, 8)),
    "h264_audio": dict(codec="h264", gop=4, audio=True, faststart=False, episodes=(12, 12, 12)),
    "av1_single": dict(codec="av1", episodes=(15,)),
    "h264_single_moov_end": dict(codec="h264", gop=None, bframes=None, episodes=(15,), faststart=False),
    "av1_one_frame": dict(codec="av1", episodes=(1, 6, 1)),
    "h264_one_frame": dict(codec="h264", gop=2, episodes=(1, 8, 1)),
}
CUT_NAME = "h264_cut_at_non_keyframe"
_made: dict[str, MadeMp4] = {}
_workdir: list[tempfile.TemporaryDirectory] = []


def made(name: str) -> MadeMp4:
    """A cached MP4 of `CONFIGS[name]` (or `CUT_NAME`: a B-frame file stream-copied from a time that is
    not a keyframe, so its edit list hides the lead-in frames)."""
    if name in _made:
        return _made[name]
    if not _workdir:
        _workdir.append(tempfile.TemporaryDirectory(prefix="mp4-test-"))
    root = Path(_workdir[0].name)
    if name == CUT_NAME:
        src = made("h264_bframes")
        dest = root / f"{name}.mp4"
        cut_copy(src.path, dest, src.frame_pts[7])
        data = dest.read_bytes()
        decoded = decode_pyav(data)
        pts = [t for t, _ in decoded]
        result = MadeMp4(dest, data, "h264", [len(pts)], [(pts[0], pts[-1] + 1 / 30)], pts, [f for _, f in decoded])
    else:
        result = make_mp4(root, name=name, **CONFIGS[name])
    _made[name] = result
    return result


def _visual_entry(codec: bytes, width: int, height: int) -> bytes:
    """A minimal VisualSampleEntry (no decoder configuration: for table-level tests only)."""
    from lerobot_stream_loader.mp4.boxes import box

    body = bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1)
    return box(codec, body + bytes(32) + struct.pack(">Hh", 24, -1))


def build_mp4(
    durations: Sequence[int],
    cts: Sequence[int],
    sizes: Sequence[int],
    sync: Sequence[bool] | None,
    *,
    timescale: int = 15360,
    per_chunk: Sequence[int] = (1,),
    gap: int = 0,
    constant_size: bool = False,
    co64: bool = False,
    ctts_version: int | None = None,
    edits: Sequence[tuple[int, int]] = (),
    movie_timescale: int = 1000,
    moov_first: bool = True,
    large_mdat: bool = False,
    seed: int = 0,
) -> bytes:
    """An MP4 with a synthetic video sample table and random sample bytes.

    `per_chunk` cycles over the chunks (samples per chunk); `gap` bytes of filler sit between chunks
    (like another track's data); `edits` are elst (duration in movie ticks, media_time) entries.
    """
    from lerobot_stream_loader.mp4.boxes import box, full_box, table_box

    durations = np.asarray(durations, dtype=np.int64)
    n = len(durations)
    sizes = np.asarray(sizes, dtype=np.int64)
    cts = np.asarray(cts, dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = []
    while sum(counts) < n:
        counts.append(min(per_chunk[len(counts) % len(per_chunk)], n - sum(counts)))
    payload = bytearray()
    rel_offsets = []
    at = 0
    for c in counts:
        payload += rng.integers(0, 256, gap, dtype=np.uint8).tobytes()
        rel_offsets.append(len(payload))
        chunk = int(sizes[at : at + c].sum())
        payload += rng.integers(0, 256, chunk, dtype=np.uint8).tobytes()
        at += c
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 512), b"isom")
    mdat_head = struct.pack(">I4sQ", 1, b"mdat", len(payload) + 16) if large_mdat else struct.pack(
        ">I4s", len(payload) + 8, b"mdat")

    def moov(base: int) -> bytes:
        offsets = np.asarray(rel_offsets, dtype=np.int64) + base
        stsd = full_box(b"stsd", 0, 0, struct.pack(">I", 1), _visual_entry(b"avc1", 64, 48))
        starts = [0] + [k for k in range(1, len(counts)) if counts[k] != counts[k - 1]]
        stsc = table_box(b"stsc", [np.array(starts) + 1, np.array(counts)[starts], np.ones(len(starts))])
        if constant_size:
            stsz = full_box(b"stsz", 0, 0, struct.pack(">II", int(sizes[0]), n))
        else:
            stsz = full_box(b"stsz", 0, 0, struct.pack(">II", 0, n), sizes.astype(">u4").tobytes())
        version = ctts_version if ctts_version is not None else int((cts < 0).any())
        tables = [stsd, table_box(b"stts", [np.ones(n), durations])]
        if cts.any() or ctts_version is not None:
            tables.append(table_box(b"ctts", [np.ones(n), cts], version=version, dtype=">i4"))
        if sync is not None:
            tables.append(table_box(b"stss", [np.flatnonzero(np.asarray(sync)) + 1]))
        tables += [stsc, stsz, table_box(b"co64" if co64 else b"stco", [offsets], dtype=">u8" if co64 else ">u4")]
        total = int(durations.sum())
        mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, movie_timescale, total), bytes(80))
        tkhd = full_box(b"tkhd", 0, 3, struct.pack(">III4xI", 0, 0, 1, total), bytes(60))
        mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, total, 0x55C4, 0))
        hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"V\x00")
        trak = [tkhd]
        if edits:
            rows = np.array(edits, dtype=np.int64)
            trak.append(box(b"edts", table_box(b"elst", [rows[:, 0], rows[:, 1], np.full(len(rows), 0x10000)],
                                               dtype=">i4")))
        minf = box(b"minf", full_box(b"vmhd", 0, 1, bytes(8)), box(b"stbl", *tables))
        trak.append(box(b"mdia", mdhd, hdlr, minf))
        return box(b"moov", mvhd, box(b"trak", *trak))

    if moov_first:
        size = len(moov(0))
        base = len(ftyp) + size + len(mdat_head)
        return b"".join((ftyp, moov(base), mdat_head, bytes(payload)))
    return b"".join((ftyp, mdat_head, bytes(payload), moov(len(ftyp) + len(mdat_head))))
