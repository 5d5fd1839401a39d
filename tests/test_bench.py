"""Where the time goes: the loader's per-pass counters (``StreamingDataLoader.stats()``) and
``lerobot-stream bench`` naming what bounds a dataset (a slow server: the network; local disk: decode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lerobot_stream_loader import StreamingDataLoader, StreamingLeRobot, describe_stats
from tests.support.busy_server import BusyServerProcess

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def large(make_sample) -> Path:
    """640x480 frames: decoding, not the work per sample, is what a local pass spends its time on."""
    return make_sample(episodes=4, cameras=1, frames_per_episode=(60, 60), size=(640, 480),
                       episodes_per_video_file=4, seed=71)


@pytest.fixture(scope="module")
def small(make_sample) -> Path:
    return make_sample(episodes=4, cameras=2, frames_per_episode=(10, 14), size=(64, 48), episodes_per_video_file=2,
                       seed=72)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_stats_count_the_pass(small: Path, workers: int, tmp_path: Path) -> None:
    dataset = StreamingLeRobot(small, shuffle=True, cache_dir=tmp_path)
    loader = StreamingDataLoader(dataset, batch_size=4, num_workers=workers)
    samples = sum(len(batch["index"]) for batch in loader)
    stats = loader.stats()
    assert stats["samples"] == samples == len(dataset)
    assert stats["samples_decoded"] == samples and stats["frames_decoded"] == 2 * samples
    # an episode that the cut between two readers splits is fetched by both
    assert dataset.num_episodes <= stats["episodes_fetched"] <= dataset.num_episodes + max(0, workers - 1)
    assert stats["cache_misses"] + stats["cache_hits"] <= dataset.num_episodes  # the rest: fetches in flight
    assert stats["fetched_bytes"] > 0 and stats["fetches"] > 0 and stats["skipped_episodes"] == 0
    assert stats["seconds"]["decoder"] <= stats["seconds"]["decode"] <= stats["wall"] * max(1, workers)
    assert stats["seconds"]["collate"] > 0 and stats["samples_per_s"] > 0
    line = describe_stats(stats)
    assert f"{samples} samples" in line and "decode" in line
    next(iter(loader))  # a new pass counts from zero again
    assert loader.stats()["samples"] < samples or workers == 0


def _bench(source: str, tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "lerobot_stream_loader.cli", "bench", source, "--seconds", "6",
                           "--json"], capture_output=True, text=True, timeout=200, cwd=REPO,
                          env={"LEROBOT_STREAM_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_bench_says_decode_on_local_disk(large: Path, tmp_path: Path) -> None:
    report = _bench(str(large), tmp_path)
    assert report["bound"] == "decode", report
    assert report["limit_samples_per_s"] > 0 and report["samples_per_s"] > 0


def test_bench_says_network_behind_a_slow_server(large: Path, tmp_path: Path) -> None:
    server = BusyServerProcess(large, max_concurrent=64, drop_rate=0.0, latency=1.5)
    try:
        report = _bench(server.url, tmp_path)
    finally:
        server.stop()
    assert report["bound"] == "network", report
    assert "waiting on fetches" in report["why"] and "MB/s fetched" in report["why"]
    assert report["stats"]["seconds"]["fetch_wait"] >= 0.2 * report["stats"]["wall"] * report["stats"]["processes"]
