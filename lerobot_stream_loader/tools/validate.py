"""validate(root): check a dataset's counts, files, alignment, video spans and sample frames.

Problems are collected, not raised, so one run reports everything; an unaligned dataset is noted,
not a problem. Datasets written by ``lerobot_stream_loader.synthetic`` (marked by its own key in
info.json, kept by the tools; never inferred from ``robot_type``) also have the index drawn in
sampled frames checked against their rows' ``observation.state``. ``frames="all"`` checks every
frame of every episode through the loader's own per-episode path instead of sampled frames
(:mod:`~lerobot_stream_loader.tools.validate_frames`) and names the bad episodes.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import av
import numpy as np

from ..errors import DatasetFormatError, RangeNotSupported
from ..fetch.assembly import READ_AHEAD_FRAMES
from ..meta.dataset_meta import INFO_PATH, DatasetMeta, EpisodeMeta, load_meta
from ..meta.depth import GRAY12_FORMATS, DepthQuantization, is_depth_feature
from ..mp4 import Mp4FormatError, synthesize_mp4
from ..parquet.whole_file import read_parquet_bytes
from ..synthetic.tables import SAMPLE_PATTERN, SAMPLE_PATTERN_KEY
from .source import SourceFiles, VideoSource
from .validate_frames import BadEpisode, check_all_frames

TOLERANCE_S = 1e-4
FRAMES_CHOICES = ("sample", "all")


@dataclass
class ValidationReport:
    """Result of :func:`validate`: ``ok`` when ``problems`` is empty. With ``frames="all"``,
    ``bad_episodes`` names every episode streaming would fail on (each also a problem), and
    ``unchecked_episodes`` those whose worker failed before it could check them."""

    root: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aligned: bool | None = None
    checked: dict[str, int] = field(default_factory=dict)
    bad_episodes: list[BadEpisode] = field(default_factory=list)
    unchecked_episodes: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def validate(root: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None,
             check_pattern: bool | None = None, frames: Literal["sample", "all"] = "sample",
             workers: int | None = None, executor: Executor | None = None,
             progress: bool = False) -> ValidationReport:
    """Check the dataset at ``root`` (local path or URL); see the module docstring.

    ``frames``: ``"sample"`` decodes a few frames per video file; ``"all"`` decodes every frame of
    every episode and fills ``bad_episodes`` (missing files then make bad episodes instead of one
    metadata problem). ``workers`` (default: one per CPU) and ``executor`` (e.g. a Dask client's
    ``get_executor()``) say where the episodes are checked; ``progress`` shows a bar on stderr.
    """
    if frames not in FRAMES_CHOICES:
        raise ValueError(f"frames must be one of {FRAMES_CHOICES}, got {frames!r}")
    report = ValidationReport(os.fspath(root))
    every = frames == "all"
    try:
        meta = load_meta(root, storage_options=storage_options, check_files=not every, all_columns=True)
    except (DatasetFormatError, OSError, KeyError, ValueError) as exc:
        report.problems.append(f"metadata: {exc}")
        return report
    report.root = meta.root
    files = SourceFiles.of(meta)
    try:  # one probe: without Range support every check below would fail on its own
        files.read(INFO_PATH, 1, 1)
    except RangeNotSupported as exc:
        report.problems.append(str(exc))
        return report
    _check_counts(meta, report)
    rows = _check_rows(meta, files, report)
    _check_alignment(meta, report)
    if check_pattern is None:
        check_pattern = (meta.info.get(SAMPLE_PATTERN_KEY) == SAMPLE_PATTERN
                         and "observation.state" in meta.features)
    _check_videos(meta, files, rows, report, check_pattern=check_pattern, sample_frames=not every)
    if every:
        _check_every_frame(meta, report, check_pattern=check_pattern, workers=workers, executor=executor,
                           progress=progress)
    return report


def _check_every_frame(meta: DatasetMeta, report: ValidationReport, *, check_pattern: bool, workers: int | None,
                       executor: Executor | None, progress: bool) -> None:
    result = check_all_frames(meta, workers=workers, executor=executor, progress=progress,
                              tolerance_s=TOLERANCE_S, check_pattern=check_pattern)
    report.bad_episodes = result.bad
    report.unchecked_episodes = sorted(result.unchecked)
    report.problems += [f"episode {bad.episode_index}: {bad.cause}" for bad in result.bad]
    report.problems += [f"episode {index}: not checked, its worker failed ({why})"
                        for index, why in sorted(result.unchecked.items())]
    report.checked["frames_decoded"] = result.frames_decoded


def _check_counts(meta: DatasetMeta, report: ValidationReport) -> None:
    total_tasks = meta.info.get("total_tasks")
    if total_tasks is not None and total_tasks != len(meta.tasks):
        report.problems.append(f"info.json total_tasks is {total_tasks}, tasks.parquet has {len(meta.tasks)}")
    from_table = sorted({e.data_path for e in meta.episodes})
    listed = meta.info.get("data_files")
    if listed is not None and sorted(listed) != from_table:
        report.problems.append(f"info.json data_files lists {len(listed)} files, the episodes table uses "
                               f"{len(from_table)} ({sorted(set(listed) ^ set(from_table))[:3]} differ)")
    report.checked["episodes"] = meta.total_episodes


def _check_rows(meta: DatasetMeta, files: SourceFiles, report: ValidationReport) -> dict[int, dict[str, Any]]:
    """Rows per episode agree with the episodes table; returns each episode's timestamps and states."""
    found: dict[int, dict[str, Any]] = {}
    total = 0
    wanted = ["episode_index", "index", "timestamp"] + (["observation.state"] if "observation.state" in
                                                         meta.features else [])
    for path in sorted({e.data_path for e in meta.episodes}):
        try:
            table = read_parquet_bytes(files.fs.cat_file(files.url(path)), wanted)
        except Exception as exc:  # any unreadable file is a problem to report
            report.problems.append(f"{path}: unreadable parquet ({exc})")
            continue
        total += table.num_rows
        episodes = table.column("episode_index").to_numpy()
        index = table.column("index").to_numpy()
        for ep in np.unique(episodes):
            mask = episodes == ep
            order = np.argsort(index[mask])
            entry = {"path": path, "index": index[mask][order],
                     "timestamp": table.column("timestamp").to_numpy()[mask][order]}
            if "observation.state" in wanted:
                states = np.asarray(table.column("observation.state").to_pylist(), dtype=np.float32)
                entry["state"] = states[mask][order]
            found[int(ep)] = entry
    report.checked["rows"] = total
    if total != meta.total_frames:
        report.problems.append(f"data files hold {total} rows, info.json total_frames is {meta.total_frames}")
    for episode in meta.episodes:
        rows = found.get(episode.index)
        if rows is None or rows["path"] != episode.data_path:
            report.problems.append(f"episode {episode.index}: no rows in {episode.data_path}")
            continue
        expected = np.arange(episode.from_index, episode.to_index)
        if len(rows["index"]) != episode.length or not np.array_equal(rows["index"], expected):
            report.problems.append(f"episode {episode.index}: rows of {episode.data_path} have indices "
                                   f"{_range(rows['index'])}, expected [{episode.from_index}, {episode.to_index})")
    return found


def _range(values: np.ndarray) -> str:
    return f"{len(values)} values in [{values.min()}, {values.max()}]" if len(values) else "none"


def _check_alignment(meta: DatasetMeta, report: ValidationReport) -> None:
    table = meta.episodes_table
    columns = table.column_names
    if "meta/episodes/chunk_index" not in columns:
        report.aligned = False
        report.notes.append("meta/episodes has no meta/episodes/chunk_index column: alignment unknown")
        return
    data = list(zip(table.column("data/chunk_index").to_pylist(), table.column("data/file_index").to_pylist()))
    others = {"meta/episodes": ("meta/episodes/chunk_index", "meta/episodes/file_index")}
    others.update({k: (f"videos/{k}/chunk_index", f"videos/{k}/file_index") for k in meta.video_keys})
    unaligned = []
    for name, (chunk, file) in others.items():
        where = list(zip(table.column(chunk).to_pylist(), table.column(file).to_pylist()))
        if where != data:
            unaligned.append(name)
    report.aligned = not unaligned
    report.notes.append("aligned: data, videos and meta/episodes share (chunk, file) for every episode"
                        if not unaligned else
                        f"not aligned (information, not a problem): {', '.join(unaligned)} start new files at "
                        "other episodes than the data files; streaming is exact either way, aligned files "
                        "only mean fewer files per worker (lerobot-stream prepare or realign aligns them)")


def _check_videos(meta: DatasetMeta, files: SourceFiles, rows: dict[int, dict[str, Any]],
                  report: ValidationReport, *, check_pattern: bool, sample_frames: bool = True) -> None:
    videos = VideoSource(files)
    decoded = 0
    short_spans = 0
    for key in meta.video_keys:
        by_file: dict[str, list[EpisodeMeta]] = {}
        for episode in meta.episodes:
            span = episode.videos[key]
            by_file.setdefault(span.path, []).append(episode)
            seconds = span.to_timestamp - span.from_timestamp
            short = round((episode.length / meta.fps - seconds) * meta.fps)
            if 0 < short <= READ_AHEAD_FRAMES and \
                    abs(seconds - (episode.length - short) / meta.fps) <= 1e-3 + TOLERANCE_S:
                short_spans += 1  # a converter's quirk LeRobot reads through: a note, not a problem
            elif abs(seconds - episode.length / meta.fps) > 1e-3 + TOLERANCE_S:
                report.problems.append(f"episode {episode.index} of {key}: span of {seconds:.6f} s in {span.path} "
                                       f"does not match {episode.length} frames at {meta.fps} fps")
        for path, episodes in (by_file.items() if sample_frames else ()):
            picks = [(episodes[0], 0), (episodes[len(episodes) // 2], episodes[len(episodes) // 2].length // 2),
                     (episodes[-1], episodes[-1].length - 1)]
            for episode, position in picks:
                try:
                    decoded += _check_frame(meta, videos, key, episode, position, rows, check_pattern)
                except (DatasetFormatError, Mp4FormatError, ValueError, OSError, av.FFmpegError) as exc:
                    report.problems.append(f"{path}: episode {episode.index} frame {position} of {key}: {exc}")
    if sample_frames:
        report.checked["frames_decoded"] = decoded
    if short_spans:
        report.notes.append(f"{short_spans} episode span(s) end a frame or two before their last frame "
                            "(to_timestamp short, as some converters write it); readers find frames from the "
                            "rows' timestamps")


def _check_frame(meta: DatasetMeta, videos: VideoSource, key: str, episode: EpisodeMeta, position: int,
                 rows: dict[int, dict[str, Any]], check_pattern: bool) -> int:
    span = episode.videos[key]
    index, cut = videos.span(span.path, span.from_timestamp, span.to_timestamp, episode.length,
                             f"episode {episode.index}")
    entry = rows.get(episode.index)
    timestamp = float(entry["timestamp"][position]) if entry else position / meta.fps
    wanted = span.from_timestamp + timestamp
    mini = synthesize_mp4(index, cut, videos.payload(span.path, cut))
    with av.open(io.BytesIO(mini)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) + cut.time_offset
            if abs(t - wanted) <= TOLERANCE_S:
                break
        else:
            raise ValueError(f"no decoded frame within {TOLERANCE_S} s of t={wanted:.6f} s")
    feature = meta.features[key]
    if is_depth_feature(feature) and frame.format.name not in GRAY12_FORMATS:
        raise DatasetFormatError(f"depth video decodes to {frame.format.name}, not 12-bit grey "
                                 f"({'/'.join(GRAY12_FORMATS)}): its depth cannot be dequantized exactly")
    if check_pattern and entry is not None and "state" in entry:
        from ..synthetic.checks import expected_state, read_depth_codes_index, read_frame_index

        shown = (read_depth_codes_index(frame.to_ndarray(format="gray12le"), DepthQuantization.from_feature(key, feature))
                 if is_depth_feature(feature) else read_frame_index(frame.to_ndarray(format="rgb24")))
        state = entry["state"][position]
        if not np.allclose(expected_state(shown, len(state)), state, atol=1e-6):
            raise ValueError(f"the frame shows pattern index {shown}, which does not match the row's "
                             f"observation.state (global index {int(entry['index'][position])})")
    return 1
