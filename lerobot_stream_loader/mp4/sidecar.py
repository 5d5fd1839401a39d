"""Index sidecar: every MP4 index of a dataset in one versioned numpy .npz (no pickle), as bytes.

Each entry carries its source file's size and, when the store gives them, ETag and mtime, so a reader
can tell a stale entry (the file changed since it was indexed) and rebuild it.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .boxes import Mp4FormatError
from .index import Mp4Index

SIDECAR_FORMAT = "lerobot-stream-loader/mp4-index"
SIDECAR_VERSION = 1
_ARRAYS = ("version", "scalars", "codec", "stsd", "duration", "cts", "size", "offset", "sync", "sdi")


@dataclass
class SidecarEntry:
    """One indexed file: its index, and the size / ETag / mtime it had when indexed."""

    index: Mp4Index
    size: int
    etag: str | None = None
    mtime: float | None = None

    def is_stale(self, size: int, etag: str | None = None) -> bool:
        """True when the file now has another size, or another ETag when both sides know one of the same
        kind (an ``mtime:`` marker from a file system is only compared with another such marker)."""
        if size != self.size:
            return True
        if etag is None or self.etag is None or etag.startswith("mtime:") != self.etag.startswith("mtime:"):
            return False
        return etag != self.etag


EntryLike = SidecarEntry | tuple


def _as_entry(value: EntryLike) -> SidecarEntry:
    if isinstance(value, SidecarEntry):
        return value
    return SidecarEntry(*value)


def dumps_sidecar(entries: Mapping[str, EntryLike]) -> bytes:
    """Serialize {relative path: SidecarEntry or (index, size[, etag[, mtime]])} to bytes."""
    arrays: dict[str, np.ndarray] = {}
    files = []
    for k, (path, value) in enumerate(sorted(entries.items())):
        entry = _as_entry(value)
        key = f"f{k}"
        files.append({"path": path, "key": key, "size": int(entry.size), "etag": entry.etag, "mtime": entry.mtime})
        for name, array in entry.index.to_arrays().items():
            arrays[f"{key}__{name}"] = array
    header = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "files": files}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def loads_sidecar(data: bytes) -> dict[str, SidecarEntry]:
    """Entries of a sidecar made by `dumps_sidecar`; Mp4FormatError if it is corrupt or of another version."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            header = json.loads(bytes(archive["header"]).decode())
            if header.get("format") != SIDECAR_FORMAT:
                raise Mp4FormatError(f"sidecar: format is {header.get('format')!r}, not {SIDECAR_FORMAT!r}")
            if header.get("version") != SIDECAR_VERSION:
                raise Mp4FormatError(
                    f"sidecar: version {header.get('version')} is not the supported version {SIDECAR_VERSION}"
                )
            result = {}
            for item in header["files"]:
                path, key = item["path"], item["key"]
                arrays = {name: archive[f"{key}__{name}"] for name in _ARRAYS}
                index = Mp4Index.from_arrays(arrays, name=path)
                result[path] = SidecarEntry(index, int(item["size"]), item.get("etag"), item.get("mtime"))
            return result
    except Mp4FormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise Mp4FormatError(f"sidecar: unreadable ({type(exc).__name__}: {exc})") from exc


def stale_entries(
    entries: Mapping[str, SidecarEntry], current: Mapping[str, tuple[int, str | None]]
) -> list[str]:
    """Paths of `current` ({path: (size, etag)}) whose entry is missing or stale, sorted."""
    return sorted(p for p, (size, etag) in current.items() if p not in entries or entries[p].is_stale(size, etag))
