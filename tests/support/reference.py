"""Reference answers for a dataset, computed the slow, obvious way: whole-file decodes and whole-table reads.

``ReferenceReader(root)[i]`` is what LeRobot's map-style reader returns for global frame ``i``
(no windows): the parquet row as tensors, the task string, and each camera's frame decoded from the
full MP4 (every frame, with torchcodec) at ``timestamp + from_timestamp``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchcodec.decoders import VideoDecoder

from lerobot_stream_loader.meta.dataset_meta import load_meta


@lru_cache(maxsize=64)
def full_decode(path: str) -> tuple[np.ndarray, torch.Tensor]:
    """(presentation seconds, uint8 NCHW frames) of every frame of the MP4 at ``path``."""
    decoder = VideoDecoder(path, seek_mode="exact")
    batch = decoder.get_frames_in_range(0, decoder.metadata.num_frames)
    return batch.pts_seconds.numpy().astype(np.float64), batch.data


class ReferenceReader:
    """Items of a local dataset by global frame index, from whole files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = load_meta(root)
        tables = [pq.read_table(self.root / path) for path in self.meta.data_files]
        table = pa.concat_tables(tables)
        order = np.argsort(np.asarray(table.column("index").to_pylist()))
        self.table = table.take(pa.array(order))
        self._episode_of = np.empty(self.meta.total_frames, dtype=np.int64)
        for ep in self.meta.episodes:
            self._episode_of[ep.from_index:ep.to_index] = ep.index

    def __len__(self) -> int:
        return self.meta.total_frames

    def frame(self, key: str, index: int) -> torch.Tensor:
        """uint8 CHW frame of camera ``key`` for global frame ``index``."""
        episode = self.meta.episode(int(self._episode_of[index]))
        span = episode.videos[key]
        timestamp = float(np.float32(self.table.column("timestamp")[index].as_py()))
        pts, frames = full_decode(str(self.root / span.path))
        wanted = span.from_timestamp + timestamp
        nearest = int(np.argmin(np.abs(pts - wanted)))
        assert abs(pts[nearest] - wanted) < 1e-4, f"reference: no frame at {wanted} in {span.path}"
        return frames[nearest]

    def row(self, index: int) -> dict[str, Any]:
        """The parquet row of global frame ``index`` as Python values."""
        return {name: self.table.column(name)[index].as_py() for name in self.table.column_names}


def shuffled_frames(source: Path, output: Path, order: list[int]) -> Iterator[tuple[str, int, int, torch.Tensor,
                                                                                 torch.Tensor]]:
    """Check that output episode k holds source episode ``order[k]``'s rows (renumbered, tasks kept);
    yield every camera frame as (key, output index, source index, output frame, source frame), both
    from full-file decodes, for the caller to compare."""
    src, out = ReferenceReader(source), ReferenceReader(output)
    assert [e.length for e in out.meta.episodes] == [src.meta.episode(o).length for o in order]
    for new, old in enumerate(order):
        a, b = src.meta.episode(old), out.meta.episode(new)
        assert a.tasks == b.tasks
        for k in range(a.length):
            i, j = a.from_index + k, b.from_index + k
            row, expected = out.row(j), src.row(i)
            assert (row.pop("index"), row.pop("episode_index")) == (j, new)
            expected.pop("index"), expected.pop("episode_index")
            assert row == expected, f"row {j} (source {i})"
            for key in src.meta.video_keys:
                yield key, j, i, out.frame(key, j), src.frame(key, i)
