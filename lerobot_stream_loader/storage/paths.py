"""Dataset roots and the relative paths inside them.

A root is a local folder or a URL (``hf://datasets/<user>/<name>[@rev]``, ``s3://...``,
``https://...``, ``file://...``); a bare ``user/name`` that is not a local folder means
``hf://datasets/user/name``. Paths read from metadata are relative to the root and may never
leave it.
"""

from __future__ import annotations

import os
import re

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PathEscapeError(ValueError):
    """A path from metadata is absolute or climbs out of the dataset root."""


def normalize_root(source: str | os.PathLike[str], revision: str | None = None) -> str:
    """The dataset root as a URL or an absolute local path, with ``revision`` applied to Hub roots."""
    root = os.fspath(source)
    if "://" not in root:
        if is_bare_repo_id(root):
            root = f"hf://datasets/{root}"
        else:
            return os.path.abspath(os.path.expanduser(root))
    root = root.rstrip("/")
    if revision and root.startswith("hf://datasets/"):
        repo = root[len("hf://datasets/"):]
        parts = repo.split("/")
        if len(parts) < 2:
            raise ValueError(f"{source!r}: a Hub dataset root is hf://datasets/<user>/<name>")
        if "@" in parts[1]:
            raise ValueError(f"{source!r}: revision given both in the URL and as revision={revision!r}")
        parts[1] = f"{parts[1]}@{revision}"
        root = "hf://datasets/" + "/".join(parts)
    return root


def is_bare_repo_id(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a bare ``user/name`` taken for a Hub id because no such local folder exists."""
    text = os.fspath(source)
    return "://" not in text and bool(_REPO_ID.match(text)) and not os.path.exists(text)


def is_local(root: str) -> bool:
    """Whether ``root`` (normalized) is a folder on this machine."""
    return "://" not in root or root.startswith("file://")


def check_relative(path: str, *, what: str = "path") -> str:
    """``path`` normalized (POSIX separators, no empty or ``.`` parts), or :class:`PathEscapeError` when it
    is not a file below the root: empty, absolute, a URL, a drive letter, or with any ``..`` part."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise PathEscapeError(f"{what} {path!r} is not a path relative to the dataset root")
    if path.startswith(("/", "\\")) or "://" in path or re.match(r"^[A-Za-z]:", path):
        raise PathEscapeError(f"{what} {path!r} is absolute; paths must be relative to the dataset root")
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PathEscapeError(f"{what} {path!r} escapes the dataset root ('..' is not allowed)")
    if not parts:
        raise PathEscapeError(f"{what} {path!r} names the dataset root itself, not a file")
    return "/".join(parts)


def join(root: str, relative: str) -> str:
    """``root`` joined with a checked relative path."""
    return f"{root.rstrip('/')}/{check_relative(relative)}"
