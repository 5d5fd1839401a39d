"""Stream LeRobot v3.0 datasets from the Hub, S3, HTTP or local disk into PyTorch training.

``from lerobot_stream_loader import StreamingLeRobot`` is the entry point (``MixedStreamingLeRobot``
mixes several; ``StreamingDataLoader`` resumes checkpoints on another worker count); the offline tools live in
:mod:`lerobot_stream_loader.tools`, the MP4 core in :mod:`lerobot_stream_loader.mp4` and range
readers in :mod:`lerobot_stream_loader.storage`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DatasetFormatError, FetchError, FrameMismatchError, RangeNotSupported, StreamLoaderError

if TYPE_CHECKING:
    from .dataset import StreamingLeRobot
    from .loader import StreamingDataLoader
    from .mix import MixedStreamingLeRobot

__version__ = "0.1.0"

__all__ = [
    "DatasetFormatError",
    "FetchError",
    "FrameMismatchError",
    "MixedStreamingLeRobot",
    "RangeNotSupported",
    "StreamLoaderError",
    "StreamingDataLoader",
    "StreamingLeRobot",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `lerobot_stream_loader.mp4` and the CLI start without torch.
    if name == "StreamingLeRobot":
        from .dataset import StreamingLeRobot

        return StreamingLeRobot
    if name == "StreamingDataLoader":
        from .loader import StreamingDataLoader

        return StreamingDataLoader
    if name == "MixedStreamingLeRobot":
        from .mix import MixedStreamingLeRobot

        return MixedStreamingLeRobot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
