"""Shared pytest configuration: fixtures live in tests/support/ plugin modules."""

pytest_plugins = [
    "tests.support.servers",
    "tests.support.plain_http",
    "tests.support.sample_fixtures",
    "tests.support.stall_fixtures",
]


def pytest_configure(config) -> None:  # noqa: ANN001 -- pytest's hook signature
    """One cache folder per test session (metadata, sidecars), never the user's own."""
    import os
    import tempfile

    os.environ.setdefault("LEROBOT_STREAM_CACHE", tempfile.mkdtemp(prefix="lerobot-stream-cache-"))
