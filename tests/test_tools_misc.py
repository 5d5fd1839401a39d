"""data_files, validate, prepare, the streaming encoder and the tool subcommands."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lerobot_stream_loader.cli import main
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.meta.stats import RunningImageStats
from lerobot_stream_loader.mp4 import index_mp4
from lerobot_stream_loader.tools import (
    CodecSettings,
    StreamingEncoder,
    ToolError,
    prepare,
    update_info_with_data_files,
    validate,
)
from lerobot_stream_loader.tools.remux import episode_bounds
from tests.test_tools_realign import SMALL, leftovers

EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"


@pytest.fixture
def sample_copy(make_sample, tmp_path) -> Path:
    """A writable copy of a small sample dataset."""
    return Path(shutil.copytree(make_sample(**SMALL), tmp_path / "copy"))


def test_data_files_is_idempotent(sample_copy, capsys):
    info_path = sample_copy / "meta/info.json"
    assert "data_files" not in json.loads(info_path.read_text())
    files = update_info_with_data_files(sample_copy)
    assert files == sorted({e.data_path for e in load_meta(sample_copy).episodes}) and len(files) == 2
    first = info_path.read_bytes()
    assert main(["data-files", str(sample_copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data_files"] == files
    assert info_path.read_bytes() == first
    assert json.loads(first)["data_files"] == files


@pytest.mark.timeout(60)
def test_validate_reports_wrong_frames_and_missing_files(sample_copy, capsys):
    assert validate(sample_copy).ok
    table = pq.read_table(sample_copy / EPISODES_FILE)
    column = "videos/observation.images.cam0/from_timestamp"
    lo = table.column(column).to_pylist()
    hi = table.column(column.replace("from", "to")).to_pylist()
    # episodes 0 and 1 swap their spans inside the first file: lengths differ, frames do not match
    lo[0], lo[1], hi[0], hi[1] = lo[1], lo[0], hi[1], hi[0]
    for name, values in ((column, lo), (column.replace("from", "to"), hi)):
        where = table.schema.get_field_index(name)
        table = table.set_column(where, table.schema.field(where), pa.array(values, pa.float64()))
    pq.write_table(table, sample_copy / EPISODES_FILE)
    report = validate(sample_copy)
    assert not report.ok and any("episode 0" in p for p in report.problems), report.problems
    assert main(["validate", str(sample_copy)]) == 1
    (sample_copy / load_meta(sample_copy).data_files[1]).unlink()
    report = validate(sample_copy)
    assert report.problems and "missing" in report.problems[0]
    capsys.readouterr()
    assert main(["validate", str(sample_copy), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


@pytest.mark.timeout(120)
def test_prepare_realigns_indexes_and_validates(make_sample, tmp_path, capsys):
    source = make_sample(**SMALL)
    out = tmp_path / "out"
    umask = os.umask(0o022)
    try:
        assert main(["prepare", str(source), str(out), "--no-shuffle", "--json"]) == 0
    finally:
        os.umask(umask)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes == {0o644}, "outputs get the modes the umask gives (a web server may serve them)"
    summary = json.loads(capsys.readouterr().out)
    assert summary["validation"]["ok"] and summary["validation"]["aligned"]
    assert (out / "meta/mp4_index.bin").is_file() and summary["shuffled"] is False
    assert main(["validate", str(out)]) == 0
    with pytest.raises(FileExistsError):
        prepare(source, out, shuffle=False)


@pytest.mark.timeout(120)
def test_prepare_never_commits_a_dataset_that_fails_validation(make_sample, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(make_sample(**SMALL), source)
    table = pq.read_table(source / EPISODES_FILE)
    where = table.schema.get_field_index("tasks")
    table = table.set_column(where, table.schema.field(where), pa.array([["x"]] * table.num_rows,
                                                                         table.schema.field(where).type))
    pq.write_table(table, source / EPISODES_FILE)
    info = json.loads((source / "meta/info.json").read_text())
    info["total_tasks"] = 7
    (source / "meta/info.json").write_text(json.dumps(info))
    out = tmp_path / "out"
    with pytest.raises(ToolError, match="does not validate: info.json total_tasks is 7"):
        prepare(source, out, shuffle=False)
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("command", ["data-files", "realign", "shuffle", "prepare", "validate"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0 and "--json" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_streaming_encoder_starts_every_episode_with_a_keyframe(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [5, 3, 6]
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(sum(lengths))]
    outputs = {"a": str(tmp_path / "a.mp4"), "b": str(tmp_path / "b.mp4")}
    encoder = StreamingEncoder(outputs, 64, 48, 30, CodecSettings(g=4))
    position = 0
    for length in lengths:
        for frame in frames[position:position + length]:
            encoder.add_frame("a", frame)
            encoder.add_frame("b", frame[::-1])
        encoder.end_episode()
        position += length
    results = encoder.close()
    for key, path in outputs.items():
        data = Path(path).read_bytes()
        index = index_mp4(data)
        starts = np.cumsum([0, *lengths[:-1]])
        assert index.sync[index.display_order[starts]].all()
        assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")
        assert [round(lo * 30) for lo, _ in episode_bounds(data, lengths, 30, path)] == list(starts)
        assert results[key].lengths == lengths
    pixels = np.stack(frames[:5]).reshape(-1, 3).astype(np.float64)
    stats = results["a"].stats[0]
    assert stats["count"].tolist() == [5]
    np.testing.assert_allclose(stats["mean"].ravel(), pixels.mean(axis=0) / 255)
    np.testing.assert_allclose(stats["std"].ravel(), pixels.std(axis=0) / 255)
    for key, q in (("q01", 0.01), ("q50", 0.5), ("q99", 0.99)):
        np.testing.assert_allclose(stats[key].ravel(), np.quantile(pixels, q, axis=0) / 255)


def test_running_image_stats_downsample_large_frames_like_lerobot():
    stats = RunningImageStats()
    frame = np.zeros((300, 600, 3), np.uint8)
    frame[::4, ::4] = 200  # exactly the pixels a stride-4 downsample keeps
    stats.update(frame)
    result = stats.result()
    assert result["min"].ravel().tolist() == [200 / 255] * 3 and result["mean"].shape == (3, 1, 1)


def test_auto_vcodec_falls_back_to_an_encoder_that_works():
    settings = CodecSettings("auto").resolved()
    assert settings.vcodec != "auto"
    assert settings.vcodec == "libsvtav1" or settings.vcodec.split("_")[-1] in (
        "nvenc", "qsv", "vaapi", "videotoolbox")


def test_encoder_threads_map_to_each_encoders_option_and_are_not_recorded():
    assert CodecSettings(threads=1).encoder_options()["svtav1-params"] == "lp=1"
    mine = CodecSettings(options=(("svtav1-params", "tune=0"),), threads=2).encoder_options()
    assert mine["svtav1-params"] == "tune=0:lp=2"
    assert CodecSettings(options=(("svtav1-params", "lp=4"),), threads=2).encoder_options()["svtav1-params"] == "lp=4"
    assert CodecSettings("libx264", threads=3).encoder_options()["threads"] == "3"
    assert "threads" not in CodecSettings().encoder_options() and "svtav1-params" not in CodecSettings().encoder_options()
    assert CodecSettings(threads=2).feature_info() == CodecSettings().feature_info()
