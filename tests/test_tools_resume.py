"""A killed shuffle or prepare, run again with --resume, finishes what an uninterrupted run writes.

Each run is killed (SIGKILL) in a subprocess once its staging manifest lists some finished files;
its tasks are slowed down there (a pause after each) so that the kill lands mid-run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lerobot_stream_loader.cli import main
from lerobot_stream_loader.tools import prepare, shuffle_episodes, validate
from lerobot_stream_loader.tools.resume import MANIFEST, partial_folder
from tests.test_tools_realign import leftovers, tree_hashes
from tests.test_tools_verify import assert_every_frame_matches_its_row

REPO = Path(__file__).resolve().parents[1]
SOURCE = {"episodes": 6, "cameras": 2, "size": (64, 48), "frames_per_episode": (5, 9),
          "episodes_per_video_file": 2, "episodes_per_data_file": 3, "stagger_cameras": True}
COPY = ["--seed", "3", "--vcodec", "copy", "--max-episodes-per-file", "1", "--workers", "1"]

# Runs the command line (or, with "dask", shuffle_episodes on a Dask cluster) with every task followed
# by a pause, so that a test can kill it between files.
DRIVER = textwrap.dedent("""
    import sys, time
    from lerobot_stream_loader.tools import task_runner

    original = task_runner.task_function

    def paused(run):
        def run_then_pause(task):
            outcome = run(task)
            time.sleep(0.4)
            return outcome
        return run_then_pause

    task_runner.task_function = lambda task: paused(original(task))
    if sys.argv[1] == "dask":
        import distributed
        from lerobot_stream_loader.tools import shuffle_episodes
        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            shuffle_episodes(sys.argv[2], sys.argv[3], seed=3, vcodec="copy", max_episodes_per_file=1,
                             executor=client.get_executor())
    else:
        from lerobot_stream_loader.cli import main
        sys.exit(main(sys.argv[1:]))
""")


def records(output: Path) -> int:
    """Finished files listed in the staging manifest of runs writing ``output``."""
    manifest = partial_folder(output) / MANIFEST
    try:
        return max(0, len(manifest.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def run_and_kill(tmp_path: Path, output: Path, *args: str, finished: int = 3, timeout: float = 120) -> int:
    """Start the driver with ``args``; SIGKILL it once ``finished`` files are recorded; the count then."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(driver), *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while records(output) < finished:
            assert process.poll() is None, f"the run ended before it was killed: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no files finished in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert not output.exists() and partial_folder(output).is_dir()
    return records(output)


@pytest.mark.timeout(300)
def test_a_killed_copy_shuffle_resumes_to_the_same_bytes(make_sample, tmp_path, capsys):
    source = make_sample(**SOURCE)
    reference = Path(shuffle_episodes(source, tmp_path / "reference", seed=3, vcodec="copy",
                                      max_episodes_per_file=1).output)
    out = tmp_path / "out"
    done = run_and_kill(tmp_path, out, "shuffle", str(source), str(out), *COPY)
    # other arguments are refused, naming them; the unfinished run stays as it was
    assert main(["shuffle", str(source), str(out), *COPY[2:], "--seed", "4", "--resume"]) == 1
    assert "seed 3 then, 4 now" in capsys.readouterr().err and records(out) == done
    capsys.readouterr()
    assert main(["shuffle", str(source), str(out), *COPY, "--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] == done > 0
    assert tree_hashes(out) == tree_hashes(reference)
    assert leftovers(out) == [] and validate(out).ok


@pytest.mark.timeout(300)
def test_resume_checks_every_kept_file_and_removes_unfinished_ones(make_sample, tmp_path, caplog):
    source = make_sample(**SOURCE)
    reference = Path(shuffle_episodes(source, tmp_path / "reference", seed=3, vcodec="copy",
                                      max_episodes_per_file=1).output)
    out = tmp_path / "out"
    done = run_and_kill(tmp_path, out, "shuffle", str(source), str(out), *COPY)
    dataset = partial_folder(out)
    first = json.loads((partial_folder(out) / MANIFEST).read_text().splitlines()[1])
    damaged = dataset / first["file"]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")  # same size, other bytes
    stray = dataset / "videos" / "half-written.mp4.part"
    stray.write_bytes(b"partial")
    with caplog.at_level(logging.WARNING):
        result = shuffle_episodes(source, out, seed=3, vcodec="copy", max_episodes_per_file=1, resume=True)
    assert result.resumed == done - 1
    assert any(first["file"] in r.getMessage() and "written again" in r.getMessage() for r in caplog.records)
    assert tree_hashes(out) == tree_hashes(reference)
    assert leftovers(out) == []


@pytest.mark.timeout(300)
def test_a_killed_run_is_started_again_without_resume(make_sample, tmp_path, caplog):
    source = make_sample(**SOURCE)
    out = tmp_path / "out"
    run_and_kill(tmp_path, out, "shuffle", str(source), str(out), *COPY, finished=2)
    with caplog.at_level(logging.WARNING):
        result = shuffle_episodes(source, out, seed=3, vcodec="copy", max_episodes_per_file=1)
    assert result.resumed == 0 and any("unfinished run" in r.getMessage() for r in caplog.records)
    assert leftovers(out) == [] and validate(out).ok


@pytest.mark.timeout(600)
def test_a_killed_reencoding_shuffle_resumes_with_the_same_order_and_frames(make_sample, tmp_path, capsys):
    source = make_sample(**SOURCE)
    args = ["--seed", "3", "--max-episodes-per-file", "1", "--workers", "1"]
    reference = shuffle_episodes(source, tmp_path / "reference", seed=3, max_episodes_per_file=1, max_workers=1)
    out = tmp_path / "out"
    done = run_and_kill(tmp_path, out, "shuffle", str(source), str(out), *args, finished=4, timeout=240)
    assert main(["shuffle", str(source), str(out), *args, "--vcodec", "copy", "--resume"]) == 1
    assert "vcodec 'libsvtav1' then, 'copy' now" in capsys.readouterr().err
    assert main(["shuffle", str(source), str(out), *args, "--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] == done and summary["order"] == reference.order
    assert_every_frame_matches_its_row(out, source, summary["order"])
    assert tree_hashes(out) == tree_hashes(Path(reference.output))  # the encoder is deterministic here


@pytest.mark.timeout(300)
def test_a_killed_prepare_resumes_and_refuses_another_tool(make_sample, tmp_path, capsys):
    source = make_sample(**SOURCE)
    args = ["--seed", "3", "--max-episodes-per-file", "1", "--workers", "1"]
    reference = Path(prepare(source, tmp_path / "reference", seed=3, max_episodes_per_file=1, max_workers=1).output)
    out = tmp_path / "out"
    done = run_and_kill(tmp_path, out, "prepare", str(source), str(out), *args)
    assert main(["shuffle", str(source), str(out), *args, "--vcodec", "copy", "--resume"]) == 1
    assert "tool 'prepare' then, 'shuffle' now" in capsys.readouterr().err
    assert main(["prepare", str(source), str(out), *args, "--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["summary"]["resumed"] == done and summary["summary"]["vcodec"] == "copy"
    assert summary["validation"]["ok"]
    assert tree_hashes(out) == tree_hashes(reference)


@pytest.mark.timeout(300)
def test_a_killed_shuffle_on_a_dask_cluster_resumes_on_one(make_sample, tmp_path):
    distributed = pytest.importorskip("distributed")
    source = make_sample(**SOURCE)
    reference = Path(shuffle_episodes(source, tmp_path / "reference", seed=3, vcodec="copy",
                                      max_episodes_per_file=1).output)
    out = tmp_path / "out"
    done = run_and_kill(tmp_path, out, "dask", str(source), str(out))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        result = shuffle_episodes(source, out, seed=3, vcodec="copy", max_episodes_per_file=1,
                                  executor=client.get_executor(), resume=True)
    assert result.resumed == done > 0
    assert tree_hashes(out) == tree_hashes(reference)
