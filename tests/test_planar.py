"""Planar copies of interleaved frames: the same bytes as torch's copy, by OpenCV or without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate
from torchcodec.decoders import VideoDecoder

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.items import planar
from lerobot_stream_loader.items.video import float_frames
from lerobot_stream_loader.meta.dataset_meta import load_meta


@pytest.fixture(params=["opencv", "torch"])
def path(request, monkeypatch) -> str:
    """Runs a test with OpenCV's deinterleave and with torch's copy."""
    if request.param == "opencv":
        if not planar.fast_deinterleave():
            pytest.skip("OpenCV is not installed (pip install lerobot-stream-loader[fast])")
    else:
        monkeypatch.setattr(planar, "_cv2", None)
    return request.param


def interleaved(*leading: int, channels: int = 3, height: int = 7, width: int = 5, seed: int = 0) -> torch.Tensor:
    """Random ``(*leading, C, H, W)`` views of ``(*leading, H, W, C)`` pixels."""
    pixels = torch.randint(0, 256, (*leading, height, width, channels), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    return pixels.movedim(-1, -3)


def test_opencv_is_there_in_the_development_environment():
    assert planar.fast_deinterleave(), "the dev extra installs opencv-python-headless: the fast path must be tested"


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_copy_planar_equals_torch_copy(path, shape, channels):
    frames = interleaved(*shape, channels=channels, height=9, width=13, seed=len(shape) + channels)
    assert planar.is_interleaved(frames)
    out = torch.full(frames.shape, 7, dtype=torch.uint8)
    assert planar.copy_planar(frames, out) is out
    assert torch.equal(out, frames.contiguous())


@pytest.mark.parametrize("frames", [
    torch.zeros(3, 4, 5, dtype=torch.uint8),  # already planar
    torch.zeros(4, 5, 3, dtype=torch.uint8).permute(2, 0, 1).float(),  # not uint8
    torch.zeros(4, 5, 1, dtype=torch.uint8).permute(2, 0, 1),  # one channel: a plain copy
    torch.zeros(4, 10, 3, dtype=torch.uint8)[:, ::2].permute(2, 0, 1),  # rows not contiguous
])
def test_other_layouts_are_not_interleaved(frames):
    assert not planar.is_interleaved(frames)


def test_stack_planar_equals_torch_stack(path):
    """A batch mixing interleaved views, planar frames and frames of other runs: the stack's bytes."""
    frames = [*interleaved(3, height=9, width=13, seed=1), interleaved(height=9, width=13, seed=2).contiguous(),
              *interleaved(2, height=9, width=13, seed=3)]
    out = torch.full((len(frames), 3, 9, 13), 7, dtype=torch.uint8)
    assert planar.stack_planar(frames, out) is out
    assert torch.equal(out, torch.stack(frames))
    windows = [interleaved(2, height=9, width=13, seed=s) for s in (4, 5)]  # (T, C, H, W) per item
    out = torch.zeros(2, 2, 3, 9, 13, dtype=torch.uint8)
    assert torch.equal(planar.stack_planar(windows, out), torch.stack(windows))
    with pytest.raises(ValueError, match="3 frames for a batch of 2"):
        planar.stack_planar(frames[:3], torch.zeros(2, 3, 9, 13, dtype=torch.uint8))


def test_non_interleaved_sources_and_strided_targets_still_copy_exactly(path):
    frames = interleaved(2, height=6, width=8)
    strided = torch.zeros(2, 3, 6, 16, dtype=torch.uint8)[..., ::2]
    assert torch.equal(planar.copy_planar(frames, strided), frames)
    broadcast = torch.zeros(2, 2, 3, 6, 8, dtype=torch.uint8)
    assert torch.equal(planar.copy_planar(frames, broadcast), frames.expand(2, 2, 3, 6, 8))
    planar_frames = frames.contiguous()
    out = torch.zeros_like(planar_frames)
    assert torch.equal(planar.copy_planar(planar_frames, out), planar_frames)


def test_planes_opencv_cannot_write_in_place_are_reported():
    if not planar.fast_deinterleave():
        pytest.skip("OpenCV is not installed")
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    backing = np.zeros((3, 6, 16), dtype=np.uint8)
    assert not planar._split(pixels, [backing[c, :, ::2] for c in range(3)])  # strided planes
    planes = [np.zeros((6, 8), dtype=np.uint8) for _ in range(3)]
    assert planar._split(pixels, planes)
    for c in range(3):
        assert np.array_equal(planes[c], pixels[..., c])


@pytest.fixture(scope="module")
def camera_root(make_sample) -> Path:
    return make_sample(episodes=3, cameras=2, frames_per_episode=(5, 9), episodes_per_video_file=2,
                       size=(96, 72), seed=5)


def test_decoded_frames_deinterleave_to_the_full_file_decode(path, camera_root):
    span = load_meta(camera_root).episode(0).videos["observation.images.cam0"]
    decoded = VideoDecoder(str(camera_root / span.path)).get_frames_in_range(0, 4).data
    assert planar.is_interleaved(decoded), "torchcodec's NCHW frames are views of interleaved pixels"
    out = torch.empty(decoded.shape, dtype=torch.uint8)
    assert torch.equal(planar.copy_planar(decoded, out), decoded)
    want = decoded.float() / 255
    assert torch.equal(float_frames(decoded, torch.empty(decoded.shape)), want)
    assert torch.equal(float_frames(decoded[1], torch.empty(decoded.shape[1:])), want[1])


@pytest.mark.parametrize("uint8", [True, False])
def test_batches_equal_default_collate_on_both_paths(path, camera_root, uint8):
    dataset = StreamingLeRobot(camera_root, return_uint8=uint8, shuffle=True, seed=1)
    items = list(dataset)[:6]
    keys = load_meta(camera_root).video_keys
    assert all(planar.is_interleaved(items[0][k]) for k in keys) == uint8  # float frames come out planar
    want = default_collate(items)
    got = dataset.collate_fn(items)
    for key in keys:
        assert got[key].dtype == want[key].dtype and got[key].is_contiguous()
        assert torch.equal(got[key], want[key])
