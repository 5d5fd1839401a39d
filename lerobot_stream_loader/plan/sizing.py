"""Default sizes a dataset picks from its metadata: open episodes, decoded-sample buffer, decoders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..meta.dataset_meta import DatasetMeta
from .memory import TYPICAL_BATCH, MemorySplit, decoder_bytes, split_budget

MAX_AUTO_POOL = 64
MAX_AUTO_DECODERS = 512  # the memory budget's decoder share decides below that
MIN_AUTO_POOL = 4
DECODED_BYTES = 256 << 20
MIN_AUTO_BUFFER, MAX_AUTO_BUFFER = 32, 4096


def auto_pool_size(meta: DatasetMeta, cache_bytes: int, size: Callable[[str], int], *,
                   sampled_files: int = 8, episodes: Sequence[int] | np.ndarray | None = None,
                   decoder_bytes: int | None = None) -> int:
    """Resident episodes that fit in 3/4 of the byte budget, from the bytes per frame of a few MP4s
    (of ``episodes`` when given: a local copy may hold only their files), and whose decoders (one per
    camera) fit in ``decoder_bytes``: a pool with more cameras than open decoders would close and
    reopen decoders at every turn."""
    most = MAX_AUTO_POOL
    if decoder_bytes is not None and meta.video_keys:
        most = min(most, max(MIN_AUTO_POOL, decoder_bytes // (largest_decoder(meta) * len(meta.video_keys))))
    episode_bytes = mean_episode_bytes(meta, size, sampled_files=sampled_files, episodes=episodes)
    if not episode_bytes:
        return most
    return int(min(most, max(MIN_AUTO_POOL, 0.75 * cache_bytes // max(1.0, episode_bytes))))


def auto_shuffle_buffer(meta: DatasetMeta, image_size: tuple[int, int] | None = None,
                        decoded_bytes: int = DECODED_BYTES) -> int:
    """Decoded samples that fit in ``decoded_bytes`` of uint8 frames (every video camera), 32..4096."""
    sample = sum(3 * h * w for h, w in frame_sizes(meta, image_size))
    return int(min(MAX_AUTO_BUFFER, max(MIN_AUTO_BUFFER, decoded_bytes // max(1, sample))))


def frame_sizes(meta: DatasetMeta, image_size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """(height, width) of each video camera's frames as items carry them (``image_size`` when given)."""
    sizes = []
    for key in meta.video_keys:
        feature = meta.features[key]
        shape = list(feature.get("shape") or [0, 0, 3])
        names = list(feature.get("names") or [])
        height, width = image_size or ((shape[1], shape[2]) if names[:1] == ["channels"] else (shape[0], shape[1]))
        sizes.append((int(height), int(width)))
    return sizes


def mean_episode_bytes(meta: DatasetMeta, size: Callable[[str], int], *, sampled_files: int = 8,
                       episodes: Sequence[int] | np.ndarray | None = None) -> float:
    """Video bytes of an average episode (all cameras), from the bytes per frame of a few MP4s (of
    ``episodes`` when given: a local copy may hold only their files); 0 without video."""
    table = meta.episode_table if episodes is None else meta.episode_table.take(list(episodes))
    if not meta.video_keys:
        return 0.0
    key = meta.video_keys[0]
    pairs = np.stack([table.columns[f"videos/{key}/chunk_index"], table.columns[f"videos/{key}/file_index"]], 1)
    files, owner = np.unique(pairs, axis=0, return_inverse=True)
    chosen = np.arange(0, len(files), max(1, len(files) // sampled_files))[:sampled_files]
    frames = np.bincount(owner.reshape(-1), weights=table.length, minlength=len(files))[chosen].sum()
    sizes = sum(size(table.video_file(key, *files[i].tolist())) for i in chosen)
    bytes_per_frame = sizes / max(1.0, float(frames))
    cameras = max(1, len(meta.video_keys))
    return bytes_per_frame * cameras * meta.total_frames / max(1, meta.total_episodes)


def worker_memory(meta: DatasetMeta, image_size: tuple[int, int] | None, memory_budget: int | None, *,
                  return_uint8: bool, cache_bytes: int | None, shuffle_buffer: int | None,
                  decoders: int | None) -> MemorySplit:
    """A worker's budget split (:func:`~lerobot_stream_loader.plan.memory.split_budget`), the parts
    the user set counted at their size."""
    sample = sum(3 * h * w for h, w in frame_sizes(meta, image_size))
    return split_budget(memory_budget, batch_bytes=typical_batch_bytes(meta, image_size, return_uint8),
                        cache=cache_bytes, decoded=None if shuffle_buffer is None else shuffle_buffer * sample,
                        decoders=None if decoders is None else decoders * largest_decoder(meta))


def typical_batch_bytes(meta: DatasetMeta, image_size: tuple[int, int] | None, return_uint8: bool) -> int:
    """Camera frames of a batch of ``TYPICAL_BATCH`` samples as collated (float32 unless ``return_uint8``)."""
    return TYPICAL_BATCH * sum(3 * h * w for h, w in frame_sizes(meta, image_size)) * (1 if return_uint8 else 4)


def largest_decoder(meta: DatasetMeta) -> int:
    """Estimated memory of an open decoder of the dataset's largest camera (decoders keep full-size frames)."""
    return decoder_bytes(max((h * w for h, w in frame_sizes(meta)), default=0))


def auto_decoders(split: MemorySplit, meta: DatasetMeta, resident: int) -> int:
    """Open decoders: one per resident episode and camera, within the split's share, 1..128."""
    fit = split.decoders // largest_decoder(meta)
    return int(min(MAX_AUTO_DECODERS, max(1, min(fit, resident * len(meta.video_keys)))))
