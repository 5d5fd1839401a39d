"""Writing a dataset safely: a temporary folder beside the output, renamed into place at the end.

An interrupted or failed run leaves nothing under ``output_dir`` (and removes its temporary
folder); a non-empty ``output_dir`` is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StreamLoaderError
from ..paths import is_local, normalize_root


class ToolError(StreamLoaderError, RuntimeError):
    """A dataset tool could not finish; nothing was written to its output folder."""


def local_output(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` as an absolute local path; URLs are refused with a clear message."""
    text = os.fspath(output_dir)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"{text}: outputs must be local folders (write locally, then upload)")
    return Path(text.removeprefix("file://")).expanduser().resolve()


def check_output(source: str, output: Path, *, overwrite: bool, allow: tuple[str, ...] = ()) -> None:
    """Refuse an output inside (or equal to) the source, or a non-empty one without ``overwrite``.

    ``allow`` names top-level entries that may already be there (they are kept, not overwritten).
    """
    root = normalize_root(source)
    if is_local(root):
        src = Path(root.removeprefix("file://")).resolve()
        if output == src or src in output.parents or output in src.parents:
            raise ValueError(f"output {output} overlaps the source dataset {src}; choose another folder")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a folder")
    if output.is_dir() and not overwrite:
        extra = sorted(p.name for p in output.iterdir() if p.name not in allow)
        if extra:
            raise FileExistsError(f"{output} is not empty (holds {', '.join(extra[:5])}); "
                                  "pass overwrite=True (--overwrite) to replace it")


@contextmanager
def staged_output(output: Path, *, what: str, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``output``; on success it replaces ``output``.

    Entries named in ``keep`` that already exist in ``output`` (e.g. videos placed by the caller)
    are moved into the new dataset. Any failure removes the temporary folder and raises
    :class:`ToolError` naming ``what`` and the cause; ``output`` is then left as it was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        _commit(tmp, output, keep)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, ToolError | KeyboardInterrupt):
            raise
        raise ToolError(f"{what} failed, nothing was written to {output}: {type(exc).__name__}: {exc}") from exc


def _commit(tmp: Path, output: Path, keep: tuple[str, ...]) -> None:
    moved: list[str] = []
    try:
        for name in keep:
            if (output / name).exists():
                if (tmp / name).exists():
                    shutil.rmtree(tmp / name)
                os.rename(output / name, tmp / name)
                moved.append(name)
        if output.exists():
            old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(output, old)
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except BaseException:
        for name in moved:  # give the caller's files back
            if (tmp / name).exists():
                output.mkdir(parents=True, exist_ok=True)
                os.rename(tmp / name, output / name)
        raise
