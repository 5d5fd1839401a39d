"""Shared memory for batches, reused by a DataLoader worker once the training process lets go.

A worker hands each batch to the training process in shared memory. Fresh shared memory costs the
kernel a page fault and a zeroed page per 4 KiB: for 640x480 camera batches that costs more than
the copy into it (a third of a worker's time for uint8 batches, most of it for float32). A worker
that reuses the memory of batches the training process has dropped pays it once.

How the worker knows a batch was dropped: a reused storage travels with ``(flags, slot)``; where it
is rebuilt (the training process), a finalizer on the storage clears ``flags[slot]`` when its last
reference dies (tensors, views and numpy arrays of it keep it alive). The worker reuses a slot only
while its flag is clear, and otherwise allocates fresh shared memory as torch's ``default_collate``
does. A reused storage that the training process pickles on (to another process) keeps its flag set
for good, so memory another process may read is never written again.
"""

from __future__ import annotations

import os
import threading
import weakref
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
from torch.multiprocessing.reductions import reduce_storage

MIN_POOLED_BYTES = 1 << 18  # smaller tensors: fresh memory (page faults are few, a slot is not worth it)
MAX_SLOTS = 256

# A worker: data_ptr of each pooled storage -> (its pool's flags, slot, size); the pools keep them alive.
_pooled: dict[int, tuple[torch.Tensor, int, int]] = {}
# The consuming process: id of a rebuilt pooled storage -> (the finalizer releasing it, worker pid, slot).
_watched: dict[int, tuple[weakref.finalize, int, int]] = {}
_watch_lock = threading.Lock()
_reducer_installed = False


class BatchBuffers:
    """One worker's reusable shared-memory storages, grouped by size."""

    def __init__(self, max_slots: int = MAX_SLOTS) -> None:
        self.enabled = finalizers_follow_storage()
        self.flags = torch.zeros(max_slots, dtype=torch.uint8).share_memory_()  # 1: with the consumer
        self._by_size: dict[int, list[int]] = {}
        self._storages: list[torch.UntypedStorage] = []
        if self.enabled:
            _install_reducer()

    def storage(self, nbytes: int, keep: int, *, pooled_below: bool = False) -> torch.UntypedStorage:
        """Shared memory of ``nbytes``: a pooled storage the consumer has released, a new pooled one
        while fewer than ``keep`` of this size exist, else a fresh one that is not reused. Sizes
        under ``MIN_POOLED_BYTES`` are pooled only with ``pooled_below``."""
        slots = self._by_size.setdefault(nbytes, [])
        if self.enabled and (pooled_below or nbytes >= MIN_POOLED_BYTES):
            for slot in slots:
                if self.flags[slot] == 0:
                    self.flags[slot] = 1
                    return self._storages[slot]
            if len(slots) < keep and len(self._storages) < len(self.flags):
                storage = torch.UntypedStorage._new_shared(nbytes)
                slot = len(self._storages)
                self._storages.append(storage)
                _pooled[storage.data_ptr()] = (self.flags, slot, nbytes)
                slots.append(slot)
                self.flags[slot] = 1
                return storage
        return torch.UntypedStorage._new_shared(nbytes)

    def pooled_bytes(self) -> int:
        """Shared memory this worker keeps for reuse."""
        return sum(s.nbytes() for s in self._storages)


def finalizers_follow_storage() -> bool:
    """Whether a finalizer on a storage object waits for the last tensor using its memory (torch
    keeps a storage's Python object alive while C++ holds it); recycling relies on that."""
    fired: list[int] = []
    storage = torch.UntypedStorage(8)
    # torch's stubs lack set_(source, offset, size), which the runtime has (contiguous strides)
    tensor = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (8,))  # type: ignore[call-overload]
    weakref.finalize(storage, fired.append, 1)
    del storage
    early = bool(fired)
    del tensor
    return not early and fired == [1]


def _install_reducer() -> None:
    """Pickling a storage for another process (``ForkingPickler``): a pooled one travels with its
    (flags, slot); a pooled one received here and pickled on is never released; others as torch does."""
    global _reducer_installed
    if not _reducer_installed:
        ForkingPickler.register(torch.UntypedStorage, _reduce_storage)
        _reducer_installed = True


def _reduce_storage(storage: torch.UntypedStorage) -> Any:
    with _watch_lock:
        watched = _watched.pop(id(storage), None)
    if watched is not None:
        watched[0].detach()  # another process may map it now: keep its flag set for good
    reduced = reduce_storage(storage)
    pooled = _pooled.get(storage.data_ptr())
    if pooled is None or pooled[2] != storage.nbytes():
        return reduced
    flags, slot, _ = pooled
    return rebuild_released_when_dropped, (reduced, flags, slot, os.getpid())


def rebuild_released_when_dropped(reduced: Any, flags: torch.Tensor, slot: int, pid: int) -> torch.UntypedStorage:
    """Rebuild a pooled storage (torch's own way) and clear ``flags[slot]`` once nothing uses it."""
    rebuild, args = reduced
    storage = rebuild(*args)
    _install_reducer()
    with _watch_lock:
        if id(storage) in _watched:
            # The worker reused memory this process still holds: never happens while finalizers
            # follow storages (checked by the worker); fail loudly rather than hand out overwritten data.
            raise RuntimeError("a DataLoader worker reused shared memory of a batch still in use; "
                               "lerobot_stream_loader's batch buffer reuse is unsafe with this torch")
        _watched[id(storage)] = weakref.finalize(storage, _release, id(storage), flags, slot), pid, slot
    return storage


def reused_slot(tensor: torch.Tensor) -> tuple[int, int] | None:
    """(worker pid, slot) of the reusable batch memory ``tensor`` lies in; None for other memory."""
    with _watch_lock:
        watched = _watched.get(id(tensor.untyped_storage()))
    return None if watched is None else watched[1:]


def _release(key: int, flags: torch.Tensor, slot: int) -> None:
    with _watch_lock:
        _watched.pop(key, None)
    flags[slot] = 0
