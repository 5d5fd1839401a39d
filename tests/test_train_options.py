"""``lerobot-stream train`` without LeRobot: its arguments, how they map to the datasets, its errors.

LeRobot's own training runs in tests/test_train_lerobot.py (reference venv only); everything here runs
in CI: argument splitting and reading, the dataset built from lerobot-train's settings, and the
one-line errors for bad input.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.train.build import DatasetRequest, build_dataset
from lerobot_stream_loader.train.lerobot_api import supported
from lerobot_stream_loader.train.mixture import TrainingMixture
from lerobot_stream_loader.train.options import (
    LoaderOptions,
    mixture_names,
    parse_list,
    read_value,
    source_list,
    split_arguments,
    stream_names,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one(make_sample) -> Path:
    return make_sample(episodes=4, cameras=1, frames_per_episode=(10, 14), size=(64, 48), seed=5)


@pytest.fixture(scope="module")
def two(make_sample) -> Path:
    return make_sample(episodes=3, cameras=1, frames_per_episode=(8, 12), size=(64, 48), seed=6, codec="h264")


# -- arguments -------------------------------------------------------------------------------------------
def test_stream_and_mix_options_are_split_from_lerobot_arguments() -> None:
    args = ["--dataset.repo_id=[a,b]", "--stream.cache_bytes=1e8", "--policy.type", "act", "--mix.weights",
            "[0.7,0.3]", "--stream.backend=http", "--steps=3"]
    rest, options = split_arguments(args)
    assert rest == ["--dataset.repo_id=[a,b]", "--policy.type", "act", "--steps=3"]
    assert options.stream == {"cache_bytes": "1e8", "backend": "http"}
    assert options.mix == {"weights": "[0.7,0.3]"}
    assert options.stream_values() == {"cache_bytes": 100_000_000, "backend": "http"}


def test_option_values_are_json_or_text() -> None:
    assert read_value("true") is True and read_value("null") is None
    assert read_value('{"anon": true}') == {"anon": True}
    assert read_value("[224,224]") == [224, 224]
    assert read_value("/tmp/cache dir") == "/tmp/cache dir"
    assert read_value("2e9", "int") == 2_000_000_000 and isinstance(read_value("2e9", "int"), int)
    assert read_value("0.5", "float") == 0.5


@pytest.mark.parametrize("text", ["[a,b]", '["a", "b"]', "['a', 'b']", "[ a , b ]"])
def test_dataset_lists_in_every_written_form(text: str) -> None:
    assert source_list(text) == ["a", "b"]
    assert parse_list(text) == ["a", "b"]


def test_one_dataset_is_no_list() -> None:
    assert source_list("user/name") is None
    assert source_list("http://127.0.0.1:8080/data") is None
    with pytest.raises(ValueError, match="lists no dataset"):
        source_list("[]")


def test_every_constructor_keyword_is_an_option_except_lerobots_own() -> None:
    names = stream_names()
    for name in ("cache_bytes", "disk_cache_bytes", "cache_dir", "pool_size", "backend", "storage_options",
                 "image_size"):
        assert name in names
    for name in ("episodes", "seed", "delta_timestamps", "rank", "return_uint8", "revision"):
        assert name not in names
    assert set(mixture_names()) >= {"weights", "features", "samples_per_epoch"}


@pytest.mark.parametrize(("stream", "message"), [
    ({"cache_byte": "3"}, r"unknown option --stream.cache_byte \(did you mean --stream.cache_bytes\?\)"),
    ({"episodes": "[1]"}, "--stream.episodes: set by --dataset.episodes"),
    ({"seed": "3"}, "--stream.seed: set by --seed"),
])
def test_bad_stream_options_are_refused(stream: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoaderOptions(stream=stream).stream_values()


def test_mix_options_are_checked() -> None:
    assert LoaderOptions(mix={"weights": "[0.5,0.3,0.2]"}).mix_values(3) == {"weights": [0.5, 0.3, 0.2]}
    assert LoaderOptions(mix={"weights": "0.5,0.5"}).mix_values(2) == {"weights": [0.5, 0.5]}
    with pytest.raises(ValueError, match="has 3 weights for the 2 datasets"):
        LoaderOptions(mix={"weights": "[0.5,0.3,0.2]"}).mix_values(2)
    with pytest.raises(ValueError, match="list of numbers"):
        LoaderOptions(mix={"weights": "[a,b]"}).mix_values(2)
    with pytest.raises(ValueError, match="intersection or union"):
        LoaderOptions(mix={"features": "all"}).mix_values(2)
    with pytest.raises(ValueError, match="needs a list of datasets"):
        LoaderOptions(mix={"weights": "[1]"}).mix_values(None)
    with pytest.raises(ValueError, match="unknown option --mix.weight "):
        LoaderOptions(mix={"weight": "[1]"}).mix_values(1)


def test_options_given_again_override_saved_ones() -> None:
    saved = LoaderOptions({"cache_bytes": "1000", "backend": "http"}, {"weights": "[1,1]"})
    merged = LoaderOptions({"backend": "fsspec"}).merged_over(saved)
    assert merged.stream == {"cache_bytes": "1000", "backend": "fsspec"} and merged.mix == {"weights": "[1,1]"}


# -- the dataset built from lerobot-train's settings ---------------------------------------------------------
@pytest.mark.filterwarnings("ignore:StreamingLeRobot\\(num_workers=2\\)")
def test_one_dataset_takes_lerobots_settings_and_stream_options(one: Path) -> None:
    request = DatasetRequest(repo_id=str(one), episodes=[0, 2], tolerance_s=1e-3, seed=7, num_workers=2,
                             depth_output_unit="m")
    options = LoaderOptions({"cache_bytes": "5e7", "pool_size": "3", "prefetch_episodes": "2"})
    windows = {"action": [0.0, 1 / 30]}
    dataset = build_dataset(request, options, delta_timestamps=lambda meta: windows, rank=0, world_size=1)
    assert isinstance(dataset, StreamingLeRobot)
    assert dataset.episodes.tolist() == [0, 2] and dataset.seed == 7 and dataset.shuffle
    assert dataset.return_uint8 and dataset.tolerance_s == 1e-3 and dataset.depth_output_unit == "m"
    assert dataset.pool_size == 3 and dataset.settings["cache_bytes"] == 50_000_000
    assert dataset.settings["prefetch_episodes"] == 2 and dataset.num_workers == 2
    item = next(iter(dataset))
    assert tuple(item["action"].shape) == (2, 6) and item["observation.images.cam0"].dtype.is_floating_point is False
    assert dataset.meta.has_language_columns is False and dataset.meta.repo_id == str(one)


def test_language_columns_are_seen_as_lerobot_sees_them(make_sample) -> None:
    annotated = make_sample(episodes=2, cameras=1, frames_per_episode=(8, 10), size=(64, 48), extra_columns=True)
    assert build_dataset(DatasetRequest(repo_id=str(annotated)), LoaderOptions()).meta.has_language_columns


def test_no_seed_means_seed_zero_and_stream_options_may_turn_shuffle_off(one: Path) -> None:
    dataset = build_dataset(DatasetRequest(repo_id=str(one)), LoaderOptions({"shuffle": "false"}))
    assert dataset.seed == 0 and not dataset.shuffle


def test_root_holding_the_dataset_is_read_as_lerobot_reads_it(one: Path, tmp_path: Path) -> None:
    assert DatasetRequest(repo_id="user/name", root=str(one)).source() == str(one)
    assert DatasetRequest(repo_id="user/name", root=str(tmp_path / "none")).source() == "user/name"
    assert DatasetRequest(repo_id="user/name", repo_type="bucket").source() == "hf://buckets/user/name"
    with pytest.raises(ValueError, match="repo_type"):
        DatasetRequest(repo_id="user/name", repo_type="model").source()


def test_a_list_trains_on_a_weighted_mixture(one: Path, two: Path) -> None:
    request = DatasetRequest(repo_id=f"['{one}', '{two}']", seed=3)
    options = LoaderOptions({"cache_bytes": "60000000", "backend": "fsspec"},
                            {"weights": "[0.75,0.25]", "features": "union"})
    mixture = build_dataset(request, options, delta_timestamps=lambda meta: {"action": [0.0, 1 / meta.fps]})
    assert isinstance(mixture, TrainingMixture)
    assert mixture.weights.tolist() == [0.75, 0.25] and mixture.features == "union" and mixture.seed == 3
    assert mixture.settings["cache_bytes"] == 60_000_000 and mixture.shuffle
    assert all(s.meta.location.backend == "fsspec" and s.return_uint8 for s in mixture.sources)
    assert mixture.num_frames == mixture.samples_per_epoch == sum(s.num_frames for s in mixture.sources)
    assert mixture.num_episodes == 7
    meta = mixture.meta
    assert meta.fps == 30 and meta.repo_id == f"{one}, {two}" and meta.depth_keys == []
    assert meta.video_keys == meta.camera_keys == ["observation.images.cam0"] and not meta.has_language_columns
    assert meta.total_tasks == 2 and meta.robot_type == mixture.sources[0].meta.robot_type
    assert tuple(next(iter(mixture))["action"].shape) == (2, 6)


def test_mixture_stats_are_the_sources_aggregated(one: Path, two: Path) -> None:
    mixture = build_dataset(DatasetRequest(repo_id=f"[{one},{two}]"), LoaderOptions())
    frames = [s.num_frames for s in mixture.sources]
    means = [np.asarray(s.meta.stats["observation.state"]["mean"]) for s in mixture.sources]
    want = (means[0] * frames[0] + means[1] * frames[1]) / sum(frames)
    np.testing.assert_allclose(mixture.meta.stats["observation.state"]["mean"], want, rtol=1e-6)


def test_sources_that_cannot_be_mixed_are_one_error_and_stream_options_can_align_them(
        one: Path, make_sample) -> None:
    larger = make_sample(episodes=2, cameras=1, frames_per_episode=(8, 10), size=(96, 72), seed=9, state_dim=7)
    with pytest.raises(ValueError, match=r"sources disagree on the shape or dtype of 'observation.state'.*"
                                         r"'observation.images.cam0'"):
        build_dataset(DatasetRequest(repo_id=f"[{one},{larger}]"), LoaderOptions(), check_only=True)
    same_size = make_sample(episodes=2, cameras=1, frames_per_episode=(8, 10), size=(96, 72), seed=9)
    mixture = build_dataset(DatasetRequest(repo_id=f"[{one},{same_size}]"), LoaderOptions({"image_size": "[48,64]"}),
                            check_only=True)
    assert [s.image_size for s in mixture.sources] == [(48, 64), (48, 64)]


@pytest.mark.parametrize(("request_args", "options", "message"), [
    (dict(repo_id="{missing}"), {}, "no such dataset folder"),
    (dict(repo_id="[{one},{missing}]"), {}, "no such dataset folder"),
    (dict(repo_id="[{one},{one}]", episodes=[0]), {}, "--dataset.episodes selects episodes of one dataset"),
    (dict(repo_id="[{one},{one}]", root="{one}"), {}, "--dataset.root names one dataset"),
    (dict(repo_id="{one}"), {"rename": '{"action": "act"}'}, "--rename_map"),
    (dict(repo_id="{one}", episodes=[99]), {}, r"episodes \[99\] do not exist"),
    (dict(repo_id="{one}"), {"cache_bytes": "-5"}, "must be >= 1"),
])
def test_bad_settings_fail_with_one_error_before_training(one: Path, tmp_path: Path, request_args: dict,
                                                         options: dict, message: str) -> None:
    names = {"one": str(one), "missing": str(tmp_path / "missing")}
    request = DatasetRequest(**{k: v.format(**names) if isinstance(v, str) else v for k, v in request_args.items()})
    with pytest.raises((ValueError, OSError), match=message):
        build_dataset(request, LoaderOptions(options), check_only=True)


# -- the command -------------------------------------------------------------------------------------------
def _command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lerobot_stream_loader.cli", "train", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_supported_lerobot_versions() -> None:
    assert supported("0.6.1") and supported("0.6.3") and supported("0.6.1.post1")
    assert not supported("0.6.0") and not supported("0.7.0") and not supported("0.4.4")


def test_train_help_names_the_options() -> None:
    done = _command("--help")
    assert done.returncode == 0
    assert "--stream.NAME=VALUE" in done.stdout and "cache_bytes" in done.stdout and "weights" in done.stdout


def test_an_unknown_stream_option_is_one_line() -> None:
    done = _command("--dataset.repo_id=/nowhere", "--stream.cache_byte=3")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        done.stderr.strip()] and "--stream.cache_byte (did you mean --stream.cache_bytes?)" in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("lerobot") is not None, reason="LeRobot is installed here")
def test_without_lerobot_one_line_says_how_to_install_it() -> None:
    done = _command("--dataset.repo_id=/nowhere", "--policy.type=act")
    assert done.returncode == 1
    assert done.stderr.strip() == ('lerobot-stream train: LeRobot is not installed: pip install --no-deps '
                                   '"lerobot==0.6.1", then the packages docs/training.md lists (LeRobot\'s own pins '
                                   "would replace this package's torch and torchcodec)")
