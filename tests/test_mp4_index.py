"""Sample index of real and synthetic MP4s, checked against FFmpeg (PyAV demux/decode) and torchcodec."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from torchcodec.decoders import VideoDecoder

from lerobot_stream_loader.mp4 import Mp4FormatError, Mp4Index, index_mp4
from tests.support.mp4_files import CONFIGS, CUT_NAME, build_mp4, made

ALL = [*sorted(CONFIGS), CUT_NAME]


def demux(data: bytes) -> list[av.Packet]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return [p for p in container.demux(stream) if p.size > 0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ALL)
def test_matches_ffmpeg_packets(name: str) -> None:
    m = made(name)
    index = index_mp4(m.data, name=name)
    packets = demux(m.data)
    assert len(index) == len(packets)
    np.testing.assert_array_equal(index.offset, [p.pos for p in packets])
    np.testing.assert_array_equal(index.size, [p.size for p in packets])
    np.testing.assert_array_equal(index.sync, [p.is_keyframe for p in packets])
    tb = packets[0].time_base
    shown = [p for p in packets if not p.is_discard]
    np.testing.assert_array_equal(index.pts[index.presented], [p.pts for p in shown])
    assert index.timescale == tb.denominator


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ALL)
def test_frame_times_match_full_decodes(name: str) -> None:
    m = made(name)
    index = index_mp4(m.data)
    np.testing.assert_allclose(index.frame_times(), m.frame_pts, atol=1e-9)  # PyAV
    decoder = VideoDecoder(m.data, seek_mode="exact")
    batch = decoder.get_frames_in_range(0, len(decoder))
    np.testing.assert_allclose(index.frame_times(), batch.pts_seconds.numpy(), atol=1e-6)  # torchcodec


@pytest.mark.parametrize("name", ["av1_g2_moov_end", "h264_audio", "av1_g2"])
def test_range_reads_skip_mdat(name: str) -> None:
    data = made(name).data
    reads: list[tuple[int, int]] = []

    def read_range(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset : offset + length]

    small_probe = index_mp4(read_range, size=len(data))
    moov_at = data.find(b"moov") - 4
    moov_len = int.from_bytes(data[moov_at : moov_at + 4], "big")
    assert sum(length for _, length in reads) <= min(len(data), 65536) + moov_len + 16 * 4
    np.testing.assert_array_equal(small_probe.offset, index_mp4(data).offset)
    for offset, length in reads[1:]:
        assert length <= 16 or (offset == moov_at and length == moov_len), "only box headers and the moov"


def test_read_range_needs_size() -> None:
    with pytest.raises(ValueError, match="size"):
        index_mp4(lambda offset, length: b"")


def _expected_pts(durations, cts, edit_shift=0):
    dts = np.concatenate(([0], np.cumsum(durations)[:-1]))
    return dts + np.asarray(cts) + edit_shift


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(constant_size=True),
        dict(co64=True),
        dict(per_chunk=(3, 1, 2, 5), gap=11),
        dict(per_chunk=(4,), gap=3, co64=True, moov_first=False),
        dict(large_mdat=True, moov_first=False),
        dict(ctts_version=0),
        dict(ctts_version=1),
    ],
)
def test_synthetic_tables(options: dict) -> None:
    n = 40
    rng = np.random.default_rng(3)
    durations = 512 + rng.integers(-3, 4, n)  # uneven, like the joints FFmpeg's concat leaves
    cts = np.tile([1024, 2048, 0, 512, -512], n // 5)
    sizes = np.full(n, 77) if options.get("constant_size") else rng.integers(1, 300, n)
    sync = np.zeros(n, dtype=bool)
    sync[::10] = True
    data = build_mp4(durations, cts, sizes, sync, **options)
    index = index_mp4(data)
    np.testing.assert_array_equal(index.size, sizes)
    np.testing.assert_array_equal(index.duration, durations)
    np.testing.assert_array_equal(index.pts, _expected_pts(durations, cts))
    np.testing.assert_array_equal(index.sync, sync)
    np.testing.assert_array_equal(index.offset, _expected_offsets(data, sizes, options))


def _expected_offsets(data: bytes, sizes, options: dict) -> list[int]:
    pos = data.find(b"mdat") + (12 if options.get("large_mdat") else 4)
    per_chunk, gap = options.get("per_chunk", (1,)), options.get("gap", 0)
    out: list[int] = []
    chunk = 0
    while len(out) < len(sizes):
        pos += gap
        for _ in range(min(per_chunk[chunk % len(per_chunk)], len(sizes) - len(out))):
            out.append(pos)
            pos += int(sizes[len(out) - 1])
        chunk += 1
    return out


def test_edit_list_like_ffmpeg() -> None:
    """Leading empty edit (movie timescale) delays, media_time hides what precedes it, the edit's end
    hides what follows."""
    n = 12
    durations = np.full(n, 1000)
    data = build_mp4(durations, np.zeros(n), np.full(n, 10), None, timescale=10000, movie_timescale=1000,
                     edits=[(250, -1), (600, 2000)])
    index = index_mp4(data)
    assert index.info.edit_shift == 2500 - 2000
    np.testing.assert_array_equal(index.presented, (np.arange(n) >= 2) & (np.arange(n) < 8))
    np.testing.assert_allclose(index.frame_times(), (np.arange(2, 8) * 1000 + 500) / 10000)


def test_no_stss_means_all_sync_and_empty_stss_means_first_only() -> None:
    args = (np.full(5, 512), np.zeros(5), np.full(5, 9))
    assert index_mp4(build_mp4(*args, None)).sync.all()
    assert index_mp4(build_mp4(*args, np.zeros(5, dtype=bool))).sync.tolist() == [True] + [False] * 4


def test_fragmented_mp4_is_refused(tmp_path) -> None:
    path = tmp_path / "frag.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height = 64, 48
        for k in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), k * 20, dtype=np.uint8), format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(Mp4FormatError, match="frag.mp4: .*(mvex|moof)"):
        index_mp4(path.read_bytes(), name="frag.mp4")


def test_audio_only_file_is_refused(tmp_path) -> None:
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(Mp4FormatError, match="no video track"):
        index_mp4(path.read_bytes())


def test_truncated_file_names_the_box() -> None:
    data = made("av1_g2_moov_end").data
    with pytest.raises(Mp4FormatError, match="'moov'"):
        index_mp4(data[:-10])
    front = made("av1_g2").data
    with pytest.raises(Mp4FormatError, match="'stco'/'stsz'"):
        index_mp4(front[: len(front) - 100])


@pytest.mark.parametrize("name", ["h264_bframes", CUT_NAME, "h264_empty_edit"])
def test_arrays_round_trip(name: str) -> None:
    index = index_mp4(made(name).data)
    again = Mp4Index.from_arrays(index.to_arrays())
    for key in ("dts", "pts", "cts", "duration", "size", "offset", "sync", "presented", "sdi"):
        np.testing.assert_array_equal(getattr(again, key), getattr(index, key))
    assert again.info == index.info
