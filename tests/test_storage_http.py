"""Native HTTP and fsspec-over-HTTP backends against a real nginx on 127.0.0.1."""

from __future__ import annotations

import random
import threading
import time

import pytest

from lerobot_stream_loader.errors import FetchError
from lerobot_stream_loader.storage import (
    FsspecRangeReader,
    HttpRangeReader,
    RangeReader,
    ReadRequest,
    RemoteFileNotFound,
    open_reader,
)

pytestmark = pytest.mark.timeout(60)

FILES = ("a.bin", "sub/b.bin", "c.bin")


def _random_requests(random_files, rng: random.Random, count: int) -> list[ReadRequest]:
    out = []
    for _ in range(count):
        name = rng.choice(FILES)
        size = (random_files / name).stat().st_size
        offset = rng.randrange(size)
        out.append(ReadRequest(name, offset, rng.randint(0, min(size - offset, 200_000))))
    return out


@pytest.mark.parametrize("backend", ["http", "fsspec"])
def test_random_ranges_match_local_file(backend, random_files, nginx_factory):
    nginx = nginx_factory(random_files)
    with open_reader(nginx.url, backend=backend, max_workers=4, split_size=64 << 10) as reader:
        assert isinstance(reader, RangeReader)
        assert isinstance(reader, HttpRangeReader if backend == "http" else FsspecRangeReader)
        for name in FILES:
            assert reader.size(name) == (random_files / name).stat().st_size
        reqs = _random_requests(random_files, random.Random(7), 40)
        got = reader.read_many(reqs)
        for req, data in zip(reqs, got, strict=True):
            local = (random_files / req.path).read_bytes()
            assert data == local[req.offset : req.offset + req.length], req
        one = reqs[0]
        assert reader.read(*one) == got[0]
        assert reader.stats.requests == len(reqs) + 1
        assert reader.stats.bytes == sum(r.length for r in reqs) + one.length


def test_keep_alive_reuses_connections(random_files, nginx_factory):
    nginx = nginx_factory(random_files)
    before = len(nginx.access_log())
    with open_reader(nginx.url, max_workers=2, coalesce_gap=None) as reader:
        for i in range(12):
            reader.read("a.bin", i * 1000, 100)
        reader.read_many([("sub/b.bin", i * 100_000, 10) for i in range(10)])
    entries = nginx.access_log()[before:]
    gets = [e for e in entries if e.method == "GET"]
    assert len(gets) == 22
    assert all(e.status == 206 for e in gets)
    assert len({e.connection for e in entries}) <= 2
    assert max(e.connection_requests for e in entries) >= 11


def test_coalescing_counts_match_server_requests(random_files, nginx_factory):
    nginx = nginx_factory(random_files)
    local = (random_files / "sub/b.bin").read_bytes()
    # three clusters of close requests in b.bin (gap 4 KiB), plus one far request
    reqs = [ReadRequest("sub/b.bin", base + k * 1500, 1000) for base in (0, 1 << 20, 2 << 20) for k in range(4)]
    reqs.append(ReadRequest("sub/b.bin", (3 << 20) - 6000, 5000))
    before = len(nginx.access_log())
    with open_reader(nginx.url, coalesce_gap=4096, split_size=None, max_workers=3) as reader:
        got = reader.read_many(reqs)
        stats = reader.stats.snapshot()
    assert got == [local[r.offset : r.offset + r.length] for r in reqs]
    gets = [e for e in nginx.access_log()[before:] if e.method == "GET"]
    assert len(gets) == 4 == stats["fetches"]
    assert stats["coalesced"] == 9 and stats["split_parts"] == 0
    assert sorted(e.range for e in gets)[0] == "bytes=0-5499"


def test_large_range_is_split_into_parallel_parts(random_files, nginx_factory):
    nginx = nginx_factory(random_files)
    local = (random_files / "sub/b.bin").read_bytes()
    before = len(nginx.access_log())
    with open_reader(nginx.url, split_size=1 << 20, max_workers=3) as reader:
        data = reader.read("sub/b.bin", 100, len(local) - 100)
        assert data == local[100:]
        assert reader.stats.split_parts == 2
    gets = [e for e in nginx.access_log()[before:] if e.method == "GET"]
    assert len(gets) == 3 and sum(e.body_bytes for e in gets) == len(local) - 100


@pytest.mark.parametrize("backend", ["http", "fsspec"])
def test_missing_file_and_range_past_end(backend, random_files, nginx_factory):
    nginx = nginx_factory(random_files)
    with open_reader(nginx.url, backend=backend, retries=1, backoff=0.01) as reader:
        with pytest.raises(FileNotFoundError, match="nope.bin"):
            reader.read("nope.bin", 0, 10)
        with pytest.raises(FetchError, match="c.bin"):
            reader.read("c.bin", 5, 10)
        assert reader.read("c.bin", 5, 0) == b""
        assert reader.stats.failures == 2


def test_missing_file_size_is_not_found(random_files, nginx_factory):
    with open_reader(nginx_factory(random_files).url) as reader:
        with pytest.raises(RemoteFileNotFound, match="nope.bin"):
            reader.size("nope.bin")


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "a/../../x", "http://evil/x", "", "C:/x"])
@pytest.mark.parametrize("backend", ["http", "fsspec"])
def test_paths_cannot_escape_the_root(bad, backend, random_files, nginx_factory):
    with open_reader(nginx_factory(random_files).url, backend=backend) as reader:
        with pytest.raises(ValueError):
            reader.read(bad, 0, 1)
        with pytest.raises(ValueError):
            reader.size(bad)


def test_closed_reader_refuses_and_close_is_idempotent(random_files, nginx_factory):
    reader = open_reader(nginx_factory(random_files).url)
    reader.read_many([("a.bin", 0, 10), ("sub/b.bin", 0, 10)])
    assert any(t.name.startswith(reader.thread_name_prefix) for t in threading.enumerate())
    reader.close()
    reader.close()  # never waits: fetch threads end right after it, or when an abandoned fetch returns
    deadline = time.monotonic() + 20.0  # an abandoned fetch still running ends when it returns
    while any(t.name.startswith(reader.thread_name_prefix) for t in threading.enumerate()):
        assert time.monotonic() < deadline, "fetch threads outlived close() by 20 s"
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match="closed"):
        reader.read("a.bin", 0, 1)


def test_open_reader_options():
    with pytest.raises(ValueError, match="unknown backend"):
        open_reader("http://127.0.0.1:9/x", backend="ftp")
    with pytest.raises(TypeError):
        open_reader("http://127.0.0.1:9/x", no_such_option=1)
    with open_reader("http://127.0.0.1:9/x", threads=3, timeout=2, retries=0) as reader:
        assert reader.max_workers == 3 and reader.retry.retries == 0
