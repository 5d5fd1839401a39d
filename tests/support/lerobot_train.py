"""``lerobot-stream train`` in LeRobot's reference venv, with what the trainer receives recorded.

As a script, run in that venv (``train_in_lerobot`` does it)::

    python tests/support/lerobot_train.py RECORD.jsonl -- ARGS...

imports ``tvshim`` (LeRobot's torchvision beside CPU torch; spawned DataLoader workers re-import this
script, so they get it too), records every batch the training loop takes from its data iterator
(``index``, ``dataset_index``) and every step's loss into RECORD (one JSON line each), then runs
``lerobot_stream_loader.cli.main(["train", *ARGS])``. The recording wraps LeRobot's ``cycle`` and
``update_policy``; the loader and LeRobot's training run unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

if __name__ in ("__main__", "__mp_main__"):  # this script in the reference venv, or its spawned workers
    import tvshim  # noqa: F401  (before anything imports lerobot)

REPO = Path(__file__).resolve().parents[2]

# A tiny ACT policy: seconds per step on CPU.
TINY_ACT = ["--policy.type=act", "--policy.device=cpu", "--policy.push_to_hub=false", "--policy.dim_model=64",
            "--policy.n_heads=2", "--policy.dim_feedforward=128", "--policy.n_encoder_layers=1",
            "--policy.n_decoder_layers=1", "--policy.chunk_size=10", "--policy.n_action_steps=10",
            "--policy.pretrained_backbone_weights=null", "--wandb.enable=false", "--log_freq=1"]


def train_in_lerobot(args: list[str], record: Path, *, processes: int = 1, offline: bool = True,
                     timeout: float = 400, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``lerobot-stream train ARGS`` in the reference venv (the test skips without one), in
    ``processes`` processes under ``torchrun``. ``offline=False`` lets the loader read URLs (our HTTP
    servers on 127.0.0.1); the Hub endpoint then points at a closed local port."""
    from tests.support.lerobot_reference import lerobot_python

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    launch = [str(lerobot_python())]
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    done = subprocess.run([*launch, __file__, str(record), "--", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise AssertionError(f"lerobot-stream train exited {done.returncode}")
    return done


def read_record(record: Path) -> tuple[list[dict[str, Any]], list[float]]:
    """The recorded batches (``index``, ``dataset_index`` lists) and step losses, in order."""
    batches, losses = [], []
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry:
            losses.append(entry["loss"])
        else:
            batches.append(entry)
    return batches, losses


def _record_training(record: Path) -> None:
    import lerobot.scripts.lerobot_train as script

    rank = int(os.environ.get("RANK", "0"))  # torchrun / accelerate launch

    def write(entry: dict[str, Any]) -> None:
        with open(record, "a") as out:  # one short line per append: processes do not interleave
            out.write(json.dumps({"rank": rank, **entry}) + "\n")

    cycle, update_policy = script.cycle, script.update_policy

    def recorded_cycle(loader: Any) -> Any:
        for batch in cycle(loader):
            write({key: batch[key].tolist() for key in ("index", "dataset_index") if key in batch})
            yield batch

    def recorded_update(metrics: Any, *args: Any, **kwargs: Any) -> Any:
        result = update_policy(metrics, *args, **kwargs)
        write({"loss": float(result[0].loss.val)})
        return result

    script.cycle, script.update_policy = recorded_cycle, recorded_update


if __name__ == "__main__":
    record_path, separator, *train_args = sys.argv[1:]
    assert separator == "--", "usage: lerobot_train.py RECORD -- ARGS..."
    _record_training(Path(record_path))
    from lerobot_stream_loader.cli import main

    sys.exit(main(["train", *train_args]))
