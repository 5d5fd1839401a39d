"""Mini-MP4s decode frame-exactly: same pixels and (after the span's time offset) the same times as a
full-file decode, with torchcodec and with PyAV, for every episode of real multi-episode files."""

from __future__ import annotations

import numpy as np
import pytest
from torchcodec.decoders import VideoDecoder

from lerobot_stream_loader.mp4 import Mp4Index, index_mp4, synthesize_mp4
from lerobot_stream_loader.mp4.keyframes import random_access_mask
from tests.support.mp4_files import CONFIGS, CUT_NAME, MadeMp4, decode_pyav, made

TOL = 1e-4
_full_tc: dict[str, VideoDecoder] = {}


def _full_torchcodec(m: MadeMp4) -> VideoDecoder:
    if m.path.name not in _full_tc:
        _full_tc[m.path.name] = VideoDecoder(m.data, seek_mode="exact")
    return _full_tc[m.path.name]


def check_span(m: MadeMp4, from_ts: float, to_ts: float) -> tuple[Mp4Index, object]:
    """Decode the mini-MP4 of [from_ts, to_ts) and compare it with the full file, frame by frame."""
    index = index_mp4(m.data, name=m.path.name)
    span = index.span(from_ts, to_ts)
    mini = synthesize_mp4(index, span, m.data[span.byte_offset : span.byte_offset + span.byte_length])
    want = [k for k, t in enumerate(m.frame_pts) if from_ts - TOL <= t < to_ts - TOL]
    assert want and span.frames == len(want)

    # PyAV: every wanted frame is in the mini file at source time - time_offset, same pixels.
    by_time = {round((t + span.time_offset) * 1e6): img for t, img in decode_pyav(mini)}
    for k in want:
        got = by_time.get(round(m.frame_pts[k] * 1e6))
        assert got is not None, f"{m.path.name}: frame at {m.frame_pts[k]} s missing from the mini-MP4"
        np.testing.assert_array_equal(got, m.frames[k])

    # torchcodec, exact mode: mini file vs full file.
    mini_dec = VideoDecoder(mini, seek_mode="exact")
    mini_batch = mini_dec.get_frames_played_at([m.frame_pts[k] - span.time_offset + 1e-5 for k in want])
    full_batch = _full_torchcodec(m).get_frames_played_at([m.frame_pts[k] + 1e-5 for k in want])
    np.testing.assert_allclose(mini_batch.pts_seconds.numpy() + span.time_offset, full_batch.pts_seconds.numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(full_batch.pts_seconds.numpy(), [m.frame_pts[k] for k in want], atol=1e-6)
    assert bool((mini_batch.data == full_batch.data).all()), f"{m.path.name}: pixels differ in [{from_ts}, {to_ts})"
    return index, span


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_episode_is_frame_exact(name: str) -> None:
    m = made(name)
    for k, (lo, hi) in enumerate(m.bounds):
        index, span = check_span(m, lo, hi)
        assert index.sync[span.sample_lo], "a span starts on a sync sample"
        if k == len(m.bounds) - 1:
            assert span.sample_hi == len(index), "the last episode's span ends on the file's last sample"
        if k == 0:
            assert span.sample_lo == 0


@pytest.mark.timeout(60)
def test_cut_at_non_keyframe_presents_lead_in() -> None:
    """A stream-copy cut at a non-keyframe time: the source's edit list hides lead-in samples, the
    mini-MP4 presents them instead (torchcodec 0.13 mis-decodes the hidden form)."""
    m = made(CUT_NAME)
    index = index_mp4(m.data)
    assert index.info.edit_start > 0 and not index.presented.all()
    _, span = check_span(m, *m.bounds[0])
    assert span.sample_lo == 0 and span.time_offset < 0
    assert span.byte_length > span.presented_bytes  # hidden lead-in samples are fetched too


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["h264_bframes", "hevc", "h264_negative_cts", "av1_g2"])
def test_mid_episode_ranges(name: str) -> None:
    """Ranges starting on non-keyframes: the span reaches back to the sync sample and forward to the last
    sample (in decode order) that a presented frame needs."""
    m = made(name)
    pts = m.frame_pts
    for a, b in [(3, 9), (7, 8), (1, 2), (5, 13), (len(pts) - 3, len(pts) - 1)]:
        index, span = check_span(m, pts[a], pts[b])
        assert span.frames == b - a


@pytest.mark.timeout(60)
def test_audio_bytes_inside_the_range_are_skipped() -> None:
    m = made("h264_audio")
    index = index_mp4(m.data)
    spans = [index.span(lo, hi) for lo, hi in m.bounds]
    # Audio chunks sit between video chunks, so the fetched range holds bytes of another track.
    assert any(s.byte_length > int(index.size[s.sample_lo : s.sample_hi].sum()) for s in spans)


def test_payload_length_is_checked() -> None:
    m = made("av1_g2")
    index = index_mp4(m.data)
    span = index.span(*m.bounds[1])
    with pytest.raises(ValueError, match="payload"):
        synthesize_mp4(index, span, m.data[span.byte_offset : span.byte_offset + span.byte_length - 1])


def test_empty_range_is_refused() -> None:
    m = made("av1_g2")
    index = index_mp4(m.data, name="x.mp4")
    with pytest.raises(ValueError, match="x.mp4: no frame"):
        index.span(m.bounds[-1][1] + 1.0, m.bounds[-1][1] + 2.0)


@pytest.mark.parametrize(("pts_offset", "expected"), [
    (0, [1, 0, 1, 1, 0, 1]),  # shown as decoded: every sync sample is a seek target
    (1, [1, 0, 1, 0, 0, 1]),  # shown one tick later: a sync sample decoded by the last kept one's showing is not
])
def test_sync_samples_kept_as_seek_targets(pts_offset: int, expected: list[int]) -> None:
    """The no-reordering shortcut and the general rule agree: only the offset of presentation decides."""
    sync = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    dts = np.array([0, 1, 2, 3, 4, 5])
    kept = random_access_mask("av01", b"", sync, dts, dts + pts_offset, memoryview(b""), dts, dts)
    assert kept.tolist() == [bool(v) for v in expected]
