"""Stream LeRobot v3.0 datasets from the Hub, S3, HTTP or local disk into PyTorch training.

``from lerobot_stream_loader import StreamingLeRobot`` is the entry point (``MixedStreamingLeRobot``
mixes several; ``StreamingDataLoader`` resumes checkpoints on another worker count;
``frames_to_device`` finishes uint8 batches on the GPU; ``elastic_state`` turns a loader checkpoint
into a resume on another world size). The pipeline's stages are folders (docs/architecture.md):
:mod:`.meta` -> :mod:`.plan` -> :mod:`.fetch` -> :mod:`.items` -> :mod:`.batch`, over
:mod:`.storage`, :mod:`.parquet`, :mod:`.mp4` and :mod:`.util`; the offline tools live in
:mod:`lerobot_stream_loader.tools`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DatasetFormatError, FetchError, FrameMismatchError, RangeNotSupported, StreamLoaderError

if TYPE_CHECKING:
    from .batch.device_frames import frames_to_device
    from .dataset import StreamingLeRobot
    from .fetch.bad_episodes import SkippedEpisodeWarning, TooManyBadEpisodes
    from .loader import StreamingDataLoader
    from .mix import MixedStreamingLeRobot
    from .plan.elastic import elastic_state
    from .plan.state import skipped_episodes
    from .util.stage_clock import describe as describe_stats

__version__ = "0.1.0"

__all__ = [
    "DatasetFormatError",
    "FetchError",
    "FrameMismatchError",
    "MixedStreamingLeRobot",
    "RangeNotSupported",
    "SkippedEpisodeWarning",
    "StreamLoaderError",
    "StreamingDataLoader",
    "StreamingLeRobot",
    "TooManyBadEpisodes",
    "__version__",
    "describe_stats",
    "elastic_state",
    "frames_to_device",
    "skipped_episodes",
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
    if name == "frames_to_device":
        from .batch.device_frames import frames_to_device

        return frames_to_device
    if name in ("SkippedEpisodeWarning", "TooManyBadEpisodes"):
        from .fetch import bad_episodes

        return getattr(bad_episodes, name)
    if name == "describe_stats":
        from .util.stage_clock import describe

        return describe
    if name == "skipped_episodes":
        from .plan.state import skipped_episodes

        return skipped_episodes
    if name == "elastic_state":
        from .plan.elastic import elastic_state

        return elastic_state
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
