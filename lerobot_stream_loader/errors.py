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


class RangeNotSupported(FetchError):
    """The server answers byte-range requests with the whole file: it does not support HTTP Range."""


def range_not_supported(url: str, offset: int, length: int, got: str) -> RangeNotSupported:
    """The one-line error for a server that ignored a Range request, with what to do about it."""
    return RangeNotSupported(
        f"{url}: the server ignores HTTP Range requests (asked for bytes {offset}-{offset + length - 1}, got "
        f"{got}); streaming reads byte ranges, so serve the dataset with a server that supports them "
        "(nginx, Caddy, S3, the Hub; not `python -m http.server`) or give the loader a local copy")


class FrameMismatchError(StreamLoaderError, RuntimeError):
    """A decoded frame's timestamp is further from the requested time than the tolerance."""


class StalledError(StreamLoaderError, TimeoutError):
    """A call into native code did not return within its time limit; its thread was abandoned."""


# Errors of this package's own code, never of a dataset: a check that blames data lets these through.
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, AssertionError, ImportError)
