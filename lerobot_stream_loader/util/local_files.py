"""Writing one local file atomically, with the permissions the process's umask gives new files."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_file_atomically(path: str | os.PathLike[str], data: bytes, mode: int = 0o666) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    The temporary file is created with mode 0o666 less the umask (0o644 under umask 022), as
    ``open()`` would create ``path`` itself; ``tempfile.mkstemp`` would make it 0o600, which a web
    server running as another user cannot read (``mode=0o600``: its owner's only). The folder must
    exist; a failure leaves no file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
