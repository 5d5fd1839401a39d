"""The sample-dataset writer: LeRobot v3.0 layout, frame identity in every video frame, row values."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lerobot_stream_loader.cli import main as cli_main
from lerobot_stream_loader.synthetic.checks import expected_action, expected_state, read_frame_index

pytestmark = pytest.mark.timeout(180)

TOLERANCE_S = 1e-4
TINY = {"size": (64, 48), "frames_per_episode": (9, 17)}
DATASETS = {
    "av1-g2": dict(TINY, episodes=5, cameras=2, episodes_per_video_file=2, episodes_per_data_file=2),
    "h264-bframes": dict(TINY, episodes=3, cameras=1, codec="h264", gop=8, bframes=True),
    "hevc": dict(TINY, episodes=3, cameras=1, codec="hevc", gop=4),
    "hevc-bframes": dict(TINY, episodes=2, cameras=1, codec="hevc", gop=6, bframes=True),
    "staggered": dict(TINY, episodes=5, cameras=3, episodes_per_video_file=3, stagger_cameras=True),
    "no-faststart": dict(TINY, episodes=3, cameras=1, faststart=False, episodes_per_data_file=1),
}
STATS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@pytest.fixture(params=sorted(DATASETS))
def dataset(request, make_sample) -> tuple[Path, dict]:
    return make_sample(**DATASETS[request.param]), DATASETS[request.param]


def _info(root: Path) -> dict:
    return json.loads((root / "meta/info.json").read_text())


def _episodes(root: Path) -> list[dict]:
    return pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()


def _data_rows(root: Path) -> list[dict]:
    return [row for path in sorted(root.glob("data/*/*.parquet")) for row in pq.read_table(path).to_pylist()]


def _video_keys(info: dict) -> list[str]:
    return [key for key, feature in info["features"].items() if feature["dtype"] == "video"]


def _video_path(root: Path, info: dict, key: str, episode: dict) -> Path:
    relative = info["video_path"].format(
        video_key=key,
        chunk_index=episode[f"videos/{key}/chunk_index"],
        file_index=episode[f"videos/{key}/file_index"],
    )
    return root / relative


def _decode_all(path: Path) -> list[tuple[float, int]]:
    """(presentation time, drawn index) of every frame of an MP4, decoded with PyAV."""
    with av.open(str(path)) as container:
        frames = container.decode(video=0)
        return [(frame.time, read_frame_index(frame.to_ndarray(format="rgb24"))) for frame in frames]


def _top_level_boxes(path: Path) -> list[str]:
    data, boxes, offset = path.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        offset += size if size else len(data)
    return boxes


def test_layout_and_info(dataset):
    root, options = dataset
    info = _info(root)
    cameras = options["cameras"]
    assert info["codebase_version"] == "v3.0"
    for key in ("robot_type", "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb"):
        assert key in info
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    episodes = _episodes(root)
    assert info["total_episodes"] == options["episodes"] == len(episodes)
    assert info["total_frames"] == sum(e["length"] for e in episodes) == len(_data_rows(root))
    assert info["splits"] == {"train": f"0:{options['episodes']}"}
    assert [e["episode_index"] for e in episodes] == list(range(options["episodes"]))
    features = info["features"]
    assert features["observation.state"]["shape"] == [6] and features["action"]["shape"] == [6]
    for name in DEFAULT_COLUMNS:
        assert features[name]["dtype"] == ("float32" if name == "timestamp" else "int64")
    keys = _video_keys(info)
    assert keys == [f"observation.images.cam{k}" for k in range(cameras)]
    width, height = options["size"]
    codec = {"av1": "av1", "h264": "h264", "hevc": "hevc"}[options.get("codec", "av1")]
    for key in keys:
        assert features[key]["shape"] == [height, width, 3]
        assert features[key]["names"] == ["height", "width", "channels"]
        assert features[key]["info"] == {
            "video.height": height, "video.width": width, "video.codec": codec, "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False, "video.fps": 30, "video.channels": 3, "has_audio": False,
        }
    expected_files = {"meta/info.json", "meta/stats.json", "meta/tasks.parquet",
                      "meta/episodes/chunk-000/file-000.parquet"}
    for episode in episodes:
        expected_files.add(info["data_path"].format(
            chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"]))
        for key in keys:
            expected_files.add(str(_video_path(root, info, key, episode).relative_to(root)))
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert found == expected_files
    assert not list(root.parent.glob(".*partial*"))


def test_episodes_table_columns(dataset):
    root, options = dataset
    info = _info(root)
    columns = pq.read_schema(root / "meta/episodes/chunk-000/file-000.parquet").names
    expected = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                "dataset_from_index", "dataset_to_index"]
    for key in _video_keys(info):
        expected += [f"videos/{key}/{c}" for c in VIDEO_COLUMNS]
    expected += [f"stats/{name}/{stat}" for name in info["features"] for stat in STATS]
    expected += ["meta/episodes/chunk_index", "meta/episodes/file_index"]
    assert columns == expected
    episodes = _episodes(root)
    start = 0
    for episode in episodes:
        assert episode["dataset_from_index"] == start
        start = episode["dataset_to_index"]
        assert start - episode["dataset_from_index"] == episode["length"]
        low, high = options["frames_per_episode"]
        assert low <= episode["length"] <= high
        for key in _video_keys(info):
            span = episode[f"videos/{key}/to_timestamp"] - episode[f"videos/{key}/from_timestamp"]
            assert span == pytest.approx(episode["length"] / info["fps"], abs=1e-9)


def test_every_video_frame_carries_the_index_the_metadata_says(dataset):
    root, _ = dataset
    info = _info(root)
    rows_by_episode: dict[int, list[dict]] = {}
    for row in _data_rows(root):
        rows_by_episode.setdefault(row["episode_index"], []).append(row)
    for key in _video_keys(info):
        decoded: dict[Path, list[tuple[float, int]]] = {}
        used: dict[Path, int] = {}
        for episode in _episodes(root):
            path = _video_path(root, info, key, episode)
            frames = decoded.setdefault(path, _decode_all(path))
            start = episode[f"videos/{key}/from_timestamp"]
            for row in rows_by_episode[episode["episode_index"]]:
                query = row["timestamp"] + start
                hits = [index for time, index in frames if abs(time - query) <= TOLERANCE_S]
                assert hits == [row["index"]], f"{path} {key} episode {episode['episode_index']} t={query}"
            used[path] = used.get(path, 0) + episode["length"]
        for path, frames in decoded.items():
            assert len(frames) == used[path], f"{path} holds frames no episode points at"


def test_lerobot_style_torchcodec_lookup(dataset):
    """LeRobot's reader: frame index round(t * average_fps) in approximate mode, pts within 1e-4 s."""
    from torchcodec.decoders import VideoDecoder

    root, _ = dataset
    info = _info(root)
    rows = _data_rows(root)
    episodes = _episodes(root)
    for key in _video_keys(info):
        for episode in episodes:
            path = _video_path(root, info, key, episode)
            decoder = VideoDecoder(str(path), seek_mode="approximate")
            mine = [r for r in rows if r["episode_index"] == episode["episode_index"]]
            queries = [r["timestamp"] + episode[f"videos/{key}/from_timestamp"] for r in mine]
            batch = decoder.get_frames_at(indices=[round(q * decoder.metadata.average_fps) for q in queries])
            found = zip(batch.data, batch.pts_seconds.tolist(), queries, mine, strict=True)
            for frame, pts, query, row in found:
                assert abs(pts - query) < TOLERANCE_S
                assert read_frame_index(frame.float() / 255.0) == row["index"]


def test_rows_match_the_documented_functions(dataset):
    root, _ = dataset
    info = _info(root)
    tasks = {row["task_index"]: row["task"] for row in pq.read_table(root / "meta/tasks.parquet").to_pylist()}
    episodes = {e["episode_index"]: e for e in _episodes(root)}
    for row in _data_rows(root):
        episode = episodes[row["episode_index"]]
        assert row["index"] == episode["dataset_from_index"] + row["frame_index"]
        assert np.float32(row["timestamp"]) == np.float32(row["frame_index"] / info["fps"])
        np.testing.assert_array_equal(np.float32(row["observation.state"]), expected_state(row["index"], 6))
        np.testing.assert_array_equal(np.float32(row["action"]), expected_action(row["index"], 6))
        assert episode["tasks"] == [tasks[row["task_index"]]]


def test_one_row_group_per_episode(dataset):
    root, options = dataset
    per_file = options.get("episodes_per_data_file", 4)
    files = sorted(root.glob("data/*/*.parquet"))
    assert len(files) == -(-options["episodes"] // per_file)
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        column = metadata.schema.to_arrow_schema().get_field_index("episode_index")
        seen = []
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(column).statistics
            assert statistics.min == statistics.max
            seen.append(statistics.min)
        assert seen == sorted(set(seen)) and len(seen) <= per_file


def test_stats(dataset):
    root, _ = dataset
    info = _info(root)
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(info["features"])
    assert stats["observation.state"]["count"] == [info["total_frames"]]
    for name, feature in info["features"].items():
        assert set(stats[name]) == set(STATS)
        if feature["dtype"] == "video":
            for stat in STATS:
                if stat != "count":
                    value = np.array(stats[name][stat])
                    assert value.shape == (3, 1, 1) and (0 <= value).all() and (value <= 1).all()
    states = np.array([row["observation.state"] for row in _data_rows(root)])
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["min"], states.min(axis=0), atol=1e-7)


def test_moov_position_follows_faststart(dataset):
    root, options = dataset
    for path in root.glob("videos/*/*/*.mp4"):
        boxes = _top_level_boxes(path)
        before = boxes.index("moov") < boxes.index("mdat")
        assert before == options.get("faststart", True), f"{path}: {boxes}"


def test_bframes_give_composition_offsets(make_sample):
    cases = (("h264-bframes", True), ("hevc-bframes", True), ("hevc", False), ("av1-g2", False))
    for name, reorders in cases:
        root = make_sample(**DATASETS[name])
        path = next(root.glob("videos/*/*/*.mp4"))
        with av.open(str(path)) as container:
            packets = [(p.pts, p.dts) for p in container.demux(video=0) if p.pts is not None]
        assert any(pts != dts for pts, dts in packets) == reorders, name


def test_staggered_cameras_roll_over_at_different_points(make_sample):
    options = DATASETS["staggered"]
    root = make_sample(**options)
    episodes = _episodes(root)
    changes = {}
    for camera in range(options["cameras"]):
        files = [e[f"videos/observation.images.cam{camera}/file_index"] for e in episodes]
        assert files == sorted(files)
        assert files.count(0) == 3 - camera
        changes[camera] = [i for i in range(1, len(files)) if files[i] != files[i - 1]]
    assert len({tuple(v) for v in changes.values()}) == options["cameras"]


def test_tasks_parquet_is_indexed_by_task(make_sample):
    root = make_sample(**DATASETS["av1-g2"])
    table = pq.read_table(root / "meta/tasks.parquet")
    assert table.column_names == ["task_index", "task"]
    assert json.loads(table.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert table.column("task_index").to_pylist() == [0, 1]
    assert _info(root)["total_tasks"] == 2


def test_read_frame_index_accepts_every_layout(make_sample):
    root = make_sample(**DATASETS["av1-g2"])
    with av.open(str(next(root.glob("videos/*/*/file-000.mp4")))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    chw = torch.from_numpy(frame).permute(2, 0, 1)
    for variant in (frame, frame / 255.0, chw, chw.float() / 255.0, frame[..., :1], np.float32(frame) / 255):
        assert read_frame_index(variant) == 0
    grey = np.full_like(frame, 128)
    with pytest.raises(ValueError, match="band"):
        read_frame_index(grey)
    assert read_frame_index(grey, strict=False) == 65535


def test_out_folder_handling(tmp_path):
    from lerobot_stream_loader.synthetic import write_sample_dataset

    out = tmp_path / "ds"
    (out / "keep").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not empty"):
        write_sample_dataset(out, episodes=1, cameras=0, frames_per_episode=(3, 3))
    write_sample_dataset(out, episodes=1, cameras=1, frames_per_episode=(3, 3), size=(64, 48), overwrite=True)
    assert not (out / "keep").exists() and (out / "meta/info.json").exists()
    assert _info(out)["total_frames"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": (32, 32)}, "at least 64x48"),
        ({"bframes": True}, "h264, hevc and mpeg4 only"),
        ({"codec": "theora"}, "codec must be one of"),
        ({"to_timestamp_short": True, "frames_per_episode": (1, 3)}, "2 frames or more"),
        ({"frames_per_episode": (5, 2)}, "MIN <= MAX"),
        ({"episodes": 3, "frames_per_episode": (30000, 30000)}, "16-bit"),
    ],
)
def test_invalid_options(tmp_path, options, message):
    from lerobot_stream_loader.synthetic import write_sample_dataset

    with pytest.raises(ValueError, match=message):
        write_sample_dataset(tmp_path / "ds", **options)
    assert list(tmp_path.iterdir()) == []


def test_cli_sample(tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["sample", str(out), "--episodes", "3", "--cameras", "1", "--size", "64x48",
                     "--frames-per-episode", "5:8", "--codec", "h264", "--gop", "4", "--bframes",
                     "--episodes-per-video-file", "2", "--episodes-per-data-file", "2", "--no-faststart",
                     "--tasks", "3", "--seed", "7", "--state-dim", "3", "--action-dim", "2"])
    assert code == 0
    info = _info(out)
    assert info["total_episodes"] == 3 and info["total_tasks"] == 3
    assert info["features"]["observation.state"]["shape"] == [3]
    assert info["features"]["action"]["shape"] == [2]
    assert len(list(out.glob("data/*/*.parquet"))) == 2 and len(list(out.glob("videos/*/*/*.mp4"))) == 2
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["sample", str(out)]) == 1
    assert "not empty; pass --overwrite" in capsys.readouterr().err


def test_an_episode_whose_pattern_the_encoder_loses_is_encoded_again():
    """At 640x480, SVT-AV1 preset 12 copies a flat block unchanged at index 65440 after a keyframe
    (seen with SVT-AV1 4.1); the writer must still deliver an episode whose every frame reads right."""
    import io

    from lerobot_stream_loader.synthetic.pattern import FrameRenderer
    from lerobot_stream_loader.synthetic.video import VideoSettings, encode_checked_episode

    settings = VideoSettings("av1", 30, 640, 480, 2, False)
    data = encode_checked_episode(FrameRenderer(640, 480, 0), 65435, 8, settings, "test episode")
    with av.open(io.BytesIO(data)) as container:
        found = [read_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert found == list(range(65435, 65443))
