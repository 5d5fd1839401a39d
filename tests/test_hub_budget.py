"""Requests to the Hub's resolve endpoint: one resolve per file per machine (or job) and URL lifetime,
renewal before expiry and after a refusal, the rate limit's 429s waited out (docs/reliability.md)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
import threading
import time
from itertools import zip_longest
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import FetchError
from lerobot_stream_loader.meta.episode_files import files_of_episodes
from lerobot_stream_loader.storage import open_reader
from lerobot_stream_loader.storage.hub_limits import limited_wait, parse_rate_limit
from lerobot_stream_loader.storage.resolve_cache import Resolved, renew_margin, resolve_scope, url_expiry

pytestmark = pytest.mark.timeout(120)

TOKEN = "hf_budget_token_0123456789abcdef"
FAST = {"backoff": 0.01, "backoff_max": 0.02, "connect_timeout": 2.0, "read_timeout": 2.0}
FILES = [f"f{i}.bin" for i in range(8)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub-files")
    for i, name in enumerate(FILES):
        (root / name).write_bytes(bytes([i]) * (1000 + i))
    return root


@pytest.fixture
def hub(files, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch):
    hub = hub_factory(files, cdn=fault_proxy_factory(nginx_factory(files).url), token=TOKEN)
    hub.add_dataset("org/ds")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


# ----------------------------------------------------------------------------------------------- parsing
def test_rate_limit_headers_and_url_expiry() -> None:
    headers = {"ratelimit": '"resolvers";r=0;t=58', "ratelimit-policy": '"fixed window";"resolvers";q=5000;w=300',
               "retry-after": "30"}
    limit = parse_rate_limit(headers)
    assert limit is not None and (limit.remaining, limit.reset_s, limit.quota, limit.window_s) == (0, 58, 5000, 300)
    assert limit.describe() == '0 of 5000 "resolvers" requests left in the 300 s window, reset in 58 s'
    assert limited_wait(headers) == (58, limit)  # an exhausted budget: its reset, not the shorter Retry-After
    assert limited_wait({"retry-after": "7"})[0] == 7 and limited_wait({})[0] is None
    assert parse_rate_limit({"ratelimit": "garbage"}) is None
    assert url_expiry("https://cdn/x?Expires=1700000000&Signature=abc") == 1700000000
    assert url_expiry("https://cdn/x?X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600") == 1704067200 + 3600
    assert url_expiry("https://cdn/x?sig=1") is None
    one_hour = Resolved("https://cdn/x", 1, expires_at=3600.0, resolved_at=0.0)
    assert renew_margin(one_hour) == 300 and not one_hour.fresh(now=3300) and one_hour.fresh(now=3299)
    scopes = {resolve_scope("https://hub", "datasets", "a/b", rev, token)
              for rev in ("main", "v1") for token in ("t1", "t2", None)}
    assert len(scopes) == 6


# ------------------------------------------------------------------------------------- one machine's readers
def _read_all(reader, names=FILES) -> None:
    for name in names:
        assert reader.read(name, 0, 10) == bytes([FILES.index(name)]) * 10


def test_readers_of_a_machine_resolve_each_file_once(hub, tmp_path) -> None:
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as a, \
            open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as b:
        _read_all(a)
        _read_all(b)
        assert a.size("f3.bin") == b.size("f3.bin") == 1003 and b.etag("f3.bin") == a.etag("f3.bin") is not None
        assert (a.stats.resolves, b.stats.resolves) == (8, 0)
    assert set(hub.resolves.values()) == {1}
    with open_reader("hf://datasets/org/ds", resolve="process", cache_dir=tmp_path, **FAST) as alone:
        _read_all(alone, FILES[:2])  # today's behaviour: each process resolves what it opens
    assert hub.resolves["f0.bin"] == 2


def test_entries_are_private_and_per_token(hub, tmp_path) -> None:
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as reader:
        _read_all(reader, ["f0.bin"])
    hub.token = None  # the stand-in now takes anyone: another token must not see the first one's URLs
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, token="hf_other_token_xyz", **FAST) as other:
        _read_all(other, ["f0.bin"])
    assert hub.resolves["f0.bin"] == 2
    written = [p for p in (tmp_path / "resolved").rglob("*") if p.is_file()]
    assert written and all(TOKEN.encode() not in p.read_bytes() for p in written)
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in written if p.suffix == ".json")
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in (tmp_path / "resolved").iterdir() if p.is_dir())


def test_expiry_renews_once_for_the_machine(hub, tmp_path) -> None:
    hub.url_lifetime = 3
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as a, \
            open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as b:
        _read_all(a, FILES[:2])
        _read_all(b, FILES[:2])
        time.sleep(2.2)  # past the renewal point (1 s before expiry), before the URL dies
        _read_all(b, FILES[:2])
        _read_all(a, FILES[:2])
        assert (a.stats.resolves, b.stats.resolves) == (2, 2) and a.stats.reresolves == b.stats.reresolves == 0
    assert hub.resolves["f0.bin"] == hub.resolves["f1.bin"] == 2
    assert not [s for s in hub.cdn.seen if s.fault.startswith("gate")], "no URL was used past its expiry"


def test_a_refused_url_is_resolved_again_once_for_the_machine(hub, tmp_path) -> None:
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as a, \
            open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as b:
        _read_all(a, ["f0.bin"])
        _read_all(b, ["f0.bin"])
        hub.expire_all()  # a 403 from the CDN: a's refresh resolves, b's takes a's new URL
        _read_all(a, ["f0.bin"])
        _read_all(b, ["f0.bin"])
        assert (a.stats.reresolves, b.stats.reresolves) == (1, 1)
    assert hub.resolves["f0.bin"] == 2


def test_a_borrowed_url_refused_too_is_resolved_once_more(hub, tmp_path) -> None:
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as a, \
            open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as b:
        _read_all(a, ["f0.bin"])
        _read_all(b, ["f0.bin"])
        hub.expire_all()
        _read_all(a, ["f0.bin"])  # a's new URL is the machine's now ...
        hub.expire_all()  # ... and dies before b, still holding the first one, reads again
        _read_all(b, ["f0.bin"])
        assert b.stats.reresolves == 2 and b.stats.resolves == 1
    assert hub.resolves["f0.bin"] == 3


def test_threads_of_a_reader_keep_their_own_refusals_apart(hub, tmp_path) -> None:
    """One thread's request with a borrowed URL is refused while another thread of the same reader has
    already resolved the file itself: the refused URL still counts as borrowed (so the first thread may
    resolve once more), and asking again past it gives the other thread's fresh URL, with no resolve."""
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as a, \
            open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) as b:
        _read_all(a, ["f0.bin"])
        locator = b.hub_locator
        borrowed = locator.target("f0.bin")  # the machine's URL, a's
        assert locator.borrowed(borrowed.url) and hub.resolves["f0.bin"] == 1
        hub.expire_all()
        own = locator.renew("f0.bin")  # another thread of b resolves the file itself
        assert locator.borrowed(borrowed.url) and not locator.borrowed(own.url)
        assert locator.target("f0.bin", refused=borrowed.url) == own and hub.resolves["f0.bin"] == 2
        _read_all(b, ["f0.bin"])
        assert b.stats.reresolves == 0


def test_a_missing_file_is_asked_for_once_per_machine(hub, tmp_path) -> None:
    readers = [open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) for _ in range(3)]
    for reader in readers:
        with pytest.raises(FileNotFoundError, match="none.bin"):
            reader.size("meta/none.bin")
        reader.close()
    assert hub.resolve_requests["meta/none.bin"] == 1


def test_a_429_storm_is_waited_out(hub, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="lerobot_stream_loader")
    hub.resolver_budget, hub.window_s = 3, 1.0
    readers = [open_reader("hf://datasets/org/ds", cache_dir=tmp_path, **FAST) for _ in range(3)]
    errors: list[BaseException] = []

    def run(reader, names) -> None:
        try:
            _read_all(reader, names)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r, FILES[i::2] + FILES)) for i, r in enumerate(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in readers:
        r.close()
    assert not errors, errors
    assert hub.limited >= 1 and set(hub.resolves.values()) == {1}
    assert sum(r.stats.throttled for r in readers) >= 1 and sum(r.stats.failures for r in readers) == 0
    said = [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()]
    # the reader that met the 429 names the limit; others may log their wait first (threads race)
    assert any("requests left" in line and '"resolvers"' in line for line in said), said
    assert hub.limited <= 3 * len(FILES), "held readers wait instead of asking again"


def test_a_rate_limit_past_resolve_timeout_fails_at_once(hub, tmp_path) -> None:
    hub.resolver_budget, hub.window_s = 1, 60.0
    with open_reader("hf://datasets/org/ds", cache_dir=tmp_path, resolve_timeout=2.0, **FAST) as reader:
        _read_all(reader, ["f0.bin"])
        started = time.monotonic()
        with pytest.raises(FetchError, match="rate limit"):
            reader.read("f1.bin", 0, 1)
        assert time.monotonic() - started < 1.5


# ---------------------------------------------------------------------------------- datasets, ranks, workers
@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=8, cameras=2, frames_per_episode=(6, 9), codec="h264", gop=3,
                       episodes_per_video_file=2, episodes_per_data_file=2, size=(64, 48), seed=71)


def _sample_hub(sample, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch, **options):
    hub = hub_factory(sample, cdn=fault_proxy_factory(nginx_factory(sample).url), token=TOKEN, **options)
    hub.add_dataset("org/sample")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


def epoch_2x2(cache_dir: Path, resolve: str) -> int:
    """One epoch of 2 ranks x 2 workers read together on this machine (the Hub in HF_ENDPOINT); the
    number of data and video files read."""
    ranks = [StreamingLeRobot("hf://datasets/org/sample@main", rank=r, world_size=2, shuffle=True, seed=1,
                              return_uint8=True, cache_dir=cache_dir, resolve=resolve) for r in range(2)]
    loaders = [iter(DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")) for ds in ranks]
    indices = [int(i) for pair in zip_longest(*loaders) for batch in pair if batch is not None
               for i in batch["index"]]
    assert sorted(set(indices)) == list(range(ranks[0].meta.total_frames))
    return len(files_of_episodes(ranks[0].meta.source, ranks[0].episodes))


def _data_and_video(hub) -> int:
    """Requests to /resolve/ for data and video files (every one the Hub would count)."""
    return sum(n for path, n in hub.resolve_requests.items() if path.startswith(("data/", "videos/")))


@pytest.mark.timeout(240)
def test_two_ranks_two_workers_resolve_each_file_about_once(sample, nginx_factory, fault_proxy_factory,
                                                            hub_factory, monkeypatch, tmp_path) -> None:
    per_file = {}
    for resolve in ("machine", "process"):
        hub = _sample_hub(sample, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch)
        files = epoch_2x2(tmp_path / resolve, resolve)
        per_file[resolve] = _data_and_video(hub) / files
    print(f"resolves per data or video file read, 2 ranks x 2 workers: {per_file}")
    assert per_file["machine"] <= 1.25
    assert per_file["process"] > per_file["machine"]


def test_job_wide_through_a_shared_folder(sample, nginx_factory, fault_proxy_factory, hub_factory,
                                          monkeypatch, tmp_path) -> None:
    hub = _sample_hub(sample, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch)
    first = StreamingLeRobot("hf://datasets/org/sample@main", rank=0, world_size=2, cache_dir=tmp_path, resolve="job")
    files = files_of_episodes(first.meta.source, first.episodes)
    assert {p: hub.resolves[p] for p in files} == dict.fromkeys(files, 1)  # every file, by the first process
    second = StreamingLeRobot("hf://datasets/org/sample@main", rank=1, world_size=2, cache_dir=tmp_path,
                              resolve="job")
    assert len(list(DataLoader(second, batch_size=4, num_workers=2, multiprocessing_context="fork"))) > 0
    assert _data_and_video(hub) == len(files), "the other rank and its workers resolved nothing"


def _rank_main(rank: int, port: int, cache_dir: str, done: multiprocessing.Queue) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ds = StreamingLeRobot("hf://datasets/org/sample@main", cache_dir=cache_dir, resolve="job")
        paths = sorted(files_of_episodes(ds.meta.source, ds.episodes))
        result = {}
        if rank == 1:  # a worker of another machine: its entries came with the map, renewals from the board
            with open_reader("hf://datasets/org/sample@main", cache_dir=cache_dir, resolve="job") as reader:
                store = reader.hub_locator.store
                first = {path: store.get(path).url for path in paths}  # written from rank 0's map
                for turn in range(3):
                    if turn:
                        time.sleep(3.2)  # past the renewal point of every URL held
                    for path in paths:
                        reader.read(path, 0, 8)
                result = {"resolves": reader.stats.resolves, "reresolves": reader.stats.reresolves,
                          "renewed": sum(store.get(path).url != first[path] for path in paths) == len(paths)}
        dist.barrier()
        done.put((rank, result, paths))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_job_wide_through_torch_distributed(sample, nginx_factory, fault_proxy_factory, hub_factory,
                                            monkeypatch, tmp_path) -> None:
    from tests.support.servers import free_port

    hub = _sample_hub(sample, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch, url_lifetime=5)
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, str(tmp_path / f"machine{r}"), done)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((rank, (result, paths)) for rank, result, paths in (done.get(timeout=100) for _ in procs))
    for p in procs:
        p.join(20)
    assert all(p.exitcode == 0 for p in procs)
    result, paths = results[1]
    assert result == {"resolves": 0, "reresolves": 0, "renewed": True}, \
        "the other machine resolved nothing: its entries came with the map, their renewals from the board"
    assert all(hub.resolves[p] >= 2 for p in paths), "rank 0 renewed the job's URLs"
    assert not [s for s in hub.cdn.seen if s.fault.startswith("gate")], "no URL was used past its expiry"
