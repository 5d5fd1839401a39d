"""shuffle --vcodec copy: episodes stream-copied in a seeded order, every frame bit-identical to the source's.

Every frame of every output camera is compared pixel for pixel with a full-file decode of the source
at the same timestamp (``tests.support.reference``), and its drawn index with its row's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lerobot_stream_loader.cli import main
from lerobot_stream_loader.meta.dataset_meta import load_meta
from lerobot_stream_loader.meta.stats import to_lists, vector_stats
from lerobot_stream_loader.mp4 import index_mp4
from lerobot_stream_loader.synthetic.checks import read_frame_index
from lerobot_stream_loader.tools import CopyNotPossible, prepare, shuffle_episodes, shuffle_order, validate
from lerobot_stream_loader.tools.encoder import CodecSettings, FileEncoder
from lerobot_stream_loader.tools.renumbered_stats import constant_stats, run_stats
from lerobot_stream_loader.tools.shuffle_copy import check_copied_file
from lerobot_stream_loader.tools.verify import OutputCheckError
from tests.support.reference import shuffled_frames
from tests.test_tools_realign import leftovers, tree_hashes

SMALL = {"episodes": 6, "cameras": 2, "size": (64, 48), "frames_per_episode": (5, 9),
         "episodes_per_video_file": 2, "episodes_per_data_file": 4, "stagger_cameras": True}
SOURCES = {
    "av1-staggered": SMALL,
    "h264-bframes": dict(SMALL, codec="h264", bframes=True, gop=4),
    "hevc-depth": dict(SMALL, cameras=1, codec="hevc", depth_camera=True),
}


def assert_frame_exact(source: Path, output: Path, order: list[int], *, drawn: bool = True) -> None:
    """Output episode k is source episode order[k]: equal rows (renumbered), and every frame of every
    camera equal, pixel for pixel, to the source's full-file decode at the same timestamp."""
    for key, j, i, frame, original in shuffled_frames(source, output, order):
        assert torch.equal(frame, original), f"frame {j} of {key} (source frame {i})"
        if drawn and "depth" not in key:
            assert read_frame_index(frame) == i, f"frame {j} of {key}"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_copy_shuffle_is_frame_exact(make_sample, tmp_path, name):
    source = make_sample(**SOURCES[name])
    before = tree_hashes(source)
    result = shuffle_episodes(source, tmp_path / "out", seed=5, vcodec="copy", max_episodes_per_file=2)
    assert tree_hashes(source) == before
    out = Path(result.output)
    src_meta, out_meta = load_meta(source, all_columns=True), load_meta(out, all_columns=True)
    assert result.vcodec == "copy" and result.order == [src_meta.episode_indices[p] for p in shuffle_order(6, 5)]
    report = validate(out)
    assert report.ok and report.aligned, report.problems
    for key in src_meta.video_keys:  # the frames are the source's: so are their features and stats
        assert out_meta.features[key] == src_meta.features[key]
        assert out_meta.stats[key] == src_meta.stats[key]
        column = f"stats/{key}/mean"
        assert out_meta.episodes_table.column(column).to_pylist() == [
            src_meta.episodes_table.column(column)[src_meta.episode_indices.index(o)].as_py() for o in result.order]
    assert_frame_exact(source, out, result.order)


@pytest.mark.timeout(120)
def test_copy_through_the_command_line_matches_the_python_call(make_sample, tmp_path, capsys):
    source = make_sample(**SMALL)
    assert main(["shuffle", str(source), str(tmp_path / "cli"), "--seed", "3", "--vcodec", "copy", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["vcodec"] == "copy" and summary["resumed"] == 0
    python = shuffle_episodes(source, tmp_path / "py", seed=3, vcodec="copy")
    assert tree_hashes(tmp_path / "cli") == tree_hashes(Path(python.output))


@pytest.mark.timeout(120)
def test_a_copy_from_http_equals_the_copy_from_disk(make_sample, nginx_factory, tmp_path):
    """Remote bytes are written from memory, local ones copied by the kernel: the files are the same,
    and two workers write what one writes."""
    source = make_sample(**dict(SMALL, episodes=9, frames_per_episode=(20, 40)))
    local = shuffle_episodes(source, tmp_path / "local", seed=8, vcodec="copy", max_episodes_per_file=3,
                             max_workers=1)
    remote = shuffle_episodes(nginx_factory(source).url, tmp_path / "remote", seed=8, vcodec="copy",
                              max_episodes_per_file=3, max_workers=2)
    assert tree_hashes(Path(remote.output)) == tree_hashes(Path(local.output))
    assert_frame_exact(source, Path(local.output), local.order)


def _without_episode_keyframes(source: Path, key: str) -> None:
    """Re-encode every video file of ``key`` as one continuous encode: only a file's first frame is a
    keyframe, so its later episodes start without one (timestamps unchanged)."""
    meta = load_meta(source)
    height, width = meta.features[key]["shape"][:2]
    for relative in sorted({e.videos[key].path for e in meta.episodes}):
        path = source / relative
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        encoder = FileEncoder(f"{path}.new", width, height, meta.fps,
                              CodecSettings("libx264", g=1000, crf=20, preset="ultrafast"))
        for frame in frames:
            encoder.add(frame)
        encoder.close()
        Path(f"{path}.new").replace(path)


@pytest.mark.timeout(180)
def test_a_source_whose_episode_does_not_start_on_a_keyframe_is_refused_by_name(make_sample, tmp_path, capsys):
    source = tmp_path / "src"
    shutil.copytree(make_sample(**dict(SMALL, codec="h264")), source)
    _without_episode_keyframes(source, "observation.images.cam1")
    index = index_mp4((source / "videos/observation.images.cam1/chunk-000/file-000.mp4").read_bytes())
    assert index.sync.sum() == 1  # the MP4 index marks one keyframe: the file's first frame
    assert validate(source).ok
    first = next(e for e in load_meta(source).episodes
                 if e.videos["observation.images.cam1"].from_timestamp > 0)  # the cameras are staggered
    out = tmp_path / "out"
    with pytest.raises(CopyNotPossible, match=rf"episode {first.index} of observation\.images\.cam1 .*"
                                              r"does not start on a keyframe"):
        shuffle_episodes(source, out, seed=1, vcodec="copy")
    assert not out.exists() and leftovers(out) == []
    capsys.readouterr()
    assert main(["shuffle", str(source), str(out), "--seed", "1", "--vcodec", "copy"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"episode {first.index} of observation.images.cam1" in error[0]
    # prepare copies where it can and re-encodes here; the re-encoding shuffle still works
    result = prepare(source, out, seed=1)
    assert result.summary["vcodec"] == "libsvtav1" and result.validation["ok"]


def test_the_copy_check_catches_a_changed_byte(make_sample, tmp_path):
    source = make_sample(**SMALL)
    from lerobot_stream_loader.mp4.concat import sample_run, without_bitrate
    from lerobot_stream_loader.tools.shuffle_copy import CopyTask, run_copy_task
    from lerobot_stream_loader.tools.shuffle_tasks import EpisodeMove
    from lerobot_stream_loader.tools.source import SourceFiles, VideoSource

    meta = load_meta(source)
    key = meta.video_keys[0]
    moves = tuple(EpisodeMove(e.index, n, e.length, e.from_index, 0, e.data_path,
                              ((key, e.videos[key].path, e.videos[key].from_timestamp, e.videos[key].to_timestamp),))
                  for n, e in enumerate(reversed(meta.episodes[:3])))
    task = CopyTask(SourceFiles.of(meta), key, str(tmp_path / "copy.mp4"), moves, meta.fps, 64, 48)
    outcome = run_copy_task(task)
    data = (tmp_path / "copy.mp4").read_bytes()
    assert outcome["bytes"] == len(data)
    videos = VideoSource(SourceFiles.of(meta))
    runs, stsd = [], b""
    for move in moves:
        path, lo, hi = move.video(key)
        index, span = videos.span(path, lo, hi, move.length, "episode")
        runs.append(sample_run(index, span, videos.payload(path, span)))
        stsd = without_bitrate(index.info.stsd)
    lengths = [m.length for m in moves]
    check_copied_file("copy.mp4", data, stsd, runs, lengths)
    damaged = bytearray(data)
    damaged[int(index_mp4(data).offset[lengths[0] + 1]) + 2] ^= 0xFF
    with pytest.raises(OutputCheckError, match=r"copy\.mp4: episode #1 of the file differs"):
        check_copied_file("copy.mp4", bytes(damaged), stsd, runs, lengths)


@pytest.mark.timeout(900)
def test_copy_shuffle_of_a_lerobot_written_dataset_is_frame_exact(tmp_path):
    from tests.support.lerobot_reference import run_in_lerobot

    source = tmp_path / "lerobot"
    script = tmp_path / "write.py"  # LeRobot's writer: an RGB and a 12-bit depth video camera, image features
    script.write_text("import sys\nfrom pathlib import Path\ntry:\n    import tvshim  # noqa: F401\nexcept ImportError:\n"
                      "    pass\nfrom scripts.lerobot_written import write_lerobot_dataset\n"
                      "write_lerobot_dataset(Path(sys.argv[1]), episodes=5, frames=(5, 9), size=(64, 48))\n")
    run_in_lerobot(script, source)
    assert validate(source).ok
    for seed in (2, 3):
        result = shuffle_episodes(source, tmp_path / f"out{seed}", seed=seed, vcodec="copy", max_episodes_per_file=2)
        assert sorted(result.order) == list(range(5)) and result.order != list(range(5))
        out = Path(result.output)
        assert validate(out).ok
        assert_frame_exact(source, out, result.order)


def test_every_drawn_index_survives_a_copy_of_many_files(make_sample, tmp_path):
    source = make_sample(**dict(SMALL, episodes=9, episodes_per_video_file=3))
    result = shuffle_episodes(source, tmp_path / "out", seed=11, vcodec="copy", max_episodes_per_file=4,
                              max_workers=2)
    out_meta, src_meta = load_meta(Path(result.output)), load_meta(source)
    for key in out_meta.video_keys:
        for path in sorted({e.videos[key].path for e in out_meta.episodes}):
            with av.open(str(Path(result.output) / path)) as container:
                drawn = [read_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
            rows = [src_meta.episode(result.order[e.index]).from_index + k for e in out_meta.episodes
                    if e.videos[key].path == path for k in range(e.length)]
            assert drawn == rows, f"{path}"
    assert np.all(np.diff([e.from_index for e in out_meta.episodes]) > 0)


def test_renumbered_index_runs_get_numpys_stats_without_their_column() -> None:
    """Each episode's new ``index`` run gets, from its start and length alone, the floats numpy
    computes from the column: every stat, for short and long runs, small and huge starts (past
    2**52 the column itself is measured)."""
    rng = np.random.default_rng(0)
    starts = [0, 0, 5, 7, 2**40 + 3, 2**52 - 10, 2**53 + 1, 123_456_789, 0, 3]
    counts = [1, 2, 3, 299, 1000, 5, 4, 100_001, 250_000, 300_000]
    starts += rng.integers(0, 10 ** rng.integers(1, 12, 500)).tolist()
    counts += rng.integers(1, 3000, 500).tolist()
    for start, count, got in zip(starts, counts, run_stats(starts, counts), strict=True):
        expected = to_lists(vector_stats(np.arange(start, start + count)))
        assert got == expected, (start, count)
        assert [type(v[0]) for v in got.values()] == [type(v[0]) for v in expected.values()]


@pytest.mark.parametrize(("value", "count"), [(0, 1), (7, 30), (91_234, 299), (2**40 + 3, 1000)])
def test_a_renumbered_episode_index_gets_numpys_stats_without_its_column(value: int, count: int) -> None:
    """The shuffled episode's ``episode_index`` stats are computed from its number alone: the same
    dtypes, shapes and floats as numpy's statistics of the column."""
    expected, got = vector_stats(np.full(count, value)), constant_stats(value, count)
    assert list(got) == list(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape
        assert np.array_equal(got[key], expected[key]), key
