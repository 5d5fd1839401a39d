"""Runs that resume after a kill: a fixed staging folder holding a manifest of the files finished.

A run builds its dataset in ``.<output>.partial`` beside a local output (for a URL output: in
``staging_dir`` or the system temp dir, named after the URL). The manifest in that folder
(``.lerobot-stream-manifest.jsonl``) opens with the run's arguments, then gets one line per finished
file (its path, size, SHA-256 and what the metadata needs from it), appended as each file is done; it
and the lock file are removed just before the folder is moved into place. The lock keeps a second
run off the folder while the first one lives (the kernel drops it when a process dies, however).

Run again with ``resume=True`` and the same arguments, a run keeps every recorded file whose size
and SHA-256 still match (a file recorded without one, a stream copy, is checked against the source
again by the caller's ``verify``), removes everything else from the folder, and does only the rest;
other arguments are refused, naming them. Without ``resume`` an unfinished run's folder is removed and the
run starts from the beginning. A failed run removes its folder, unless it was started with
``resume=True``: then its finished files stay for the next try.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .output import Output, ToolError, commit_folder
from .publish import RemoteOutput

MANIFEST = ".lerobot-stream-manifest.jsonl"
LOCK = ".lerobot-stream-lock"
VERSION = 1
_log = logging.getLogger(__name__)


def partial_folder(output: Output) -> Path:
    """The fixed staging folder of runs writing ``output``."""
    if isinstance(output, RemoteOutput):
        base = output.staging_dir or Path(tempfile.gettempdir())
        return base / f"lerobot-stream-partial-{hashlib.sha256(output.url.encode()).hexdigest()[:16]}"
    return output.parent / f".{output.name}.partial"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ResumableRun:
    """A run's staging folder (``dataset``: the dataset is built there), the files finished before."""

    def __init__(self, folder: Path, manifest: IO[str], finished: dict[str, dict[str, Any]]) -> None:
        self.dataset = folder
        self.finished = finished  # task name -> its manifest record (kept from before, or done now)
        self._manifest = manifest

    def outcome(self, name: str, relative: str) -> dict[str, Any] | None:
        """What a task returned in an earlier run, when it wrote ``relative`` and its file is kept."""
        record = self.finished.get(name)
        return record["outcome"] if record is not None and record["file"] == relative else None

    def record(self, name: str, relative: str, outcome: dict[str, Any]) -> None:
        """Note a finished file in the manifest: its outcome holds ``bytes`` (its size) and ``sha256``
        (None: the run's ``verify`` checks the file when a resumed run keeps it)."""
        line = json.dumps({"task": name, "file": relative, "size": outcome["bytes"],
                           "sha256": outcome.get("sha256"), "outcome": outcome}, allow_nan=True)
        self.finished[name] = json.loads(line)
        self._manifest.write(line + "\n")
        self._manifest.flush()  # in the kernel's hands: a killed process loses nothing. After a power
        # loss a line may be lost (its file is written again) or a file damaged (its checksum says so).


@contextmanager
def resumable_output(output: Output, *, what: str, arguments: dict[str, Any], resume: bool,
                     progress: bool = False, verify: Callable[[str], bool] | None = None,
                     workers: int | None = None) -> Iterator[ResumableRun]:
    """Yield the run's staging folder (:func:`partial_folder`); on success its dataset replaces
    ``output`` (or is published there).

    A kept file recorded without a checksum is checked by ``verify(task name)`` (in ``workers``
    threads). Failures raise :class:`ToolError` naming ``what`` and the cause, and leave ``output`` as
    it was.
    """
    folder = partial_folder(output)
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder, output)
    try:
        run = _open_run(folder, output, arguments, resume, verify, workers)
    except BaseException:
        lock.close()
        raise
    try:
        yield run
        run._manifest.close()
        for name in (MANIFEST, LOCK):  # the lock stays held through the open handle
            (folder / name).unlink(missing_ok=True)
        commit_folder(folder, output, progress=progress)
    except BaseException as exc:
        run._manifest.close()
        if resume:
            _log.warning("%s: %d finished files are kept in %s; run again with --resume (resume=True) to "
                         "continue", what, len(run.finished), folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        lock.close()
        if isinstance(exc, ToolError | KeyboardInterrupt):
            raise
        previous = "; the previous dataset there was removed" if getattr(output, "removed_previous", False) else ""
        raise ToolError(f"{what} failed, nothing was written to {output}{previous}: "
                        f"{type(exc).__name__}: {exc}") from exc
    shutil.rmtree(folder, ignore_errors=True)
    lock.close()


def _lock(folder: Path, output: Output) -> IO[bytes]:
    handle = open(folder / LOCK, "ab")
    try:
        import fcntl
    except ImportError:  # no advisory locks here: one run at a time is up to the user
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ToolError(f"another run is writing {output} (its files are in {folder}); wait for it to end") from None
    return handle


def _open_run(folder: Path, output: Output, arguments: dict[str, Any], resume: bool,
              verify: Callable[[str], bool] | None, workers: int | None) -> ResumableRun:
    manifest, dataset = folder / MANIFEST, folder
    arguments = json.loads(json.dumps(arguments))  # as a manifest gives them back
    header, records = _read_manifest(manifest)
    kept: dict[str, dict[str, Any]] = {}
    if resume and header is not None:
        differences = _differences(header.get("arguments", {}), arguments)
        if differences:
            raise ToolError(f"{output}: the unfinished run in {folder} was started with other arguments "
                            f"({'; '.join(differences)}); run again with those, or without --resume "
                            "(resume=False) to start from the beginning")
        latest = {record["task"]: record for record in records}  # a task recorded twice: its last file
        with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool:
            intact = pool.map(lambda record: _intact(dataset, record, verify), latest.values())
            for record, ok in zip(latest.values(), intact):
                if ok:
                    kept[record["task"]] = record
                else:
                    _log.warning("%s: %s is not the file the earlier run finished; it is written again",
                                 output, dataset / record["file"])
        _keep_only(dataset, {record["file"] for record in kept.values()} | {MANIFEST, LOCK})
        _log.info("%s: resuming; %d files finished earlier are kept", output, len(kept))
    else:
        if header is not None and not resume:
            _log.warning("%s: removing the unfinished run in %s (pass --resume, resume=True, to continue "
                         "it instead)", output, folder)
        elif resume:
            _log.info("%s: no unfinished run to resume; starting from the beginning", output)
        _keep_only(dataset, {MANIFEST, LOCK})
    tmp = folder / f".{MANIFEST}.tmp"
    with open(tmp, "w") as file:
        file.write(json.dumps({"manifest": VERSION, "arguments": arguments}) + "\n")
        for record in kept.values():
            file.write(json.dumps(record) + "\n")
    os.replace(tmp, manifest)
    return ResumableRun(folder, open(manifest, "a"), kept)


def _intact(dataset: Path, record: dict[str, Any], verify: Callable[[str], bool] | None) -> bool:
    path = dataset / record["file"]
    if not path.is_file() or path.stat().st_size != record["size"]:
        return False
    if record["sha256"] is None:
        return verify is not None and verify(record["task"])
    return file_digest(path) == record["sha256"]


def _read_manifest(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The header and the whole records of a manifest (a line cut short by a kill is dropped)."""
    if not path.is_file():
        return None, []
    lines = path.read_text().splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("manifest") != VERSION:
        return None, []
    records = []
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and {"task", "file", "size", "sha256", "outcome"} <= record.keys():
            records.append(record)
    return header, records


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    found = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if key == "plan":
            found.append("the source dataset or the file layout changed")
        else:
            found.append(f"{key} {old!r} then, {new!r} now")
    return found


def _keep_only(dataset: Path, kept: set[str]) -> None:
    """Remove every file below ``dataset`` but the ``kept`` ones (relative paths)."""
    if not dataset.is_dir():
        return
    for path in sorted(dataset.rglob("*"), reverse=True):
        relative = path.relative_to(dataset).as_posix()
        if path.is_file() or path.is_symlink():
            if relative not in kept:
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
