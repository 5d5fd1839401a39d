"""What a streaming dataset holds per process.

Readers, threads and decoders (``_resources``, with the ``pid`` that opened them) belong to one process:
they are never pickled and are closed only there. The epoch counter (and whether it was set for the
next pass) is shared with DataLoader workers started from the dataset; a plain pickle gets a
private copy.
"""

from __future__ import annotations

import os
from multiprocessing.context import get_spawning_popen
from typing import Any


class LocalEpoch:
    """A process-local counter with the interface of ``multiprocessing.Value``."""

    def __init__(self, value: int) -> None:
        self.value = value


class ProcessLocal:
    """Mixin: ``close()``, garbage collection and pickling for ``_resources``, ``_epoch`` and
    ``_epoch_set`` (the epoch was set for the next pass)."""

    _resources: Any
    _epoch: Any
    _epoch_set: Any

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def close(self) -> None:
        """Release this process's readers and threads (also done when the dataset is garbage collected)."""
        if self._resources is not None and self._resources.pid == os.getpid():
            self._resources.close()
        self._resources = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_resources"] = None
        if get_spawning_popen() is None:  # plain pickling (not a worker start): private counters
            state["_epoch"] = LocalEpoch(self.epoch)
            state["_epoch_set"] = LocalEpoch(int(self._epoch_set.value))
        return state
