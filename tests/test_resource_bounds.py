"""Resource bounds: memory of a long stream, requests in flight, decoders, and sizes claimed by files.

Documented bounds (docs/reliability.md): a worker's memory beyond its state before streaming stays
under ``cache_bytes`` plus the episodes it may pin (resident pool + prefetch) plus
``STREAM_OVERHEAD``; concurrent range requests of a worker are at most ``fetch_threads +
reader max_workers``; a decoder lives only while its episode has samples left; no size field of a
file (parquet footer length, MP4 box sizes, sample counts) makes the loader allocate more than the
file holds.
"""

from __future__ import annotations

import gc
import os
import shutil
import struct
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import DatasetFormatError
from lerobot_stream_loader.fetch.episode_cache import EpisodeCache
from lerobot_stream_loader.items.decode import EpisodeVideoDecoder
from lerobot_stream_loader.mp4 import Mp4FormatError, index_mp4
from lerobot_stream_loader.parquet.ranges import read_footer
from lerobot_stream_loader.plan.shard import plan_shard
from lerobot_stream_loader.stream import WorkerResources, WorkerStream
from lerobot_stream_loader.synthetic.checks import read_frame_index
from tests.support.faults import rss

pytestmark = pytest.mark.timeout(120)

CAM = "observation.images.cam0"
STREAM_OVERHEAD = 16 << 20  # decoders, Arrow and torch buffers of the items in use
LEAK_LIMIT = 8 << 20


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=6, cameras=2, frames_per_episode=(12, 20), codec="h264", gop=6,
                       episodes_per_video_file=3, episodes_per_data_file=3, size=(64, 48), seed=41)


def worker_stream(dataset: StreamingLeRobot, resources: WorkerResources, epoch: int) -> WorkerStream:
    """The stream one (single-process) reader runs for ``epoch``, as ``StreamingLeRobot.__iter__`` builds it."""
    plan = plan_shard(dataset._plan_episodes, seed=dataset.seed, epoch=epoch, shuffle=dataset.shuffle,
                      pool_size=dataset.pool_size, shuffle_buffer=dataset.shuffle_buffer)
    return WorkerStream(resources, plan, dataset._builder(),
                        prefetch=dataset.settings["prefetch_episodes"])


def episode_bytes(dataset: StreamingLeRobot, resources: WorkerResources) -> int:
    """The largest episode's bytes as the cache holds them (rows + mini-MP4s)."""
    with EpisodeCache(dataset.meta.source, resources.reader, indexes=resources.indexes) as cache:
        return max(cache.get(ep).nbytes for ep in dataset.episodes)


def test_long_stream_memory_stays_under_budget_plus_constant(sample: Path) -> None:
    pool, prefetch, epochs = 2, 2, 5
    dataset = StreamingLeRobot(sample, shuffle=True, pool_size=pool, prefetch_episodes=prefetch,
                               cache_bytes=1, return_uint8=True)  # the smallest budget: evict at once
    resources = WorkerResources.open(dataset.meta.source, **dataset.settings)
    try:
        largest = episode_bytes(dataset, resources)
        pinned_bound = dataset.settings["cache_bytes"] + (pool + prefetch) * largest
        list(worker_stream(dataset, resources, epoch=99))  # warm-up: libraries, indexes, allocator pools
        gc.collect()
        base, samples, peaks = rss_self(), [], []
        for epoch in range(epochs):
            stream = worker_stream(dataset, resources, epoch)
            try:
                for item in stream:
                    samples.append(rss_self())
                    assert read_frame_index(item[CAM]) == int(item["index"])
            finally:
                stream.close()
            assert stream.cache.stats.peak_bytes_held <= pinned_bound
            peaks.append(max(samples[-dataset.meta.total_frames:]))
        print(f"rss over start: peak {(max(samples) - base) / 2**20:.1f} MiB, per-epoch peaks "
              f"{[round((p - base) / 2**20, 1) for p in peaks]} MiB, pinned bound {pinned_bound} bytes")
        assert max(samples) - base < pinned_bound + STREAM_OVERHEAD
        assert peaks[-1] - peaks[0] < LEAK_LIMIT, f"RSS peaks per epoch grow: {[p >> 20 for p in peaks]} MiB"
    finally:
        resources.close()


def rss_self() -> int:
    return rss(os.getpid())


# ------------------------------------------------------------------------------------- requests in flight
def test_concurrent_range_requests_are_bounded(sample: Path, nginx_factory, fault_proxy_factory) -> None:
    fetch_threads, max_workers = 2, 2
    lock, active, peak = threading.Lock(), [0], [0]

    def count(method: str, path: str, headers: dict[str, str]) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)  # requests pile up here, so concurrency shows
        with lock:
            active[0] -= 1
        return None

    proxy = fault_proxy_factory(nginx_factory(sample).url, gate=count)
    dataset = StreamingLeRobot(proxy.url, backend="http", prefetch_episodes=4, fetch_threads=fetch_threads,
                               reader_options={"max_workers": max_workers, "coalesce_gap": None, "split_size": 1024},
                               return_uint8=True)
    peak[0] = 0  # count the stream only, not the metadata reads
    items = list(dataset)
    assert len(items) == dataset.meta.total_frames
    assert 1 < peak[0] <= fetch_threads + max_workers, f"{peak[0]} range requests were in flight at once"


def test_episodes_in_flight_at_most_the_prefetch_depth(sample: Path) -> None:
    dataset = StreamingLeRobot(sample, shuffle=True, pool_size=2, prefetch_episodes=2, return_uint8=True)
    resources = WorkerResources.open(dataset.meta.source, **dataset.settings)
    try:
        stream = worker_stream(dataset, resources, epoch=0)
        in_flight = [stream.cache.in_flight for _ in stream]
        stream.close()
    finally:
        resources.close()
    assert len(in_flight) == dataset.meta.total_frames and max(in_flight) <= 2


# -------------------------------------------------------------------------------------------- decoders
def test_decoders_live_only_while_their_episode_has_frames_to_decode(sample: Path) -> None:
    dataset = StreamingLeRobot(sample, shuffle=True, pool_size=3, prefetch_episodes=1, return_uint8=True)
    resources = WorkerResources.open(dataset.meta.source, **dataset.settings)
    try:
        stream = worker_stream(dataset, resources, epoch=1)
        count = 0
        for _ in stream:
            opened = {ep for ep, _ in stream.builder.decoders.keys()}
            assert len(opened) <= dataset.pool_size, f"{len(opened)} episodes hold decoders"
            count += 1
        assert count == dataset.meta.total_frames
        assert len(stream.builder.decoders) == 0, "the last episode's decoders close with it"
        stream.close()
    finally:
        resources.close()
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is EpisodeVideoDecoder], "decoders are freed"


# ------------------------------------------------------------------------ sizes claimed by file fields
def _peak_allocation(call) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    try:
        call()
        error = None
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def _patch(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def _mp4_cases(data: bytes) -> dict[str, bytes]:
    moov, stsz, stts = data.index(b"moov"), data.index(b"stsz"), data.index(b"stts")
    return {
        "moov size 2 GiB": _patch(data, moov - 4, ">I", 0x7FFFFFF0),
        "moov size under the moov limit": _patch(data, moov - 4, ">I", (1 << 29) - 16),
        "moov 64-bit size": _patch(_patch(data, moov - 4, ">I", 1), moov + 4, ">I", 0x7FFF),
        "stsz count 2**31": _patch(data, stsz + 12, ">I", 1 << 31),
        "stsz constant size": _patch(_patch(data, stsz + 8, ">I", 1 << 30), stsz + 12, ">I", 1 << 30),
        "stts entries 2**31": _patch(data, stts + 8, ">I", 1 << 31),
        "stts sample count 2**31": _patch(data, stts + 12, ">I", 1 << 31),
    }


def test_mp4_size_fields_never_allocate_beyond_the_file(sample: Path) -> None:
    path = sorted((sample / "videos").rglob("*.mp4"))[0]
    data = path.read_bytes()
    for case, broken in _mp4_cases(data).items():
        peak, error = _peak_allocation(lambda b=broken: index_mp4(b, name=str(path)))
        assert peak < 8 * len(data) + (256 << 10), f"{case}: {peak} bytes allocated for a {len(data)}-byte file"
        if case != "stts sample count 2**31":  # cut to the sample count: harmless
            assert isinstance(error, Mp4FormatError), f"{case}: {error!r}"
            assert str(path) in str(error), f"{case}: the error names the file: {error}"


def test_parquet_footer_length_beyond_the_file(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(sample, root)
    path = root / "data/chunk-000/file-000.parquet"
    data = path.read_bytes()
    path.write_bytes(_patch(data, len(data) - 8, "<I", 0xFFFFFFF0))
    peak, error = _peak_allocation(lambda: read_footer(str(path), len(data),
                                                       lambda off, n: path.read_bytes()[off:off + n]))
    assert isinstance(error, DatasetFormatError) and "exceeds the file size" in str(error)
    assert peak < 4 * len(data) + (256 << 10)
    with pytest.raises(DatasetFormatError, match=r"episode 0: data file data/chunk-000/file-000.parquet: .*footer"):
        list(StreamingLeRobot(root, episodes=[0]))
