"""LeRobot's own training (``lerobot.scripts.lerobot_train``, unchanged) on ``lerobot-stream train``.

Each test trains a tiny ACT policy on CPU for a few steps in LeRobot's reference venv
(``LEROBOT_REFERENCE_VENV``; skipped with a message without it), with the batches the training loop
takes recorded (tests/support/lerobot_train.py): a local dataset, the same over HTTP (nginx), a weighted
mixture, a resumed run, several processes, and bad input refused in one line before training.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.train.build import DatasetRequest, build_dataset
from lerobot_stream_loader.train.checkpoint import load_loader
from lerobot_stream_loader.train.options import LoaderOptions
from tests.support.lerobot_reference import run_in_lerobot
from tests.support.lerobot_train import TINY_ACT, read_record, train_in_lerobot

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def first(make_sample) -> Path:
    return make_sample(episodes=4, cameras=1, frames_per_episode=(12, 20), size=(64, 48), seed=21)


@pytest.fixture(scope="module")
def annotated(make_sample) -> Path:
    """With LeRobot's language columns and other extra columns (LeRobot's trainer then collates itself)."""
    return make_sample(episodes=4, cameras=1, frames_per_episode=(12, 20), size=(64, 48), seed=23,
                       extra_columns=True)


@pytest.fixture(scope="module")
def second(make_sample) -> Path:
    return make_sample(episodes=3, cameras=2, frames_per_episode=(12, 20), size=(64, 48), seed=22, codec="h264")


def _args(out: Path, *extra: str, steps: int = 2, workers: int = 1) -> list[str]:
    return [*TINY_ACT, "--batch_size=8", f"--steps={steps}", f"--num_workers={workers}",
            f"--output_dir={out}", *extra]


def _episode_of(root: Path) -> dict[int, int]:
    meta = StreamingLeRobot(root).meta
    starts = np.concatenate([[0], np.cumsum(meta.lengths)])
    return {int(i): int(e) for e, lo, hi in zip(meta.episode_indices, starts, starts[1:], strict=False)
            for i in range(lo, hi)}


def _checkpoint(out: Path, step: int) -> Path:
    folder = out / "checkpoints" / f"{step:06d}"
    assert (folder / "pretrained_model" / "model.safetensors").is_file()
    assert (folder / "training_state" / "stream_loader.json").is_file()
    return folder


def test_trains_on_a_local_dataset(annotated: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    train_in_lerobot(_args(tmp_path / "out", f"--dataset.repo_id={annotated}", "--dataset.episodes=[0,2]",
                           "--dataset.image_transforms.enable=true", "--stream.cache_bytes=64000000",
                           "--save_freq=2"), record)
    batches, losses = read_record(record)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert [len(b["index"]) for b in batches] == [8, 8]
    episode = _episode_of(annotated)
    assert {episode[i] for b in batches for i in b["index"]} <= {0, 2}
    saved = load_loader(_checkpoint(tmp_path / "out", 2) / "training_state")
    assert saved is not None and saved.options.stream == {"cache_bytes": "64000000"}


def test_trains_over_http(first: Path, nginx_factory, tmp_path: Path) -> None:
    server = nginx_factory(first)
    record = tmp_path / "record.jsonl"
    train_in_lerobot(_args(tmp_path / "out", f"--dataset.repo_id={server.url}", "--stream.backend=http"), record,
                     offline=False)
    batches, losses = read_record(record)
    assert len(batches) == 2 and len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any(entry.status == 206 for entry in server.access_log())  # byte ranges of the MP4s
    _checkpoint(tmp_path / "out", 2)


def test_trains_on_a_weighted_mixture(first: Path, second: Path, tmp_path: Path) -> None:
    record, out = tmp_path / "record.jsonl", tmp_path / "out"
    train_in_lerobot(_args(out, f"--dataset.repo_id=[{first},{second}]", "--mix.weights=[0.75,0.25]", steps=3),
                     record)
    batches, losses = read_record(record)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    sources = [d for b in batches for d in b["dataset_index"]]
    assert len(sources) == 24 and abs(sources.count(0) / 24 - 0.75) <= 0.1
    # the normalizer holds the mixture's stats: both sources' frames aggregated
    folder = _checkpoint(out, 3) / "pretrained_model"
    [normalizer] = folder.glob("policy_preprocessor_step_*_normalizer_processor.safetensors")
    saved = json.loads(run_in_lerobot("-c", "import json, sys; from safetensors.torch import load_file; "
                                      "print(json.dumps({k: v.tolist() for k, v in load_file(sys.argv[1]).items()}))",
                                      normalizer))
    mixture = build_dataset(DatasetRequest(repo_id=f"[{first},{second}]"), LoaderOptions())
    for key in ("observation.state", "action"):
        np.testing.assert_allclose(saved[f"{key}.mean"], mixture.meta.stats[key]["mean"], rtol=1e-5)
    assert saved["observation.state.count"] == [mixture.num_frames]


def test_a_resumed_run_continues_the_data_stream_exactly(first: Path, tmp_path: Path) -> None:
    """Checkpointed at the last batch of the first epoch (the hardest place), resumed, the run takes
    the batches of an uninterrupted run."""
    epoch = math.ceil(StreamingLeRobot(first).num_frames / 8)  # batches of one epoch with one worker
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out"
    train_in_lerobot(_args(out, f"--dataset.repo_id={first}", f"--save_freq={epoch}",
                           "--stream.cache_bytes=50000000", steps=epoch + 2), whole)
    resumed_out, resumed = tmp_path / "resumed", tmp_path / "resumed.jsonl"
    shutil.copytree(out, resumed_out, symlinks=True)
    shutil.rmtree(resumed_out / "checkpoints" / f"{epoch + 2:06d}")
    config = resumed_out / "checkpoints" / f"{epoch:06d}" / "pretrained_model" / "train_config.json"
    train_in_lerobot(["--resume=true", f"--config_path={config}", f"--output_dir={resumed_out}"], resumed)
    batches, _ = read_record(whole)
    after, after_losses = read_record(resumed)
    assert len(batches) == epoch + 2 and len(after) == 2
    assert [b["index"] for b in after] == [b["index"] for b in batches[epoch:]]
    assert all(math.isfinite(x) for x in after_losses)
    saved = load_loader(_checkpoint(resumed_out, epoch + 2) / "training_state")
    assert saved is not None and saved.options.stream == {"cache_bytes": "50000000"}  # kept from the checkpoint


def test_each_process_reads_its_own_share(first: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    train_in_lerobot(_args(tmp_path / "out", f"--dataset.repo_id={first}", workers=0), record, processes=2)
    batches, losses = read_record(record)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    per_rank = {rank: [i for b in batches if b["rank"] == rank for i in b["index"]] for rank in (0, 1)}
    assert len(per_rank[0]) == len(per_rank[1]) == 16
    assert not set(per_rank[0]) & set(per_rank[1])


@pytest.mark.parametrize(("extra", "message"), [
    (["--dataset.repo_id=[{first},{first}]", "--mix.weights=[0.5,0.3,0.2]"],
     "--mix.weights has 3 weights for the 2 datasets"),
    (["--dataset.repo_id={missing}"], "no such dataset folder"),
])
def test_bad_input_is_one_line_before_training(first: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    args = [a.format(first=first, missing=tmp_path / "missing") for a in extra]
    done = train_in_lerobot(_args(tmp_path / "out", *args), tmp_path / "record.jsonl", check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lerobot-stream train: error:") and message in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "record.jsonl").exists()
