"""realign_parquets_to_videos: split or merge the data parquet along the video files' episode
boundaries, so that each episode's data, video and meta/episodes share one (chunk, file).

Videos are never re-encoded: a video file that holds exactly one output group is copied byte for
byte; when cameras roll over at different points, every camera is cut onto the common layout (a
new file at each point where any camera rolls over) by stream copy.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from ..meta.dataset_meta import DatasetMeta
from .layout import (
    FileGroup,
    copy_meta_files,
    finish_info,
    make_groups,
    set_column,
    write_episode_tables,
    write_info,
    write_parquet,
)
from .output import Output, check_output, open_output, output_file_size, staged_output
from .remux import cut_mp4, episode_bounds
from .source import EpisodeRows, SourceFiles, VideoSource, open_source
from .verify import check_copied_file, check_stream_copy


@dataclass
class RealignResult:
    """What realign wrote."""

    output: str
    episodes: int
    frames: int
    data_files: int
    video_files: int
    remuxed_cameras: list[str] = field(default_factory=list)
    copied_video_files: int = 0
    cut_video_files: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def common_runs(meta: DatasetMeta) -> list[list[int]]:
    """Runs of consecutive episodes split wherever any camera's video file changes."""
    episodes = meta.episodes
    runs: list[list[int]] = []
    for pos, episode in enumerate(episodes):
        previous = episodes[pos - 1] if pos else None
        new_run = previous is None or any(episode.videos[k].path != previous.videos[k].path
                                          for k in meta.video_keys)
        if not meta.video_keys:  # no video: keep the data files' own boundaries
            new_run = previous is None or episode.data_path != previous.data_path
        if new_run:
            runs.append([])
        runs[-1].append(episode.index)
    return runs


def plan_videos(meta: DatasetMeta, groups: list[FileGroup]) -> dict[str, list[str]]:
    """Per camera and group: "copy" (the group is the whole source file) or "cut"."""
    plan: dict[str, list[str]] = {}
    for key in meta.video_keys:
        members: dict[str, set[int]] = {}
        for episode in meta.episodes:
            members.setdefault(episode.videos[key].path, set()).add(episode.index)
        plan[key] = ["copy" if members[meta.episode(g.episodes[0]).videos[key].path] == set(g.episodes)
                     else "cut" for g in groups]
    return plan


def realign_parquets_to_videos(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    copy_videos: bool = True,
    *,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
    before_commit: Callable[[Path], None] | None = None,
    output_storage_options: dict[str, Any] | None = None,
    staging_dir: str | os.PathLike[str] | None = None,
) -> RealignResult:
    """Write an aligned copy of ``source`` to ``output_dir`` (same episodes, frames, tasks, samples).

    ``output_dir`` is a local folder or a writable fsspec URL (``s3://``, ``gs://``, ``memory://``...;
    options: ``output_storage_options``, else ``storage_options`` when the protocol is the source's).
    A URL output is built in a local staging folder (in ``staging_dir``, default the system temp dir)
    and then uploaded, ``meta/info.json`` last.
    ``copy_videos=False``: the videos must already be in ``output_dir`` at the paths the source uses
    (checked by size, kept on overwrite); only possible when no camera needs to be cut.
    ``before_commit(folder)`` runs on the finished local folder before it is renamed into place (or
    uploaded). Raises ``ToolError`` (nothing written) on failure.
    """
    start = time.perf_counter()
    source = os.fspath(source)
    output = open_output(output_dir, source, storage_options=storage_options,
                         output_storage_options=output_storage_options, staging_dir=staging_dir)
    meta = open_source(source, storage_options)
    groups = make_groups(common_runs(meta), meta.info)
    plan = plan_videos(meta, groups)
    if not copy_videos:
        _check_videos_in_place(meta, SourceFiles.of(meta), groups, plan, output)
    check_output(source, output, overwrite=overwrite, allow=() if copy_videos else ("videos",))
    result = RealignResult(str(output), meta.total_episodes, meta.total_frames, len(groups),
                           len(groups) * len(meta.video_keys))
    result.remuxed_cameras = [k for k, actions in plan.items() if "cut" in actions]
    with staged_output(output, what=f"realign of {meta.root}", keep=() if copy_videos else ("videos",),
                       progress=progress) as tmp:
        files = SourceFiles.of(meta)
        write_aligned(meta, files, groups, plan, tmp, result, copy_videos=copy_videos, progress=progress)
        if before_commit is not None:
            before_commit(tmp)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def write_aligned(meta: DatasetMeta, files: SourceFiles, groups: list[FileGroup], plan: dict[str, list[str]],
                  out: Path, result: RealignResult, *, copy_videos: bool, progress: bool) -> None:
    """Every file of the aligned dataset into ``out``."""
    rows = EpisodeRows(files)
    videos = VideoSource(files)
    table = meta.episodes_table
    columns: dict[str, list[Any]] = {name: table.column(name).to_pylist() for name in table.column_names
                                     if name.startswith(("data/", "videos/"))}
    position = {ep: pos for pos, ep in enumerate(table.column("episode_index").to_pylist())}
    schema = rows.schema(meta.episodes[0].data_path)
    for number, group in enumerate(tqdm(groups, desc="realign", unit="file", disable=not progress)):
        parts = [rows.rows(meta.episode(e)) for e in group.episodes]
        data = pa.concat_tables([p.cast(schema) if p.schema != schema else p for p in parts])
        path = out / group.data_path(meta.info)
        write_parquet(path, data, [p.num_rows for p in parts])
        result.bytes_written += path.stat().st_size
        for e in group.episodes:
            columns["data/chunk_index"][position[e]] = group.chunk
            columns["data/file_index"][position[e]] = group.file
        for key in meta.video_keys:
            action = plan[key][number]
            if copy_videos or action == "cut":
                result.bytes_written += _write_video(meta, videos, group, key, action, out)
                if action == "cut":
                    _record_cut(meta, group, key, out, columns, position)
            result.copied_video_files += copy_videos and action == "copy"
            result.cut_video_files += action == "cut"
            for e in group.episodes:
                columns[f"videos/{key}/chunk_index"][position[e]] = group.chunk
                columns[f"videos/{key}/file_index"][position[e]] = group.file
    for name, values in columns.items():
        table = set_column(table, name, values)
    write_episode_tables(out, table, groups)
    copy_meta_files(meta, out)
    write_info(out, finish_info(meta.info, groups))


def _write_video(meta: DatasetMeta, videos: VideoSource, group: FileGroup, key: str, action: str,
                 out: Path) -> int:
    first, last = meta.episode(group.episodes[0]), meta.episode(group.episodes[-1])
    source_path = first.videos[key].path
    target = out / group.video_path(meta.info, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    if action == "copy":
        with meta.fs.open(meta.url(source_path), "rb") as src, open(target, "wb") as dst:
            copied = _copy_hashed(src, dst)
        check_copied_file(target, copied)
        return target.stat().st_size
    frames = sum(meta.episode(e).length for e in group.episodes)
    index, span = videos.span(source_path, first.videos[key].from_timestamp, last.videos[key].to_timestamp,
                              frames, f"episodes {group.episodes[0]}..{group.episodes[-1]} of {key}")
    payload = videos.payload(source_path, span)
    data = cut_mp4(index, span, payload)
    check_stream_copy(target, data, index, span, payload)
    target.write_bytes(data)
    return len(data)


def _copy_hashed(src: Any, dst: Any) -> str:
    """Copy one open file to another; the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    while chunk := src.read(8 << 20):
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest()


def _record_cut(meta: DatasetMeta, group: FileGroup, key: str, out: Path, columns: dict[str, list[Any]],
                position: dict[int, int]) -> None:
    path = group.video_path(meta.info, key)
    lengths = [meta.episode(e).length for e in group.episodes]
    bounds = episode_bounds((out / path).read_bytes(), lengths, meta.fps, f"{out}/{path}")
    for e, (lo, hi) in zip(group.episodes, bounds):
        columns[f"videos/{key}/from_timestamp"][position[e]] = lo
        columns[f"videos/{key}/to_timestamp"][position[e]] = hi


def _check_videos_in_place(meta: DatasetMeta, files: SourceFiles, groups: list[FileGroup], plan: dict[str, list[str]],
                           output: Output) -> None:
    for key, actions in plan.items():
        for group, action in zip(groups, actions):
            source_path = meta.episode(group.episodes[0]).videos[key].path
            target = group.video_path(meta.info, key)
            if action == "cut" or target != source_path:
                raise ValueError(
                    f"copy_videos=False needs the source's video layout, but camera {key} must be cut onto "
                    f"a common layout ({source_path} -> {target}); run with copy_videos=True")
            if output_file_size(output, target) != files.size(source_path):
                raise FileNotFoundError(f"copy_videos=False: {output}/{target} is missing or differs in size from "
                                        f"{meta.root}/{source_path}; put the videos in place first")
