"""The examples run as users run them: train_loop.py, resume.py, and ddp_train.py under torchrun (gloo, CPU)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TORCHRUN = str(Path(PYTHON).with_name("torchrun"))


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=6, cameras=2, frames_per_episode=(10, 20), episodes_per_video_file=2,
                       episodes_per_data_file=3, size=(64, 48), seed=21)


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command in its own session. One that outlives ``timeout`` fails the test with every
    Python process's stack (faulthandler, on SIGABRT) and leaves nothing running."""
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})}, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGABRT)  # each Python process prints where it waits
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{args} still ran after {timeout} s:\n{stdout[-3000:]}\n{stderr[-12000:]}")
    result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(180)
def test_train_loop(sample: Path) -> None:
    result = _run([PYTHON, "examples/train_loop.py", str(sample), "--steps", "6", "--batch-size", "8",
                   "--workers", "2"], timeout=170)
    assert "samples/s" in result.stdout


@pytest.mark.timeout(180)
def test_train_loop_uint8_to_device(sample: Path) -> None:
    result = _run([PYTHON, "examples/train_loop.py", str(sample), "--steps", "4", "--batch-size", "8",
                   "--workers", "1", "--uint8", "--image-size", "32", "24", "--device", "cpu"], timeout=170)
    assert "samples/s" in result.stdout


@pytest.mark.timeout(180)
def test_resume_example(sample: Path) -> None:
    result = _run([PYTHON, "examples/resume.py", str(sample), "--stop-after", "3", "--workers", "2"], timeout=170)
    assert "identical" in result.stdout
    assert "Warning" not in result.stderr, result.stderr


def _check_ddp_reports(folder: Path, total_frames: int, world: int) -> None:
    reports = [json.loads((folder / f"rank-{r}.json").read_text()) for r in range(world)]
    batches = {r["batches"] for r in reports}
    assert len(batches) == 1, f"ranks saw different batch counts: {[r['batches'] for r in reports]}"
    assert all(r["batches_per_rank"] == reports[0]["batches_per_rank"] for r in reports)
    assert len({len(r["indices"]) for r in reports}) == 1
    assert all(len(r["indices"]) == r["len"] for r in reports)
    per_rank = [set(r["indices"]) for r in reports]
    assert set().union(*per_rank) == set(range(total_frames))
    overlap = sum(len(a & b) for i, a in enumerate(per_rank) for b in per_rank[i + 1:])
    padding = sum(len(r["indices"]) for r in reports) - total_frames
    assert overlap <= padding, "ranks must read disjoint episodes (apart from the documented padding)"


@pytest.mark.timeout(300)
def test_ddp_one_node_two_processes(sample: Path, tmp_path: Path) -> None:
    from lerobot_stream_loader.meta.dataset_meta import load_meta

    _run([TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
          str(_free_port()), "examples/ddp_train.py", str(sample), "--report", str(tmp_path), "--workers", "1"],
         timeout=280)
    _check_ddp_reports(tmp_path, load_meta(sample).total_frames, 2)


@pytest.mark.timeout(300)
def test_ddp_two_nodes_one_process_each(sample: Path, tmp_path: Path) -> None:
    from lerobot_stream_loader.meta.dataset_meta import load_meta

    for attempt in range(2):  # a rendezvous that two torchrun agents miss on 127.0.0.1 is tried once more
        port = _free_port()
        common = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                  "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"ddp-test-{attempt}"]
        procs = [subprocess.Popen([TORCHRUN, *common, "--node-rank", str(node), "examples/ddp_train.py",
                                   str(sample), "--report", str(tmp_path), "--workers", "0"],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
                 for node in range(2)]
        try:
            outputs = [p.communicate(timeout=130)[0] for p in procs]
            break
        except subprocess.TimeoutExpired:
            if attempt:
                raise
        finally:
            for p in procs:  # the agent and the training process it started: a killed agent leaves it running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    _check_ddp_reports(tmp_path, load_meta(sample).total_frames, 2)
