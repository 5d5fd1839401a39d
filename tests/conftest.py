"""Shared pytest configuration: fixtures live in tests/support/ plugin modules."""

pytest_plugins = [
    "tests.support.servers",
    "tests.support.plain_http",
    "tests.support.sample_fixtures",
    "tests.support.stall_fixtures",
]
