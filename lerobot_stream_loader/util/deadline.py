"""Run a call with a time limit, for native code that may block forever.

The call runs in a daemon thread; the caller waits at most ``limit_s`` seconds for it
(:func:`run_with_deadline`), or as long as it keeps making progress (:func:`run_while_progressing`).
A thread cannot be killed, so one that stalls is abandoned: being a daemon, it does not keep the
interpreter from exiting (``ThreadPoolExecutor`` threads would).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from ..errors import StalledError

T = TypeVar("T")

# What the call's thread leaves behind: (True, its result) or (False, the exception it raised).
_Outcome = list[tuple[Literal[True], T] | tuple[Literal[False], BaseException]]


def run_with_deadline(func: Callable[[], T], limit_s: float, what: str) -> T:
    """Return ``func()``, or raise ``StalledError`` naming ``what`` if it runs past ``limit_s`` seconds.

    An exception raised by ``func`` propagates unchanged. On expiry the call keeps running in its
    abandoned daemon thread and its eventual result is dropped.
    """
    if not limit_s > 0:
        raise ValueError(f"time limit for {what} must be positive, got {limit_s!r}")
    done, outcome = _start(func, what)
    if not done.wait(limit_s):
        raise StalledError(f"{what} did not finish within {limit_s:g} s (its thread was abandoned)")
    return _result(outcome)


def run_while_progressing(func: Callable[[], T], progress: Callable[[], int], stall_s: float, what: str) -> T:
    """Return ``func()``, or raise ``StalledError`` once ``progress()`` (a counter the call advances)
    has not changed for ``stall_s`` seconds. Long work is never cut short while it moves."""
    if not stall_s > 0:
        raise ValueError(f"stall limit for {what} must be positive, got {stall_s!r}")
    done, outcome = _start(func, what)
    seen, since = progress(), time.monotonic()
    while not done.wait(min(stall_s, 5.0) / 4):
        now, count = time.monotonic(), progress()
        if count != seen:
            seen, since = count, now
        elif now - since >= stall_s:
            raise StalledError(f"{what} made no progress for {stall_s:g} s (its thread was abandoned)")
    return _result(outcome)


def _start(func: Callable[[], T], what: str) -> tuple[threading.Event, _Outcome[T]]:
    done = threading.Event()
    outcome: _Outcome[T] = []

    def target() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as error:  # handed to the waiting caller
            outcome.append((False, error))
        finally:
            done.set()

    threading.Thread(target=target, name=f"deadline {what}"[:64], daemon=True).start()
    return done, outcome


def _result(outcome: _Outcome[T]) -> T:
    first = outcome[0]
    if first[0]:
        return first[1]
    raise first[1]
