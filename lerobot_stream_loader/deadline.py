"""Run a call with a time limit, for native code that may block forever.

The call runs in a daemon thread; the caller waits at most ``limit_s`` seconds for it. A thread
cannot be killed, so one that never returns is abandoned: being a daemon, it does not keep the
interpreter from exiting (``ThreadPoolExecutor`` threads would).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from .errors import StalledError

T = TypeVar("T")


def run_with_deadline(func: Callable[[], T], limit_s: float, what: str) -> T:
    """Return ``func()``, or raise ``StalledError`` naming ``what`` if it runs past ``limit_s`` seconds.

    An exception raised by ``func`` propagates unchanged. On expiry the call keeps running in its
    abandoned daemon thread and its eventual result is dropped.
    """
    if not limit_s > 0:
        raise ValueError(f"time limit for {what} must be positive, got {limit_s!r}")
    done = threading.Event()
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as error:  # handed to the waiting caller below
            outcome.append((False, error))
        finally:
            done.set()

    threading.Thread(target=target, name=f"deadline {what}"[:64], daemon=True).start()
    if not done.wait(limit_s):
        raise StalledError(f"{what} did not finish within {limit_s:g} s (its thread was abandoned)")
    succeeded, value = outcome[0]
    if succeeded:
        return value  # type: ignore[return-value]
    raise value  # type: ignore[misc]
