"""hf:// roots through a Hub stand-in (HF_ENDPOINT) that redirects to signed URLs on a CDN stand-in."""

from __future__ import annotations

import logging
import traceback

import pytest

from lerobot_stream_loader.storage import AccessDenied, HttpRangeReader, RemoteFileNotFound, open_reader
from lerobot_stream_loader.storage.hf import parse_hf_root

pytestmark = pytest.mark.timeout(60)

TOKEN = "hf_testtoken_do_not_leak_0123456789"
FAST = {"backoff": 0.01, "backoff_max": 0.02, "connect_timeout": 1.0, "read_timeout": 1.0}


@pytest.fixture
def cdn(random_files, nginx_factory, fault_proxy_factory):
    """The CDN stand-in: a proxy (checking signatures, recording headers) in front of nginx."""
    return fault_proxy_factory(nginx_factory(random_files).url, methods=("GET", "HEAD"))


@pytest.fixture
def hub(random_files, cdn, hub_factory, monkeypatch):
    hub = hub_factory(random_files, cdn=cdn, token=TOKEN)
    hub.add_dataset("org/ds")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


def test_reads_resolve_once_per_file_and_match(hub, cdn, random_files):
    local = (random_files / "a.bin").read_bytes()
    with open_reader("hf://datasets/org/ds", **FAST) as reader:
        assert isinstance(reader, HttpRangeReader)
        assert reader.size("a.bin") == len(local)
        got = reader.read_many([("a.bin", i * 10_000, 500) for i in range(5)] + [("sub/b.bin", 3, 4)])
        assert got[:5] == [local[i * 10_000 : i * 10_000 + 500] for i in range(5)]
        assert got[5] == (random_files / "sub/b.bin").read_bytes()[3:7]
        assert reader.read("a.bin", 7, 3) == local[7:10]
        assert reader.stats.resolves == 2
    assert hub.resolves == {"a.bin": 1, "sub/b.bin": 1}
    assert [s.method for s in cdn.seen] == ["GET"] * 3  # sizes come from X-Linked-Size


def test_authorization_goes_to_the_hub_only(hub, cdn, random_files, nginx_factory):
    nginx = nginx_factory(random_files)
    before = len(nginx.access_log())
    with open_reader("hf://datasets/org/ds", **FAST) as reader:
        reader.read("a.bin", 0, 100)
        reader.read("sub/b.bin", 0, 100)
    assert hub.authorizations == [f"Bearer {TOKEN}"] * 2
    assert cdn.seen and all("authorization" not in s.headers for s in cdn.seen)
    served = nginx.access_log()[before:]
    assert len(served) == 2 and all(e.authorization == "-" for e in served)


def test_size_from_the_cdn_when_the_redirect_lacks_it(hub, cdn, random_files):
    hub.send_linked_size = False
    with open_reader("hf://datasets/org/ds", **FAST) as reader:
        assert reader.size("sub/b.bin") == (random_files / "sub/b.bin").stat().st_size
        assert reader.read("sub/b.bin", 0, 3) == (random_files / "sub/b.bin").read_bytes()[:3]
    assert [s.method for s in cdn.seen] == ["HEAD", "GET"]
    assert all("authorization" not in s.headers for s in cdn.seen)
    assert hub.authorizations == [f"Bearer {TOKEN}"]


def test_expired_signed_url_is_resolved_again(hub, cdn, random_files):
    hub.uses_per_signature = 3
    local = (random_files / "a.bin").read_bytes()
    with open_reader("hf://datasets/org/ds", coalesce_gap=None, **FAST) as reader:
        for i in range(5):
            assert reader.read("a.bin", i, 10) == local[i : i + 10]
        assert hub.resolves["a.bin"] == 2 and reader.stats.reresolves == 1
        hub.expire_all()
        assert reader.read("a.bin", 50, 10) == local[50:60]
        assert hub.resolves["a.bin"] == 3 and reader.stats.reresolves == 2
        assert reader.stats.retries == 0
    assert sum(1 for s in cdn.seen if s.fault == "gate403") == 2


def test_still_refused_after_resolving_again_is_permission_error(hub, caplog):
    hub.uses_per_signature = 0
    caplog.set_level(logging.DEBUG)
    reader = open_reader("hf://datasets/org/ds", **FAST)
    with pytest.raises(PermissionError) as err:
        reader.read("a.bin", 0, 10)
    reader.close()
    assert isinstance(err.value, AccessDenied)
    assert hub.resolves["a.bin"] == 2
    text = str(err.value)
    assert "hf://datasets/org/ds@main/a.bin bytes 0-9" in text and "even after resolving" in text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("lerobot_stream_loader")]
    shown = [text, repr(err.value), "".join(traceback.format_exception(err.value)), repr(reader),
             repr(reader.stats), *ours]
    assert all(TOKEN not in s for s in [*shown, caplog.text])
    assert "sig=" not in "".join(shown)  # signed URLs are credentials too


def test_missing_token_and_missing_file(hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with open_reader("hf://datasets/org/ds", token=False, **FAST) as reader:
        with pytest.raises(PermissionError, match="HF_TOKEN") as err:
            reader.size("a.bin")
        assert "hf://datasets/org/ds@main/a.bin" in str(err.value)
    with open_reader("hf://datasets/org/ds", token=TOKEN, **FAST) as reader:
        with pytest.raises(RemoteFileNotFound, match="hf://datasets/org/ds@main/none.bin"):
            reader.read("none.bin", 0, 1)
        assert TOKEN not in repr(reader)
    assert hub.authorizations == [None, f"Bearer {TOKEN}"]


def test_bucket_and_revision_roots(hub, random_files):
    local = (random_files / "sub/b.bin").read_bytes()
    hub.add_bucket("org/bkt", "sub")
    hub.add_dataset("org/ds", "sub", revision="refs/pr/1")
    for root, options in [
        ("hf://buckets/org/bkt", {}),
        ("hf://datasets/org/ds@refs/pr/1", {}),
        ("hf://datasets/org/ds", {"revision": "refs/pr/1"}),
        ("hf://datasets/org/ds@main/sub", {}),
    ]:
        with open_reader(root, **options, **FAST) as reader:
            assert reader.read("b.bin", 1000, 20) == local[1000:1020], root


def test_transient_cdn_faults_are_retried_without_resolving_again(hub, cdn, random_files):
    cdn.schedule("503", "drop")
    with open_reader("hf://datasets/org/ds", **FAST) as reader:
        assert reader.read("c.bin", 0, 10) == (random_files / "c.bin").read_bytes()
        assert reader.stats.retries == 2 and reader.stats.reresolves == 0


@pytest.mark.parametrize(
    ("url", "revision", "expected"),
    [
        ("hf://datasets/a/b", None, ("datasets", "a/b", "main", "")),
        ("hf://datasets/a/b@v1.0/x/y", None, ("datasets", "a/b", "v1.0", "x/y")),
        ("hf://datasets/a/b@refs/pr/3/x", None, ("datasets", "a/b", "refs/pr/3", "x")),
        ("hf://datasets/a/b@refs%2Fpr%2F3", None, ("datasets", "a/b", "refs/pr/3", "")),
        ("hf://datasets/a/b/x", "dev", ("datasets", "a/b", "dev", "x")),
        ("hf://buckets/a/b/p/q/", None, ("buckets", "a/b", None, "p/q")),
    ],
)
def test_parse_hf_root(url, revision, expected):
    root = parse_hf_root(url, revision)
    assert (root.kind, root.repo_id, root.revision, root.prefix) == expected


@pytest.mark.parametrize(
    "url", ["hf://models/a/b", "hf://datasets/a", "hf://buckets/a/b@v1", "hf://datasets/a/b/../c"]
)
def test_parse_hf_root_refuses(url):
    with pytest.raises(ValueError):
        parse_hf_root(url)
