"""Addresses of the live-restoration processes: 0MQ proxy endpoints and tiled URIs.

:func:`parse_address` checks a bluesky 0MQ proxy address (``HOST:PORT``) before anything
connects, for ``asirp live --zmq`` and the Tango device's ``StartLive`` alike (the device
imports it from here; ``callbacks`` never imports the device). :func:`redact_uri` and
:func:`redact` keep secrets (tiled API keys, passwords) out of what is printed and logged.
This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TCP_PREFIX = "tcp://"
REDACTED = "***"
SECRET_QUERY_KEYS = frozenset({"api_key", "apikey", "token", "access_token", "password"})
"""Query parameters whose values :func:`redact_uri` replaces (case-insensitive)."""


def parse_address(address: Any, what: str = "live address") -> tuple[str, int]:
    """Check a 0MQ proxy address ``HOST:PORT`` (or ``tcp://HOST:PORT``) and resolve its host.

    Parameters
    ----------
    address : str
        The proxy's output (subscriber) address, e.g. ``"127.0.0.1:5578"``; an IPv6 host is
        written in brackets, ``"[::1]:5578"``.
    what : str
        What the address is, for the error messages (``"live address"``, ``"--zmq address"``).

    Returns
    -------
    host : str
        The host as written (without brackets).
    port : int
        TCP port, 1 to 65535.

    Raises
    ------
    TypeError
        If ``address`` is not a string.
    ValueError
        If it is not ``HOST:PORT``, the port is out of range, or the host cannot be resolved.
    """
    if not isinstance(address, str):
        raise TypeError(f"the {what} must be a string HOST:PORT, got {address!r}")
    text = address.strip()
    body = text[len(TCP_PREFIX) :] if text.lower().startswith(TCP_PREFIX) else text
    host, separator, port_text = body.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    usage = (
        "give HOST:PORT of the bluesky 0MQ proxy's output (its --out-address), e.g. "
        f"127.0.0.1:5578; got {address!r}"
    )
    if not separator or not host or not port_text.isdigit() or any(c.isspace() for c in host):
        raise ValueError(f"malformed {what}: {usage}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port must be between 1 and 65535: {usage}")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ValueError(
            f"cannot resolve the host {host!r} of the {what} {address!r}: {error.strerror or error}"
        ) from None
    return host, port


def format_address(host: str, port: int) -> str:
    """The ``tcp://HOST:PORT`` endpoint (IPv6 hosts in brackets)."""
    return f"{TCP_PREFIX}[{host}]:{port}" if ":" in host else f"{TCP_PREFIX}{host}:{port}"


def redact_uri(uri: str) -> str:
    """``uri`` with its secrets replaced by ``***``: a ``user:password@`` part, ``api_key=``.

    Parameters
    ----------
    uri : str
        E.g. ``"http://me:pw@tiled:8000/api/v1?api_key=abc"``.

    Returns
    -------
    str
        E.g. ``"http://me:***@tiled:8000/api/v1?api_key=***"``; text that is not a URI comes
        back unchanged, one that cannot be parsed as ``***``.
    """
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, REDACTED if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs],
                safe="*",
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return REDACTED


def uri_secrets(uri: str | None, *extra: str | None) -> list[str]:
    """The secret values in ``uri`` (password, secret query parameters) and in ``extra``."""
    found = [value for value in extra if value]
    if not uri:
        return found
    try:
        parts = urlsplit(uri)
        if parts.password:
            found.append(parts.password)
        found += [
            v
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() in SECRET_QUERY_KEYS and v
        ]
    except ValueError:
        found.append(uri)
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that removes secret values from every record it passes.

    Attach it to the handlers of a process that knows secrets (``asirp live`` with a tiled API
    key): libraries log request URLs (httpx at INFO), and those may carry the key.

    Parameters
    ----------
    secrets : iterable of str
        The values to hide (empty strings are ignored).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record``'s message and traceback text; always let it through."""
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
