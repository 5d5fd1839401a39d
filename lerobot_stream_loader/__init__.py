"""Stream LeRobot v3.0 datasets from the Hub, S3, HTTP or local disk into PyTorch training."""

from __future__ import annotations

from .errors import DatasetFormatError, FetchError, FrameMismatchError, StreamLoaderError

__version__ = "0.1.0"

__all__ = [
    "DatasetFormatError",
    "FetchError",
    "FrameMismatchError",
    "StreamLoaderError",
    "__version__",
]
