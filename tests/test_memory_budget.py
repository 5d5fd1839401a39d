"""One memory budget per worker: its split into fetched bytes, decoded samples, decoders and kept
batch memory; parts set by hand keep their size; the collate keeps no more batch memory than its share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import DataLoader

from lerobot_stream_loader import MixedStreamingLeRobot, StreamingLeRobot
from lerobot_stream_loader.batch import collate as collate_module
from lerobot_stream_loader.plan.memory import BASE_BYTES, DEFAULT_MEMORY_BUDGET, MIB, split_budget
from lerobot_stream_loader.plan.sizing import largest_decoder

SAMPLE = dict(episodes=6, cameras=2, frames_per_episode=(20, 30), size=(96, 64), episodes_per_video_file=2)


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(**SAMPLE)


def test_the_default_split_keeps_the_documented_sizes() -> None:
    split = split_budget(None)
    assert split.budget == DEFAULT_MEMORY_BUDGET == 1408 * MIB and split.batches == 0
    assert (split.base, split.cache, split.decoded, split.decoders) == (256 * MIB, 512 * MIB, 256 * MIB, 384 * MIB)
    batch = 236 * MIB  # float32 frames of 32 samples of two 640x480 cameras
    with_batches = split_budget(None, batch_bytes=batch)
    assert with_batches.batches == 4 * (batch + MIB) and with_batches.budget == 1408 * MIB + with_batches.batches
    assert "memory_budget 2356 MiB" in with_batches.describe()


def test_a_budget_is_split_and_set_parts_keep_their_size() -> None:
    split = split_budget(1024 * MIB, batch_bytes=10 * MIB)
    assert split.batches == 4 * 11 * MIB
    assert split.base + split.cache + split.decoded + split.decoders + split.batches <= 1024 * MIB
    assert abs(split.cache - 2 * split.decoded) <= 1  # shares 4 : 2 : 3
    assert split_budget(1024 * MIB, batch_bytes=300 * MIB).batches == (1024 - 256) * MIB // 4  # a quarter at most
    fixed = split_budget(1024 * MIB, cache=600 * MIB)
    assert fixed.cache == 600 * MIB
    assert fixed.base + fixed.cache + fixed.decoded + fixed.decoders + fixed.batches <= 1024 * MIB
    grown = split_budget(None, cache=2048 * MIB)  # no budget given: the set part replaces its share
    assert grown.budget == DEFAULT_MEMORY_BUDGET - 512 * MIB + 2048 * MIB
    with pytest.raises(ValueError, match=r"memory_budget=1024 MiB per worker cannot hold cache 900 MiB"):
        split_budget(1024 * MIB, cache=900 * MIB)
    with pytest.raises(ValueError, match="interpreter"):
        split_budget(BASE_BYTES)


def test_the_dataset_sizes_its_parts_from_the_budget(sample: Path) -> None:
    small = StreamingLeRobot(sample, shuffle=True, memory_budget=400 * MIB)
    split = small.memory
    assert split.budget == 400 * MIB
    assert small.settings["cache_bytes"] == split.cache
    frame = 96 * 64 * 3 * 2
    assert split.batches == 4 * (32 * frame * 4 + MIB)  # float32 frames of 32 samples, four batches
    assert small.shuffle_buffer * frame <= max(split.decoded, 32 * frame)  # 32 samples at least
    assert small.decoders * largest_decoder(small.meta.source) <= split.decoders
    default = StreamingLeRobot(sample, shuffle=True, return_uint8=True)
    assert default.memory == split_budget(None, batch_bytes=32 * frame)
    assert default.settings["cache_bytes"] == 512 * MIB
    own = StreamingLeRobot(sample, shuffle=True, memory_budget=400 * MIB, cache_bytes=64 * MIB, decoders=3)
    assert own.settings["cache_bytes"] == 64 * MIB and own.decoders == 3
    with pytest.raises(ValueError, match="cannot hold cache"):
        StreamingLeRobot(sample, memory_budget=300 * MIB, cache_bytes=200 * MIB)


def test_a_mixture_has_one_budget_for_all_sources(sample: Path) -> None:
    sources = [StreamingLeRobot(sample, return_uint8=True) for _ in range(3)]
    mix = MixedStreamingLeRobot(sources, memory_budget=300 * MIB)
    assert mix.memory.budget == 300 * MIB and mix.settings["cache_bytes"] == mix.memory.cache
    assert mix.decoders * largest_decoder(sample_meta(sources)) <= mix.memory.decoders


def sample_meta(sources: list[StreamingLeRobot]) -> Any:
    return sources[0].meta.source


class _PooledBytes:
    """The dataset's collate, and with each batch the shared memory the worker keeps for reuse."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, samples: list[Any]) -> tuple[Any, int]:
        batch = self.collate(samples)
        return batch, collate_module._buffers.pooled_bytes() if collate_module._buffers else 0


@pytest.mark.timeout(240)
def test_a_worker_keeps_batch_memory_within_its_share(sample: Path) -> None:
    """Float32 batches of 8 samples of two 96x64 cameras (1.2 MB), all held by the training process: a
    budget whose batch share holds 2.5 of them keeps two batches' frames (and their small tensors)
    within the share; the default share keeps the collate's usual four."""
    batch_bytes = 8 * 2 * 3 * 64 * 96 * 4
    parts = dict(cache_bytes=4 * MIB, shuffle_buffer=32, decoders=4)
    tight = BASE_BYTES + 10 * batch_bytes  # its batch share, a quarter of what the interpreter leaves: 2.5 batches
    for budget, kept_batches in ((None, 4), (tight, 2)):
        dataset = StreamingLeRobot(sample, memory_budget=budget, **parts)
        assert budget is None or dataset.memory.batches == int(2.5 * batch_bytes)
        loader = DataLoader(dataset, batch_size=8, num_workers=1, collate_fn=_PooledBytes(dataset.collate_fn),
                            prefetch_factor=1)
        held = list(loader)  # every batch held: the worker cannot reuse any, it pools up to its cap
        pooled = max(kept for _, kept in held)
        assert len(held) > 4
        assert kept_batches * batch_bytes <= pooled <= dataset.memory.batches, (budget, pooled)
