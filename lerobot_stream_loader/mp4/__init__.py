"""MP4 core: sample index, episode byte spans, and mini-MP4 synthesis.

Pure bytes in, bytes out: callers pass file bytes or a `read_range(offset, length)` callable.
"""

from __future__ import annotations

from .boxes import Mp4FormatError
from .index import Mp4Index, index_mp4
from .span import Span
from .synth import synthesize_mp4

__all__ = [
    "Mp4FormatError",
    "Mp4Index",
    "Span",
    "index_mp4",
    "synthesize_mp4",
]
