"""Writing a dataset safely: a temporary folder beside the output, renamed into place at the end.

An interrupted or failed run leaves nothing under ``output_dir`` (and removes its temporary
folder); a non-empty ``output_dir`` is refused unless ``overwrite=True``. An output at an fsspec URL
is built in a local staging folder (system temp dir) and published to the URL at the end
(:mod:`.publish`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StreamLoaderError
from ..storage.paths import is_local, normalize_root
from .publish import RemoteOutput, is_url_output, output_options


class ToolError(StreamLoaderError, RuntimeError):
    """A dataset tool could not finish; nothing was written to its output folder."""


Output = Path | RemoteOutput


def local_output(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` (a local path or ``file://`` URL) as an absolute local path."""
    return Path(os.fspath(output_dir).removeprefix("file://")).expanduser().resolve()


def open_output(output_dir: str | os.PathLike[str], source: str | os.PathLike[str], *,
                storage_options: dict[str, Any] | None = None,
                output_storage_options: dict[str, Any] | None = None,
                staging_dir: str | os.PathLike[str] | None = None) -> Output:
    """A local folder, or a :class:`RemoteOutput` for a URL (read-only stores refused with ValueError).

    A URL output uses ``output_storage_options``, else ``storage_options`` when its protocol is the
    source's, else none; it is staged in a new folder inside ``staging_dir`` (default: the system
    temp dir).
    """
    if not is_url_output(output_dir):
        return local_output(output_dir)
    url = os.fspath(output_dir)
    output = RemoteOutput(url, output_options(os.fspath(source), url, storage_options, output_storage_options))
    if staging_dir is not None:
        output.staging_dir = Path(staging_dir).expanduser().resolve()
        output.staging_dir.mkdir(parents=True, exist_ok=True)
    return output


def output_file_size(output: Output, relative: str) -> int | None:
    """Size of a file already at ``output`` (e.g. videos placed by the caller), or None."""
    if isinstance(output, RemoteOutput):
        return output.size(relative)
    path = output / relative
    return path.stat().st_size if path.is_file() else None


def check_output(source: str, output: Output, *, overwrite: bool, allow: tuple[str, ...] = ()) -> None:
    """Refuse an output inside (or equal to) the source, or a non-empty one without ``overwrite``.

    ``allow`` names top-level entries that may already be there (they are kept, not overwritten).
    """
    if isinstance(output, RemoteOutput):
        output.check(source, overwrite=overwrite, allow=allow)
        return
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
def staged_output(output: Output, *, what: str, keep: tuple[str, ...] = (),
                  progress: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``output``; on success it replaces ``output``.

    Entries named in ``keep`` that already exist in ``output`` (e.g. videos placed by the caller)
    are moved into the new dataset. Any failure removes the temporary folder and raises
    :class:`ToolError` naming ``what`` and the cause; ``output`` is then left as it was. For a URL
    output the folder is in the system temp dir and is published to the URL (see :mod:`.publish`).
    """
    if isinstance(output, RemoteOutput):
        with _staged_remote(output, what=what, keep=keep, progress=progress) as tmp:
            yield tmp
        return
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


def commit_folder(folder: Path, output: Output, *, progress: bool = False) -> None:
    """Move a finished local folder into place at ``output`` (a URL output: publish it there)."""
    if isinstance(output, RemoteOutput):
        output.publish(folder, progress=progress)
    else:
        _commit(folder, output, ())


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


@contextmanager
def _staged_remote(output: RemoteOutput, *, what: str, keep: tuple[str, ...], progress: bool) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="lerobot-stream-stage-", dir=output.staging_dir))
    try:
        yield tmp
        output.publish(tmp, keep=keep, progress=progress)
    except BaseException as exc:
        if isinstance(exc, ToolError | KeyboardInterrupt):
            raise
        previous = "; the previous dataset there was removed" if output.removed_previous else ""
        raise ToolError(f"{what} failed, nothing was written to {output.url}{previous}: "
                        f"{type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
