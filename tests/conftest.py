"""Shared pytest configuration: fixtures live in tests/support/ plugin modules."""

import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.support.servers",
    "tests.support.plain_http",
    "tests.support.sample_fixtures",
    "tests.support.stall_fixtures",
]


def pytest_configure(config) -> None:  # noqa: ANN001 -- pytest's hook signature
    """One cache folder per test session (metadata, sidecars), never the user's own."""
    import tempfile

    os.environ.setdefault("LEROBOT_STREAM_CACHE", tempfile.mkdtemp(prefix="lerobot-stream-cache-"))


@pytest.fixture(autouse=True)
def _scheduling_stays_normal() -> Iterator[None]:
    """No test may leave the test process on real-time scheduling (as an SVT-AV1 encoder opened without
    ``open_encoder`` does when run as root): everything started after it would inherit it."""
    yield
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        pytest.fail("the test left the test process on real-time scheduling", pytrace=False)
