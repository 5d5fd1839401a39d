"""The directory of a version-2 MP4 index sidecar, held as its JSON bytes; one file's item parsed when asked.

Every worker holds the directory of every MP4 of the dataset. Parsed whole, it is dozens of small
Python objects per MP4, and in a forked worker those allocations land in pages of the parent's
partly free memory, each write copying a whole page: about 90 MB per worker for 3,000 MP4s,
measured. Held as bytes it is one buffer; an item is found by its path and parsed alone, and its
placement is checked then (a bad item makes that one entry unusable).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..mp4 import Mp4FormatError

FORMAT = "lerobot-stream-loader/mp4-index"
VERSION = 2
MAX_ITEM_BYTES = 64 << 10  # one file's item: a path and a dozen array shapes
_PREFIX = re.compile(rb'\{"format": ("(?:[^"\\]|\\.)*"), "version": (-?\d+), "files": \[')


class SidecarError(Mp4FormatError):
    """An MP4 index sidecar (or one of its entries) that cannot be used."""


class SidecarDirectory:
    """The directory's JSON bytes, checked for format and version; items looked up by path."""

    def __init__(self, raw: bytes, where: str) -> None:
        self.where = where
        match = _PREFIX.match(raw)
        try:
            if match is not None:  # as this library writes it: read the head only
                kind, version = json.loads(match.group(1)), int(match.group(2))
            else:  # written differently: parse it whole once to check it
                directory = json.loads(raw)
                kind, version = directory.get("format"), directory.get("version")
                if not isinstance(directory.get("files"), list):
                    raise SidecarError(f"{where}: unreadable directory (no list of files)")
        except (ValueError, AttributeError, TypeError) as exc:
            raise SidecarError(f"{where}: unreadable directory ({type(exc).__name__}: {exc})") from exc
        if kind != FORMAT or version != VERSION:
            raise SidecarError(f"{where}: format {kind!r} version {version!r}, expected {FORMAT!r} "
                               f"version {VERSION}")
        self._raw = raw
        self._decoder = json.JSONDecoder()

    def item(self, path: str) -> dict[str, Any] | None:
        """The directory's item of ``path``; None when the sidecar has none."""
        at = self._raw.find(b'{"path": ' + json.dumps(path).encode())
        if at < 0:
            return None
        text = self._raw[at:at + MAX_ITEM_BYTES].decode("utf-8", errors="replace")
        try:
            item, _ = self._decoder.raw_decode(text)
        except ValueError as exc:
            raise SidecarError(f"{self.where}: unreadable directory item of {path} ({exc})") from exc
        if not isinstance(item, dict) or item.get("path") != path:
            raise SidecarError(f"{self.where}: unreadable directory item of {path}")
        return item

    def paths(self) -> list[str]:
        """Every file the directory holds (parses it whole: for tools and tests)."""
        try:
            return [str(item["path"]) for item in json.loads(self._raw)["files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SidecarError(f"{self.where}: unreadable directory ({type(exc).__name__}: {exc})") from exc
