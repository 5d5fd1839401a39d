"""Where a dataset lives and how to reach it, worked out once and handed on.

:meth:`Location.of` is the one place a user's ``source`` becomes a root: a bare ``user/name`` becomes
a Hub URL, ``revision`` is applied, a user part written into an http(s) URL is taken out of it into
the hidden reader option ``basic_auth``, and every credential-like option is wrapped
(:mod:`~lerobot_stream_loader.storage.credentials`). Metadata, workers and tools open their range
readers from it (:meth:`Location.open_reader`) instead of parsing the source again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from . import open_root_reader
from .credentials import Secret, hide_secrets, with_url_credentials
from .paths import is_local, normalize_root
from .reader import BaseRangeReader


@dataclass(frozen=True)
class Location:
    """A dataset's root URL (or absolute local path), the reader backend, fsspec ``storage_options``
    and range-reader options, credentials hidden in both."""

    root: str
    backend: str = "auto"
    storage_options: dict[str, Any] = field(default_factory=dict)
    reader_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, source: str | os.PathLike[str] | Location, *, revision: str | None = None,
           backend: str = "auto", storage_options: dict[str, Any] | None = None,
           reader_options: dict[str, Any] | None = None) -> Location:
        """The location of ``source`` (a local folder, a URL or a bare Hub ``user/name``)."""
        if isinstance(source, Location):
            return source
        root, options = with_url_credentials(normalize_root(source, revision), reader_options)
        return cls(root, backend, hide_secrets(dict(storage_options or {})), hide_secrets(options))

    def at(self, root: str) -> Location:
        """The same way of reaching another root (a Hub dataset at another revision)."""
        return replace(self, root=root)

    @property
    def is_local(self) -> bool:
        return is_local(self.root)

    @property
    def basic_auth(self) -> Secret | None:
        """Credentials the root URL carried (its user part), held hidden; None without."""
        return self.reader_options.get("basic_auth")

    def open_reader(self, **options: Any) -> BaseRangeReader:
        """A new range reader on the root (``options`` override the location's reader options)."""
        return open_root_reader(self.root, backend=self.backend, storage_options=self.storage_options,
                                reader_options={**self.reader_options, **options})
