"""The per-worker episode cache: byte ranges only, budget, prefetch depth, errors, clean close."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from lerobot_stream_loader.errors import FetchError
from lerobot_stream_loader.fetch.episode_cache import EpisodeCache
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.storage import open_reader
from lerobot_stream_loader.synthetic.checks import read_frame_index


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=8, cameras=2, frames_per_episode=(10, 16), episodes_per_video_file=4,
                       episodes_per_data_file=4, size=(64, 48), seed=31)


def _fetch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("episode-fetch", "range-fetch"))}


@pytest.mark.timeout(60)
def test_get_returns_rows_and_decodable_mini_mp4s(sample: Path) -> None:
    from torchcodec.decoders import VideoDecoder

    meta = load_meta(sample)
    with open_reader(str(sample)) as reader, EpisodeCache(meta, reader) as cache:
        data = cache.get(5)
        episode = meta.episode(5)
        assert data.rows.num_rows == episode.length
        assert data.rows.column("index").to_pylist() == list(range(episode.from_index, episode.to_index))
        for key, video in data.videos.items():
            frames = VideoDecoder(video.mini_mp4).get_frames_at(list(range(episode.length))).data
            assert [read_frame_index(f) for f in frames] == list(range(episode.from_index, episode.to_index))
            assert len(video.mini_mp4) < (sample / episode.videos[key].path).stat().st_size
        assert reader.stats.fetches >= 1


@pytest.mark.timeout(60)
def test_budget_is_respected_for_released_episodes(sample: Path) -> None:
    meta = load_meta(sample)
    with open_reader(str(sample)) as reader:
        one = EpisodeCache(meta, reader)
        size = one.get(0).nbytes
        one.close()
        budget = int(size * 2.5)
        with EpisodeCache(meta, reader, budget_bytes=budget, prefetch_depth=2) as cache:
            for ep in meta.episode_indices:
                cache.get(ep)
                cache.release(ep)
                assert cache.stats.bytes_held <= budget
            assert cache.stats.evicted >= meta.total_episodes - 3
            assert cache.stats.peak_bytes_held <= budget + 2 * size  # in-flight fetches may land first


@pytest.mark.timeout(60)
def test_pinned_episodes_stay_and_prefetch_depth_bounds_in_flight(sample: Path) -> None:
    meta = load_meta(sample)
    with open_reader(str(sample)) as reader, EpisodeCache(meta, reader, budget_bytes=1, prefetch_depth=2) as cache:
        first = cache.get(0)
        for ep in meta.episode_indices[1:]:
            cache.prefetch(ep)
            assert cache.in_flight <= 2
        assert cache.get(0) is first, "a pinned episode is never evicted"
        deadline = time.monotonic() + 20
        while cache.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 0 in cache.held_episodes


@pytest.mark.timeout(60)
def test_fetch_error_names_episode_and_file_and_cache_stays_usable(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(sample, root)
    meta = load_meta(root)
    broken = meta.episode(6).videos["observation.images.cam0"].path
    (root / broken).write_bytes(b"\0" * 64)
    with open_reader(str(root)) as reader, EpisodeCache(meta, reader) as cache:
        cache.prefetch(6)
        with pytest.raises(Exception, match=rf"episode 6, camera observation.images.cam0: {broken}"):
            cache.get(6)
        assert cache.get(1).rows.num_rows == meta.episode(1).length
    (root / meta.episode(2).data_path).unlink()
    with open_reader(str(root)) as reader, EpisodeCache(meta, reader) as cache:
        with pytest.raises(FetchError, match=r"episode 2.*data/chunk-000/file-000.parquet"):
            cache.get(2)


@pytest.mark.timeout(60)
def test_close_leaves_no_threads(sample: Path) -> None:
    meta = load_meta(sample)
    before = _fetch_threads()
    reader = open_reader(str(sample))
    cache = EpisodeCache(meta, reader, threads=3)
    for ep in meta.episode_indices:
        cache.prefetch(ep)
    cache.get(0)
    cache.close()
    reader.close()  # neither waits: fetch threads end right after, or when an abandoned fetch returns
    deadline = time.monotonic() + 20.0
    while _fetch_threads() - before:  # threads of earlier tests may still be ending: only new ones count
        assert time.monotonic() < deadline, "fetch threads outlived close() by 20 s"
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match="closed"):
        cache.get(1)
