"""The Hub's rate-limit answers: how long a 429 asks to wait, and a hold every resolve of the machine obeys.

The Hub answers a resolve over its budget with 429, ``Retry-After`` (seconds) and the IETF draft's
headers: ``RateLimit: "resolvers";r=<left>;t=<seconds to reset>`` and ``RateLimit-Policy: "fixed
window";"resolvers";q=<quota>;w=<window seconds>``. A 429 sets a hold until the window resets: every
reader of the machine that shares resolved URLs (a file beside them in the cache folder) and every reader
of the process waits it out before its next resolve instead of asking again, and the wait is logged
once per process with the budget left.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from .resolve_cache import read_json, write_private

log = logging.getLogger(__name__)

_RATELIMIT = re.compile(r'"(?P<name>[^"]*)"\s*;\s*r\s*=\s*(?P<r>\d+)\s*;\s*t\s*=\s*(?P<t>\d+)')
_QUOTA = re.compile(r"(?:^|;)\s*q\s*=\s*(\d+)")
_WINDOW = re.compile(r"(?:^|;)\s*w\s*=\s*(\d+)")


def retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (a number or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RateLimit:
    """What the ``RateLimit`` / ``RateLimit-Policy`` headers say (None: not said)."""

    name: str
    remaining: int
    reset_s: float
    quota: int | None = None
    window_s: int | None = None

    def describe(self) -> str:
        """``'0 of 5000 "resolvers" requests left in the 300 s window, reset in 58 s'``."""
        of = f" of {self.quota}" if self.quota is not None else ""
        window = f" in the {self.window_s} s window" if self.window_s is not None else ""
        return f'{self.remaining}{of} "{self.name}" requests left{window}, reset in {self.reset_s:g} s'


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """The ``RateLimit`` header (and ``RateLimit-Policy`` when present); None without a readable one."""
    found = _RATELIMIT.search(headers.get("ratelimit") or "")
    if found is None:
        return None
    policy = headers.get("ratelimit-policy") or ""
    quota, window = _QUOTA.search(policy), _WINDOW.search(policy)
    return RateLimit(found.group("name"), int(found.group("r")), float(found.group("t")),
                     int(quota.group(1)) if quota else None, int(window.group(1)) if window else None)


def limited_wait(headers: Mapping[str, str]) -> tuple[float | None, RateLimit | None]:
    """Seconds a 429 asks to wait: the reset time of an exhausted ``RateLimit``, else ``Retry-After``."""
    limit = parse_rate_limit(headers)
    after = retry_after(headers.get("retry-after"))
    if limit is not None and limit.remaining == 0:
        return max(limit.reset_s, after or 0.0), limit
    return after, limit


class ResolveHold:
    """Until when resolves of one (endpoint, token) wait: kept in the process and, with ``path``, in a
    file every process of the machine reads before it resolves."""

    _process: dict[str, float] = {}  # key -> hold end (seconds since the epoch), shared by this process's readers
    _said: dict[str, float] = {}  # key -> end of the last hold this process has logged
    _lock = threading.Lock()

    def __init__(self, key: str, path: Path | None, where: str) -> None:
        self.key, self.path, self.where = key, path, where

    def remaining(self) -> float:
        """Seconds until resolves may go on (0 when not held)."""
        with self._lock:
            until = self._process.get(self.key, 0.0)
        if self.path is not None:
            data = read_json(self.path)
            if data is not None and isinstance(data.get("until"), int | float):
                until = max(until, float(data["until"]))
        return max(0.0, until - time.time())

    def note(self, wait: float, limit: RateLimit | None) -> None:
        """A 429 asked to wait ``wait`` seconds: hold every resolve that long; logged once per hold."""
        until = time.time() + wait
        with self._lock:
            before = self._process.get(self.key, 0.0)
            self._process[self.key] = max(before, until)
        if self.path is not None:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_private(self.path, json.dumps({"until": until}).encode())
            except OSError:
                pass  # the hold stays in this process
        with self._lock:
            new = until > self._said.get(self.key, 0.0) + 1.0
            if new:
                self._said[self.key] = until
        if new:
            said = limit.describe() if limit is not None else "the answer named no RateLimit"
            log.warning("%s: the Hub's resolver rate limit answered 429; resolves of this token on this "
                        "machine wait %.1f s (%s)", self.where, wait, said)

    def waiting(self, left: float) -> None:
        """This process waits ``left`` seconds on a hold another process noted: said once per hold."""
        until = time.time() + left
        with self._lock:
            new = until > self._said.get(self.key, 0.0) + 1.0
            if new:
                self._said[self.key] = until
        if new:
            log.info("%s: waiting %.1f s for the Hub's resolver rate limit (a 429 met by another reader of "
                     "this machine)", self.where, left)
