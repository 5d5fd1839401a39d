"""Exceptions raised by lerobot_stream_loader.

Every error names what it is about (dataset, file, episode, camera, byte range) in its message.
"""

from __future__ import annotations


class StreamLoaderError(Exception):
    """Base class of the library's errors."""


class DatasetFormatError(StreamLoaderError, ValueError):
    """A dataset's metadata or files do not follow the LeRobot v3.0 format."""


class FetchError(StreamLoaderError, OSError):
    """Bytes could not be read from storage after the allowed retries."""


class FrameMismatchError(StreamLoaderError, RuntimeError):
    """A decoded frame's timestamp is further from the requested time than the tolerance."""


class StalledError(StreamLoaderError, TimeoutError):
    """A call into native code did not return within its time limit; its thread was abandoned."""
