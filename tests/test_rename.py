"""``StreamingLeRobot(..., rename=...)``: items carry the new names; bad mappings fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lerobot_stream_loader import StreamingLeRobot


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=2, cameras=2, frames_per_episode=(6, 8), size=(64, 48), seed=41)


@pytest.mark.timeout(120)
def test_renamed_keys_and_their_pad_masks(sample: Path) -> None:
    plain = list(StreamingLeRobot(sample, delta_timestamps={"action": [0.0, 1 / 30]}, return_uint8=True))
    new = {"observation.images.cam0": "observation.images.front", "action": "act"}
    renamed = list(StreamingLeRobot(sample, rename=new, delta_timestamps={"act": [0.0, 1 / 30]},
                                    return_uint8=True))
    assert len(renamed) == len(plain)
    for a, b in zip(plain, renamed, strict=True):
        assert set(b) == ({new.get(k, k) for k in a} - {"action_is_pad"}) | {"act_is_pad"}
        assert torch.equal(a["observation.images.cam0"], b["observation.images.front"])
        assert torch.equal(a["action"], b["act"]) and torch.equal(a["action_is_pad"], b["act_is_pad"])
        assert torch.equal(a["observation.images.cam1"], b["observation.images.cam1"])


@pytest.mark.parametrize(("rename", "message"), [
    ({"nope": "x"}, r"rename names keys \['nope'\] that are not features"),
    ({"action": "observation.state"}, r"to more than one key"),
    ({"action": "a", "observation.state": "a"}, r"to more than one key"),
    ({"action": "dataset_index"}, r"reserved names"),
    ({"action": "x_is_missing"}, r"reserved names"),
])
def test_bad_rename_is_refused(sample: Path, rename: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamingLeRobot(sample, rename=rename)


def test_delta_timestamps_by_both_names_is_refused(sample: Path) -> None:
    with pytest.raises(ValueError, match="names 'action' twice"):
        StreamingLeRobot(sample, rename={"action": "act"}, delta_timestamps={"action": [0.0], "act": [0.0]})
