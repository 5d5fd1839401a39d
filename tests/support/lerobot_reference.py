"""LeRobot's own code, where its reference venv exists (optional; tests that need it skip with a message).

The venv is built by ``shared/tools/lerobot-reference/lerobot-venv.sh VENV``; point ``LEROBOT_REFERENCE_VENV``
at it (default: ``.lerobot-venv`` at the repository root).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lerobot_python() -> Path:
    """The reference venv's python; skips the calling test when there is none."""
    venv = Path(os.environ.get("LEROBOT_REFERENCE_VENV", REPO / ".lerobot-venv"))
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"LeRobot's reference venv is absent ({venv}); build it with "
                    "shared/tools/lerobot-reference/lerobot-venv.sh and set LEROBOT_REFERENCE_VENV")
    return python


def run_in_lerobot(*args: str | os.PathLike[str], timeout: float = 600) -> str:
    """Run ``python ARGS...`` in the reference venv with this package importable; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(lerobot_python()), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise AssertionError(f"LeRobot venv: {args[0]} exited {done.returncode}")
    return done.stdout


def run_check_against_lerobot(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run scripts/check_against_lerobot.py on ``root`` in the reference venv (skip without one)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(lerobot_python()), str(REPO / "scripts" / "check_against_lerobot.py"), str(root),
                           *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def write_with_lerobot(out: Path, *, episodes: int, frames: tuple[int, int]) -> Path:
    """A dataset written to ``out`` by LeRobot's own writer (``scripts/lerobot_written.py``): an RGB video
    camera, a depth video camera, RGB and depth images in the parquet; one MP4 per camera."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, 'scripts')\n"
            "try:\n    import tvshim\nexcept ImportError:\n    pass\n"
            "from lerobot_written import write_lerobot_dataset\n"
            f"write_lerobot_dataset(Path({str(out)!r}), episodes={episodes}, frames={frames!r})\n")
    run_in_lerobot("-c", code, timeout=300)
    assert (out / "meta" / "info.json").is_file()
    return out
