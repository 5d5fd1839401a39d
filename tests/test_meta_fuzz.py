"""Fuzzed metadata and files (tests/support/meta_fuzz.py): info.json, the episodes table, a data parquet
footer and the MP4 index sidecar, 320 cases in a child process whose address space is capped at
1.5 GiB over its start. Each case either works or raises the library's error naming a file (the
damaged one, or the one its damage broke); none crashes the process, runs out of memory or takes more than a few seconds. A damaged
sidecar never fails anything: the indexes then come from the MP4s, identical, with one warning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

CASES = 320
SEED = int(os.environ.get("LEROBOT_FUZZ_SEED", "15"))
CASE_SECONDS = 5.0
# the error names the damaged file, or the dataset file whose use the damage broke (a path the damaged
# metadata points to that is missing, a data file holding no rows of an episode the table invented)
NAMED = ("meta/info.json", "meta/episodes", "meta/tasks.parquet", "data/", "videos/")


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=3, cameras=1, frames_per_episode=(6, 9), codec="h264", gop=3,
                       episodes_per_video_file=2, episodes_per_data_file=2, size=(64, 48), seed=71)


def test_fuzzed_metadata_and_files_fail_cleanly_within_memory_and_time(sample: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "tests.support.meta_fuzz", str(sample), str(tmp_path / "work"),
                          str(SEED), str(CASES)], env=env, capture_output=True, text=True, timeout=280)
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0 and len(records) == CASES, \
        f"the fuzz process ended after {len(records)} cases (exit {run.returncode}): {run.stderr[-3000:]}"
    bad = []
    for r in records:
        if r["outcome"] != "ok" and ("StreamLoaderError" not in r["kinds"] or not any(n in r["message"] for n in NAMED)):
            bad.append(r)
        elif r["seconds"] > CASE_SECONDS:
            bad.append(r)
        elif r["target"] == "sidecar" and (r["outcome"] != "ok" or r["warnings"] > 1):
            bad.append(r)
    assert not bad, "\n".join(f"case {r['case']} ({r['target']}): {r['outcome']}: {r['message'][:300]}" for r in bad[:10])
    outcomes = Counter((r["target"], r["outcome"] == "ok") for r in records)
    for target in ("info", "episodes", "data"):
        assert outcomes[(target, False)] >= CASES // 8, f"too few {target} cases were refused: {outcomes}"
