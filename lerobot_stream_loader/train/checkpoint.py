"""The loader's part of a LeRobot checkpoint: ``<step>/training_state/stream_loader.json``.

It holds the ``--stream.*`` and ``--mix.*`` options of the run (a resumed run builds the same dataset)
and the :class:`~lerobot_stream_loader.StreamingDataLoader` state of the main process. Under DDP
every process is checkpointed at the same step and its DataLoader worker ``w`` has yielded the same
count as on every other process (:mod:`lerobot_stream_loader.plan.elastic`), so the main process's
state, with its rank replaced, is every process's exact state; on another world size or worker count
the loader resumes elastically from it.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util.local_files import write_file_atomically
from .options import LoaderOptions

STATE_FILE = "stream_loader.json"
FORMAT = 1


@dataclass
class SavedLoader:
    """What a checkpoint holds for the loader: the options it was built with and the loader's state."""

    options: LoaderOptions
    loader_state: dict[str, Any]


def save_loader(folder: str | os.PathLike[str], options: LoaderOptions, loader_state: dict[str, Any]) -> Path:
    """Write ``folder/stream_loader.json`` atomically; the path written."""
    path = Path(folder) / STATE_FILE
    document = {"format": FORMAT, "stream": options.stream, "mix": options.mix, "loader": loader_state}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, json.dumps(document, indent=1).encode())
    return path


def load_loader(folder: str | os.PathLike[str]) -> SavedLoader | None:
    """The loader part saved in ``folder``; None when the checkpoint has none (not written by this package)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {FORMAT}")
        options = LoaderOptions({str(k): str(v) for k, v in document["stream"].items()},
                                {str(k): str(v) for k, v in document["mix"].items()})
        state = document["loader"]
        if not isinstance(state, dict):
            raise ValueError("the loader state is not an object")
    except (ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: not a loader checkpoint this version reads ({exc})") from None
    return SavedLoader(options, state)


def saved_world_size(state: dict[str, Any]) -> int | None:
    """The world size a loader state was saved under (None: no reader position in it)."""
    for reader in _reader_states(state):
        return int(reader["world_size"])
    return None


def state_for_rank(state: dict[str, Any], rank: int) -> dict[str, Any]:
    """A copy of one process's loader state as process ``rank`` of the same world size saved it."""
    state = copy.deepcopy(state)
    for reader in _reader_states(state):
        reader["rank"] = int(rank)
    return state


def _reader_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The dataset states inside a StatefulDataLoader state (one per worker, or the main process's)."""
    snapshot = state.get("_snapshot")
    if isinstance(snapshot, dict):
        workers = snapshot.get("_worker_snapshots") or {}
        found = [w.get("dataset_state") for w in workers.values() if isinstance(w, dict)]
    else:
        found = [state.get("dataset_state")]
    return [r for r in found if isinstance(r, dict) and "rank" in r and "world_size" in r]
