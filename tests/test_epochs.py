"""Epochs advance with passes: a pass begun without ``set_epoch`` reads the next epoch's order,
deterministically and resumably; ``set_epoch`` pins it."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from lerobot_stream_loader import MixedStreamingLeRobot, StreamingDataLoader, StreamingLeRobot

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def small(make_sample) -> Path:
    return make_sample(episodes=6, cameras=1, frames_per_episode=(6, 10), codec="h264", gop=3,
                       episodes_per_video_file=3, episodes_per_data_file=3, size=(64, 48), seed=13)


def _dataset(root: Path, **options) -> StreamingLeRobot:
    return StreamingLeRobot(root, shuffle=True, seed=4, return_uint8=True, **options)


def _order(items) -> list[int]:
    return [int(i) for item in items for i in (item["index"].reshape(-1).tolist())]


def _epoch_orders(root: Path, epochs: int) -> list[list[int]]:
    """The order of each epoch, pinned by set_epoch, in one process."""
    dataset = _dataset(root)
    out = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        out.append(_order(dataset))
    return out


def test_passes_over_the_dataset_read_successive_epochs(small: Path) -> None:
    pinned = _epoch_orders(small, 3)
    assert len({tuple(p) for p in pinned}) == 3  # three different shuffles
    dataset = _dataset(small)
    assert [_order(dataset) for _ in range(3)] == pinned
    assert dataset.epoch == 2


def test_set_epoch_pins_the_pass(small: Path) -> None:
    pinned = _epoch_orders(small, 2)
    dataset = _dataset(small)
    for _ in range(2):
        dataset.set_epoch(1)
        assert _order(dataset) == pinned[1]
    assert _order(dataset) == _epoch_orders(small, 3)[2]  # unpinned again: the next epoch


@pytest.mark.parametrize("workers,persistent", [(0, False), (2, False), (2, True)])
def test_streaming_dataloader_passes_read_successive_epochs(small: Path, workers: int, persistent: bool) -> None:
    def loader_of(dataset: StreamingLeRobot) -> StreamingDataLoader:
        return StreamingDataLoader(dataset, batch_size=4, num_workers=workers, persistent_workers=persistent)

    pinned = []
    dataset = _dataset(small)
    loader = loader_of(dataset)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        pinned.append(_order(loader))  # batches come from the workers in turn: a fixed order
    free = loader_of(_dataset(small))
    passes = [_order(free) for _ in range(3)]
    assert passes == pinned
    assert len({tuple(p) for p in passes}) == 3


def test_plain_dataloader_without_workers_advances_too(small: Path) -> None:
    pinned = _epoch_orders(small, 2)
    loader = DataLoader(_dataset(small), batch_size=None)
    assert [_order(loader) for _ in range(2)] == pinned


def test_a_resumed_pass_then_goes_on_to_the_next_epoch(small: Path) -> None:
    """A checkpoint in the middle of the second pass: the resumed loader finishes epoch 1, then reads
    epoch 2, as the uninterrupted loader does."""
    loader = StreamingDataLoader(_dataset(small), batch_size=4, num_workers=0)
    first = _order(loader)
    it = iter(loader)
    head = _order([next(it), next(it)])
    state = loader.state_dict()
    rest = _order(it)
    after = _order(loader)

    resumed = StreamingDataLoader(_dataset(small), batch_size=4, num_workers=0)
    resumed.load_state_dict(state)
    assert _order(resumed) == rest
    assert _order(resumed) == after
    assert first != head + rest != after


def test_a_mixture_advances_its_epochs_the_same_way(small: Path) -> None:
    def mixture() -> MixedStreamingLeRobot:
        return MixedStreamingLeRobot([StreamingLeRobot(small, return_uint8=True)], seed=2, shuffle=True)

    pinned = mixture()
    orders = []
    for epoch in range(2):
        pinned.set_epoch(epoch)
        orders.append(_order(pinned))
    free = mixture()
    assert [_order(free) for _ in range(2)] == orders
    assert orders[0] != orders[1]
