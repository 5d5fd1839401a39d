"""Default sizes a dataset picks from its metadata: open episodes, decoded-sample buffer, decoders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..meta.dataset_meta import DatasetMeta

MAX_AUTO_POOL = 64
MAX_AUTO_DECODERS = 128
MIN_AUTO_POOL = 4
DECODED_BYTES = 256 << 20
MIN_AUTO_BUFFER, MAX_AUTO_BUFFER = 32, 4096


def auto_pool_size(meta: DatasetMeta, cache_bytes: int, size: Callable[[str], int], *,
                   sampled_files: int = 8, episodes: Sequence[int] | np.ndarray | None = None) -> int:
    """Resident episodes that fit in 3/4 of the byte budget, from the bytes per frame of a few MP4s
    (of ``episodes`` when given: a local copy may hold only their files)."""
    episode_bytes = mean_episode_bytes(meta, size, sampled_files=sampled_files, episodes=episodes)
    if not episode_bytes:
        return MAX_AUTO_POOL
    return int(min(MAX_AUTO_POOL, max(MIN_AUTO_POOL, 0.75 * cache_bytes // max(1.0, episode_bytes))))


def auto_shuffle_buffer(meta: DatasetMeta, image_size: tuple[int, int] | None = None) -> int:
    """Decoded samples that fit in ``DECODED_BYTES`` of uint8 frames (every video camera), 32..4096."""
    sample = 0
    for key in meta.video_keys:
        feature = meta.features[key]
        shape = list(feature.get("shape") or [0, 0, 3])
        names = list(feature.get("names") or [])
        height, width = image_size or ((shape[1], shape[2]) if names[:1] == ["channels"] else (shape[0], shape[1]))
        sample += int(height) * int(width) * 3
    return int(min(MAX_AUTO_BUFFER, max(MIN_AUTO_BUFFER, DECODED_BYTES // max(1, sample))))


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
