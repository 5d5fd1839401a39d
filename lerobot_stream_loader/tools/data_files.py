"""``data_files`` in info.json: the data parquet paths, so readers never list a directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..meta.dataset_meta import INFO_PATH, load_meta
from ..storage.paths import is_local
from .layout import write_json


def update_info_with_data_files(root: str | os.PathLike[str], *,
                                storage_options: dict[str, Any] | None = None) -> list[str]:
    """Add ``data_files`` (sorted relative paths of every data parquet, from the episodes table) to
    meta/info.json, written atomically; return the list. Running it again changes nothing."""
    if os.fspath(root).startswith(("http://", "https://", "hf://")):
        raise ValueError(f"{root}: data-files rewrites meta/info.json in place, and http(s):// and hf:// roots "
                         "are read-only; run it on a local copy or a writable store (s3://, gs://, ...)")
    meta = load_meta(root, storage_options=storage_options, use_cache=False)
    files = sorted({episode.data_path for episode in meta.episodes})
    info = dict(meta.info)
    info["data_files"] = files
    if is_local(meta.root):
        write_json(Path(meta.url(INFO_PATH).removeprefix("file://")), info)
    else:
        meta.fs.pipe_file(meta.url(INFO_PATH), (json.dumps(info, indent=4, ensure_ascii=False) + "\n").encode())
    return files
