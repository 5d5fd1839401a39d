"""Depth and image features item for item against LeRobot 0.6.1 itself (optional).

Runs ``scripts/check_against_lerobot.py`` in the LeRobot reference environment
(``LEROBOT_REFERENCE_VENV``, default ``.lerobot-venv`` at the repository root; see
``tests/support/lerobot_reference.py``); skipped with a message when it is absent.
Compared: a dataset written by LeRobot's own writer (RGB and depth video, RGB and depth images in
parquet) and a sample dataset with ``depth_camera`` and both image features.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.lerobot_reference import lerobot_python

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_against_lerobot.py"

pytestmark = pytest.mark.timeout(900)


def _check(*args: str) -> str:
    python = lerobot_python()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1")
    done = subprocess.run([str(python), str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=840, check=False)
    report = done.stdout[-6000:]
    assert done.returncode == 0, f"exit {done.returncode}\n{report}\n{done.stderr[-3000:]}"
    assert "RESULT: OK" in report
    return report


def test_dataset_written_by_lerobot_matches_item_for_item(tmp_path):
    report = _check("--make-lerobot", str(tmp_path / "lerobot"), "--episodes", "2", "--frames-per-episode", "5:8",
                    "--depth-output-unit", "m", "--shuffle", "3", "--checks", "plain,windows,single")
    assert "check stats" in report
    # the same dataset through StreamingDataLoader's collate: default_collate's batches exactly
    from tests.test_collate import assert_loaders_agree

    assert_loaders_agree(tmp_path / "lerobot", depth_output_unit="m")


def test_sample_with_depth_and_images_matches_lerobot(tmp_path):
    _check("--make-sample", str(tmp_path / "sample"), "--episodes", "2", "--cameras", "1",
           "--frames-per-episode", "5:8", "--depth-camera", "--image-feature", "rgb", "--image-feature", "depth",
           "--checks", "plain,windows")


