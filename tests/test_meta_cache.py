"""Metadata cache: once per machine (warm start = one request), offline use, stale copies, cold-start races."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lerobot_stream_loader.errors import DatasetFormatError
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.storage.local_cache import dataset_cache_dir


@pytest.fixture
def served(make_sample, tmp_path: Path, nginx_factory):
    root = tmp_path / "ds"
    shutil.copytree(make_sample(episodes=6, cameras=2, frames_per_episode=(8, 14), size=(64, 48), seed=3), root)
    return root, nginx_factory(root)


def _meta_requests(server, before: int) -> list[str]:
    return [e.uri for e in server.access_log()[before:]]


def _same(a, b) -> None:
    assert a.info == b.info and a.tasks == b.tasks
    assert sorted(a.episode_table.columns) == sorted(b.episode_table.columns)
    for name, column in a.episode_table.columns.items():
        np.testing.assert_array_equal(column, b.episode_table.columns[name])
    assert [vars(e) for e in a.episodes] == [vars(e) for e in b.episodes]


@pytest.mark.timeout(120)
def test_warm_start_is_one_request_and_offline_needs_none(served, tmp_path: Path, monkeypatch) -> None:
    root, server = served
    cache = tmp_path / "cache"
    before = len(server.access_log())
    cold = load_meta(server.url, cache_dir=cache)
    cold_requests = _meta_requests(server, before)
    assert any("meta/episodes/" in uri for uri in cold_requests)
    before = len(server.access_log())
    warm = load_meta(server.url, cache_dir=cache)
    warm_requests = _meta_requests(server, before)
    print(f"cold start {len(cold_requests)} requests, warm start {len(warm_requests)}: {warm_requests}")
    assert len(warm_requests) <= 4 and len(warm_requests) < len(cold_requests)
    _same(cold, warm)
    assert (dataset_cache_dir(server.url, cache) / "meta").is_dir()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.access_log())
    offline = load_meta(server.url, cache_dir=cache)
    assert _meta_requests(server, before) == [], "offline: not a single request"
    _same(cold, offline)
    with pytest.raises(DatasetFormatError, match="HF_HUB_OFFLINE is set and the metadata cache"):
        load_meta(server.url, cache_dir=tmp_path / "cold")


@pytest.mark.timeout(120)
def test_a_changed_episodes_file_is_read_again(served, tmp_path: Path) -> None:
    """info.json unchanged, an episodes file rewritten (another size): the cached copy is not used."""
    root, server = served
    cache = tmp_path / "cache"
    load_meta(server.url, cache_dir=cache)
    episodes = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(episodes)
    for column in ("videos/observation.images.cam0/from_timestamp", "videos/observation.images.cam0/to_timestamp"):
        shifted = pa.array([v + 100.0 for v in table.column(column).to_pylist()], table.schema.field(column).type)
        table = table.set_column(table.column_names.index(column), column, shifted)
    pq.write_table(table, episodes, compression="none")
    before = len(server.access_log())
    again = load_meta(server.url, cache_dir=cache)
    gets = [e for e in server.access_log()[before:] if e.method == "GET" and "meta/episodes/" in e.uri]
    assert gets, "the changed episodes file is read again"
    assert again.total_episodes == 6
    warm = load_meta(server.url, cache_dir=cache)  # the stale entry was replaced, not kept
    for meta in (again, warm):
        assert meta.episode(0).videos["observation.images.cam0"].from_timestamp >= 100.0


@pytest.mark.timeout(120)
def test_local_roots_are_cached_too_and_workers_map_their_columns(served, tmp_path: Path) -> None:
    root, _ = served
    meta = load_meta(root, cache_dir=tmp_path / "cache")
    assert meta.episode_table.folder is not None, "the columns come from the machine's cache"
    blob = pickle.dumps(meta)
    assert b"dataset_from_index" not in blob
    _same(meta, pickle.loads(blob))
    (root / "meta/tasks.parquet").touch()  # a newer file: the entry is checked, read again and replaced
    _same(meta, load_meta(root, cache_dir=tmp_path / "cache"))


_COLD_START = textwrap.dedent(
    """
    import sys
    from lerobot_stream_loader.meta.dataset_meta import load_meta
    meta = load_meta(sys.argv[1], cache_dir=sys.argv[2])
    print(meta.total_episodes, int(meta.episode_table.length.sum()))
    """
)


@pytest.mark.timeout(240)
def test_ranks_starting_together_read_the_episodes_once(served, tmp_path: Path) -> None:
    root, server = served
    cache = tmp_path / "cache"
    before = len(server.access_log())
    repo = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", _COLD_START, server.url, str(cache)], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=200) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    expected = load_meta(root)
    assert {out.strip() for out, _ in outputs} == {f"{expected.total_episodes} {expected.total_frames}"}
    episode_gets = [e for e in server.access_log()[before:]
                    if e.method == "GET" and "meta/episodes/" in e.uri and e.status in (200, 206)]
    print(f"4 processes on a cold cache: {len(episode_gets)} GET(s) of the episodes table")
    assert len(episode_gets) == 1, "one process fills the cache, the others wait and read it"
    entries = [p for p in (dataset_cache_dir(server.url, cache) / "meta").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and not list((dataset_cache_dir(server.url, cache) / "meta").glob(".staging-*"))


@pytest.mark.timeout(120)
def test_workers_get_the_cached_columns_by_reference(served, tmp_path: Path) -> None:
    """A pickled meta (what a spawn worker receives) names the cache folder instead of carrying the columns;
    the worker memory-maps them (pages shared by every process of the machine)."""
    _, server = served
    meta = load_meta(server.url, cache_dir=tmp_path / "cache")
    assert meta.episode_table.folder is not None
    blob = pickle.dumps(meta)
    column_bytes = sum(c.nbytes for c in meta.episode_table.columns.values())
    print(f"pickled meta: {len(blob)} bytes for {column_bytes} bytes of columns")
    assert column_bytes > 0 and b"dataset_from_index" not in blob
    again = pickle.loads(blob)
    _same(meta, again)
    assert isinstance(again.episode_table.length, np.memmap)


def test_an_unusable_cache_folder_costs_a_warning_not_the_dataset(served, tmp_path: Path) -> None:
    root, _ = served
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot cache the metadata"):
        meta = load_meta(root, cache_dir=blocker / "cache")
    _same(meta, load_meta(root, use_cache=False))
