"""StreamingCollate: the same batches as default_collate, from reused shared memory, never overwritten in use."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from lerobot_stream_loader import MixedStreamingLeRobot, StreamingDataLoader, StreamingLeRobot
from lerobot_stream_loader.batch import buffers as batch_buffers
from lerobot_stream_loader.batch.collate import StreamingCollate

CAM0, CAM1 = "observation.images.cam0", "observation.images.cam1"


@pytest.fixture(scope="module")
def root(make_sample):
    # 160x120 frames: a batch of 8 frames is over the size whose shared memory is reused
    return make_sample(episodes=6, cameras=2, size=(160, 120), frames_per_episode=(20, 30), episodes_per_video_file=3,
                       seed=61)


def torch_collate(batch: list) -> dict:
    """torch's own default_collate of the items as plain dicts: the reference every batch must equal."""
    return default_collate([dict(item) for item in batch])


def _batches(loader) -> list[dict]:
    return [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in loader]


def _assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)
        for key in w:
            if isinstance(w[key], torch.Tensor):
                assert g[key].dtype == w[key].dtype and g[key].shape == w[key].shape, key
                assert torch.equal(g[key], w[key]), key
            else:
                assert g[key] == w[key], key


@pytest.mark.parametrize("options", [{}, {"return_uint8": True},
                                     {"delta_timestamps": {CAM0: [-0.1, 0.0], "action": [0.0, 0.1]}}],
                         ids=["float32", "uint8", "windows"])
@pytest.mark.parametrize("workers", [0, 2])
def test_batches_equal_default_collates(root, options, workers):
    def dataset():
        return StreamingLeRobot(root, shuffle=True, seed=3, **options)

    want = _batches(DataLoader(dataset(), batch_size=8, num_workers=workers, collate_fn=torch_collate))
    loader = StreamingDataLoader(dataset(), batch_size=8, num_workers=workers)
    assert isinstance(loader.collate_fn, StreamingCollate)
    got = [next(iter([b])) for b in loader]  # every batch kept: none of their memory may be reused
    _assert_same(got, want)


def assert_loaders_agree(root, workers: int = 2, **options) -> None:
    """Every StreamingDataLoader batch equals default_collate's over the same items."""
    def dataset():
        return StreamingLeRobot(root, shuffle=True, seed=3, **options)

    want = _batches(DataLoader(dataset(), batch_size=4, num_workers=workers, collate_fn=torch_collate))
    _assert_same(_batches(StreamingDataLoader(dataset(), batch_size=4, num_workers=workers)), want)


@pytest.mark.parametrize("unit", ["mm", "m"])
def test_depth_video_and_parquet_images_collate_as_default_collate_does(make_sample, unit):
    root = make_sample(episodes=3, cameras=1, size=(160, 120), frames_per_episode=(6, 9), episodes_per_video_file=2,
                       gop=3, depth_camera=True, image_features=("rgb", "depth"), seed=63)
    assert_loaders_agree(root, depth_output_unit=unit,
                         delta_timestamps={CAM0: [-1 / 30, 0.0], "observation.images.depth": [0.0, 1 / 30],
                                           "observation.images.still": [-1 / 30, 0.0]})


def test_dropped_batches_memory_is_reused_and_kept_ones_stay_intact(root):
    want = _batches(DataLoader(StreamingLeRobot(root, shuffle=True, seed=4), batch_size=8, num_workers=1,
                               collate_fn=torch_collate))
    kept: dict[int, dict] = {}
    slots = []
    loader = StreamingDataLoader(StreamingLeRobot(root, shuffle=True, seed=4), batch_size=8, num_workers=1)
    for i, batch in enumerate(loader):
        _assert_same([batch], [want[i]])
        slots.append(batch_buffers.reused_slot(batch[CAM0]))
        if i % 3 == 0:
            kept[i] = batch  # held while later batches are built: its memory must not be reused
    _assert_same([kept[i] for i in sorted(kept)], [want[i] for i in sorted(kept)])
    reused = [slot for slot in slots if slot is not None]  # None: all kept buffers were in use, fresh memory
    assert len(set(reused)) < len(reused), "no shared memory was reused"


def test_small_tensors_share_one_buffer_and_cameras_have_their_own(root):
    loader = StreamingDataLoader(StreamingLeRobot(root), batch_size=8, num_workers=1)
    batch = next(iter(loader))
    storage = {key: value.untyped_storage().data_ptr() for key, value in batch.items() if isinstance(value, torch.Tensor)}
    small = {key for key in storage if key not in (CAM0, CAM1)}
    assert len({storage[key] for key in small}) == 1  # one file descriptor for all of them
    assert len({storage[CAM0], storage[CAM1], storage["action"]}) == 3  # keeping the actions keeps no frames
    assert batch_buffers.reused_slot(batch["action"]) is not None


def test_buffers_kept_per_size_are_bounded():
    buffers = batch_buffers.BatchBuffers()
    size = batch_buffers.MIN_POOLED_BYTES
    first, second, third = (buffers.storage(size, keep=2) for _ in range(3))
    assert buffers.pooled_bytes() == 2 * size  # the third is fresh memory, not kept
    buffers.flags[1] = 0  # the consumer released the second
    assert buffers.storage(size, keep=2).data_ptr() == second.data_ptr()
    assert buffers.storage(size - 1, keep=2).nbytes() == size - 1 and buffers.pooled_bytes() == 2 * size


def test_a_batch_pickled_on_to_another_process_is_never_reused(root):
    loader = StreamingDataLoader(StreamingLeRobot(root, shuffle=True, seed=5), batch_size=8, num_workers=1)
    slots = []
    for i, batch in enumerate(loader):
        slots.append(batch_buffers.reused_slot(batch[CAM0]))
        if i == 1:
            ForkingPickler.dumps(batch[CAM0])  # as a torch.multiprocessing queue does: another process may map it
            assert batch_buffers.reused_slot(batch[CAM0]) is None  # no longer released when dropped here
    # None: every kept buffer of that size was busy (batches in flight, the pinned one), fresh memory
    assert slots[1] is not None, "the pickled batch did not come from reusable memory"
    assert slots[1] not in slots[2:], "the pickled batch's memory was reused"
    reused = [slot for slot in slots if slot is not None]
    assert len(set(reused)) < len(reused), "no memory was reused"


class _SeenDtypes(StreamingCollate):
    """Records in each batch the dtype its camera frames arrived in."""

    def __call__(self, samples):
        arrived = str(samples[-1][CAM0].dtype)
        batch = super().__call__(samples)
        batch["arrived"] = arrived
        return batch


@pytest.mark.parametrize("mixture", [False, True])
def test_workers_leave_float_frames_uint8_for_the_collate(root, mixture):
    def dataset():
        single = StreamingLeRobot(root, shuffle=True, seed=6)
        return MixedStreamingLeRobot([single], samples_per_epoch=96) if mixture else single

    collate = _SeenDtypes(dataset().collate_fn.float_keys)
    batches = list(StreamingDataLoader(dataset(), batch_size=8, num_workers=1, collate_fn=collate))
    assert batches[0]["arrived"] == "torch.float32"  # the first batch's items were finished before
    assert {b["arrived"] for b in batches[1:]} == {"torch.uint8"}
    assert all(b[CAM0].dtype == torch.float32 for b in batches)
    want = _batches(DataLoader(dataset(), batch_size=8, num_workers=1, collate_fn=torch_collate))
    _assert_same([{k: v for k, v in b.items() if k != "arrived"} for b in batches], want)


def test_mixture_batches_equal_default_collates(root, make_sample):
    other = make_sample(episodes=4, cameras=2, size=(160, 120), frames_per_episode=(15, 25), codec="h264", seed=62)

    def mixture():
        return MixedStreamingLeRobot([StreamingLeRobot(root), StreamingLeRobot(other)], weights=[0.6, 0.4],
                                     samples_per_epoch=96, seed=2)

    want = _batches(DataLoader(mixture(), batch_size=8, num_workers=2, collate_fn=torch_collate))
    _assert_same(_batches(StreamingDataLoader(mixture(), batch_size=8, num_workers=2)), want)


def test_a_collate_given_is_kept_and_the_collate_pickles(root):
    mine = StreamingCollate()
    assert StreamingDataLoader(StreamingLeRobot(root), batch_size=4, collate_fn=mine).collate_fn is mine
    assert pickle.loads(pickle.dumps(StreamingLeRobot(root).collate_fn)).float_keys == {CAM0, CAM1}
    assert StreamingLeRobot(root, return_uint8=True).collate_fn.float_keys == frozenset()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_plain_dataloader_collates_with_the_fast_collate(root, workers):
    """The one-liner ``DataLoader(StreamingLeRobot(...), batch_size=...)``: default_collate hands the
    items to StreamingCollate (registered for their type), and the batches are torch's own."""
    def dataset():
        return StreamingLeRobot(root, shuffle=True, seed=3)

    want = _batches(DataLoader(dataset(), batch_size=8, num_workers=workers, collate_fn=torch_collate))
    got = [b for b in DataLoader(dataset(), batch_size=8, num_workers=workers)]
    _assert_same(got, want)
    item = next(iter(dataset()))
    assert isinstance(item, dict) and dict(item) == item
    assert default_collate([item, item])[CAM0].data_ptr() != item[CAM0].data_ptr()
