"""Tool outputs at fsspec URLs (``s3://``, ``gs://``, ``memory://``, ...): build locally, then publish.

Object stores cannot rename a folder into place, so a URL output is built in a local staging folder
and uploaded at the end: every file but ``meta/info.json`` first, ``meta/info.json`` last, so a
reader never sees an info.json that names files not yet uploaded. With ``overwrite`` the previous
dataset's ``meta/info.json`` is removed before the upload and its objects that the new dataset does
not have are removed after it. A failed upload removes what it uploaded (and, when overwriting, the
rest of the previous dataset, which it had already begun to replace): never a partial dataset.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from pathlib import Path
from typing import Any

import fsspec
from tqdm import tqdm

from ..errors import StreamLoaderError
from ..storage.paths import normalize_root

INFO = "meta/info.json"
READ_ONLY = ("http", "https", "hf")
WRITABLE = "local folders, file://, s3://, gs://, memory:// or any fsspec file system that supports writes"


def is_url_output(output_dir: str | os.PathLike[str]) -> bool:
    """Whether ``output_dir`` names a URL rather than a local folder (``file://`` is a local folder)."""
    text = os.fspath(output_dir)
    return "://" in text and not text.startswith("file://")


def _protocol(root: str) -> str:
    return (fsspec.core.split_protocol(root)[0] or "file").lower()


def output_options(source: str, output_url: str, storage_options: dict[str, Any] | None,
                   output_storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``output_storage_options`` if given, else the source's options when both use one protocol."""
    if output_storage_options is not None:
        return dict(output_storage_options)
    same = _protocol(normalize_root(source)) == _protocol(output_url)
    return dict(storage_options or {}) if same else {}


class RemoteOutput:
    """A dataset output at an fsspec URL: checked up front, published from a local folder at the end."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        protocol = _protocol(self.url)
        if protocol in READ_ONLY:
            raise ValueError(f"{url}: {protocol}:// cannot be written through this library; "
                             f"outputs may be {WRITABLE}")
        try:
            self.fs, path = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise ValueError(f"{url}: no fsspec file system can write there ({exc}); "
                             f"outputs may be {WRITABLE}") from exc
        self.path = path.rstrip("/")
        self.removed_previous = False
        self.staging_dir: Path | None = None  # where the local copy is built (None: the system temp dir)

    def __str__(self) -> str:
        return self.url

    def check(self, source: str, *, overwrite: bool, allow: tuple[str, ...] = ()) -> None:
        """Refuse an output overlapping the source, a file, or a non-empty one without ``overwrite``."""
        root = normalize_root(source)
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        if _protocol(root) in protocols:
            src = type(self.fs)._strip_protocol(root).rstrip("/")
            if self.path == src or self.path.startswith(f"{src}/") or src.startswith(f"{self.path}/"):
                raise ValueError(f"output {self.url} overlaps the source dataset {root}; choose another URL")
        if self.path and self.fs.isfile(self.path):
            raise FileExistsError(f"{self.url} exists and is not a folder")
        try:
            present = self.files()
        except Exception as exc:  # unreachable store, refused credentials ... : say which output
            raise StreamLoaderError(f"{self.url}: cannot list the output ({type(exc).__name__}: {exc})") from exc
        extra = sorted({name.split("/")[0] for name in present if name.split("/")[0] not in allow})
        if extra and not overwrite:
            raise FileExistsError(f"{self.url} is not empty (holds {', '.join(extra[:5])}); "
                                  "pass overwrite=True (--overwrite) to replace it")

    def files(self) -> dict[str, int]:
        """Every object below the URL: relative path -> size (fresh listing, no cache)."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.path, detail=True)
        except FileNotFoundError:  # e.g. a bucket that does not exist yet: nothing there
            return {}
        prefix = f"{self.path}/" if self.path else ""
        return {name[len(prefix):]: int(entry.get("size") or 0) for name, entry in found.items()
                if name.startswith(prefix) and entry.get("type", "file") != "directory"}

    def size(self, relative: str) -> int | None:
        """Size of one object below the URL, or None when it is not there."""
        target = self._target(relative)
        self.fs.invalidate_cache()
        return int(self.fs.size(target)) if self.fs.isfile(target) else None

    def publish(self, folder: Path, *, keep: tuple[str, ...] = (), progress: bool = False) -> None:
        """Upload every file of ``folder`` (``meta/info.json`` last), then remove stale objects.

        Objects below the top-level entries named in ``keep`` (e.g. videos placed by the caller) are
        never removed. On failure, what was uploaded is removed (best effort) and the error re-raised.
        """
        local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        order = [name for name in local if name != INFO] + [name for name in local if name == INFO]
        old = [name for name in self.files() if name.split("/")[0] not in keep]
        uploaded: list[str] = []
        try:
            if INFO in old:  # the previous dataset stops being readable before its files change
                self.fs.rm_file(self._target(INFO))
                self.removed_previous = True
            total = sum((folder / name).stat().st_size for name in order)
            with tqdm(total=total, desc="upload", unit="B", unit_scale=True, disable=not progress) as bar:
                made: set[str] = set()
                for name in order:
                    self._make_folder(posixpath.dirname(self._target(name)), made)
                    self.fs.put_file(str(folder / name), self._target(name))
                    uploaded.append(name)
                    bar.update((folder / name).stat().st_size)
        except BaseException:
            doomed = set(uploaded) | (set(old) if self.removed_previous else set())
            self._remove(sorted(doomed), warn=False)
            raise
        self._remove(sorted(set(old) - set(local)), warn=True)

    def _make_folder(self, folder: str, made: set[str]) -> None:
        """Folders for stores that have them; bucket stores (s3fs, gcsfs, adlfs: they split paths into
        bucket and key) have none, and making one there could create a bucket."""
        if folder not in made and not hasattr(self.fs, "split_path"):
            self.fs.makedirs(folder, exist_ok=True)
        made.add(folder)

    def _target(self, relative: str) -> str:
        return f"{self.path}/{relative}" if self.path else relative

    def _remove(self, names: list[str], *, warn: bool) -> None:
        try:
            present = self.files()  # a missing name would make a bulk remove fail as a whole
            doomed = [self._target(name) for name in names if name in present]
            if doomed:
                self.fs.rm(doomed)
        except Exception as exc:  # cleanup is best effort; the caller reports the first failure
            if warn:
                warnings.warn(f"{self.url}: the new dataset is complete, but {len(names)} stale object(s) of "
                              f"the previous one could not be removed ({type(exc).__name__}: {exc})",
                              stacklevel=3)
