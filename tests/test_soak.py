"""End-to-end fault soak: StatefulDataLoader over an hf:// root whose CDN injects faults, for 3 epochs.

The Hub stand-in redirects to signed URLs, which all expire between epochs (while the persistent
workers hold them); the CDN is the fault proxy in front of nginx, failing 5 % of the GETs with a
mix of dropped connections, 5xx, 429 + Retry-After, stalls and short bodies. Small ranges (no
coalescing, tiny splits) make many requests, so every fault kind is met many times.
"""

from __future__ import annotations

import functools
import multiprocessing
import shutil
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import FetchError
from lerobot_stream_loader.synthetic.checks import read_frame_index
from tests.support.faults import record_worker_pid, rss, snapshot, wait_released, worker_pids
from tests.support.servers import HubStandIn

pytestmark = pytest.mark.soak

TOKEN = "hf_soak_token_0123456789"
KINDS = ("drop", "drop_body", "500", "503", "429", "stall", "short")
EPOCHS = 3
RSS_GROWTH_LIMIT = 24 << 20
# short backoffs; a generous time budget per range, as the test machine may be busy
FAST = {"retries": 6, "backoff": 0.02, "backoff_max": 0.1, "total_timeout": 60.0,
        "connect_timeout": 2.0, "read_timeout": 1.0}


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=6, cameras=2, frames_per_episode=(10, 18), codec="h264", gop=6,
                       episodes_per_video_file=3, episodes_per_data_file=3, size=(64, 48), seed=21)


@pytest.fixture
def hub(sample, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch):
    cdn = fault_proxy_factory(nginx_factory(sample).url, fault_rate=0.05, fault_kinds=KINDS, seed=8,
                              stall_seconds=2.0, retry_after=0.2)
    cdn.schedule(*[step for kind in KINDS for step in (kind, "pass", "pass")])  # each kind at least once
    hub = hub_factory(sample, cdn=cdn, token=TOKEN)
    hub.add_dataset("soak/sample")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hub


def _ports(hub: HubStandIn) -> list[int]:
    return [urlsplit(hub.url).port, urlsplit(hub.cdn.url).port, hub.cdn.upstream[1]]


@pytest.mark.timeout(150)
def test_three_epochs_through_faults_exactly_once_and_no_leaks(hub, tmp_path: Path) -> None:
    ports = _ports(hub)
    multiprocessing.Value("q", 0, lock=False)  # the process-wide shared-memory arena exists before the snapshot
    before = snapshot(ports)
    dataset = StreamingLeRobot(
        "hf://datasets/soak/sample", backend="http", shuffle=True, seed=5, pool_size=2, num_workers=2,
        return_uint8=True, prefetch_episodes=2, fetch_threads=2,
        reader_options={**FAST, "endpoint": hub.url, "token": TOKEN, "coalesce_gap": None, "split_size": 512})
    total = dataset.meta.total_frames
    assert len(dataset) == total, "one rank: no padding"
    loader = StatefulDataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True,
                                worker_init_fn=functools.partial(record_worker_pid, tmp_path))
    cams = dataset.meta.video_keys
    orders, memory = [], []
    for epoch in range(EPOCHS):
        dataset.set_epoch(epoch)
        if epoch:
            hub.expire_all()  # the URLs the persistent workers hold die between epochs
        seen: list[int] = []
        for batch in loader:
            indices = batch["index"].tolist()
            seen += indices
            for key in cams:
                assert [read_frame_index(f) for f in batch[key]] == indices, f"wrong frame from {key}"
        counts = Counter(seen)
        assert sorted(counts) == list(range(total)) and set(counts.values()) == {1}, \
            f"epoch {epoch}: not every index exactly once: {[i for i, c in counts.items() if c != 1]}"
        orders.append(seen)
        pids = worker_pids(tmp_path)
        assert len(pids) == 2
        memory.append({w: rss(pid) for w, pid in pids.items()})
    assert len({tuple(o) for o in orders}) == EPOCHS, "each epoch has its own order"
    assert worker_pids(tmp_path) == pids, "persistent workers were not restarted"
    for worker in pids:
        growth = memory[-1][worker] - memory[0][worker]
        assert growth < RSS_GROWTH_LIMIT, f"worker {worker} RSS grew by {growth >> 20} MiB over epochs 2-3"
    injected = {k: hub.cdn.counts[k] for k in KINDS}
    assert all(injected.values()), f"every fault kind must have been injected: {injected}"
    expired = sum(r.fault == "gate403" for r in hub.cdn.seen)
    assert expired >= 2 * len(dataset.meta.video_files), f"expired signed URLs were met {expired} times"
    assert all(a in (None, f"Bearer {TOKEN}") for a in hub.authorizations)
    assert not any("authorization" in r.headers for r in hub.cdn.seen), "the token must never reach the CDN"

    del loader, dataset, batch
    extra = wait_released(before, ports)
    assert not extra.threads, f"threads left after the loader is gone: {sorted(extra.threads)}"
    assert not extra.fds, f"file descriptors left after the loader is gone: {sorted(extra.fds)}"


def _first_error(loader: StatefulDataLoader) -> BaseException:
    """The exception iterating ``loader`` raises; its workers are shut down before this returns."""
    batches = iter(loader)
    try:
        for _ in batches:
            pass
    except Exception as exc:  # noqa: BLE001 - returned for inspection
        exc.__traceback__ = None  # its frames hold the iterator: let it go now, not at a later gc
        return exc
    finally:
        del batches
    raise AssertionError("no error was raised")


@pytest.fixture
def doomed(sample, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(sample, root)
    return root


@pytest.mark.timeout(90)
@pytest.mark.parametrize("failure", ["deleted", "always_503"])
def test_unrecoverable_file_gives_one_clear_error(doomed: Path, nginx_factory, fault_proxy_factory,
                                                  failure: str) -> None:
    dataset_probe = StreamingLeRobot(doomed)
    victim = dataset_probe.meta.episode(4).videos["observation.images.cam1"].path
    proxy = fault_proxy_factory(nginx_factory(doomed).url)
    dataset = StreamingLeRobot(proxy.url, backend="http", return_uint8=True,
                               reader_options={**FAST, "retries": 3, "total_timeout": 5.0})
    if failure == "deleted":
        (doomed / victim).unlink()
    else:
        proxy.gate = lambda method, path, headers: 503 if urlsplit(path).path.endswith(victim) else None
    error = _first_error(StatefulDataLoader(dataset, batch_size=4, num_workers=2))
    assert isinstance(error, FetchError), repr(error)
    message = str(error)
    assert victim in message, message
    assert failure != "deleted" or isinstance(error, FileNotFoundError), "a file gone is FileNotFoundError"
    assert "episode" in message and "camera observation.images.cam1" in message, message


@pytest.mark.timeout(120)
def test_resume_through_faults_is_exact(hub) -> None:
    def loader(state=None) -> StatefulDataLoader:
        dataset = StreamingLeRobot(
            "hf://datasets/soak/sample", backend="http", shuffle=True, seed=9, pool_size=2, return_uint8=True,
            reader_options={**FAST, "endpoint": hub.url, "token": TOKEN, "coalesce_gap": None, "split_size": 512})
        dataset.set_epoch(1)
        result = StatefulDataLoader(dataset, batch_size=4, num_workers=2)
        if state is not None:
            result.load_state_dict(state)
        return result

    whole = [b["index"].tolist() for b in loader()]
    first = loader()
    head, state = [], None
    for k, batch in enumerate(first):
        head.append(batch["index"].tolist())
        if k == 3:
            state = first.state_dict()
            break
    del first
    hub.expire_all()
    rest = [b["index"].tolist() for b in loader(state)]
    assert head + rest == whole, "the resumed run differs from the uninterrupted one"
    assert sum(hub.cdn.counts[k] for k in KINDS) > len(KINDS), "faults were injected"
