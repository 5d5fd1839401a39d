"""Expected command-line failures: one line naming the cause, exit status 1; summaries a user reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lerobot_stream_loader.cli import main
from lerobot_stream_loader.errors import DatasetFormatError
from lerobot_stream_loader.meta.dataset_meta import load_meta
from tests.test_tools_realign import SMALL

pytestmark = pytest.mark.timeout(60)
CAMERA = "observation.images.cam0"


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(**SMALL)


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"lerobot-stream {command}: error: "), err
    return err


def test_clip_of_a_missing_episode_is_one_line(sample, tmp_path, capsys):
    assert main(["clip", str(sample), "--episode", "99", "--camera", CAMERA, "-o", str(tmp_path / "x.mp4")]) == 1
    assert "no episode 99 (the dataset has 5)" in _one_error_line(capsys, "clip")


def test_clip_does_not_create_a_missing_output_folder(sample, tmp_path, capsys):
    out = tmp_path / "absent" / "dir" / "x.mp4"
    assert main(["clip", str(sample), "--episode", "0", "--camera", CAMERA, "-o", str(out)]) == 1
    assert f"the folder {out.parent} does not exist" in _one_error_line(capsys, "clip")
    assert not (tmp_path / "absent").exists()


def test_clip_onto_a_folder_and_data_files_of_a_read_only_url_are_one_line(sample, tmp_path, capsys):
    assert main(["clip", str(sample), "--episode", "0", "--camera", CAMERA, "-o", str(tmp_path)]) == 1
    assert f"{tmp_path} is a folder" in _one_error_line(capsys, "clip")
    assert main(["data-files", "http://127.0.0.1:9/ds"]) == 1
    assert "read-only" in _one_error_line(capsys, "data-files")


def test_sample_onto_a_non_empty_folder_names_the_flag(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["sample", str(tmp_path / "out"), "--episodes", "1"]) == 1
    line = _one_error_line(capsys, "sample")
    assert "--overwrite" in line and "overwrite=True" not in line
    assert main(["sample", str(tmp_path / "bad"), "--episodes", "0"]) == 1
    assert "episodes must be >= 1" in _one_error_line(capsys, "sample")


@pytest.mark.parametrize("argv", [["shuffle", "a", "b", "--seed", "0", "--workers", "-2"],
                                  ["prepare", "a", "b", "--workers", "0"],
                                  ["index", "a", "--threads", "0"]])
def test_worker_and_thread_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_sample_json_summary(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "ds"), "--episodes", "2", "--cameras", "1", "--size", "64x48",
                 "--frames-per-episode", "4:6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 2 and summary["cameras"] == 1
    assert summary["frames"] == load_meta(tmp_path / "ds").total_frames


def test_validate_summary_reads_as_a_sentence(sample, capsys):
    assert main(["validate", str(sample)]) == 0
    out = capsys.readouterr().out
    rows = load_meta(sample).total_frames
    assert re.fullmatch(rf"{sample}: ok \(checked 5 episodes, {rows} rows, \d+ frames decoded\)", out.splitlines()[-1])
    assert "not aligned (information, not a problem)" in out and "streaming is exact either way" in out


def test_validate_counts_problems_in_words(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent")]) == 1
    out = capsys.readouterr()
    assert "no such dataset folder" in out.err
    assert out.out.strip() == f"{tmp_path / 'absent'}: 1 problem"


def test_backend_option_reaches_metadata_reads(sample, nginx_factory, fault_proxy_factory, tmp_path):
    proxy = fault_proxy_factory(nginx_factory(sample).url, methods=("GET", "HEAD"))
    assert main(["clip", proxy.url, "--episode", "0", "--camera", CAMERA, "-o", str(tmp_path / "x.mp4"),
                 "--backend", "fsspec"]) == 0
    info = [s for s in proxy.seen if s.path == "/meta/info.json"]
    assert info and all("lerobot-stream-loader" not in s.headers.get("user-agent", "") for s in info)


def test_missing_local_folder_is_named_as_such(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nope'}: no such dataset folder"):
        load_meta(tmp_path / "nope")


def test_bare_name_that_is_neither_folder_nor_hub_dataset_says_both(tmp_path, monkeypatch, nginx_factory,
                                                                     fault_proxy_factory, hub_factory):
    cdn = fault_proxy_factory(nginx_factory(tmp_path).url)
    monkeypatch.setenv("HF_ENDPOINT", hub_factory(tmp_path, cdn=cdn).url)
    monkeypatch.chdir(tmp_path)
    with pytest.raises((DatasetFormatError, OSError)) as err:  # no such dataset on the Hub stand-in
        load_meta("myuser/mydata")
    message = str(err.value)
    assert "'myuser/mydata' is neither a local folder" in message and str(tmp_path) in message
    assert "hf://datasets/myuser/mydata" in message
