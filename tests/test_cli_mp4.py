"""`lerobot-stream index` and `lerobot-stream clip` as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import av
import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.cli import main
from lerobot_stream_loader.fetch.sidecar import SIDECAR_PATH, Sidecar, cache_path
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.synthetic.checks import read_frame_index

CLI = [sys.executable, "-m", "lerobot_stream_loader.cli"]


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=5, cameras=2, frames_per_episode=(8, 16), codec="h264", bframes=True, gop=6,
                       episodes_per_video_file=2, stagger_cameras=True, size=(64, 48), seed=8)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(150)
def test_clip_writes_one_episode_without_reencoding(sample: Path, tmp_path: Path) -> None:
    meta = load_meta(sample)
    episode = meta.episode(3)
    key = "observation.images.cam1"
    out = tmp_path / "clip.mp4"
    result = _cli("clip", str(sample), "--episode", "3", "--camera", key, "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["clip_bytes"] == out.stat().st_size < summary["source_bytes"]
    assert summary["padding_ratio"] >= 1.0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [(f.time, read_frame_index(f.to_ndarray(format="rgb24"))) for f in container.decode(stream)]
    shown = [(t + summary["time_offset"], i) for t, i in frames
             if episode.videos[key].from_timestamp - 1e-4 <= t + summary["time_offset"]
             < episode.videos[key].to_timestamp - 1e-4]
    assert [i for _, i in shown] == list(range(episode.from_index, episode.to_index))


def test_clip_unknown_camera(sample: Path, tmp_path: Path) -> None:
    result = _cli("clip", str(sample), "--episode", "0", "--camera", "nope", "-o", str(tmp_path / "x.mp4"))
    assert result.returncode != 0 and "unknown camera 'nope'" in result.stderr


@pytest.mark.timeout(150)
def test_index_writes_sidecar_inside_dataset(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(sample, root)
    result = _cli("index", str(root), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sidecar"] == str(root / SIDECAR_PATH)
    entries = Sidecar.from_bytes((root / SIDECAR_PATH).read_bytes()).entries()
    meta = load_meta(root)
    assert sorted(entries) == meta.video_files
    assert all(entries[p].size == (root / p).stat().st_size for p in entries)


@pytest.mark.timeout(150)
def test_index_of_read_only_http_dataset_goes_to_local_cache(sample: Path, nginx_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("LEROBOT_STREAM_CACHE", str(tmp_path / "cache"))
    server = nginx_factory(sample)
    result = subprocess.run([*CLI, "index", server.url, "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert Path(summary["sidecar"]) == cache_path(server.url)
    assert len(Sidecar.from_bytes(Path(summary["sidecar"]).read_bytes()).directory.paths()) == len(load_meta(sample).video_files)


@pytest.mark.timeout(150)
def test_index_and_clip_outputs_get_the_umask_permissions(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(sample, root)
    umask = os.umask(0o022)
    try:
        assert _cli("index", str(root)).returncode == 0
        assert _cli("clip", str(root), "--episode", "0", "--camera", "observation.images.cam0",
                    "-o", str(tmp_path / "clip.mp4")).returncode == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE((root / SIDECAR_PATH).stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "clip.mp4").stat().st_mode) == 0o644
    assert not [p for p in root.rglob("*.tmp")] and not [p for p in tmp_path.glob(".*")]


@pytest.mark.timeout(150)
def test_a_sidecar_the_server_refuses_is_one_warning(sample: Path, tmp_path: Path, nginx_factory,
                                                      fault_proxy_factory, monkeypatch) -> None:
    monkeypatch.setenv("LEROBOT_STREAM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ds"
    shutil.copytree(sample, root)
    assert main(["index", str(root), "--json"]) == 0
    refuse = lambda method, path, headers: 403 if path.endswith("mp4_index.bin") else None  # noqa: E731
    proxy = fault_proxy_factory(nginx_factory(root).url, gate=refuse)
    with pytest.warns(UserWarning) as caught:
        dataset = StreamingLeRobot(proxy.url)
        next(iter(dataset))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "cannot read the MP4 index sidecar" in messages[0], messages
    assert "HTTP 403" in messages[0] and SIDECAR_PATH in messages[0]
