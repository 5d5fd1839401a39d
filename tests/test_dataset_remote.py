"""StreamingLeRobot over real servers on 127.0.0.1: nginx (native HTTP and fsspec), moto S3, a Hub stand-in."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, IterableDataset

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.synthetic.checks import read_frame_index
from tests.test_dataset import _check_items

CAM = "observation.images.cam0"


@pytest.fixture(scope="module")
def h264(make_sample) -> Path:
    return make_sample(episodes=5, cameras=2, frames_per_episode=(12, 30), codec="h264", bframes=True, gop=10,
                       episodes_per_video_file=2, stagger_cameras=True, episodes_per_data_file=3, size=(64, 48),
                       seed=11)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["http", "fsspec"])
def test_http_items_equal_reference(h264: Path, nginx_factory, backend: str) -> None:
    server = nginx_factory(h264)
    dataset = StreamingLeRobot(server.url, backend=backend, return_uint8=True)
    items = list(dataset)
    assert sorted(int(x["index"]) for x in items) == list(range(dataset.meta.total_frames))
    _check_items(h264, items, uint8=True)


@pytest.mark.timeout(240)
def test_http_with_workers_reads_only_byte_ranges(h264: Path, nginx_factory) -> None:
    server = nginx_factory(h264)
    before = len(server.access_log())
    dataset = StreamingLeRobot(server.url, shuffle=True, seed=4, num_workers=2, return_uint8=True)
    seen = []
    for batch in DataLoader(dataset, batch_size=8, num_workers=2):
        seen += batch["index"].tolist()
        assert [read_frame_index(f) for f in batch[CAM]] == batch["index"].tolist()
    assert sorted(set(seen)) == list(range(dataset.meta.total_frames))
    log = server.access_log()[before:]
    gets = [e for e in log if e.method == "GET" and e.uri.endswith(".mp4")]
    assert gets and all(e.status == 206 and e.range for e in gets), "MP4s must be read by range only"


@pytest.mark.timeout(240)
def test_s3_items(h264: Path, moto_s3) -> None:
    url = moto_s3.upload_folder(h264, "datasets", "h264")
    dataset = StreamingLeRobot(url, storage_options=moto_s3.storage_options, return_uint8=True, episodes=[0, 3])
    items = list(dataset)
    assert len(items) == dataset.meta.episode(0).length + dataset.meta.episode(3).length
    _check_items(h264, items, uint8=True)


@pytest.mark.timeout(240)
def test_hub_root_with_revision(h264: Path, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch) -> None:
    cdn = fault_proxy_factory(nginx_factory(h264).url)
    hub = hub_factory(h264, cdn=cdn, token="hf_secret_token")
    hub.add_dataset("user/sample", revision="v1")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    dataset = StreamingLeRobot("hf://datasets/user/sample", revision="v1", backend="http",
                               reader_options={"endpoint": hub.url, "token": "hf_secret_token"},
                               return_uint8=True, episodes=[1])
    items = list(dataset)
    assert [int(x["index"]) for x in items] == list(range(dataset.meta.episode(1).from_index,
                                                          dataset.meta.episode(1).to_index))
    _check_items(h264, items, uint8=True)



class _CollectingInWorkers(IterableDataset):
    """Runs the garbage collector in each worker once its stream started, as any training job soon does."""

    def __init__(self, dataset: StreamingLeRobot) -> None:
        self.dataset = dataset

    def __iter__(self):
        for n, item in enumerate(self.dataset):
            if n == 1:
                gc.collect()
            yield item


@pytest.mark.timeout(120)
def test_fsspec_backend_in_the_parent_still_works_after_forked_workers(h264: Path, nginx_factory) -> None:
    """Forked workers inherit the parent's fsspec event loop and pooled connections; they must leave
    them alone, or the parent's next request on such a connection is never read (it waits for its
    timeout, minutes)."""
    server = nginx_factory(h264)
    for _ in range(3):
        dataset = StreamingLeRobot(server.url, backend="fsspec", num_workers=2, return_uint8=True, episodes=[0, 1])
        loader = DataLoader(_CollectingInWorkers(dataset), batch_size=8, num_workers=2, multiprocessing_context="fork")
        seen = [i for batch in loader for i in batch["index"].tolist()]
        assert len(seen) == dataset.meta.episodes[0].length + dataset.meta.episodes[1].length
        dataset.close()
