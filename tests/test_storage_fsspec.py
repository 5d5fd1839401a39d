"""fsspec backend: local paths, file:// URLs and S3 (moto server + s3fs)."""

from __future__ import annotations

import random
import threading

import pytest

from lerobot_stream_loader.errors import FetchError
from lerobot_stream_loader.storage import FsspecRangeReader, open_reader

pytestmark = pytest.mark.timeout(60)

FILES = ("a.bin", "sub/b.bin", "c.bin")


def _check_random_ranges(reader, random_files, seed: int) -> None:
    rng = random.Random(seed)
    local = {name: (random_files / name).read_bytes() for name in FILES}
    reqs = []
    for _ in range(30):
        name = rng.choice(FILES)
        offset = rng.randrange(len(local[name]))
        reqs.append((name, offset, rng.randint(0, min(len(local[name]) - offset, 100_000))))
    assert reader.read_many(reqs) == [local[n][o : o + k] for n, o, k in reqs]
    for name in FILES:
        assert reader.size(name) == len(local[name])


@pytest.mark.parametrize("form", ["path", "str", "file-url"])
def test_local_roots(form, random_files):
    root = {"path": random_files, "str": str(random_files), "file-url": f"file://{random_files}"}[form]
    with open_reader(root, max_workers=3, split_size=50_000) as reader:
        assert isinstance(reader, FsspecRangeReader)
        _check_random_ranges(reader, random_files, seed=1)
        assert reader.stats.split_parts > 0


def test_local_errors(random_files):
    with open_reader(random_files, retries=1, backoff=0.01) as reader:
        with pytest.raises(FileNotFoundError, match="nope.bin"):
            reader.read("nope.bin", 0, 1)
        with pytest.raises(FileNotFoundError, match="nope.bin"):
            reader.size("nope.bin")
        with pytest.raises(FetchError, match=r"c.bin bytes 5-14: beyond the end of the file \(10 bytes\)"):
            reader.read("c.bin", 5, 10)
        for bad in ("../x", "/etc/passwd", "sub/../../x"):
            with pytest.raises(ValueError):
                reader.read(bad, 0, 1)


def test_handles_are_per_thread_and_closed(random_files):
    reader = open_reader(random_files, max_workers=2)
    local = (random_files / "a.bin").read_bytes()
    results = {}

    def work(i: int) -> None:
        results[i] = reader.read("a.bin", i * 100, 50)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: local[i * 100 : i * 100 + 50] for i in range(3)}
    handles = list(reader._all_handles)
    assert len(handles) == 3
    reader.close()
    assert all(h.closed for h in handles)


def test_s3_through_moto(random_files, moto_s3):
    url = moto_s3.upload_folder(random_files, "datasets", prefix="org/ds")
    options = {"storage_options": moto_s3.storage_options, "max_workers": 3, "split_size": 1 << 20}
    with open_reader(url, **options) as reader:
        assert isinstance(reader, FsspecRangeReader)
        _check_random_ranges(reader, random_files, seed=2)
        assert reader.stats.fetches >= 1
        with pytest.raises(FileNotFoundError, match="org/ds/missing.bin"):
            reader.read("missing.bin", 0, 4)
    with open_reader(url + "/sub", **options) as reader:
        assert reader.read("b.bin", 10, 5) == (random_files / "sub/b.bin").read_bytes()[10:15]


def test_revision_only_for_hf_roots(random_files):
    with pytest.raises(ValueError, match="revision"):
        open_reader(random_files, revision="main")
