"""Fixtures for stall tests: a wait that never ends during the test (a stand-in for a native deadlock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def never() -> Iterator[threading.Event]:
    """An event nothing sets during the test; set at teardown so abandoned threads can finish."""
    event = threading.Event()
    yield event
    event.set()
