"""Plant defects in a copy of a LeRobot v3.0 dataset, each confined to known episodes.

Every function edits files of a local dataset folder in place (copy it first: ``copy_dataset``) and
returns the episode indices the defect makes bad, so that a test can compare them with what a
reader or ``validate`` reports. Data parquet files keep their row-group layout (each row group is
rewritten on its own); nothing else of the dataset is fixed up (``meta/`` is left as it was).

- :func:`edit_episode_rows`: change an episode's rows with any function (the others are made of it).
- :func:`shift_rows`: move an episode's row timestamps (e.g. whole frames later, past the tolerance
  and into the frames of the next episode of the same MP4).
- :func:`drop_rows`: remove rows of an episode from its data file.
- :func:`truncate_file`: cut a file short (an MP4 whose sample table then points past its end).
- :func:`delete_file`: remove a file (served over HTTP, a 404).
- :func:`overwrite_episode_bytes`: overwrite one camera's bytes of one episode inside its MP4.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lerobot_stream_loader.meta.dataset_meta import DatasetMeta, load_meta
from lerobot_stream_loader.mp4 import index_mp4


def copy_dataset(source: Path, target: Path) -> Path:
    """A writable copy of the dataset folder ``source`` at ``target`` (returned)."""
    shutil.copytree(source, target)
    return target


def _meta(root: Path) -> DatasetMeta:
    return load_meta(root, use_cache=False, check_files=False)


def edit_data_file(root: Path, data_path: str, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite the data parquet ``data_path`` of ``root`` with ``change`` applied to each row group
    (each result is written as one row group; empty results are left out; schema metadata kept)."""
    path = root / data_path
    source = pq.ParquetFile(path)
    groups = [change(source.read_row_group(i)) for i in range(source.metadata.num_row_groups)]
    schema = source.schema_arrow
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for group in groups:
            if group.num_rows:
                writer.write_table(group.cast(schema), row_group_size=group.num_rows)
    tmp.replace(path)


def _rows_of(table: pa.Table, episode: int, rows: slice) -> np.ndarray:
    """Mask of ``table``'s rows that are rows ``rows`` (positions within the episode, by ``index``)."""
    mine = np.flatnonzero(table.column("episode_index").to_numpy() == episode)
    order = mine[np.argsort(table.column("index").to_numpy()[mine], kind="stable")]
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[order[rows]] = True
    return mask


def edit_episode_rows(root: Path, episode: int, edit: Callable[[pa.Table, np.ndarray], pa.Table],
                      rows: slice = slice(None)) -> set[int]:
    """Apply ``edit(group, mask)`` to every row group of ``episode``'s data file, ``mask`` marking the
    rows ``rows`` of the episode (positions within the whole episode, even when it spans several row
    groups); ``edit`` returns the group's new rows. Returns ``{episode}``."""
    data_path = _meta(root).episode(episode).data_path
    whole = pq.read_table(root / data_path, columns=["episode_index", "index"])
    chosen = set(whole.column("index").to_numpy()[_rows_of(whole, episode, rows)].tolist())

    def change(group: pa.Table) -> pa.Table:
        mask = np.isin(group.column("index").to_numpy(), list(chosen)) & \
            (group.column("episode_index").to_numpy() == episode)
        return edit(group, mask)

    edit_data_file(root, data_path, change)
    return {episode}


def shift_rows(root: Path, episode: int, seconds: float, rows: slice = slice(None)) -> set[int]:
    """Add ``seconds`` to the ``timestamp`` of rows ``rows`` (positions within the episode, default all)
    of ``episode``; returns ``{episode}``. Shifting by ``k / fps`` (``k`` >= 1 whole frames) makes the
    last ``k`` rows play frames of the next episode of the MP4 (or no frame at all for the file's last
    episode): past the tolerance of their own frames either way."""
    def edit(group: pa.Table, mask: np.ndarray) -> pa.Table:
        column = group.column("timestamp")
        moved = pc.if_else(pa.array(mask), pc.add(column, pa.scalar(seconds, column.type)), column)
        where = group.schema.get_field_index("timestamp")
        return group.set_column(where, group.schema.field(where), moved.combine_chunks())

    return edit_episode_rows(root, episode, edit, rows)


def drop_rows(root: Path, episode: int, rows: slice = slice(-2, None)) -> set[int]:
    """Remove rows ``rows`` (positions within the episode, default its last two) of ``episode`` from
    its data file, changing nothing else; returns ``{episode}``."""
    return edit_episode_rows(root, episode, lambda group, mask: group.filter(pa.array(~mask)), rows)


def episodes_using(root: Path, relative: str) -> set[int]:
    """Episodes whose rows (data file) or frames (any camera's MP4) are in the file ``relative``."""
    return {e.index for e in _meta(root).episodes
            if e.data_path == relative or any(v.path == relative for v in e.videos.values())}


def truncate_file(root: Path, relative: str, keep: float = 0.5) -> set[int]:
    """Cut the file ``relative`` to ``keep`` of its size; returns the episodes using it. An MP4 cut
    short holds a sample table that points past its end (or none, when it was at the end), so no
    episode of the file can be read."""
    path = root / relative
    affected = episodes_using(root, relative)
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(int(size * keep))
    return affected


def delete_file(root: Path, relative: str) -> set[int]:
    """Delete the file ``relative``; returns the episodes using it."""
    affected = episodes_using(root, relative)
    (root / relative).unlink()
    return affected


def episode_byte_span(root: Path, episode: int, camera: str) -> tuple[str, int, int]:
    """(MP4 path, byte offset, byte length) of the samples that present ``episode``'s frames of
    ``camera`` (from the MP4's sample table, :meth:`~lerobot_stream_loader.mp4.Mp4Index.span`)."""
    video = _meta(root).episode(episode).videos[camera]
    index = index_mp4((root / video.path).read_bytes(), name=video.path)
    span = index.span(video.from_timestamp, video.to_timestamp)
    return video.path, span.byte_offset, span.byte_length


def overwrite_episode_bytes(root: Path, episode: int, camera: str, *, seed: int = 0,
                            fill: int | None = None) -> set[int]:
    """Overwrite ``camera``'s bytes of ``episode`` inside its MP4 with seeded random bytes (or the
    byte ``fill``), leaving the MP4's structure and every other episode's bytes intact; returns
    ``{episode}``."""
    relative, offset, length = episode_byte_span(root, episode, camera)
    data = bytes([fill]) * length if fill is not None else \
        np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    with (root / relative).open("r+b") as file:
        file.seek(offset)
        file.write(data)
    return {episode}
