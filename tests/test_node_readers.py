"""A node's worth of readers: 64 reader processes (ranks of one epoch) against one server on 127.0.0.1
that answers 429 with Retry-After beyond 32 concurrent requests and drops 2 % of connections.

Every process opens the dataset itself (metadata included) and streams its shard: together they
yield every frame exactly once, no reader gives up, and the retries of all readers together stay
within RETRY_FACTOR times the requests the server answered (counted by the readers' streaming range
readers, and by the server: every 429 or dropped connection, metadata reads included, meets one retry). The dataset is small (64 episodes of 4
frames at 64x48) so that the run stays affordable on a 2-core machine; the readers are forked from
this process, so they share its imported modules instead of importing torch 64 times.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import traceback
from collections import Counter
from pathlib import Path

import pytest

from lerobot_stream_loader import StreamingLeRobot
from tests.support.busy_server import BusyServerProcess

pytestmark = pytest.mark.timeout(600)

READERS = 64
LIMIT = 32
RETRY_FACTOR = 3.0


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=64, cameras=1, frames_per_episode=(4, 4), codec="h264", gop=2,
                       episodes_per_video_file=8, episodes_per_data_file=8, size=(64, 48), seed=81)


def _reader(url: str, rank: int, out: Path, go) -> None:
    """One reader process: open the dataset, stream rank ``rank``'s shard, report what it saw."""
    go.wait(300)  # all readers start together, as the ranks of a job do
    try:
        dataset = StreamingLeRobot(url, backend="http", rank=rank, world_size=READERS, return_uint8=True,
                                   prefetch_episodes=1, fetch_threads=1, reader_options={"max_workers": 2})
        indices = [int(item["index"]) for item in dataset]
        stats = dataset._resources.reader.stats.snapshot() if dataset._resources else {}
        report = {"rank": rank, "indices": indices, "retries": stats.get("retries", 0),
                  "throttled": stats.get("throttled", 0), "expected": len(dataset)}
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        report = {"rank": rank, "error": "".join(traceback.format_exception(exc))[-3000:]}
    (out / f"reader-{rank}.json").write_text(json.dumps(report))
    os._exit(0)  # a forked reader leaves without running the test process's exit handlers


def test_sixty_four_readers_share_a_busy_server(sample: Path, tmp_path: Path) -> None:
    server = BusyServerProcess(sample, max_concurrent=LIMIT, retry_after=1.0, drop_rate=0.02, latency=0.2, seed=3)
    readers: list = []
    try:
        context = multiprocessing.get_context("fork")
        go = context.Event()
        readers = [context.Process(target=_reader, args=(server.url, rank, tmp_path, go)) for rank in range(READERS)]
        for reader in readers:
            reader.start()
        go.set()
        for reader in readers:
            reader.join(timeout=500)
        assert not [r for r in readers if r.is_alive()], "readers still running after 500 s"
    finally:
        for reader in readers:
            if reader.is_alive():
                reader.kill()
        counts = server.stop()
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("reader-*.json"))]
    failed = [r for r in reports if "error" in r]
    assert len(reports) == READERS and not failed, f"{READERS - len(reports)} silent, failed: {failed[:2]}"
    seen = Counter(i for r in reports for i in r["indices"])
    total = 64 * 4
    assert sorted(seen) == list(range(total)) and set(seen.values()) == {1}, "every frame exactly once"
    assert all(len(r["indices"]) == r["expected"] for r in reports)
    retries = sum(r["retries"] for r in reports)
    answered = counts.get("served", 0)
    assert counts.get("throttled", 0) > 0 and counts.get("dropped", 0) > 0, f"the server was never busy: {counts}"
    assert counts.get("peak", 0) <= LIMIT
    assert retries <= RETRY_FACTOR * answered, f"{retries} retries for {answered} served requests: {counts}"
    refused = counts.get("throttled", 0) + counts.get("dropped", 0)  # each met by one retry, metadata reads included
    assert refused <= RETRY_FACTOR * answered, f"{refused} refused for {answered} served requests: {counts}"
    print(f"readers={READERS} served={answered} throttled={counts.get('throttled', 0)} "
          f"dropped={counts.get('dropped', 0)} retries={retries} ({retries / answered:.2f} per served request)")
