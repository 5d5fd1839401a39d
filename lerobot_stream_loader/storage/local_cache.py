"""The machine's local cache folder: where it is, one folder per dataset, atomic writes and a file lock.

Default place: ``$LEROBOT_STREAM_CACHE``, else ``$XDG_CACHE_HOME/lerobot_stream_loader``, else
``~/.cache/lerobot_stream_loader`` (as huggingface_hub keeps ``~/.cache/huggingface``). Every
dataset root (URL with its revision) gets its own folder. Files appear whole or not at all
(written aside, then renamed); a lock file lets one process of the machine fill an entry while
the others wait for it instead of downloading the same bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_TIMEOUT_S = 300.0


def default_cache_dir() -> Path:
    """The cache folder used when none is given."""
    if os.environ.get("LEROBOT_STREAM_CACHE"):
        return Path(os.environ["LEROBOT_STREAM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lerobot_stream_loader"


def dataset_cache_dir(root: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of dataset ``root`` (a normalized root, revision included) inside the cache."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / hashlib.sha256(root.encode()).hexdigest()[:24]


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks not to contact the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def publish_folder(staged: Path, final: Path) -> bool:
    """Move a fully written folder into place; False (and ``staged`` removed) when another process won."""
    try:
        os.rename(staged, final)
        return True
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)
        if final.is_dir():
            return False
        raise


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if needed); yields False when it could not be had in
    ``timeout_s`` (the caller then proceeds without it: the lock saves work, it never guards correctness)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 -- held for the with-block
    except OSError:  # an unwritable cache folder: proceed unlocked (the caller's writes fail and say so)
        handle = None
    if handle is None:
        yield False
        return
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    locked = False
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield locked
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
