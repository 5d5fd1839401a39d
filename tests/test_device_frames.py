"""frames_to_device: uint8 batches converted on the device equal the float32 batches of the default items."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.batch.device_frames import frames_to_device


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=3, cameras=2, frames_per_episode=(8, 12), size=(64, 48), seed=29)


@pytest.mark.parametrize("workers", [0, 2])
def test_uint8_batches_converted_on_the_device_equal_float_batches(sample, workers):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    floats = DataLoader(StreamingLeRobot(sample), batch_size=5, num_workers=workers)
    uint8 = DataLoader(StreamingLeRobot(sample, return_uint8=True), batch_size=5, num_workers=workers,
                       pin_memory=device == "cuda")
    count = 0
    for want, got in zip(floats, uint8, strict=True):
        got = frames_to_device(got, device)
        assert set(got) == set(want) and got["task"] == want["task"]
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert got[key].device.type == device and got[key].dtype == value.dtype, key
                assert torch.equal(got[key].cpu(), value), key
        count += len(want["index"])
    assert count == sum(1 for _ in StreamingLeRobot(sample, return_uint8=True))


def test_other_dtypes_are_the_float32_values_cast():
    batch = {"cam": torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16), "state": torch.ones(1, 2)}
    half = frames_to_device(batch, "cpu", dtype=torch.bfloat16)
    assert half["cam"].dtype == torch.bfloat16 and half["state"].dtype == torch.float32
    assert torch.equal(half["cam"], (batch["cam"].float() / 255).to(torch.bfloat16))
