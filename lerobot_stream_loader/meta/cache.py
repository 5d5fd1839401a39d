"""Streaming metadata of a remote dataset kept once per machine, keyed by the root and info.json's version.

An entry is a folder ``<cache>/<dataset>/meta/<version>/`` holding info.json, the tasks and the
episode columns (``columns/*.npy``, memory-mapped when read, plus ``tasks.arrow`` when the episodes table has a ``tasks``
column); ``version`` comes from the size and ETag of ``meta/info.json`` (a dataset whose store
gives no ETag is not cached), and the entry is used only while every other metadata file it was
read from (``sources.json``: path, size, ETag) still has the same size and ETag. Entries are written aside and renamed into place, under a lock so
that the ranks of a machine starting together read the source once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..storage.local_cache import file_lock, publish_folder
from .episode_table import EpisodeTable

_FILES = ("info.json", "tasks.json", "sources.json")
LAYOUT = 2  # of an entry's files; an entry of another layout is another version, never misread
FileVersion = tuple[str, int, "str | None"]


def entry_version(info_size: int, info_etag: str | None) -> str | None:
    """The cache version of a dataset whose info.json has this size and ETag; None without an ETag."""
    if not info_etag:
        return None
    return hashlib.sha256(f"{info_size}:{info_etag}:{LAYOUT}".encode()).hexdigest()[:20]


class MetaCache:
    """The metadata entries of one dataset in the machine's cache folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "meta"

    def lock(self):  # noqa: ANN201 -- a context manager yielding whether the lock is held
        """Lock held while one process fills an entry."""
        return file_lock(self.folder / ".lock")

    def latest(self) -> str | None:
        """The most recently written version (for offline use), or None."""
        if not self.folder.is_dir():
            return None
        entries = [p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return max(entries, key=lambda p: p.stat().st_mtime).name if entries else None

    def load(self, version: str, current: Callable[[str], FileVersion] | None = None,
             ) -> tuple[dict[str, Any], EpisodeTable, dict[int, str]] | None:
        """(info, episode columns, tasks) of ``version``, or None when absent, unreadable, or (given
        ``current``: path -> (path, size, ETag) now) when a source file changed since."""
        where = self.folder / version
        if not all((where / name).is_file() for name in _FILES):
            return None
        try:
            if current is not None:
                for path, size, etag in json.loads((where / "sources.json").read_bytes()):
                    if current(path) != (path, size, etag):
                        return None
            info = json.loads((where / "info.json").read_bytes())
            tasks = {int(k): v for k, v in json.loads((where / "tasks.json").read_bytes()).items()}
            table = EpisodeTable.open_folder(where, info)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"{where}: ignoring an unreadable metadata cache entry ({type(exc).__name__}: {exc}); "
                          "reading the dataset's metadata instead", stacklevel=2)
            return None
        return info, table, tasks

    def save(self, version: str, info: dict[str, Any], tasks: dict[int, str], table: EpisodeTable,
             sources: list[FileVersion]) -> None:
        """Write an entry (atomically; a concurrent writer of the same version may win). An entry of
        the same version already there is stale (a file other than info.json changed): it is moved
        aside first; processes that mapped its columns keep them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(dir=self.folder, prefix=".staging-"))
        (staged / "sources.json").write_bytes(json.dumps(sources).encode())
        (staged / "info.json").write_bytes(json.dumps(info).encode())
        (staged / "tasks.json").write_bytes(json.dumps({str(k): v for k, v in tasks.items()}).encode())
        table.save_folder(staged)
        os.chmod(staged, 0o755)
        final = self.folder / version
        stale = None
        if final.is_dir():
            stale = Path(tempfile.mkdtemp(dir=self.folder, prefix=".stale-"))
            try:
                os.rename(final, stale / "entry")
            except OSError:  # another process moved or replaced it meanwhile
                pass
        publish_folder(staged, final)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
