"""Bad episodes in a dataset written by LeRobot's own writer (reference venv; skipped without it):
``"raise"`` names the episode, ``"skip"`` yields only items equal to LeRobot's (2 ranks x 2 workers,
equal counts, every good frame, the same stream after a resume), ``validate --frames all`` names exactly
the planted episodes and its report fed to ``exclude_episodes`` streams the rest without a warning; a
deleted MP4 behind HTTP makes every episode of it bad (404), named by validate and by streaming."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import StreamLoaderError
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.tools import validate
from tests.support import defects
from tests.support.lerobot_reference import REPO, run_in_lerobot, write_with_lerobot

pytestmark = pytest.mark.timeout(600)

CAM = "observation.images.cam0"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, set[int]]:
    """(broken copy, intact original, bad episodes) of 7 LeRobot-written episodes in one MP4 per camera:
    episode 1's last rows moved into episode 2's frames, episode 3's last rows missing, episode 5's
    bytes of the RGB camera overwritten."""
    folder = tmp_path_factory.mktemp("lerobot-bad")
    intact = write_with_lerobot(folder / "intact", episodes=7, frames=(8, 12))
    broken = defects.copy_dataset(intact, folder / "broken")
    fps = load_meta(broken).fps
    bad = defects.shift_rows(broken, 1, 3 / fps, rows=slice(-3, None))
    bad |= defects.drop_rows(broken, 3)
    bad |= defects.overwrite_episode_bytes(broken, 5, CAM, seed=4)
    return broken, intact, bad


def _frames_of(root: Path, episodes: set[int]) -> set[int]:
    meta = load_meta(root)
    return {i for e in meta.episodes if e.index in episodes for i in range(e.from_index, e.to_index)}


def test_skip_yields_lerobots_items_on_two_ranks_and_resumes(planted) -> None:
    broken, intact, bad = planted
    script = REPO / "tests" / "support" / "skip_against_lerobot.py"
    out = json.loads(run_in_lerobot(script, broken, intact, timeout=540).strip().splitlines()[-1])
    assert out["mismatches"] == []
    ranks = out["ranks"]
    assert [len(r["indices"]) for r in ranks] == [r["len"] for r in ranks]  # equal counts
    assert ranks[0]["len"] == ranks[1]["len"]
    seen = {i for r in ranks for i in r["indices"]}
    good = set(load_meta(intact).episode_indices) - bad
    assert _frames_of(intact, good) <= seen
    assert not seen & _frames_of(intact, bad)
    assert set().union(*(r["skipped"] for r in ranks)) == bad
    assert out["resumed_equal"]


@pytest.mark.parametrize("episode", [1, 3, 5])
def test_raise_names_each_bad_episode(planted, episode: int) -> None:
    broken, _, _ = planted
    with pytest.raises(StreamLoaderError) as err:
        list(StreamingLeRobot(broken, return_uint8=True, episodes=[episode]))
    assert f"episode {episode}" in str(err.value) and f"exclude_episodes=[{episode}]" in str(err.value)


def test_validate_report_feeds_exclude_episodes(planted) -> None:
    broken, _, bad = planted
    report = validate(broken, frames="all", workers=1)
    named = {b.episode_index for b in report.bad_episodes}
    assert named == bad
    dataset = StreamingLeRobot(broken, return_uint8=True, exclude_episodes=sorted(named))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        indices = sorted(int(item["index"]) for item in dataset)
    assert indices == sorted(_frames_of(broken, set(load_meta(broken).episode_indices) - bad))


def test_a_deleted_mp4_behind_http(planted, nginx_factory, tmp_path: Path) -> None:
    """LeRobot writes one MP4 per camera here, so a deleted depth MP4 makes every episode bad: served
    by nginx, validate names them all (404), and streaming names the episode and the file."""
    _, intact, _ = planted
    root = defects.copy_dataset(intact, tmp_path / "gone")
    meta = load_meta(root)
    gone = meta.episode(0).videos["observation.images.depth"].path
    bad = defects.delete_file(root, gone)
    assert bad == set(meta.episode_indices)
    url = nginx_factory(root).url
    report = validate(url, frames="all", workers=1)
    assert {b.episode_index for b in report.bad_episodes} == bad
    assert all("404" in b.cause or "not found" in b.cause.lower() for b in report.bad_episodes)
    with pytest.raises(StreamLoaderError) as err:
        list(StreamingLeRobot(url, return_uint8=True, episodes=[3], reader_options={"retries": 1}))
    assert "episode 3" in str(err.value) and gone in str(err.value)
