"""Delta windows follow LeRobot's delta_timestamps semantics (offsets, clamping, is_pad, checks)."""

from __future__ import annotations

import numpy as np
import pytest

from lerobot_stream_loader.items.windows import DeltaWindows, delta_offsets, pad_key, window

FEATURES = {
    "action": {"dtype": "float32", "shape": [6]},
    "observation.state": {"dtype": "float32", "shape": [6]},
    "observation.images.cam0": {"dtype": "video", "shape": [72, 96, 3]},
    "timestamp": {"dtype": "float32", "shape": [1]},
}


def reference(global_index: int, ep_start: int, ep_end: int, deltas: list[float], fps: int):
    """LeRobot's map-style reader, written out one query at a time over global indices."""
    steps = [round(d * fps) for d in deltas]
    query = [max(ep_start, min(ep_end - 1, global_index + s)) for s in steps]
    pad = [(global_index + s < ep_start) or (global_index + s >= ep_end) for s in steps]
    return query, pad


@pytest.mark.parametrize("fps", [10, 30, 50])
@pytest.mark.parametrize("length", [1, 2, 7, 33])
def test_matches_lerobot_reference(fps, length):
    deltas = [-1.0, -0.5, -2 / fps, -1 / fps, 0.0, 1 / fps, 3 / fps, 0.5, 1.0, 4.0]
    offsets = delta_offsets({"action": deltas}, fps)["action"]
    ep_start = 1000  # global index of the episode's first frame
    got = window(offsets, np.arange(length), length)
    for f in range(length):
        query, pad = reference(ep_start + f, ep_start, ep_start + length, deltas, fps)
        assert (got.indices[f] + ep_start).tolist() == query
        assert got.is_pad[f].tolist() == pad


def test_edges_repeat_and_pad():
    offsets = np.array([-2, -1, 0, 1, 2])
    first = window(offsets, 0, 5)
    assert first.indices.tolist() == [0, 0, 0, 1, 2]
    assert first.is_pad.tolist() == [True, True, False, False, False]
    last = window(offsets, 4, 5)
    assert last.indices.tolist() == [2, 3, 4, 4, 4]
    assert last.is_pad.tolist() == [False, False, False, True, True]


def test_long_horizons_have_no_cap():
    windows = DeltaWindows({"action": [i / 30 for i in range(-500, 1001)]}, fps=30, features=FEATURES)
    got = windows.query(np.array([0, 5, 9]), 10)["action"]
    assert got.indices.shape == (3, 1501)
    assert got.indices.min() == 0 and got.indices.max() == 9
    assert int((~got.is_pad[1]).sum()) == 10  # only the 10 frames of the episode are real
    assert windows.span() == (-500, 1000)


def test_vectorised_over_frames_and_episode_lengths():
    offsets = np.array([-1, 0, 3])
    frames, lengths = np.array([0, 2, 4]), np.array([3, 3, 5])
    got = window(offsets, frames, lengths)
    for row, (f, n) in enumerate(zip(frames.tolist(), lengths.tolist(), strict=True)):
        one = window(offsets, f, n)
        assert got.indices[row].tolist() == one.indices.tolist()
        assert got.is_pad[row].tolist() == one.is_pad.tolist()
    assert got.indices.dtype == np.int64 and got.is_pad.dtype == bool


def test_multiple_keys_and_pad_names():
    windows = DeltaWindows(
        {"observation.images.cam0": [-0.1, 0.0], "action": [0.0, 0.1, 0.2]}, fps=10, features=FEATURES
    )
    assert windows.keys == ("observation.images.cam0", "action")
    got = windows.query(0, 2)
    assert got["observation.images.cam0"].is_pad.tolist() == [True, False]
    assert got["action"].indices.tolist() == [0, 1, 1]
    assert pad_key("action") == "action_is_pad"


def test_bad_key_names_it_and_the_available_keys():
    with pytest.raises(ValueError, match=r"\['observation.imgs'\].*available keys: \['action'"):
        DeltaWindows({"observation.imgs": [0.0]}, fps=30, features=FEATURES)


def test_tolerance_matches_lerobot_check():
    ok = delta_offsets({"action": [1 / 30 + 5e-5, -2 / 30 - 9e-5]}, 30, tolerance_s=1e-4)
    assert ok["action"].tolist() == [1, -2]
    with pytest.raises(ValueError, match=r"delta_timestamps\['action'\] values \[0\.05\].*1/30"):
        delta_offsets({"action": [0.0, 0.05]}, 30)
    with pytest.raises(ValueError, match="not multiples"):
        delta_offsets({"action": [1 / 30 + 2e-4]}, 30, tolerance_s=1e-4)
    assert delta_offsets({"action": [0.1 * 3]}, 10)["action"].tolist() == [3]  # 0.30000000000000004


@pytest.mark.parametrize(
    "value,message",
    [
        ([], "empty"),
        ([0.0, float("nan")], "non-finite"),
        (0.1, "list of seconds"),
        ("0.1", "list of seconds"),
    ],
)
def test_malformed_values(value, message):
    with pytest.raises(ValueError, match=message):
        DeltaWindows({"action": value}, fps=30, features=FEATURES)


def test_frame_outside_episode_and_bad_fps():
    with pytest.raises(ValueError, match="outside its episode"):
        window(np.array([0]), 5, 5)
    with pytest.raises(ValueError, match="length must be"):
        window(np.array([0]), 0, 0)
    with pytest.raises(ValueError, match="fps must be positive"):
        delta_offsets({"action": [0.0]}, 0)
