"""image_size: frames decoded straight to (height, width) equal a full-file decode with the same transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchcodec.decoders import VideoDecoder

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.meta.dataset_meta import load_meta


@pytest.fixture(scope="module")
def av1(make_sample) -> Path:
    return make_sample(episodes=4, cameras=2, frames_per_episode=(6, 12), episodes_per_video_file=2,
                       stagger_cameras=True, size=(96, 72), seed=13)


@pytest.fixture(scope="module")
def h264(make_sample) -> Path:
    return make_sample(episodes=3, cameras=1, frames_per_episode=(15, 25), codec="h264", bframes=True, gop=10,
                       episodes_per_video_file=3, size=(96, 72), seed=17)


def torchvision_like_resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(frames, size=size, mode="bilinear", antialias=True)


def resized_reference(root: Path, size: tuple[int, int]):
    """camera, global index -> uint8 frame of a whole-file decode, resized by antialiased bilinear
    interpolation of the uint8 frames (as torchvision's ``Resize`` resizes uint8 tensors)."""
    meta = load_meta(root)
    cache: dict[str, tuple[np.ndarray, torch.Tensor]] = {}

    def frame(key: str, episode: int, frame_index: int, timestamp: float) -> torch.Tensor:
        span = meta.episode(episode).videos[key]
        if span.path not in cache:
            decoder = VideoDecoder(str(root / span.path), seek_mode="exact")
            batch = decoder.get_frames_in_range(0, decoder.metadata.num_frames)
            resized = torchvision_like_resize(batch.data, size)
            cache[span.path] = (batch.pts_seconds.numpy().astype(np.float64), resized)
        pts, frames = cache[span.path]
        nearest = int(np.argmin(np.abs(pts - (span.from_timestamp + timestamp))))
        return frames[nearest]

    return meta, frame


@pytest.mark.parametrize("size", [(24, 32), (50, 30)])
@pytest.mark.parametrize("which", ["av1", "h264"])
def test_items_equal_a_full_file_decode_with_the_same_resize(request, which, size):
    root = request.getfixturevalue(which)
    meta, reference = resized_reference(root, size)
    items = list(StreamingLeRobot(root, image_size=size, return_uint8=True, shuffle=True, seed=2, pool_size=2))
    assert len(items) == meta.total_frames
    for item in items:
        for key in meta.video_keys:
            want = reference(key, int(item["episode_index"]), int(item["frame_index"]), float(item["timestamp"]))
            assert item[key].shape == (3, *size) and item[key].dtype == torch.uint8
            assert torch.equal(item[key], want), f"{key} of frame {int(item['index'])} differs"


def test_float_frames_are_the_resized_uint8_over_255(av1):
    size = (36, 48)
    as_uint8 = {int(x["index"]): x for x in StreamingLeRobot(av1, image_size=size, return_uint8=True)}
    for item in StreamingLeRobot(av1, image_size=size):
        frame = item["observation.images.cam0"]
        assert frame.dtype == torch.float32 and frame.shape == (3, *size)
        assert torch.equal(frame, as_uint8[int(item["index"])]["observation.images.cam0"].float() / 255)


@pytest.mark.parametrize("bad", [(0, 32), (24,), (24, 32, 3), (24.5, 32)])
def test_bad_image_size_is_refused(av1, bad):
    with pytest.raises(ValueError, match="image_size"):
        StreamingLeRobot(av1, image_size=bad)
