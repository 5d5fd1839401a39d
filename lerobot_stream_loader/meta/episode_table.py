"""The episodes table as numpy columns: what streaming needs of every episode, no Python object each.

:class:`EpisodeTable` holds, per episode (sorted by index): index, length, dataset row range, data
file (chunk, file) and per camera the MP4 (chunk, file) and time span. Path strings and
:class:`EpisodeMeta` views are made on demand for the episodes a caller asks about. ``take``
gives the table of a subset (what a worker keeps of its plan's episodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..storage.paths import check_relative

STREAMING_COLUMNS = ("episode_index", "length", "dataset_from_index", "dataset_to_index",
                     "data/chunk_index", "data/file_index")
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
NEXT_FROM = "next_from_timestamp"  # derived per camera: where the next episode of the same MP4 starts


@dataclass(frozen=True)
class VideoSpan:
    """Where one camera's frames of one episode live: an MP4 and a time range inside it."""

    path: str
    from_timestamp: float
    to_timestamp: float
    next_from_timestamp: float = float("inf")  # the next episode of the same MP4 starts here (inf: none)


@dataclass(frozen=True)
class EpisodeMeta:
    """One row of the episodes table, with its paths resolved (relative to the root)."""

    index: int
    length: int
    from_index: int
    to_index: int
    data_path: str
    tasks: list[str] = field(default_factory=list)
    videos: dict[str, VideoSpan] = field(default_factory=dict)


def streaming_columns(video_keys: list[str]) -> list[str]:
    """Names of the episodes-table columns streaming reads (``tasks`` besides, when present)."""
    return [*STREAMING_COLUMNS, *(f"videos/{key}/{c}" for key in video_keys for c in VIDEO_COLUMNS)]


def stored_columns(video_keys: list[str]) -> list[str]:
    """The streaming columns and the ones derived from them (what the metadata cache stores)."""
    return [*streaming_columns(video_keys), *(f"videos/{key}/{NEXT_FROM}" for key in video_keys)]


def next_starts(chunk: np.ndarray, file: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Per episode, the ``from_timestamp`` of the next episode in the same MP4 (inf for the last one):
    the end of the part of the file an episode's frames may come from."""
    order = np.lexsort((start, file, chunk))
    same_file = (chunk[order][1:] == chunk[order][:-1]) & (file[order][1:] == file[order][:-1])
    out = np.full(len(start), np.inf)
    out[order[:-1]] = np.where(same_file, start[order][1:], np.inf)
    return out


def _ints(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.int64)


class EpisodeTable:
    """Numpy columns of the episodes table (sorted by episode index)."""

    def __init__(self, columns: dict[str, np.ndarray], tasks: pa.Array | None, *, data_path: str,
                 video_path: str | None, video_keys: list[str], folder: Path | None = None) -> None:
        self.folder = folder  # where the columns are memory-mapped from, if they are
        self.columns = columns
        self.tasks = tasks
        self.data_path = data_path
        self.video_path = video_path
        self.video_keys = list(video_keys)
        self.index = columns["episode_index"]
        self.length = columns["length"]

    @classmethod
    def from_arrow(cls, table: pa.Table, info: dict[str, Any]) -> EpisodeTable:
        """The streaming columns of a validated episodes table (any other column is not kept)."""
        keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
        columns = {}
        for name in streaming_columns(keys):
            if name.endswith("_timestamp"):
                columns[name] = np.asarray(table.column(name).to_numpy(), dtype=np.float64)
            else:
                columns[name] = _ints(table, name)
        for key in keys:
            video = f"videos/{key}/"
            columns[video + NEXT_FROM] = next_starts(columns[video + "chunk_index"], columns[video + "file_index"],
                                                     columns[video + "from_timestamp"])
        tasks = table.column("tasks").combine_chunks() if "tasks" in table.column_names else None
        return cls(columns, tasks, data_path=info["data_path"], video_path=info.get("video_path"),
                   video_keys=keys)

    @classmethod
    def open_folder(cls, folder: Path, info: dict[str, Any]) -> EpisodeTable:
        """The table saved by :meth:`save_folder`, its columns memory-mapped (pages shared by every process
        of the machine; a process pickling the table sends the folder, not the columns)."""
        keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
        columns = {name: np.load(folder / "columns" / f"{name.replace('/', '__')}.npy", mmap_mode="r",
                                 allow_pickle=False) for name in stored_columns(keys)}
        tasks = None
        if (folder / "tasks.arrow").is_file():
            with pa.ipc.open_file(pa.memory_map(str(folder / "tasks.arrow"))) as reader:
                tasks = reader.read_all().column(0).combine_chunks()
        return cls(columns, tasks, data_path=info["data_path"], video_path=info.get("video_path"),
                   video_keys=keys, folder=folder)

    def save_folder(self, folder: Path) -> None:
        """Write the columns (one .npy each) and the tasks lists (Arrow IPC) into ``folder``."""
        (folder / "columns").mkdir(parents=True, exist_ok=True)
        for name, column in self.columns.items():
            np.save(folder / "columns" / f"{name.replace('/', '__')}.npy", np.ascontiguousarray(column))
        if self.tasks is not None:
            with pa.ipc.new_file(str(folder / "tasks.arrow"), pa.schema([("tasks", self.tasks.type)])) as writer:
                writer.write_table(pa.table({"tasks": self.tasks}))

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self.folder is None:
            return super().__reduce_ex__(protocol)
        info = {"data_path": self.data_path, "video_path": self.video_path,
                "features": {k: {"dtype": "video"} for k in self.video_keys}}
        return (EpisodeTable.open_folder, (self.folder, info))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        return sum(a.nbytes for a in self.columns.values()) + (self.tasks.nbytes if self.tasks is not None else 0)

    def positions(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """Row positions of episode indices; ``KeyError`` naming the first one that does not exist."""
        wanted = np.asarray(indices, dtype=np.int64)
        pos = np.searchsorted(self.index, wanted)
        found = (pos < len(self.index)) & (self.index[np.minimum(pos, len(self.index) - 1)] == wanted)
        if not found.all():
            raise KeyError(int(wanted[np.flatnonzero(~found)[0]]))
        return pos

    def take(self, indices: np.ndarray | list[int]) -> EpisodeTable:
        """The table of these episodes only (sorted by index)."""
        pos = np.sort(self.positions(indices))
        tasks = self.tasks.take(pa.array(pos)) if self.tasks is not None else None
        return EpisodeTable({name: col[pos] for name, col in self.columns.items()}, tasks,
                            data_path=self.data_path, video_path=self.video_path, video_keys=self.video_keys)

    def file_keys(self) -> np.ndarray:
        """Per episode a row naming the files it reads: data (chunk, file), then per camera (chunk, file)."""
        names = ["data/chunk_index", "data/file_index"]
        names += [f"videos/{k}/{c}" for k in self.video_keys for c in ("chunk_index", "file_index")]
        return np.stack([self.columns[n] for n in names], axis=1)

    def data_file(self, chunk_index: int, file_index: int) -> str:
        path = self.data_path.format(chunk_index=int(chunk_index), file_index=int(file_index))
        return check_relative(path, what="data_path")

    def video_file(self, key: str, chunk_index: int, file_index: int) -> str:
        assert self.video_path is not None
        path = self.video_path.format(video_key=key, chunk_index=int(chunk_index), file_index=int(file_index))
        return check_relative(path, what=f"video_path of {key}")

    def data_files(self) -> list[str]:
        """Distinct data files, sorted by (chunk, file)."""
        pairs = np.unique(np.stack([self.columns["data/chunk_index"], self.columns["data/file_index"]], 1), axis=0)
        return [self.data_file(c, f) for c, f in pairs.tolist()]

    def video_files(self) -> list[str]:
        """Distinct MP4s of every camera, sorted by path."""
        files: set[str] = set()
        for key in self.video_keys:
            cols = np.stack([self.columns[f"videos/{key}/chunk_index"], self.columns[f"videos/{key}/file_index"]], 1)
            files.update(self.video_file(key, c, f) for c, f in np.unique(cols, axis=0).tolist())
        return sorted(files)

    def episode(self, index: int) -> EpisodeMeta:
        """A view of one episode with its paths resolved; ``KeyError`` when it does not exist."""
        pos = int(self.positions([index])[0])
        col = self.columns
        videos = {
            key: VideoSpan(
                path=self.video_file(key, col[f"videos/{key}/chunk_index"][pos], col[f"videos/{key}/file_index"][pos]),
                from_timestamp=float(col[f"videos/{key}/from_timestamp"][pos]),
                to_timestamp=float(col[f"videos/{key}/to_timestamp"][pos]),
                next_from_timestamp=float(col[f"videos/{key}/{NEXT_FROM}"][pos]),
            )
            for key in self.video_keys
        }
        tasks = self.tasks[pos].as_py() if self.tasks is not None else None
        return EpisodeMeta(
            index=int(index),
            length=int(col["length"][pos]),
            from_index=int(col["dataset_from_index"][pos]),
            to_index=int(col["dataset_to_index"][pos]),
            data_path=self.data_file(col["data/chunk_index"][pos], col["data/file_index"][pos]),
            tasks=list(tasks or []),
            videos=videos,
        )
