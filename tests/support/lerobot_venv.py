"""Where LeRobot's own reader can be run for comparisons (optional: tests skip without it).

The environment is given by ``LEROBOT_REFERENCE_VENV`` (a virtual environment folder with LeRobot
installed, e.g. one built by shared/tools/lerobot-venv.sh), else a ``.lerobot-venv`` folder at the
repository root.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lerobot_python() -> Path | None:
    """The Python of the LeRobot environment, or None when there is none."""
    configured = os.environ.get("LEROBOT_REFERENCE_VENV")
    venv = Path(configured) if configured else REPO / ".lerobot-venv"
    python = venv / "bin" / "python"
    return python if python.exists() else None


def run_check_against_lerobot(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run scripts/check_against_lerobot.py on ``root`` in the LeRobot environment (skip without one)."""
    python = lerobot_python()
    if python is None:
        pytest.skip("no LeRobot environment (set LEROBOT_REFERENCE_VENV to a venv with LeRobot installed)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(python), str(REPO / "scripts" / "check_against_lerobot.py"), str(root), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
