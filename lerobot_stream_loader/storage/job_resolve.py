"""``resolve="job"``: one process resolves the files the job reads, every other one receives the map.

With torch.distributed initialized (a collective call: every rank constructs the dataset), rank 0
resolves every file (:data:`THREADS` at a time, within :data:`BUDGET_S`), broadcasts the map, and
every rank writes it into its machine's cache folder; rank 0 then serves the job's board
(:mod:`~lerobot_stream_loader.storage.job_board`) and renews each URL there before it expires, so
that the job costs one resolve per file per URL lifetime whatever its size. Without torch.distributed,
the first process to take the job's lock in ``cache_dir`` resolves every file there and writes a
manifest; the others find the manifest and resolve nothing. That is job-wide when ``cache_dir`` is a
folder every node sees (a shared file system), machine-wide otherwise.

A file that cannot be resolved here is left to the reader that opens it (its error comes from there).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ..util.daemon_pool import DaemonPool
from .hf import HubLocator
from .job_board import JobBoard, serve_board
from .local_cache import file_lock
from .location import Location
from .reader import BaseRangeReader
from .resolve_cache import Resolved, renew_margin

log = logging.getLogger(__name__)

THREADS = 16
BUDGET_S = 300.0  # the longest the job's resolve may hold up the ranks waiting for its map
RENEW_CHECK_S = 30.0  # the longest the renewing thread sleeps


def share_job_resolves(location: Location, paths: Sequence[str]) -> dict[str, Any]:
    """Resolve ``paths`` (below ``location``'s Hub root) once for the whole job (module doc); a summary."""
    if not location.root.startswith("hf://") or location.reader_options.get("resolve") != "job":
        return {"shared_by": "none"}
    reader = location.open_reader(max_workers=THREADS)
    locator: HubLocator | None = getattr(reader, "hub_locator", None)
    if locator is None or locator.share != "job" or locator.store is None:
        reader.close()
        return {"shared_by": "none"}
    paths = sorted(set(paths))
    dist = _distributed()
    if dist is None:
        try:
            return _through_manifest(reader, locator, paths)
        finally:
            reader.close()
    return _through_torch_distributed(dist, reader, locator, paths)


def _distributed() -> Any:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover -- torch is a dependency
        return None
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def resolve_all(locator: HubLocator, paths: Sequence[str], *, renew: bool = False,
                budget_s: float = BUDGET_S) -> dict[str, Resolved]:
    """The URLs of ``paths`` (through the machine's entries, or all resolved anew with ``renew``),
    :data:`THREADS` at a time; files that fail, or are not reached within ``budget_s``, are left out."""
    deadline = time.monotonic() + budget_s
    pool = DaemonPool(THREADS, "job-resolve")

    def one(path: str) -> Resolved | None:
        if time.monotonic() > deadline:
            return None
        try:
            return locator.renew(path) if renew else locator.target(path)
        except Exception as exc:  # noqa: BLE001 -- the reader that opens the file says what is wrong
            log.debug("resolve='job': %s not resolved ahead (%s)", locator.describe(path), exc)
            return None

    futures: list[tuple[str, Future[Resolved | None]]] = [(p, pool.submit(one, p)) for p in paths]
    got: dict[str, Resolved] = {}
    try:
        for path, future in futures:
            left = deadline - time.monotonic()
            try:
                result = future.result(timeout=max(0.0, left) + 1.0)
            except FutureTimeout:
                break
            if result is not None:
                got[path] = result
    finally:
        pool.shutdown()
    return got


def _through_manifest(reader: BaseRangeReader, locator: HubLocator, paths: list[str]) -> dict[str, Any]:
    assert locator.store is not None
    name = "job-" + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:24]
    started = time.monotonic()
    with file_lock(locator.store.folder / f"{name}.lock", BUDGET_S):
        manifest = locator.store.read(f"{name}.json")
        renew_at = manifest.get("renew_at") if manifest else None
        if isinstance(renew_at, int | float) and renew_at > time.time():
            return {"shared_by": "manifest", "files": len(paths), "resolved_here": 0}
        before = reader.stats.resolves
        got = resolve_all(locator, paths)
        resolved_here = reader.stats.resolves - before
        if got:
            due = min((r.expires_at or 0.0) - renew_margin(r) for r in got.values())
            locator.store.write(f"{name}.json", {"files": len(paths), "resolved": len(got), "renew_at": due})
    log.info("resolve='job': %d of %d files resolved (%d by this process) in %.1f s; a manifest in %s",
             len(got), len(paths), resolved_here, time.monotonic() - started, locator.store.folder)
    return {"shared_by": "manifest", "files": len(paths), "resolved_here": resolved_here}


def _through_torch_distributed(dist: Any, reader: BaseRangeReader, locator: HubLocator,
                               paths: list[str]) -> dict[str, Any]:
    assert locator.store is not None
    rank, started = dist.get_rank(), time.monotonic()
    payload: dict[str, Any] | None = None
    got: dict[str, Resolved] = {}
    board: JobBoard | None = None
    if rank == 0:
        got = resolve_all(locator, paths)
        try:
            board = serve_board()
            for path, resolved in got.items():
                board.put(locator.scope, path, resolved)
        except (RuntimeError, OSError) as exc:  # the map still goes out; renewals stay with each machine
            log.warning("resolve='job': the job's board cannot be served (%s); URLs are renewed per machine", exc)
            board = None
        payload = {"scope": locator.scope, "board": list(board.address) if board is not None else None,
                   "entries": {path: r.as_dict() for path, r in got.items()}}
    box = [payload]
    dist.broadcast_object_list(box, src=0)
    received: dict[str, Any] = box[0] or {}
    if received.get("scope") != locator.scope:  # another token or revision: nothing of it may be used
        reader.close()
        log.warning("resolve='job': rank 0 reads this dataset with another token or revision; this rank "
                    "resolves its files through its machine only")
        return {"shared_by": "machine", "files": len(paths)}
    if rank != 0 or board is None:
        written = sum(locator.store.adopt(path, Resolved.from_dict(entry))
                      for path, entry in received["entries"].items())
        reader.close()
        log.debug("resolve='job': %d of %d entries written for this machine", written, len(received["entries"]))
    if received["board"] is not None:
        locator.store.write("job.json", {"board": received["board"]})
    if rank == 0 and board is not None:
        _renew_in_background(reader, locator, board, got)
        log.info("resolve='job': rank 0 resolved %d of %d files in %.1f s and renews them for the job",
                 len(got), len(paths), time.monotonic() - started)
    return {"shared_by": "torch.distributed", "files": len(paths), "entries": len(received["entries"])}


_renewers: dict[str, _Renewer] = {}
_renewers_lock = threading.Lock()


class _Renewer:
    """Rank 0's thread that resolves each URL of the job again before it expires and posts it on the board
    (at twice the margin readers renew at, so that they find the new one there)."""

    def __init__(self, reader: BaseRangeReader, locator: HubLocator, board: JobBoard) -> None:
        self.reader, self.locator, self.board = reader, locator, board
        self.due_at: dict[str, float] = {}  # path -> when to resolve it again (seconds since the epoch)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="job-resolve-renew", daemon=True)

    def add(self, entries: dict[str, Resolved]) -> None:
        with self.lock:
            for path, r in entries.items():
                self.due_at[path] = (r.expires_at or float("inf")) - 2 * renew_margin(r)

    def _run(self) -> None:
        while True:
            now = time.time()
            with self.lock:
                due = [p for p, t in self.due_at.items() if t <= now]
                next_at = min((t for t in self.due_at.values() if t > now), default=now + RENEW_CHECK_S)
            if not due:
                time.sleep(min(RENEW_CHECK_S, max(0.2, next_at - now)))
                continue
            renewed = resolve_all(self.locator, due, renew=True)
            try:
                for path, resolved in renewed.items():
                    self.board.put(self.locator.scope, path, resolved)
            except (RuntimeError, OSError) as exc:
                log.warning("resolve='job': the board refused a renewal (%s)", exc)
            self.add(renewed)
            with self.lock:  # those that failed are tried again after a pause, not in a loop
                for path in set(due) - set(renewed):
                    self.due_at[path] = time.time() + RENEW_CHECK_S


def _renew_in_background(reader: BaseRangeReader, locator: HubLocator, board: JobBoard,
                         entries: dict[str, Resolved]) -> None:
    with _renewers_lock:
        renewer = _renewers.get(locator.scope)
        if renewer is None:
            renewer = _renewers[locator.scope] = _Renewer(reader, locator, board)
            renewer.add(entries)
            renewer.thread.start()
            return
    renewer.add(entries)
    reader.close()
