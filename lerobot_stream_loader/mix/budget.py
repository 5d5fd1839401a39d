"""How a mixture shares one worker's resources between its sources.

The byte budget, fetch threads, in-flight fetches, open decoders and decoded frames are the
worker's, whatever the number of sources. What each source gets of them is proportional to its
share of the samples: resident episodes (the shuffle pool), decoded samples waiting to be mixed
(the shuffle buffer), episodes fetched ahead, and range-reader threads.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from ..plan.memory import MemorySplit, split_budget
from ..plan.sizing import (
    MAX_AUTO_DECODERS,
    MAX_AUTO_POOL,
    auto_shuffle_buffer,
    frame_sizes,
    largest_decoder,
    mean_episode_bytes,
    typical_batch_bytes,
)

READER_THREADS = 8  # range-reader threads per worker, all sources together (at least one each)
SAMPLED_FILES = 24  # MP4 sizes read at construction to estimate episode sizes, all sources together


def shares(counts: np.ndarray) -> np.ndarray:
    """Each source's share of the epoch's samples."""
    return np.asarray(counts, dtype=np.float64) / max(1, int(np.sum(counts)))


def episode_bytes(sources: Sequence) -> list[float]:
    """Estimated video bytes of an average episode of each source (a few MP4 sizes per source)."""
    sampled = max(1, SAMPLED_FILES // max(1, len(sources)))
    out = []
    for source in sources:
        with source.meta.location.open_reader() as reader:
            out.append(mean_episode_bytes(source.meta.source, reader.size, sampled_files=sampled))
    return out


def pool_sizes(counts: np.ndarray, *, shuffle: bool, pool_size: int | None, cache_bytes: int,
               sizes: Sequence[float] | None) -> list[int]:
    """Resident episodes per source: 1 without shuffle; else ``pool_size`` (all sources together) or
    as many as fit in 3/4 of ``cache_bytes``, split by share, at least one per source."""
    share = shares(counts)
    if not shuffle:
        return [1] * len(share)
    if pool_size is not None:
        return [max(1, round(pool_size * s)) for s in share]
    assert sizes is not None
    pools = []
    for s, size in zip(share, sizes, strict=True):
        fit = 0.75 * cache_bytes * s / size if size else MAX_AUTO_POOL * s
        pools.append(int(min(MAX_AUTO_POOL, max(1, fit))))
    resident = sum(p * b for p, b in zip(pools, sizes, strict=True))
    if resident > cache_bytes:
        warnings.warn(f"one resident episode per source needs about {resident / 2**20:.0f} MiB, more than "
                      f"cache_bytes={cache_bytes / 2**20:.0f} MiB; raise cache_bytes or mix fewer sources",
                      stacklevel=3)
    return pools


def shuffle_buffers(counts: np.ndarray, sources: Sequence, shuffle_buffer: int | None, decoded_bytes: int) -> list[int]:
    """Decoded samples each source's stream may hold: ``shuffle_buffer`` (all sources together) split by
    share, or by default each source's share of what ``decoded_bytes`` holds of its samples."""
    share = shares(counts)
    if shuffle_buffer is not None:
        return [max(1, round(shuffle_buffer * s)) for s in share]
    return [max(1, round(auto_shuffle_buffer(source.meta.source, decoded_bytes=decoded_bytes) * s))
            for s, source in zip(share, sources, strict=True)]


def mixture_memory(sources: Sequence, memory_budget: int | None, *, cache_bytes: int | None,
                   shuffle_buffer: int | None, decoders: int | None) -> MemorySplit:
    """The worker's budget split for all sources together (parts the user set counted at the largest
    source's sample and decoder sizes)."""
    sample = max(sum(3 * h * w for h, w in frame_sizes(s.meta.source)) for s in sources)
    decoder = max(largest_decoder(s.meta.source) for s in sources)
    batch = max(typical_batch_bytes(s.meta.source, s.image_size, s.return_uint8) for s in sources)
    return split_budget(memory_budget, batch_bytes=batch, cache=cache_bytes,
                        decoded=None if shuffle_buffer is None else shuffle_buffer * sample,
                        decoders=None if decoders is None else decoders * decoder)


def mixture_decoders(split: MemorySplit, sources: Sequence, pools: Sequence[int]) -> int:
    """Open decoders: one per resident episode and camera of every source, within the split's share."""
    resident = sum(p * max(1, len(s.meta.video_keys)) for p, s in zip(pools, sources, strict=True))
    fit = split.decoders // max(largest_decoder(s.meta.source) for s in sources)
    return int(min(MAX_AUTO_DECODERS, max(1, min(fit, resident))))


def prefetch_depths(counts: np.ndarray, prefetch_episodes: int) -> list[int]:
    """Episodes each source's stream asks for ahead: ``prefetch_episodes`` split by share, at least one."""
    return [max(1, math.ceil(prefetch_episodes * s)) for s in shares(counts)]


def reader_threads(requested: int | None, sources: int) -> int:
    """Range-reader threads of one source's reader in a worker of a mixture of ``sources``."""
    share = max(1, READER_THREADS // max(1, sources))
    return min(requested, share) if requested else share


def http_reader(root: str, backend: str) -> bool:
    """Whether a source's range reader is the native HTTP one (it keeps connections alive)."""
    return backend == "http" or (backend == "auto" and root.startswith(("http://", "https://", "hf://")))
