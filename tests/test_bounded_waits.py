"""Every wait on storage ends within its documented bound, on both backends, against real loopback
servers that stall: before connecting, before the first byte, in the middle of a body, and while
every pooled connection is busy."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from lerobot_stream_loader.errors import FetchError
from lerobot_stream_loader.storage import open_reader

pytestmark = pytest.mark.timeout(90)

BACKENDS = ["http", "fsspec"]
QUICK = {"connect_timeout": 0.5, "read_timeout": 0.5, "backoff": 0.05, "backoff_max": 0.1}
SLACK_S = 1.5  # scheduling on a busy 2-core machine


@pytest.fixture
def stalled(random_files, nginx_factory, fault_proxy_factory):
    """``stalled(kind)``: a proxy whose every GET meets the fault ``kind`` for a minute."""
    def make(kind: str):
        return fault_proxy_factory(nginx_factory(random_files).url, stall_seconds=60.0,
                                   fault_for=lambda method, path: kind if method == "GET" else "pass")
    return make


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["stall", "stall_body"])
def test_stalled_response_ends_within_total_timeout(stalled, backend: str, kind: str) -> None:
    proxy = stalled(kind)
    total = 3.0
    with open_reader(proxy.url, backend=backend, retries=100, total_timeout=total, **QUICK) as reader:
        reader.size("a.bin")  # HEAD is not stalled
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"a\.bin bytes 0-99999"):
            reader.read("a.bin", 0, 100_000)
        took = time.monotonic() - start
    assert took < total + QUICK["read_timeout"] + SLACK_S, f"{backend}/{kind}: gave up after {took:.1f}s"
    assert proxy.counts[kind] >= 2, "each stalled attempt ends at the read timeout, so several fit"


@pytest.fixture
def unaccepting() -> Iterator[str]:
    """A URL whose server never accepts: its listen backlog is full, so new connects hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue (backlog 0 still queues one or two)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    for s in fillers:
        s.close()
    server.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_connect_that_never_completes_ends_within_total_timeout(unaccepting: str, backend: str) -> None:
    total = 2.0
    start = time.monotonic()
    with pytest.raises(FetchError):
        with open_reader(unaccepting, backend=backend, retries=100, total_timeout=total, **QUICK) as reader:
            reader.size("a.bin")
    took = time.monotonic() - start
    assert took < total + QUICK["connect_timeout"] + SLACK_S, f"{backend}: gave up after {took:.1f}s"


def test_pool_wait_is_bounded(stalled, caplog) -> None:
    """One connection, held by a stalled fetch: a second caller waits at most ``pool_timeout`` per try."""
    caplog.set_level(logging.DEBUG, logger="lerobot_stream_loader")
    proxy = stalled("stall_body")
    with open_reader(proxy.url, backend="http", max_workers=1, retries=100, total_timeout=2.0,
                     pool_timeout=0.3, connect_timeout=0.5, read_timeout=30.0, backoff=0.05) as reader:
        reader.size("a.bin")
        holder = threading.Thread(target=lambda: pytest.raises(FetchError, reader.read, "a.bin", 0, 100_000),
                                  daemon=True)
        holder.start()
        time.sleep(0.3)  # the only connection now waits on a stalled body for 30 s
        start = time.monotonic()
        with pytest.raises(FetchError, match="a.bin bytes 200000-200009"):
            reader.read("a.bin", 200_000, 10)
        took = time.monotonic() - start
    assert took < 2.0 + SLACK_S, f"the pool wait ended after {took:.1f}s"
    assert "bytes 200000-200009: attempt 1 failed (PoolTimeout" in caplog.text


def test_fsspec_s3_runs_one_attempt_per_try_with_our_timeouts(random_files, moto_s3) -> None:
    url = moto_s3.upload_folder(random_files, "bounded-waits")
    with open_reader(url, backend="fsspec", storage_options=moto_s3.storage_options, connect_timeout=1.5,
                     read_timeout=2.5) as reader:
        assert reader.read("a.bin", 10, 5) == (random_files / "a.bin").read_bytes()[10:15]
        assert reader.fs.retries == 1, "s3fs's own retry loop is off: our retries are the only ones"
        config = reader.fs.config_kwargs
        assert (config["connect_timeout"], config["read_timeout"]) == (1.5, 2.5)
        assert config["retries"]["total_max_attempts"] == 1
