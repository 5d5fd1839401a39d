"""Tool outputs at fsspec URLs: a real moto S3 server and fsspec's in-memory store.

A URL output must equal the local output of the same run file for file, be published only when
complete (``meta/info.json`` last), refuse read-only stores, overlapping or non-empty targets, and
leave nothing behind when anything fails.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
import warnings
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from lerobot_stream_loader.cli import main
from lerobot_stream_loader.fetch.sidecar import SIDECAR_PATH, SidecarLookup
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.storage import open_root_reader
from lerobot_stream_loader.tools import (
    ToolError,
    prepare,
    realign_parquets_to_videos,
    shuffle_episodes,
    validate,
)
from tests.test_tools_realign import SMALL, SOURCES
from tests.test_tools_shuffle import TINY

STAGGERED = SOURCES["av1-staggered"]


@pytest.fixture
def staging(tmp_path, monkeypatch) -> Path:
    """The system temp dir, pointed at an empty folder so that leftover staging folders show."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def new_bucket(moto_s3, create: bool = True) -> str:
    name = f"out-{uuid.uuid4().hex[:10]}"
    if create:
        moto_s3.client().create_bucket(Bucket=name)
    return name


def s3_tree(moto_s3, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object below ``prefix``, read with boto3 (not through the code under test)."""
    client = moto_s3.client()
    names = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
             for o in page.get("Contents", [])]
    return {name[len(prefix) + 1:]: client.get_object(Bucket=bucket, Key=name)["Body"].read() for name in names}


def local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.timeout(60)
def test_realign_to_s3_equals_a_local_realign(make_sample, moto_s3, tmp_path, staging):
    source = make_sample(**STAGGERED)
    local = Path(realign_parquets_to_videos(source, tmp_path / "local").output)
    bucket = new_bucket(moto_s3)
    url = f"s3://{bucket}/aligned/ds"
    result = realign_parquets_to_videos(source, url, output_storage_options=moto_s3.storage_options)
    assert result.output == url and result.cut_video_files > 0
    remote = s3_tree(moto_s3, bucket, "aligned/ds")
    assert remote == local_tree(local)
    meta = load_meta(url, storage_options=moto_s3.storage_options)
    assert (meta.total_episodes, meta.total_frames) == (load_meta(source).total_episodes, result.frames)
    report = validate(url, storage_options=moto_s3.storage_options)
    assert report.ok and report.aligned is True, report.problems
    assert list(staging.iterdir()) == []


@pytest.mark.timeout(90)
def test_shuffle_from_s3_to_s3_equals_a_local_shuffle(make_sample, moto_s3, tmp_path, staging):
    source = make_sample(**TINY)
    options = {"seed": 3, "max_workers": 1, "max_episodes_per_file": 2}
    local = Path(shuffle_episodes(source, tmp_path / "local", **options).output)
    bucket = new_bucket(moto_s3)
    src_url = moto_s3.upload_folder(source, bucket, "src")
    url = f"s3://{bucket}/shuffled"
    # the output inherits the source's storage options (same protocol)
    result = shuffle_episodes(src_url, url, storage_options=moto_s3.storage_options, **options)
    assert result.output == url
    assert s3_tree(moto_s3, bucket, "shuffled") == local_tree(local)
    assert validate(url, storage_options=moto_s3.storage_options).ok
    assert list(staging.iterdir()) == []
    with pytest.raises(ValueError, match=f"{url}/inside overlaps the source"):
        shuffle_episodes(url, f"{url}/inside", storage_options=moto_s3.storage_options, **options)


@pytest.mark.timeout(60)
def test_a_non_empty_target_is_refused_then_replaced_without_stale_objects(make_sample, moto_s3, tmp_path):
    source = make_sample(**SMALL)
    bucket = new_bucket(moto_s3)
    old = {"keep.txt": b"mine", "meta/info.json": b"{}", "data/chunk-009/file-009.parquet": b"old"}
    client = moto_s3.client()
    for name, body in old.items():
        client.put_object(Bucket=bucket, Key=f"ds/{name}", Body=body)
    client.put_object(Bucket=bucket, Key="ds-sibling/x", Body=b"neighbour")
    url = f"s3://{bucket}/ds"
    with pytest.raises(FileExistsError, match=f"{url} is not empty"):
        realign_parquets_to_videos(source, url, output_storage_options=moto_s3.storage_options)
    assert s3_tree(moto_s3, bucket, "ds") == old
    realign_parquets_to_videos(source, url, overwrite=True, output_storage_options=moto_s3.storage_options)
    local = Path(realign_parquets_to_videos(source, tmp_path / "local").output)
    assert s3_tree(moto_s3, bucket, "ds") == local_tree(local)
    assert s3_tree(moto_s3, bucket, "ds-sibling") == {"x": b"neighbour"}


@pytest.mark.timeout(60)
def test_a_failure_before_publishing_leaves_the_target_as_it_was(make_sample, moto_s3, staging):
    source = make_sample(**SMALL)
    bucket = new_bucket(moto_s3)
    url = f"s3://{bucket}/ds"

    def explode(folder: Path) -> None:
        assert (folder / "meta/info.json").is_file()  # the finished local copy
        raise RuntimeError("injected failure")

    with pytest.raises(ToolError, match=f"nothing was written to {url}: RuntimeError: injected failure"):
        realign_parquets_to_videos(source, url, output_storage_options=moto_s3.storage_options,
                                   before_commit=explode)
    assert s3_tree(moto_s3, bucket, "ds") == {}
    realign_parquets_to_videos(source, url, output_storage_options=moto_s3.storage_options)
    published = s3_tree(moto_s3, bucket, "ds")
    with pytest.raises(ToolError, match=url):
        realign_parquets_to_videos(source, url, overwrite=True, output_storage_options=moto_s3.storage_options,
                                   before_commit=explode)
    assert s3_tree(moto_s3, bucket, "ds") == published
    assert list(staging.iterdir()) == []


@pytest.mark.timeout(60)
def test_an_upload_into_a_missing_bucket_fails_cleanly(make_sample, moto_s3, staging):
    source = make_sample(**SMALL)
    bucket = new_bucket(moto_s3, create=False)
    url = f"s3://{bucket}/ds"
    with pytest.raises(ToolError, match=f"realign of .* failed, nothing was written to {url}"):
        realign_parquets_to_videos(source, url, output_storage_options=moto_s3.storage_options)
    assert bucket not in {b["Name"] for b in moto_s3.client().list_buckets().get("Buckets", [])}
    assert list(staging.iterdir()) == []


class FailingMemoryFileSystem(MemoryFileSystem):
    """fsspec's in-memory store, except that writing ``meta/info.json`` fails (a store fault).

    ``puts`` records every upload attempted, in order."""

    protocol = "failmem"
    puts: list[str] = []

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).replace("failmem://", "memory://", 1))

    def put_file(self, lpath, rpath, *args, **kwargs):
        self.puts.append(str(rpath))
        if str(rpath).endswith("meta/info.json"):
            raise OSError("injected store fault")
        return super().put_file(lpath, rpath, *args, **kwargs)


@pytest.mark.timeout(60)
def test_a_failed_upload_removes_everything_it_uploaded(make_sample, staging):
    fsspec.register_implementation("failmem", FailingMemoryFileSystem, clobber=True)
    source = make_sample(**SMALL)
    root = f"/fail-{uuid.uuid4().hex[:10]}"
    store = fsspec.filesystem("memory")
    store.pipe({f"{root}/old/meta/info.json": b"{}", f"{root}/old/data/x.parquet": b"old"})
    try:
        for name in ("new", "old"):
            url = f"failmem://{root}/{name}"
            FailingMemoryFileSystem.puts.clear()
            with pytest.raises(ToolError, match=f"nothing was written to {url}.*injected store fault") as caught:
                realign_parquets_to_videos(source, url, overwrite=True)
            puts = [p.split(f"/{name}/", 1)[1] for p in FailingMemoryFileSystem.puts]
            assert puts[-1] == "meta/info.json" and len(puts) > len(load_meta(source).video_files)  # last
            assert store.find(f"{root}/{name}") == []
            assert ("previous dataset there was removed" in str(caught.value)) == (name == "old")
        assert list(staging.iterdir()) == []
    finally:
        store.rm(root, recursive=True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/ds", "https://127.0.0.1:9/ds", "hf://datasets/user/ds"])
def test_read_only_stores_are_refused_before_any_work(make_sample, staging, url):
    source = make_sample(**SMALL)
    with pytest.raises(ValueError, match=rf"{url}: .*cannot be written.*s3://, gs://, memory://"):
        realign_parquets_to_videos(source, url)
    with pytest.raises(ValueError, match="cannot be written"):
        prepare(source, url, shuffle=False)
    with pytest.raises(ValueError, match="cannot be written"):
        shuffle_episodes(source, url, seed=0)
    assert list(staging.iterdir()) == []


@pytest.mark.timeout(60)
def test_copy_videos_false_uses_and_keeps_videos_already_at_the_url(make_sample, moto_s3):
    source = make_sample(**SMALL)
    bucket = new_bucket(moto_s3)
    url = f"s3://{bucket}/ds"
    with pytest.raises(FileNotFoundError, match=f"{url}/videos/.* put the videos in place"):
        realign_parquets_to_videos(source, url, copy_videos=False, output_storage_options=moto_s3.storage_options)
    moto_s3.upload_folder(source / "videos", bucket, "ds/videos")
    videos = s3_tree(moto_s3, bucket, "ds/videos")
    for overwrite in (False, True):
        realign_parquets_to_videos(source, url, copy_videos=False, overwrite=overwrite,
                                   output_storage_options=moto_s3.storage_options)
        assert s3_tree(moto_s3, bucket, "ds/videos") == videos
        assert validate(url, storage_options=moto_s3.storage_options).ok


@pytest.mark.timeout(60)
@pytest.mark.parametrize("store", ["memory", "local", "s3"])
def test_prepare_validates_locally_then_publishes_a_sidecar_that_stays_fresh(make_sample, moto_s3, tmp_path,
                                                                             staging, store):
    source = make_sample(**SMALL)
    options = moto_s3.storage_options if store == "s3" else None
    url = {"memory": f"memory://prep-{uuid.uuid4().hex[:10]}/ds", "local": f"local://{tmp_path}/published/ds",
           "s3": f"s3://{new_bucket(moto_s3) if store == 's3' else ''}/ds"}[store]
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    try:
        result = prepare(source, url, shuffle=False, progress=True, output_storage_options=options)
        assert result.output == url and result.sidecar == f"{url}/{SIDECAR_PATH}"
        assert result.validation["ok"] and list(staging.iterdir()) == []
        meta = load_meta(url, storage_options=options)
        assert meta.total_episodes == load_meta(source).total_episodes
        assert validate(url, storage_options=options).ok
        with open_root_reader(meta.root, storage_options=options) as reader, warnings.catch_warnings():
            warnings.simplefilter("error")  # a stale entry warns, then is read from the MP4
            lookup = SidecarLookup(meta.root, reader)
            for name in meta.video_files:
                size = reader.size(name)
                assert lookup.index(name, size, lambda o, n, name=name: reader.read(name, o, n)) is not None
        local = Path(prepare(source, tmp_path / "local", shuffle=False).output)
        fs.invalidate_cache()
        remote = {name[len(path) + 1:]: fs.cat_file(name) for name in fs.find(path)}
        expected = local_tree(local)
        assert remote.keys() == expected.keys()
        assert remote == expected, "the sidecar depends on the files' content only, not where they are"
    finally:
        if store == "memory":
            fs.rm(path, recursive=True)


@pytest.mark.timeout(60)
def test_cli_realign_writes_to_s3_with_options_from_fsspec_config(make_sample, moto_s3, monkeypatch, capsys):
    source = make_sample(**SMALL)
    monkeypatch.setitem(fsspec.config.conf, "s3", moto_s3.storage_options)
    bucket = new_bucket(moto_s3)
    url = f"s3://{bucket}/cli"
    assert main(["realign", str(source), url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == url
    assert set(s3_tree(moto_s3, bucket, "cli")) >= {"meta/info.json", *load_meta(source).video_files}
    assert main(["validate", url]) == 0


@pytest.mark.timeout(120)
def test_cli_takes_storage_options_as_json(make_sample, moto_s3, tmp_path):
    """The installed entry point, in its own process: options reach S3 only through the flags."""
    import subprocess
    import sys

    source = make_sample(**SMALL)
    bucket = new_bucket(moto_s3)
    url = f"s3://{bucket}/flags"
    options = json.dumps(moto_s3.storage_options)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lerobot_stream_loader.cli", *args], capture_output=True,
                              text=True, timeout=100, env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true",
                                   # without the flags, S3 calls would go here and fail: never off this host
                                   "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"})

    done = cli("realign", str(source), url, "--output-storage-options", options, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == url
    assert cli("validate", url, "--storage-options", options).returncode == 0
    sidecar = tmp_path / "index.npz"
    done = cli("index", url, "--storage-options", options, "--backend", "fsspec", "-o", str(sidecar), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == len(load_meta(source).video_files) and sidecar.is_file()
    bad = cli("validate", url, "--storage-options", "[1, 2]")
    assert bad.returncode == 2 and "expected a JSON object" in bad.stderr
    unreachable = cli("realign", str(source), f"s3://{bucket}/other")  # no options: the dead endpoint above
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr
    assert f"lerobot-stream realign: error: StreamLoaderError: s3://{bucket}/other: cannot list the output" \
        in unreachable.stderr


@pytest.mark.timeout(120)
def test_url_output_is_staged_in_the_given_folder(make_sample, tmp_path):
    source = make_sample(**TINY)
    stage, seen = tmp_path / "shared-stage", []
    url = f"memory://staged-{uuid.uuid4().hex[:8]}"
    try:
        result = shuffle_episodes(source, url, seed=1, max_workers=1, staging_dir=stage,
                                  before_commit=lambda folder: seen.append(folder))
        assert result.output == url and seen and seen[0].parent == stage.resolve()
        assert list(stage.iterdir()) == []  # removed once published
        assert load_meta(url).total_episodes == load_meta(source).total_episodes
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)
