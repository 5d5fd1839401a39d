"""Depth cameras and image features stored in parquet, against the tensors LeRobot 0.6.1 returns.

The sample writer's ``depth_camera`` is a depth video as LeRobot writes one (lossless 12-bit HEVC of
log-quantized codes), ``image_features`` are PNG (RGB) and 16-bit TIFF (depth, mm) images in the
data parquet. Expected tensors come from ``lerobot_stream_loader.synthetic.checks``; depth is also checked
against an independent float64 dequantization (within float rounding).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lerobot_stream_loader import DatasetFormatError, FrameMismatchError, StreamingLeRobot
from lerobot_stream_loader.cli import main as cli_main
from lerobot_stream_loader.items.depth_video import DepthVideoDecoder
from lerobot_stream_loader.synthetic.checks import (
    expected_depth,
    expected_depth_image,
    expected_image,
    read_depth_index,
    read_frame_index,
)
from lerobot_stream_loader.synthetic.depth import depth_codes, encode_depth_episode

pytestmark = pytest.mark.timeout(180)

SIZE = (64, 48)
OPTIONS = dict(size=SIZE, episodes=3, cameras=1, frames_per_episode=(7, 12), episodes_per_video_file=2,
               episodes_per_data_file=2, gop=3, depth_camera=True, image_features=("rgb", "depth"))
DEPTH = "observation.images.depth"
STILL = "observation.images.still"
DEPTH_IMAGE = "observation.images.depth_image"


@pytest.fixture(scope="module")
def root(make_sample) -> Path:
    return make_sample(**OPTIONS)


def _items(root: Path, **kwargs) -> list[dict]:
    dataset = StreamingLeRobot(root, **kwargs)
    try:
        return list(dataset)
    finally:
        dataset.close()


def _float64_depth_mm(index: int) -> np.ndarray:
    """The sample's depth at ``index`` dequantized in float64 (LeRobot's formula, no float32 steps)."""
    codes = depth_codes(index, *SIZE).astype(np.float64)
    log_min, log_max = math.log(0.01 + 3.5), math.log(10.0 + 3.5)
    metres = np.clip(np.exp(codes * (log_max - log_min) / 4095 + log_min) - 3.5, 0.01, 10.0)
    return metres * 1000.0


def test_items_are_lerobots_tensors(root):
    items = _items(root)
    assert len(items) == json.loads((root / "meta/info.json").read_text())["total_frames"]
    for item in items:
        index = int(item["index"])
        depth, still, depth_image = item[DEPTH], item[STILL], item[DEPTH_IMAGE]
        assert depth.dtype == still.dtype == depth_image.dtype == torch.float32
        assert depth.shape == depth_image.shape == (1, SIZE[1], SIZE[0]) and still.shape == (3, SIZE[1], SIZE[0])
        assert torch.equal(depth, expected_depth(index, SIZE))
        assert np.abs(depth[0].numpy() - _float64_depth_mm(index)).max() <= 1.0  # mm rounding of float32
        assert read_depth_index(depth) == index
        assert torch.equal(still, expected_image(index, SIZE)) and read_frame_index(still) == index
        assert torch.equal(depth_image, expected_depth_image(index, SIZE))
        assert item["observation.images.cam0"].shape == (3, SIZE[1], SIZE[0])
        assert read_frame_index(item["observation.images.cam0"]) == index


def test_metres_and_stats_follow_depth_output_unit(root):
    stored = json.loads((root / "meta/stats.json").read_text())
    by_unit = {}
    for unit in ("mm", "m"):
        dataset = StreamingLeRobot(root, depth_output_unit=unit, episodes=[1])
        by_unit[unit] = (next(iter(dataset)), dataset.meta.stats)
        dataset.close()
    (item_mm, stats_mm), (item_m, stats_m) = by_unit["mm"], by_unit["m"]
    index = int(item_m["index"])
    assert torch.equal(item_m[DEPTH], expected_depth(index, SIZE, "m"))
    assert torch.equal(item_m[DEPTH_IMAGE], item_mm[DEPTH_IMAGE] / 1000.0)
    assert (item_m[DEPTH] - item_mm[DEPTH] / 1000).abs().max() <= 0.0005 + 1e-6
    # the depth camera records metres, the depth image millimetres: stats move to the output unit
    assert np.allclose(stats_mm[DEPTH]["mean"], np.asarray(stored[DEPTH]["mean"]) * 1000)
    assert stats_m[DEPTH]["mean"] == stored[DEPTH]["mean"]
    assert np.allclose(stats_m[DEPTH_IMAGE]["max"], np.asarray(stored[DEPTH_IMAGE]["max"]) / 1000)
    assert stats_mm[DEPTH]["count"] == stored[DEPTH]["count"]
    with pytest.raises(ValueError, match="depth_output_unit"):
        StreamingLeRobot(root, depth_output_unit="cm")


def test_windows_and_padding(root):
    fps = 30
    delta = {DEPTH: [-2 / fps, 0.0, 1 / fps], DEPTH_IMAGE: [0.0, 3 / fps], STILL: [0.0]}
    dataset = StreamingLeRobot(root, delta_timestamps=delta, episodes=[0, 2])
    lengths = {ep: dataset.meta.episode(ep).length for ep in (0, 2)}
    items = list(dataset)
    dataset.close()
    for item in items:
        index, frame, length = int(item["index"]), int(item["frame_index"]), lengths[int(item["episode_index"])]
        assert item[DEPTH].shape == (3, 1, SIZE[1], SIZE[0])
        assert item[DEPTH_IMAGE].shape == (2, 1, SIZE[1], SIZE[0])
        assert item[STILL].shape == (1, 3, SIZE[1], SIZE[0])  # a parquet column window stays stacked
        assert torch.equal(item[STILL][0], expected_image(index, SIZE)) and item[f"{STILL}_is_pad"].tolist() == [False]
        for key, offsets, expected in ((DEPTH, (-2, 0, 1), expected_depth),
                                       (DEPTH_IMAGE, (0, 3), expected_depth_image)):
            queried = [frame + offset for offset in offsets]
            assert item[f"{key}_is_pad"].tolist() == [not 0 <= q < length for q in queried]
            for k, q in enumerate(queried):
                shown = index - frame + min(max(q, 0), length - 1)  # the edge frame repeats
                assert torch.equal(item[key][k], expected(shown, SIZE))


def test_shuffled_random_access_and_transforms(root):
    seen = set()
    calls = []

    def transform(frame: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(frame.shape))
        return frame

    for item in _items(root, shuffle=True, seed=3, pool_size=3, return_uint8=True, image_transforms=transform):
        index = int(item["index"])
        seen.add(index)
        assert torch.equal(item[DEPTH], expected_depth(index, SIZE))  # depth stays float with return_uint8
        assert item["observation.images.cam0"].dtype == torch.uint8
        assert torch.equal(item[STILL], expected_image(index, SIZE))  # parquet images stay float
    assert len(seen) == json.loads((root / "meta/info.json").read_text())["total_frames"]
    assert set(calls) == {(3, SIZE[1], SIZE[0])}  # RGB camera and still image only, never depth
    assert len(calls) == 2 * len(seen)


def _copy(root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(root, out)
    return out


def _edit_info(root: Path, edit) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info["features"])
    path.write_text(json.dumps(info, indent=4))


def test_legacy_depth_marker(root, tmp_path):
    copy = _copy(root, tmp_path)

    def legacy(features):
        info = features[DEPTH]["info"]
        info["video.is_depth_map"] = info.pop("is_depth_map")

    _edit_info(copy, legacy)
    item = _items(copy, episodes=[1])[0]
    assert torch.equal(item[DEPTH], expected_depth(int(item["index"]), SIZE))


def test_undecodable_depth_raises_naming_the_feature(root, tmp_path):
    copy = _copy(root, tmp_path)
    _edit_info(copy, lambda f: f["observation.images.cam0"].setdefault("info", {}).update(is_depth_map=True))
    with pytest.raises(DatasetFormatError, match="observation.images.cam0.*12-bit"):
        _items(copy, episodes=[0])
    _edit_info(copy, lambda f: f[DEPTH]["info"].update({"video.shift": -1.0}))
    with pytest.raises(DatasetFormatError, match="depth feature 'observation.images.depth'.*shift"):
        StreamingLeRobot(copy)


def test_image_rows_without_bytes_raise(root, tmp_path):
    copy = _copy(root, tmp_path)
    path = copy / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    column = table.column(STILL).combine_chunks()
    paths = column.field("path")
    emptied = pa.StructArray.from_arrays([pa.nulls(len(paths), pa.binary()), paths], fields=list(column.type))
    table = table.set_column(table.schema.get_field_index(STILL), STILL, emptied)
    pq.write_table(table, path, row_group_size=int(table.num_rows))
    with pytest.raises(DatasetFormatError, match="image feature 'observation.images.still'.*no image bytes"):
        _items(copy, episodes=[0])


def test_sample_cli_writes_depth_and_image_features(tmp_path):
    out = tmp_path / "cli"
    assert cli_main(["sample", str(out), "--episodes", "1", "--cameras", "0", "--size", "64x48",
                     "--frames-per-episode", "4:4", "--depth-camera", "--image-feature",
                     "--image-feature", "depth"]) == 0
    features = json.loads((out / "meta/info.json").read_text())["features"]
    depth = features[DEPTH]
    assert depth["shape"] == [48, 64, 1] and depth["info"]["is_depth_map"] is True
    assert depth["info"]["video.pix_fmt"] == "gray12le" and depth["info"]["video.codec"] == "hevc"
    assert depth["info"]["depth_unit"] == "m" and depth["info"]["video.use_log"] is True
    assert features[STILL]["dtype"] == features[DEPTH_IMAGE]["dtype"] == "image"
    assert features[DEPTH_IMAGE]["info"] == {"is_depth_map": True, "depth_unit": "mm"}
    schema = pq.read_schema(out / "data/chunk-000/file-000.parquet")
    assert schema.field(STILL).type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def test_depth_decoder_random_access_matches_the_codes_written():
    """Backward jumps, long forward jumps and repeats on x265's default GOPs (B-frames, gop 4)."""
    first, length = 200, 45
    data = encode_depth_episode(first, length, 30, *SIZE, gop=4, where="test episode")
    with av.open(io.BytesIO(data)) as container:
        times = sorted(float(f.pts * f.time_base) for f in container.decode(video=0))
    decoder = DepthVideoDecoder(data, np.array(times), name="test episode")
    order = np.random.default_rng(5).permutation(length).tolist()
    requests = [[p] for p in order] + [[40, 3, 3, 44], [0], [38], [1, 2], [44, 0]]
    for positions in requests:
        codes = decoder.frames(np.array(positions))
        assert codes.shape == (len(positions), 1, SIZE[1], SIZE[0])
        for k, position in enumerate(positions):
            assert np.array_equal(codes[k, 0].numpy(), depth_codes(first + position, *SIZE))
    with pytest.raises(FrameMismatchError, match="outside"):
        decoder.frames(np.array([length]))


def test_realign_and_validate_keep_depth_and_images(root, tmp_path, capsys):
    out = tmp_path / "realigned"
    assert cli_main(["realign", str(root), str(out)]) == 0
    assert cli_main(["validate", str(out)]) == 0
    for item in _items(out, episodes=[1, 2]):
        index = int(item["index"])
        assert torch.equal(item[DEPTH], expected_depth(index, SIZE))
        assert torch.equal(item[STILL], expected_image(index, SIZE))
        assert torch.equal(item[DEPTH_IMAGE], expected_depth_image(index, SIZE))
    copy = _copy(root, tmp_path)
    _edit_info(copy, lambda f: f["observation.images.cam0"].setdefault("info", {}).update(is_depth_map=True))
    capsys.readouterr()
    assert cli_main(["validate", str(copy)]) == 1
    printed = capsys.readouterr()
    assert "observation.images.cam0: depth video decodes to yuv420p, not 12-bit grey" in printed.out + printed.err
