"""Offline preparation of LeRobot v3.0 datasets for streaming.

- :func:`update_info_with_data_files`: list the data parquet files in info.json.
- :func:`realign_parquets_to_videos`: data / video / meta files share one layout (no re-encode).
- :func:`shuffle_episodes`: episodes physically in a seeded random order (videos stream-copied with
  ``vcodec="copy"``, else re-encoded); a killed run continues with ``resume=True``.
- :func:`prepare`: shuffle or realign, data_files, MP4 index sidecar, validate.
- :func:`validate`: counts, files, alignment, spans and sample frames of a dataset.
"""

from __future__ import annotations

from .data_files import update_info_with_data_files
from .encoder import CodecSettings, StreamingEncoder, pick_vcodec
from .output import ToolError
from .prepare import PrepareResult, prepare
from .realign import RealignResult, realign_parquets_to_videos
from .shuffle import ShuffleResult, shuffle_episodes, shuffle_order
from .shuffle_copy import CopyNotPossible
from .validate import ValidationReport, validate

__all__ = [
    "CodecSettings",
    "CopyNotPossible",
    "PrepareResult",
    "RealignResult",
    "ShuffleResult",
    "StreamingEncoder",
    "ToolError",
    "ValidationReport",
    "pick_vcodec",
    "prepare",
    "realign_parquets_to_videos",
    "shuffle_episodes",
    "shuffle_order",
    "update_info_with_data_files",
    "validate",
]
