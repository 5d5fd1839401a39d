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

import base64
import os
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

SECRET_KEYS = frozenset({
    "token", "secret", "key", "password", "passwd", "api_key", "access_key", "secret_key", "session_token",
    "security_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "client_secret",
    "account_key", "sas_token", "connection_string", "credential", "credentials", "private_key", "auth",
    "basic_auth",
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
    if type(options) in (list, tuple):  # not namedtuples (aiohttp.BasicAuth ...): kept as they are
        return type(options)(hide_secrets(v) for v in options)
    return options


def secret_values(options: Any) -> list[str]:
    """The values of every :class:`Secret` in ``options`` (dicts, lists and tuples, nested)."""
    if isinstance(options, Secret):
        return [options.reveal()]
    if isinstance(options, dict):
        options = list(options.values())
    if type(options) in (list, tuple):  # not namedtuples (aiohttp.BasicAuth ...): kept as they are
        return [value for item in options for value in secret_values(item)]
    return []


def reveal_secrets(options: Any) -> Any:
    """A copy of ``options`` with every :class:`Secret` unwrapped (for the code that talks to storage)."""
    if isinstance(options, Secret):
        return options.reveal()
    if isinstance(options, dict):
        return {k: reveal_secrets(v) for k, v in options.items()}
    if type(options) in (list, tuple):  # not namedtuples (aiohttp.BasicAuth ...): kept as they are
        return type(options)(reveal_secrets(v) for v in options)
    return options


def split_url_credentials(url: str) -> tuple[str, str | None]:
    """An http(s) URL without its user part, and that part (``"user:password"``, unquoted) or None.

    Credentials written into a root URL (``https://user:password@host/data``) are taken out of it at
    once, so the root that messages, reprs and pickles show holds none; the readers send them as
    HTTP basic authentication to the root's own origin only (reader option ``basic_auth``).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), f"{unquote(user)}:{unquote(password)}"


def basic_auth_header(userinfo: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP basic authentication for ``"user:password"``."""
    return {"Authorization": "Basic " + base64.b64encode(userinfo.encode()).decode()}


def with_url_credentials(root: str, options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``root`` without its user part, and reader ``options`` with that part added as a hidden
    ``basic_auth`` (the options as given when the root has none)."""
    clean, userinfo = split_url_credentials(root)
    out = dict(options or {})
    if userinfo is not None:
        if out.get("basic_auth") is not None:
            raise ValueError(f"{clean}: credentials given both in the URL and as basic_auth")
        out["basic_auth"] = Secret(userinfo)
    return clean, out
