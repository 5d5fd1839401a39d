"""The progress watchdog, and shuffle's retry of a video file whose encoder stalls."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from lerobot_stream_loader.errors import StalledError
from lerobot_stream_loader.tools import ToolError, shuffle_episodes, shuffle_order, shuffle_tasks, validate
from lerobot_stream_loader.util.deadline import run_while_progressing
from tests.test_tools_shuffle import TINY, assert_shuffled_samples


@pytest.mark.timeout(20)
def test_long_work_that_keeps_progressing_is_not_cut_short():
    count = [0]

    def work() -> str:
        for _ in range(12):  # 1.2 s in all, far beyond the 0.5 s stall limit
            time.sleep(0.1)
            count[0] += 1
        return "done"

    assert run_while_progressing(work, lambda: count[0], 0.5, "slow work") == "done"


@pytest.mark.timeout(20)
def test_work_without_progress_raises_stalled(never):
    start = time.monotonic()
    with pytest.raises(StalledError, match="stuck work made no progress for 0.5 s"):
        run_while_progressing(never.wait, lambda: 0, 0.5, "stuck work")
    assert time.monotonic() - start < 5


@pytest.mark.timeout(20)
def test_errors_of_the_work_propagate():
    with pytest.raises(KeyError):
        run_while_progressing(lambda: {}["x"], lambda: 0, 5.0, "failing work")


def _stalling_feed(never: threading.Event, stalls: int):
    """``_feed_episode`` whose first ``stalls`` calls block (as the stuck encoder does)."""
    real, calls = shuffle_tasks._feed_episode, [0]

    def feed(*args, **kwargs):
        calls[0] += 1
        if calls[0] <= stalls:
            never.wait()
        return real(*args, **kwargs)

    return feed


@pytest.mark.timeout(120)
def test_a_stalled_video_file_is_encoded_again(make_sample, tmp_path, monkeypatch, never, caplog):
    source = make_sample(**TINY)
    monkeypatch.setattr(shuffle_tasks, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(shuffle_tasks, "_feed_episode", _stalling_feed(never, stalls=1))
    with caplog.at_level(logging.WARNING, logger=shuffle_tasks.__name__):
        result = shuffle_episodes(source, tmp_path / "out", seed=5, max_workers=1)
    warnings = [r.getMessage() for r in caplog.records if "made no progress" in r.getMessage()]
    assert len(warnings) == 1 and "retry 1 of 1" in warnings[0]
    assert validate(tmp_path / "out").ok
    assert not list((tmp_path / "out").rglob("*.part*"))
    assert result.order == shuffle_order(4, 5)
    assert_shuffled_samples(source, tmp_path / "out", result.order)


@pytest.mark.timeout(120)
def test_an_encoder_that_keeps_stalling_fails_cleanly(make_sample, tmp_path, monkeypatch, never):
    source = make_sample(**TINY)
    monkeypatch.setattr(shuffle_tasks, "STALL_SECONDS", 0.5)
    monkeypatch.setattr(shuffle_tasks, "_feed_episode", _stalling_feed(never, stalls=100))
    with pytest.raises(ToolError, match="made no progress for 0.5 s.*gave up after 2 tries"):
        shuffle_episodes(source, tmp_path / "out", seed=5, max_workers=1)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
