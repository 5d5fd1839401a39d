"""A Hub root without a revision is read at LeRobot's ``v3.0`` tag when the dataset has it, else at main."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.meta.hub_revision import is_unversioned_hub_root


@pytest.fixture
def hub(make_sample, tmp_path, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch):
    """user/tagged: main holds 3 episodes, tag v3.0 holds 2; user/untagged: main only (3 episodes)."""
    files = tmp_path / "files"
    options = dict(cameras=1, frames_per_episode=(4, 6), codec="h264", gop=2, size=(64, 48), seed=8)
    shutil.copytree(make_sample(episodes=3, **options), files / "head")
    shutil.copytree(make_sample(episodes=2, **options), files / "tag")
    hub = hub_factory(files, cdn=fault_proxy_factory(nginx_factory(files).url))
    hub.add_dataset("user/tagged", "head", revision="main")
    hub.add_dataset("user/tagged", "tag", revision="v3.0")
    hub.add_dataset("user/untagged", "head", revision="main")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub


def _open(root: str, hub, tmp_path: Path, **options) -> StreamingLeRobot:
    return StreamingLeRobot(root, backend="http", reader_options={"endpoint": hub.url, "token": False},
                            cache_dir=tmp_path / "cache", **options)


@pytest.mark.timeout(120)
def test_default_revision_is_lerobots_tag(hub, tmp_path: Path) -> None:
    tagged = _open("hf://datasets/user/tagged", hub, tmp_path)
    assert tagged.meta.root == "hf://datasets/user/tagged@v3.0" and tagged.num_episodes == 2
    assert len(list(tagged)) == tagged.num_frames
    assert _open("hf://datasets/user/tagged", hub, tmp_path, revision="main").num_episodes == 3
    assert _open("hf://datasets/user/tagged@main", hub, tmp_path).num_episodes == 3
    untagged = _open("hf://datasets/user/untagged", hub, tmp_path)
    assert untagged.meta.root == "hf://datasets/user/untagged" and untagged.num_episodes == 3


def test_unversioned_hub_roots() -> None:
    assert is_unversioned_hub_root("hf://datasets/user/name")
    assert is_unversioned_hub_root("hf://datasets/user/name/sub/folder")
    assert not is_unversioned_hub_root("hf://datasets/user/name@main")
    assert not is_unversioned_hub_root("hf://buckets/user/b")
    assert not is_unversioned_hub_root("s3://bucket/user/name")
