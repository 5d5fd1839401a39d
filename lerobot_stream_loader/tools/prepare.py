"""prepare: the common case in one call: shuffle (or realign), data_files, MP4 index sidecar, validate.

The shuffle stream-copies videos when the source allows it (every episode starts on a keyframe) and
no encoder option is given, else re-encodes. The sidecar and the validation run on the finished
staging folder, so a dataset that does not validate is never renamed into ``output_dir`` (nor, for a
URL output, uploaded). A killed shuffling ``prepare`` continues with ``resume=True`` (``--resume``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fetch.sidecar import SIDECAR_PATH
from ..meta.dataset_meta import load_meta
from ..storage import open_reader
from .index_sidecar import build_entries, save_sidecar
from .output import ToolError
from .realign import realign_parquets_to_videos
from .shuffle import run_shuffle
from .validate import ValidationReport, validate


@dataclass
class PrepareResult:
    """What prepare did: the shuffle or realign summary, the sidecar and the validation report."""

    output: str
    shuffled: bool
    summary: dict[str, Any]
    sidecar: str = ""
    validation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "shuffled": self.shuffled, "summary": self.summary,
                "sidecar": self.sidecar, "validation": self.validation}


def prepare(source: str | os.PathLike[str], output_dir: str | os.PathLike[str], *, shuffle: bool = True,
            seed: int = 0, overwrite: bool = False, storage_options: dict[str, Any] | None = None,
            progress: bool = False, output_storage_options: dict[str, Any] | None = None,
            staging_dir: str | os.PathLike[str] | None = None, resume: bool = False,
            **shuffle_options: Any) -> PrepareResult:
    """Write a streaming-ready copy of ``source`` to ``output_dir``.

    ``shuffle=True`` (default) writes the episodes in a seeded order (``shuffle_options`` go to
    :func:`shuffle_episodes`: ``vcodec``, ``executor``, ...). Without ``vcodec`` and the encoder
    options (``crf``, ``g``, ``preset``, ``pix_fmt``) videos are stream-copied when every episode
    starts on a keyframe, else re-encoded with libsvtav1. ``resume=True`` continues a killed shuffling
    run of the same arguments (see :func:`shuffle_episodes`). ``shuffle=False`` realigns without
    re-encoding (at disk speed; it always starts from the beginning). ``output_dir`` is a local folder or a writable fsspec URL (``output_storage_options``
    and ``staging_dir`` as for :func:`shuffle_episodes`): the sidecar and the validation run on the local
    staged copy, which is uploaded (``meta/info.json`` last) only when it validates. Raises
    ``ToolError`` and writes nothing when any step or the validation fails.
    """
    state: dict[str, Any] = {}

    def finish(folder: Path) -> None:
        meta = load_meta(folder, use_cache=False)
        reader = open_reader(str(folder))
        try:
            entries = build_entries(meta, reader, progress=progress)
        finally:
            reader.close()
        save_sidecar(meta, entries)
        report: ValidationReport = validate(folder)
        if not report.ok:
            raise ToolError(f"the prepared dataset does not validate: {'; '.join(report.problems[:5])}")
        state["validation"] = report.to_dict()
        state["entries"] = len(entries)

    if shuffle:
        vcodec = shuffle_options.pop("vcodec", None)
        if vcodec is None and any(name in shuffle_options for name in ("crf", "g", "preset", "pix_fmt")):
            vcodec = "libsvtav1"
        summary = run_shuffle(source, output_dir, seed, vcodec, tool="prepare", overwrite=overwrite,
                              storage_options=storage_options, progress=progress, before_commit=finish,
                              output_storage_options=output_storage_options, staging_dir=staging_dir,
                              resume=resume, **shuffle_options).to_dict()
    else:
        if shuffle_options:
            raise TypeError(f"options {sorted(shuffle_options)} only apply with shuffle=True")
        summary = realign_parquets_to_videos(source, output_dir, overwrite=overwrite,
                                             storage_options=storage_options, progress=progress,
                                             before_commit=finish,
                                             output_storage_options=output_storage_options,
                                             staging_dir=staging_dir).to_dict()
    output = summary["output"]
    report = dict(state["validation"], root=output)
    return PrepareResult(output, shuffle, summary, sidecar=f"{output}/{SIDECAR_PATH}", validation=report)
