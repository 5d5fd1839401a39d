"""Prompt shutdown: whatever storage is doing, DataLoader workers are gone within 2 s of a `break`, an
exception in the training loop, `del loader`, SIGTERM or SIGINT; short epochs leak no thread or fd.

Storage is nginx behind the fault proxy; once the first batch is out, every request for the files of
episodes >= 2 sends half its body and then nothing for a minute, so the workers sit in a stalled
fetch when they are told to stop.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from torch.utils.data import DataLoader

from lerobot_stream_loader import StreamingLeRobot
from tests.support.faults import record_worker_pid, snapshot, wait_released, worker_pids

pytestmark = pytest.mark.timeout(120)

EXIT_LIMIT_S = 2.0
_LATER_FILES = re.compile(r"file-0*([2-9]|\d\d+)\.(mp4|parquet)")


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=8, cameras=1, frames_per_episode=(6, 8), codec="h264", gop=3,
                       episodes_per_video_file=1, episodes_per_data_file=1, size=(64, 48), seed=61)


@pytest.fixture
def stalling(sample, nginx_factory, fault_proxy_factory):
    """A proxy that lets everything through until ``stalling.armed = True``, then stalls later files."""
    state = {"armed": False}

    def fault_for(method: str, path: str) -> str | None:
        return "stall_body" if state["armed"] and _LATER_FILES.search(path) else "pass"

    proxy = fault_proxy_factory(nginx_factory(sample).url, stall_seconds=60.0, fault_for=fault_for)
    proxy.state = state
    return proxy


def _dataset(url: str, backend: str = "http", **reader: Any) -> StreamingLeRobot:
    return StreamingLeRobot(url, backend=backend, return_uint8=True, prefetch_episodes=1, fetch_threads=1,
                            reader_options={"coalesce_gap": None, "split_size": 1024, **reader})


def _wait_stalled(proxy, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.counts["stall_body"] < 2:
        assert time.monotonic() < deadline, f"the workers never met the stall: {dict(proxy.counts)}"
        time.sleep(0.05)
    time.sleep(0.3)  # both workers are now inside a stalled fetch


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a process that exits between two looks counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _seconds_until_gone(pids, start: float, limit: float = 30.0) -> float:
    while any(_alive(p) for p in pids):
        assert time.monotonic() - start < limit, "workers still alive after 30 s"
        time.sleep(0.02)
    return time.monotonic() - start


def _loader(dataset, folder: Path, **options) -> DataLoader:
    return DataLoader(dataset, batch_size=2, num_workers=2,
                      worker_init_fn=functools.partial(record_worker_pid, folder), **options)


@pytest.mark.parametrize("backend", ["http", "fsspec"])
def test_break_while_storage_stalls(stalling, tmp_path: Path, backend: str) -> None:
    loader = _loader(_dataset(stalling.url, backend), tmp_path)
    for _batch in loader:
        stalling.state["armed"] = True
        _wait_stalled(stalling)
        pids = list(worker_pids(tmp_path).values())
        start = time.monotonic()
        break
    left_loop = time.monotonic() - start
    gone = _seconds_until_gone(pids, start)
    assert left_loop < EXIT_LIMIT_S and gone < EXIT_LIMIT_S, f"loop let go after {left_loop:.2f}s, workers gone after {gone:.2f}s"


def test_exception_in_the_training_loop_while_storage_stalls(stalling, tmp_path: Path) -> None:
    loader = _loader(_dataset(stalling.url), tmp_path)
    with pytest.raises(KeyError, match="training step failed"):
        for _batch in loader:
            stalling.state["armed"] = True
            _wait_stalled(stalling)
            pids = list(worker_pids(tmp_path).values())
            start = time.monotonic()
            raise KeyError("training step failed")
    gone = _seconds_until_gone(pids, start)
    assert gone < EXIT_LIMIT_S, f"workers gone after {gone:.2f}s"


def test_del_loader_with_persistent_workers_while_storage_stalls(stalling, tmp_path: Path) -> None:
    loader = _loader(_dataset(stalling.url), tmp_path, persistent_workers=True)
    batches = iter(loader)
    next(batches)
    stalling.state["armed"] = True
    _wait_stalled(stalling)
    pids = list(worker_pids(tmp_path).values())
    start = time.monotonic()
    del batches, loader
    gone = _seconds_until_gone(pids, start)
    assert gone < EXIT_LIMIT_S, f"workers gone after {gone:.2f}s"


_TRAINER = textwrap.dedent("""
    import functools, sys
    from pathlib import Path
    from torch.utils.data import DataLoader
    from lerobot_stream_loader import StreamingLeRobot
    from tests.support.faults import record_worker_pid

    url, folder = sys.argv[1], Path(sys.argv[2])
    dataset = StreamingLeRobot(url, backend="http", return_uint8=True, prefetch_episodes=1, fetch_threads=1,
                               reader_options={"coalesce_gap": None, "split_size": 1024})
    loader = DataLoader(dataset, batch_size=2, num_workers=2,
                        worker_init_fn=functools.partial(record_worker_pid, folder))
    for step, batch in enumerate(loader):
        if step == 0:
            (folder / "first-batch").touch()
""")


@pytest.mark.parametrize("how", ["SIGTERM to the trainer", "SIGINT to the process group",
                                 "SIGTERM to the process group"])
def test_signals_while_storage_stalls(stalling, tmp_path: Path, how: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    trainer = subprocess.Popen([sys.executable, "-c", _TRAINER, stalling.url, str(tmp_path)], env=env,
                               start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "first-batch").exists():
            assert trainer.poll() is None, trainer.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the trainer never got its first batch"
            time.sleep(0.05)
        stalling.state["armed"] = True
        _wait_stalled(stalling)
        pids = list(worker_pids(tmp_path).values())
        assert len(pids) == 2
        start = time.monotonic()
        if how == "SIGTERM to the trainer":
            trainer.send_signal(signal.SIGTERM)
        else:
            os.killpg(trainer.pid, signal.SIGINT if "SIGINT" in how else signal.SIGTERM)
        gone = _seconds_until_gone(pids, start)
        trainer.wait(60)  # its own interpreter teardown takes what it takes on a busy machine
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(10)
    assert gone < EXIT_LIMIT_S, f"workers gone after {gone:.2f}s"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [0, 2])
def test_fifty_short_epochs_with_break_leak_nothing(sample, nginx_factory, tmp_path: Path, workers: int) -> None:
    nginx = nginx_factory(sample)
    # one range-fetch thread per reader: a pool that grows on demand may reach its full size after the
    # warm-up, which a worker's thread count cannot tell from a leak (a leak does not end either way)
    dataset = _dataset(nginx.url, max_workers=1)
    loader = DataLoader(dataset, batch_size=2, num_workers=workers, persistent_workers=bool(workers),
                        worker_init_fn=functools.partial(record_worker_pid, tmp_path) if workers else None)

    def short_epochs(count: int) -> None:
        for _ in range(count):
            for _batch in loader:
                break

    short_epochs(5)  # warm up: reader, indexes, decoders, connections, thread-local state
    before = snapshot([nginx.port])
    in_workers = {pid: _own_threads_and_fds(pid, nginx.port) for pid in worker_pids(tmp_path).values()}
    short_epochs(45)
    deadline = time.monotonic() + 10.0  # a fetch of the last epoch may still be ending on its thread
    for pid, (threads, fds) in in_workers.items():
        now_threads, now_fds = _own_threads_and_fds(pid, nginx.port)
        while (now_threads > threads or now_fds > fds) and time.monotonic() < deadline:
            time.sleep(0.1)
            now_threads, now_fds = _own_threads_and_fds(pid, nginx.port)
        assert now_threads <= threads and now_fds <= fds, \
            f"worker {pid}: threads {threads} -> {now_threads}, fds {fds} -> {now_fds}"
    extra = wait_released(before, [nginx.port], timeout=10.0)
    fds = {fd for fd in extra.fds if "/dev/shm/torch_" not in fd}
    # the reader of this process lives across epochs; its pool may reach its full size late
    pool = [t for t in threading.enumerate() if t.name.startswith("range-fetch-")]
    threads = {t for t in extra.threads if not t.startswith("range-fetch-")}
    assert len(pool) <= 8 and not threads and not fds, f"left after 45 more epochs: {extra.threads} {fds}"


def _own_threads_and_fds(pid: int, server_port: int) -> tuple[int, int]:
    """Threads and fds of a worker, leaving out the shared-memory fds of batches torch has in flight
    and the reader's pooled connections to the server (at most its ``max_workers``, checked here)."""
    process = psutil.Process(pid)
    pooled = {c.fd for c in process.net_connections(kind="inet") if c.raddr and c.raddr.port == server_port}
    assert len(pooled) <= 8, f"worker {pid} holds {len(pooled)} connections to the server"
    fds = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds += int(name) not in pooled and "/dev/shm/torch_" not in os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return process.num_threads(), fds
