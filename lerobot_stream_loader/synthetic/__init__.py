"""Synthetic LeRobot v3.0 datasets whose video frames carry their global frame index.

``write_sample_dataset`` writes one; ``lerobot_stream_loader.synthetic.checks`` reads the index back and
gives the expected ``observation.state`` / ``action`` rows.
"""

from __future__ import annotations

from .layout import camera_key
from .writer import write_sample_dataset

__all__ = ["camera_key", "write_sample_dataset"]
