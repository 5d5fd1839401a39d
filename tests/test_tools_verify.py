"""Tools check every frame they write: shuffle's re-encode under CPU load, realign's stream copies.

Every frame of every output MP4 is decoded whole (PyAV) and its drawn index compared with the row
it belongs to, over several seeds and episode-length mixes, while other processes keep every core busy.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.mp4 import index_mp4
from lerobot_stream_loader.synthetic.checks import read_frame_index
from lerobot_stream_loader.tools import ToolError, realign_parquets_to_videos, shuffle_episodes, validate
from lerobot_stream_loader.tools.remux import cut_mp4
from lerobot_stream_loader.tools.verify import (
    OutputCheckError,
    check_stream_copy,
    decode_fingerprints,
    find_wrong_frames,
)
from tests.test_tools_realign import leftovers

# The layout of a reported fault: SVT-AV1 preset 12 mangled a few frames of this data into near
# copies of their neighbours, which shuffle wrote out unnoticed.
REPORTED = {"episodes": 24, "cameras": 2, "size": (256, 192), "frames_per_episode": (37, 53),
            "episodes_per_video_file": 4, "stagger_cameras": True, "codec": "av1", "seed": 3}
SHORT_AND_LONG = {"episodes": 10, "cameras": 1, "size": (192, 128), "frames_per_episode": (3, 90),
                  "episodes_per_video_file": 3, "codec": "av1", "seed": 11}


@contextlib.contextmanager
def cpu_load(seconds: float = 600.0):
    """Keep every core busy with other processes (plain busy loops, ended at exit) while the block runs."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for process in spinners:
            process.kill()
        for process in spinners:
            process.wait(10)


def frames_by_row(root: Path) -> dict[str, dict[int, int]]:
    """Per camera: global row index -> index drawn in that frame, from whole-file decodes."""
    meta = load_meta(root)
    shown: dict[str, dict[int, int]] = {}
    for key in meta.video_keys:
        shown[key] = {}
        for path in sorted({e.videos[key].path for e in meta.episodes}):
            with av.open(str(root / path)) as container:
                stream = container.streams.video[0]
                drawn = {round(float(f.pts * stream.time_base) * meta.fps): read_frame_index(
                    f.to_ndarray(format="rgb24"), strict=False) for f in container.decode(stream)}
            for episode in [e for e in meta.episodes if e.videos[key].path == path]:
                first = round(episode.videos[key].from_timestamp * meta.fps)
                for k in range(episode.length):
                    shown[key][episode.from_index + k] = drawn[first + k]
    return shown


def assert_every_frame_matches_its_row(root: Path, source: Path, order: list[int]) -> None:
    src, out = load_meta(source), load_meta(root)
    expected = {}
    for new, old in enumerate(order):
        a, b = src.episode(old), out.episode(new)
        expected.update({b.from_index + k: a.from_index + k for k in range(a.length)})
    for key, shown in frames_by_row(root).items():
        wrong = {row: (index, expected[row]) for row, index in shown.items() if index != expected[row]}
        assert len(shown) == out.total_frames
        assert not wrong, f"{key}: row -> (drawn, expected) {dict(list(wrong.items())[:5])}"
    table = pq.read_table(root / out.episodes[0].data_path, columns=["index", "observation.state"])
    assert table.num_rows  # rows keep their source values: their state still names the source frame


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("layout", "seeds"), [(REPORTED, (5, 6)), (SHORT_AND_LONG, (1, 2))],
                         ids=["reported-layout", "short-and-long"])
def test_shuffle_writes_every_frame_right_under_cpu_load(make_sample, tmp_path, layout, seeds):
    source = make_sample(**layout)
    for seed in seeds:
        with cpu_load():
            result = shuffle_episodes(source, tmp_path / f"out{seed}", seed=seed, max_workers=1)
        out = Path(result.output)
        assert_every_frame_matches_its_row(out, source, result.order)
        report = validate(out)
        assert report.ok, report.problems


def _file_and_prints(root: Path) -> tuple[bytes, np.ndarray, list[int]]:
    meta = load_meta(root)
    path = meta.episodes[0].videos[meta.video_keys[0]].path
    lengths = [e.length for e in meta.episodes if e.videos[meta.video_keys[0]].path == path]
    data = (root / path).read_bytes()
    return data, decode_fingerprints(data), lengths


def test_fingerprints_pass_a_file_against_itself_and_catch_a_swap_and_a_repeat(make_sample):
    source = make_sample(episodes=3, cameras=1, size=(96, 64), frames_per_episode=(12, 16),
                         episodes_per_video_file=3, codec="av1", seed=2)
    data, prints, lengths = _file_and_prints(source)
    assert find_wrong_frames(prints, prints, lengths) == []
    noisy = prints + np.random.default_rng(0).normal(0, 1.0, prints.shape).astype(np.float32)
    assert find_wrong_frames(noisy, prints, lengths) == []
    swapped = prints.copy()
    swapped[[4, 5]] = swapped[[5, 4]]
    assert [w.position for w in find_wrong_frames(swapped, prints, lengths)] == [4, 5]
    repeated = prints.copy()
    repeated[lengths[0] + 3] = prints[lengths[0] + 2]  # a frame showing its predecessor
    wrong = find_wrong_frames(repeated, prints, lengths)
    assert [(w.episode, w.frame, w.closest) for w in wrong] == [(1, 3, 2)]
    assert "closer to source frame 2" in wrong[0].describe()
    mangled = noisy.copy()
    mangled[lengths[0] + 1] += 40.0  # far from every source frame, its own included
    wrong = find_wrong_frames(mangled, prints, lengths)
    assert [(w.episode, w.frame) for w in wrong] == [(1, 1)] and "a mangled frame" in wrong[0].describe()


def test_the_stream_copy_check_catches_a_changed_byte(make_sample, tmp_path):
    source = make_sample(episodes=3, cameras=1, size=(64, 48), frames_per_episode=(5, 8),
                         episodes_per_video_file=3, codec="h264", seed=4)
    data, _, _ = _file_and_prints(source)
    index = index_mp4(data)
    span = index.span(0.0, float(index.display_seconds[-1]) + 0.5)
    payload = data[span.byte_offset:span.byte_offset + span.byte_length]
    copy = cut_mp4(index, span, payload)
    check_stream_copy("copy.mp4", copy, index, span, payload)
    first = index_mp4(copy)
    damaged = bytearray(copy)
    damaged[int(first.offset[2]) + 3] ^= 0xFF
    with pytest.raises(OutputCheckError, match=r"copy\.mp4: sample 2 differs"):
        check_stream_copy("copy.mp4", bytes(damaged), index, span, payload)
    with av.open(io.BytesIO(copy)) as container:  # the copy decodes whole
        assert sum(1 for _ in container.decode(video=0)) == span.sample_hi - span.sample_lo


@pytest.mark.timeout(300)
def test_realign_output_frames_match_their_rows(make_sample, tmp_path):
    source = make_sample(episodes=6, cameras=2, size=(96, 64), frames_per_episode=(5, 12),
                         episodes_per_video_file=2, episodes_per_data_file=4, stagger_cameras=True,
                         codec="av1", seed=8)
    result = realign_parquets_to_videos(source, tmp_path / "out")
    assert result.cut_video_files > 0
    order = load_meta(source).episode_indices
    assert_every_frame_matches_its_row(Path(result.output), source, order)


@pytest.mark.timeout(300)
def test_a_file_that_fails_the_check_at_every_preset_leaves_nothing(make_sample, tmp_path, monkeypatch):
    from lerobot_stream_loader.tools import shuffle_tasks

    source = make_sample(episodes=3, cameras=1, size=(64, 48), frames_per_episode=(6, 9),
                         episodes_per_video_file=3, codec="av1", seed=5)

    def nothing_matches(path, data, expected, lengths):  # the check itself is tested above
        raise OutputCheckError(f"{path}: frame 0 does not show its source frame")

    monkeypatch.setattr(shuffle_tasks, "check_reencoded", nothing_matches)
    out = tmp_path / "out"
    with pytest.raises(ToolError, match="does not show its source frame.*nothing was written"):
        shuffle_episodes(source, out, seed=1, max_workers=1)
    assert not out.exists()
    assert leftovers(out) == []


@pytest.mark.timeout(900)
def test_shuffle_of_a_lerobot_written_dataset_keeps_every_frame(tmp_path):
    from tests.support.lerobot_reference import REPO, run_in_lerobot

    source = tmp_path / "lerobot"
    run_in_lerobot(REPO / "scripts" / "lerobot_write_indexed.py", source, "--episodes", "12",
                   "--robot-type", "synthetic")
    assert validate(source).ok  # robot_type "synthetic" alone is not our sample writer's mark
    source_frames = frames_by_row(source)  # LeRobot's own preset-12 encode may already mangle a frame
    src = load_meta(source)
    for seed in (5, 6):
        result = shuffle_episodes(source, tmp_path / f"out{seed}", seed=seed, max_workers=2)
        out = load_meta(Path(result.output))
        row_of = {}
        for new, old in enumerate(result.order):
            a, b = src.episode(old), out.episode(new)
            row_of.update({b.from_index + k: a.from_index + k for k in range(a.length)})
        for key, shown in frames_by_row(Path(result.output)).items():
            wrong = {r: (i, source_frames[key][row_of[r]]) for r, i in shown.items()
                     if i != source_frames[key][row_of[r]]}
            assert not wrong, f"{key}: output row -> (drawn, drawn in the source) {dict(list(wrong.items())[:5])}"
        assert validate(Path(result.output)).ok


def test_validate_checks_the_drawn_index_only_on_marked_sample_datasets(make_sample, tmp_path):
    import json
    import shutil

    import pyarrow as pa

    source = tmp_path / "ds"
    shutil.copytree(make_sample(episodes=2, cameras=1, size=(64, 48), frames_per_episode=(5, 6), seed=9), source)
    for path in source.glob("data/*/*.parquet"):  # rows no longer follow the sample writer's formulas
        table = pq.read_table(path)
        where = table.schema.get_field_index("observation.state")
        zeros = pa.array([[0.0] * len(v) for v in table.column(where).to_pylist()], table.schema.field(where).type)
        pq.write_table(table.set_column(where, table.schema.field(where), zeros), path)
    report = validate(source)
    assert not report.ok and any("pattern index" in p for p in report.problems)
    info = json.loads((source / "meta/info.json").read_text())
    info.pop("sample_pattern")
    (source / "meta/info.json").write_text(json.dumps(info, indent=4))
    assert info["robot_type"] == "synthetic"
    assert validate(source).ok, validate(source).problems


@pytest.mark.timeout(300)
def test_shuffle_from_a_script_read_on_standard_input(make_sample, tmp_path):
    source = make_sample(episodes=3, cameras=1, size=(64, 48), frames_per_episode=(5, 8),
                         episodes_per_video_file=1, codec="h264", seed=6)
    out = tmp_path / "out"
    script = (f"from lerobot_stream_loader.tools import shuffle_episodes\n"
              f"print(shuffle_episodes({str(source)!r}, {str(out)!r}, seed=2, max_workers=2).tasks)\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "threads of this process" in done.stderr
    assert validate(out).ok


@pytest.mark.timeout(300)
@pytest.mark.parametrize("guarded", [False, True])
def test_shuffle_from_a_script_file_runs_its_top_level_once(make_sample, tmp_path, guarded):
    source = make_sample(episodes=3, cameras=1, size=(64, 48), frames_per_episode=(5, 8),
                         episodes_per_video_file=1, codec="h264", seed=6)
    out, runs = tmp_path / "out", tmp_path / "runs.txt"
    call = f"print(shuffle_episodes({str(source)!r}, {str(out)!r}, seed=2, max_workers=2).tasks)\n"
    script = tmp_path / "job.py"
    script.write_text("from lerobot_stream_loader.tools import shuffle_episodes\n"
                      f"with open({str(runs)!r}, 'a') as f:\n    f.write('top level ran\\n')\n"
                      + ("if __name__ == '__main__':\n    " + call if guarded else call))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    # Unguarded, spawned workers would run the script again: threads are used, with a warning.
    assert ("threads of this process" in done.stderr) is not guarded
    ran = runs.read_text().count("top level ran")
    assert ran == 1 if not guarded else ran > 1  # guarded: worker processes import the script
    assert validate(out).ok


@pytest.mark.timeout(300)
def test_shuffle_keeps_a_depth_camera_lossless_and_12_bit(make_sample, tmp_path):
    from lerobot_stream_loader.meta.depth import depth_keys
    from lerobot_stream_loader.synthetic.depth import depth_codes

    source = make_sample(episodes=4, cameras=1, depth_camera=True, size=(64, 48), frames_per_episode=(5, 9),
                         episodes_per_video_file=2, codec="av1", seed=12)
    result = shuffle_episodes(source, tmp_path / "out", seed=3, max_workers=2)
    out, src = load_meta(Path(result.output), all_columns=True), load_meta(source, all_columns=True)
    (key,) = depth_keys(out.features)
    info = out.features[key]["info"]
    assert (info["video.codec"], info["video.pix_fmt"]) == ("hevc", "gray12le")
    assert {k: v for k, v in info.items() if k.startswith("video.depth") or k == "video.shift"} == {
        k: v for k, v in src.features[key]["info"].items() if k.startswith("video.depth") or k == "video.shift"}
    width, height = out.features[key]["shape"][1], out.features[key]["shape"][0]
    checked = 0
    for new, old in enumerate(result.order):
        a, b = src.episode(old), out.episode(new)
        with av.open(str(Path(result.output) / b.videos[key].path)) as container:
            stream = container.streams.video[0]
            codes = {round(float(f.pts * stream.time_base) * out.fps): f.to_ndarray(format="gray12le")
                     for f in container.decode(stream)}
        first = round(b.videos[key].from_timestamp * out.fps)
        for k in range(a.length):
            assert np.array_equal(codes[first + k], depth_codes(a.from_index + k, width, height)), (new, k)
            checked += 1
    assert checked == out.total_frames
    assert validate(Path(result.output)).ok
    for stat in ("min", "max", "mean"):  # lossless: the source's per-episode depth stats carry over
        column = f"stats/{key}/{stat}"
        by_episode = dict(zip(src.episodes_table.column("episode_index").to_pylist(),
                              src.episodes_table.column(column).to_pylist()))
        assert out.episodes_table.column(column).to_pylist() == [by_episode[o] for o in result.order]


@pytest.mark.timeout(300)
def test_shuffle_reads_every_frame_when_a_converter_wrote_to_timestamp_short(make_sample, tmp_path):
    source = make_sample(episodes=5, cameras=1, size=(64, 48), frames_per_episode=(6, 10),
                         episodes_per_video_file=2, codec="mpeg4", to_timestamp_short=True, seed=1)
    result = shuffle_episodes(source, tmp_path / "out", seed=2, max_workers=2)
    assert_every_frame_matches_its_row(Path(result.output), source, result.order)
    assert validate(Path(result.output)).ok
