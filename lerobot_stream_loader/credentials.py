"""Credentials kept out of reprs, messages, logs and the readable strings of pickles.

Options given to the loader (``storage_options``, ``reader_options``) are stored with every value
under a credential-like key (``token``, ``secret``, ``key``, ``password`` ...; nested dicts too)
wrapped in :class:`Secret`: its repr is ``Secret('***')`` and it pickles as two random-looking byte
strings (the value XOR a one-time pad), so a dataset pickled into a DataLoader worker carries no
readable credential. This hides, it does not encrypt: whoever holds the pickle can rebuild the
value, as the worker must. The range readers unwrap the values right where they are used
(:func:`reveal_secrets` in :func:`~lerobot_stream_loader.storage.open_reader`).
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEYS = frozenset({
    "token", "secret", "key", "password", "passwd", "api_key", "access_key", "secret_key", "session_token",
    "security_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "client_secret",
    "account_key", "sas_token", "connection_string", "credential", "credentials", "private_key", "auth",
})


class Secret:
    """A credential string that never shows itself; :meth:`reveal` gives it back."""

    __slots__ = ("_masked", "_pad")

    def __init__(self, value: str) -> None:
        data = value.encode()
        self._pad = os.urandom(len(data))
        self._masked = bytes(a ^ b for a, b in zip(data, self._pad, strict=True))

    def reveal(self) -> str:
        """The credential itself (only where it is sent to the storage)."""
        return bytes(a ^ b for a, b in zip(self._masked, self._pad, strict=True)).decode()

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.reveal() == self.reveal()

    def __hash__(self) -> int:
        return hash((Secret, self.reveal()))

    def __reduce__(self) -> tuple[Any, ...]:
        pad = os.urandom(len(self._pad))  # a fresh pad per pickle: no two payloads share bytes
        value = bytes(a ^ b for a, b in zip(self._masked, self._pad, strict=True))
        return (_rebuild, (bytes(a ^ b for a, b in zip(value, pad, strict=True)), pad))


def _rebuild(masked: bytes, pad: bytes) -> Secret:
    secret = Secret.__new__(Secret)
    secret._masked, secret._pad = masked, pad
    return secret


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def hide_secrets(options: Any) -> Any:
    """A copy of ``options`` (dicts and lists, nested) with credential-like string values wrapped."""
    if isinstance(options, dict):
        return {k: Secret(v) if _is_secret_key(k) and isinstance(v, str) else hide_secrets(v)
                for k, v in options.items()}
    if isinstance(options, list | tuple):
        return type(options)(hide_secrets(v) for v in options)
    return options


def reveal_secrets(options: Any) -> Any:
    """A copy of ``options`` with every :class:`Secret` unwrapped (for the code that talks to storage)."""
    if isinstance(options, Secret):
        return options.reveal()
    if isinstance(options, dict):
        return {k: reveal_secrets(v) for k, v in options.items()}
    if isinstance(options, list | tuple):
        return type(options)(reveal_secrets(v) for v in options)
    return options
