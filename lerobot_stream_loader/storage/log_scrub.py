"""Credentials blanked out of the log records of the libraries that talk to storage.

botocore logs signed request headers at DEBUG (the access key id in ``Authorization``), httpx and
aiohttp log request URLs. Once a reader unwraps credentials, their values are registered here and
every logger of those libraries gets a filter that replaces them with ``***`` in the record's
message. A filter costs nothing while its logger is off (records below the level are never made).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

STORAGE_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3fs", "gcsfs", "adlfs", "fsspec", "httpx", "httpcore",
                   "aiohttp", "urllib3", "huggingface_hub")
_MIN_LENGTH = 4  # shorter values would blank out ordinary words

_lock = threading.Lock()
_values: frozenset[str] = frozenset()


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        values = _values
        if values:
            message = record.getMessage()
            if any(v in message for v in values):
                for value in sorted(values, key=len, reverse=True):
                    message = message.replace(value, "***")
                record.msg, record.args = message, None
        return True


_FILTER = _ScrubFilter()


def scrub_from_logs(values: Iterable[str]) -> None:
    """Blank ``values`` out of every record the storage libraries' loggers make from now on."""
    global _values
    new = {v for v in values if isinstance(v, str) and len(v) >= _MIN_LENGTH}
    with _lock:
        if not new <= _values:
            _values = _values | new
        if not _values:
            return
        names = [n for n in list(logging.Logger.manager.loggerDict) if n.split(".")[0] in STORAGE_LOGGERS]
        for name in {*names, *STORAGE_LOGGERS}:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
