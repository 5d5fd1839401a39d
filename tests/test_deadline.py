"""The call deadline, and the sample writer's watchdog against encoder stalls."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import av
import pytest

from lerobot_stream_loader.errors import StalledError, StreamLoaderError
from lerobot_stream_loader.synthetic import video, write_sample_dataset
from lerobot_stream_loader.synthetic.checks import read_frame_index
from lerobot_stream_loader.util.deadline import run_with_deadline

TINY = dict(episodes=2, cameras=1, size=(64, 48), frames_per_episode=(9, 12), episodes_per_video_file=2)


@pytest.mark.timeout(10)
def test_returns_the_value():
    assert run_with_deadline(lambda: 6 * 7, 5.0, "a sum") == 42


@pytest.mark.timeout(10)
def test_exceptions_propagate_unchanged():
    error = KeyError("missing")

    def fail() -> None:
        raise error

    with pytest.raises(KeyError) as raised:
        run_with_deadline(fail, 5.0, "a lookup")
    assert raised.value is error


@pytest.mark.timeout(10)
def test_a_blocked_call_raises_stalled_and_is_abandoned_as_a_daemon(never):
    with pytest.raises(StalledError, match=r"the frobnicator did not finish within 0\.3 s") as raised:
        run_with_deadline(never.wait, 0.3, "the frobnicator")
    assert isinstance(raised.value, StreamLoaderError) and isinstance(raised.value, TimeoutError)
    stuck = [t for t in threading.enumerate() if t.name == "deadline the frobnicator"]
    assert len(stuck) == 1 and stuck[0].daemon and stuck[0].is_alive()


@pytest.mark.timeout(10)
def test_a_limit_must_be_positive():
    with pytest.raises(ValueError, match="a sum"):
        run_with_deadline(lambda: 1, 0, "a sum")


def test_encode_time_limit_grows_with_frames_and_area():
    small = video.VideoSettings("av1", 30, 64, 48, 2, False)
    large = video.VideoSettings("av1", 30, 1280, 960, 2, False)
    assert video.encode_time_limit(100, small) == video.STALL_BASE_S + 100 * video.STALL_PER_FRAME_S
    assert video.encode_time_limit(100, large) == 4 * video.encode_time_limit(100, small)


def _stalling_encoder(never: threading.Event, stalls: int) -> tuple[list[int], object]:
    """``encode_episode`` whose first ``stalls`` calls for episodes after the first block forever."""
    real, calls, lock = video.encode_episode, [], threading.Lock()

    def encode(renderer, first_index, length, settings, attempt=0):
        with lock:
            calls.append(first_index)
            block = first_index > 0 and calls.count(first_index) <= stalls
        if block:
            never.wait()
            return b""
        return real(renderer, first_index, length, settings, attempt)

    return calls, encode


@pytest.mark.timeout(60)
def test_sample_writer_encodes_a_stalled_episode_again(tmp_path, monkeypatch, caplog, never):
    monkeypatch.setattr(video, "STALL_BASE_S", 5.0)
    monkeypatch.setattr(video, "STALL_PER_FRAME_S", 0.0)
    calls, encode = _stalling_encoder(never, stalls=1)
    monkeypatch.setattr(video, "encode_episode", encode)
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        out = write_sample_dataset(tmp_path / "ds", **TINY)
    total = json.loads((out / "meta/info.json").read_text())["total_frames"]
    path = out / "videos/observation.images.cam0/chunk-000/file-000.mp4"
    with av.open(str(path)) as container:
        found = [read_frame_index(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    assert found == list(range(total))
    second = [index for index in calls if index > 0]
    assert len(second) == 2 and len(set(second)) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "file-000.mp4 (observation.images.cam0, episode 1)" in warnings[0]
    assert "did not finish within 5 s" in warnings[0] and "retry 1 of 2" in warnings[0]


@pytest.mark.timeout(60)
def test_sample_writer_gives_up_after_repeated_stalls(tmp_path, monkeypatch, caplog, never):
    monkeypatch.setattr(video, "STALL_BASE_S", 0.5)
    monkeypatch.setattr(video, "STALL_PER_FRAME_S", 0.0)
    calls, encode = _stalling_encoder(never, stalls=10**6)
    monkeypatch.setattr(video, "encode_episode", encode)
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        with pytest.raises(StalledError, match=r"\(observation\.images\.cam0, episode 1\): .* stalled 3 times"):
            write_sample_dataset(tmp_path / "ds", **TINY)
    assert len([index for index in calls if index > 0]) == 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert list(Path(tmp_path).iterdir()) == []
