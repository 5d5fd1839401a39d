"""MP4 core: sample index, episode byte spans, mini-MP4 synthesis and the index sidecar.

Pure bytes in, bytes out: callers pass file bytes or a `read_range(offset, length)` callable.
"""

from __future__ import annotations

from .boxes import Mp4FormatError
from .index import Mp4Index, index_mp4
from .sidecar import SidecarEntry, dumps_sidecar, loads_sidecar, stale_entries
from .span import Span
from .synth import synthesize_mp4

__all__ = [
    "Mp4FormatError",
    "Mp4Index",
    "SidecarEntry",
    "Span",
    "dumps_sidecar",
    "index_mp4",
    "loads_sidecar",
    "stale_entries",
    "synthesize_mp4",
]
