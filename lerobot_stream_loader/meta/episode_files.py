"""Which files the selected episodes of a dataset read, and a check that a local copy holds them.

LeRobot downloads only the files of the episodes a user asks for, so a local folder may hold only
those: a reader of a few episodes must not require the others' files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ..errors import DatasetFormatError
from .dataset_meta import DatasetMeta


def files_of_episodes(meta: DatasetMeta, episodes: Iterable[int]) -> dict[str, list[int]]:
    """Root-relative path -> the episodes (of ``episodes``) that read it: data files and MP4s."""
    table = meta.episode_table.take(np.asarray(list(episodes), dtype=np.int64))
    series: list[tuple[str, Callable[..., str]]] = [("data", lambda c, f: table.data_file(c, f))]
    series += [(f"videos/{key}", lambda c, f, key=key: table.video_file(key, c, f)) for key in table.video_keys]
    needs: dict[str, list[int]] = {}
    for prefix, path_of in series:
        pairs = np.stack([table.columns[f"{prefix}/chunk_index"], table.columns[f"{prefix}/file_index"]], 1)
        files, owner = np.unique(pairs, axis=0, return_inverse=True)
        order = np.argsort(owner.reshape(-1), kind="stable")
        groups = np.split(table.index[order], np.cumsum(np.bincount(owner.reshape(-1), minlength=len(files)))[:-1])
        for (chunk, file), members in zip(files.tolist(), groups, strict=True):
            needs.setdefault(path_of(chunk, file), []).extend(members.tolist())
    return needs


def check_episode_files(meta: DatasetMeta, episodes: Iterable[int], exists: Callable[[str], bool]) -> None:
    """Raise :class:`DatasetFormatError` naming every missing file and the episodes that need it."""
    needs = files_of_episodes(meta, episodes)
    missing = [path for path in needs if not exists(path)]
    if not missing:
        return
    shown = "; ".join(f"{path} (needed by episodes {_short(needs[path])})" for path in missing[:5])
    more = f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise DatasetFormatError(f"{meta.root}: {len(missing)} file(s) the selected episodes read are missing: "
                             f"{shown}{more}")


def _short(episodes: list[int], limit: int = 10) -> str:
    text = ", ".join(str(e) for e in episodes[:limit])
    return f"[{text}{', ...' if len(episodes) > limit else ''}]"
