"""DaemonPool: shutdown never waits for running work, and wakes everyone waiting on cancelled work."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, wait

import pytest

from lerobot_stream_loader.util.daemon_pool import DaemonPool


@pytest.mark.timeout(30)
def test_shutdown_wakes_a_wait_on_queued_work():
    pool = DaemonPool(1, "test-pool")
    release, started = threading.Event(), threading.Event()

    def run() -> bool:
        started.set()
        return release.wait(10)

    running = pool.submit(run)
    queued = pool.submit(time.sleep, 0)
    assert started.wait(10)  # the first task runs before shutdown (a busy machine may start it late)
    woke = threading.Event()

    def waiter() -> None:
        wait([running, queued], return_when=FIRST_EXCEPTION)
        woke.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    pool.shutdown()
    release.set()
    assert woke.wait(5), "a wait() on work cancelled by shutdown never returned"
    assert queued.cancelled() and running.result() is True
