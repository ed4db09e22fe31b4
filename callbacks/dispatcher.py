"""A bluesky 0MQ subscriber that treats every message as untrusted data.

:class:`SafeRemoteDispatcher` is :class:`bluesky.callbacks.zmq.RemoteDispatcher` with
:func:`callbacks.serialization.deserializer` (msgpack) instead of :func:`pickle.loads`, and a
receive loop that never dies of a bad message: a message that does not split into prefix,
name and document, an unknown document name (not one of
:data:`callbacks.serialization.DOCUMENT_NAMES`), a document that does not decode, and a
subscriber that raises are each logged (the first few of each kind, then every thousandth) and
skipped; the next message is handled as usual, so the next run is restored. bluesky's own loop
ends on an unknown document name (``DocumentNames[name]`` raises) and prints, rather than logs,
the messages it drops.

Pickle is only used when the caller asks for it (``allow_pickle=True``; ``asirp live
--allow-pickle``, the device property ``LiveAllowPickle``): unpickling runs code chosen by the
sender, so that trusts every process that can publish to the proxy to run code in this one,
and a WARNING says so.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import pickle
from collections.abc import Callable
from typing import Any

from bluesky.callbacks.zmq import RemoteDispatcher
from bluesky.run_engine import DocumentNames

from callbacks.serialization import DOCUMENT_NAMES
from callbacks.serialization import deserializer as msgpack_deserializer

_LOG = logging.getLogger(__name__)

PICKLE_WARNING = (
    "pickle is allowed for the documents from %s: this trusts every publisher that can reach "
    "the 0MQ proxy to run code in this process (use callbacks.serialization.serializer on the "
    "RunEngine's Publisher instead)"
)
MAX_LOGGED_PER_REASON = 5
"""Dropped messages logged individually per reason; after that every thousandth."""


class SafeRemoteDispatcher(RemoteDispatcher):
    """Dispatch documents from a 0MQ proxy; bad messages are logged and dropped, never fatal.

    Parameters
    ----------
    address : str or (str, int)
        The proxy's output (subscriber) address, ``"HOST:PORT"``.
    prefix : bytes
        Only documents published with this prefix (``b""``: all).
    allow_pickle : bool
        Decode documents with :func:`pickle.loads` (runs the sender's code: only for a proxy
        that only trusted publishers can reach) instead of msgpack.
    deserializer : callable, optional
        Another decoder ``bytes -> dict`` (default: :func:`callbacks.serialization.
        deserializer`, or :func:`pickle.loads` with ``allow_pickle``).

    Attributes
    ----------
    dropped : collections.Counter
        Dropped messages per reason (``"split"``, ``"name"``, ``"decode"``, ``"callback"``).
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        *,
        prefix: bytes = b"",
        allow_pickle: bool = False,
        deserializer: Callable[[bytes], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if deserializer is None:
            deserializer = pickle.loads if allow_pickle else msgpack_deserializer
        super().__init__(address, prefix=prefix, deserializer=deserializer, **kwargs)
        self.allow_pickle = bool(allow_pickle)
        self.dropped: collections.Counter[str] = collections.Counter()
        if self.allow_pickle:
            _LOG.warning(PICKLE_WARNING, self.address)

    def cancel_threadsafe(self) -> None:
        """Cancel the polling task from any thread, so :meth:`start` returns.

        A no-op once the dispatcher's loop has closed.
        """

        def cancel() -> None:
            task = getattr(self, "_task", None)
            if task is not None:
                task.cancel()

        # a closed loop (RuntimeError): the dispatcher has ended already
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(cancel)

    def _drop(self, reason: str, message: str, *args: Any) -> None:
        self.dropped[reason] += 1
        count = self.dropped[reason]
        if count <= MAX_LOGGED_PER_REASON or count % 1000 == 0:
            _LOG.error("0MQ documents: dropped a message (%d so far): " + message, count, *args)

    def handle(self, message: bytes) -> None:
        """Decode one 0MQ message and pass its document to the subscribers; never raises."""
        try:
            prefix, name_bytes, payload = message.split(b" ", 2)
        except ValueError:
            self._drop("split", "not PREFIX NAME DOCUMENT (%d bytes)", len(message))
            return
        if self._prefix and prefix != self._prefix:
            return
        name = name_bytes.decode("ascii", "replace")
        if name not in DOCUMENT_NAMES:
            self._drop("name", "unknown document name %r", name[:64])
            return
        try:
            doc = self._deserializer(payload)
            if not isinstance(doc, dict):
                raise TypeError(f"a document must be a mapping, got a {type(doc).__name__}")
        except Exception as error:
            self._drop(
                "decode",
                "a %s document that does not decode (%d bytes): %s",
                name,
                len(payload),
                f"{type(error).__name__}: {' '.join(str(error).split())}"[:300],
            )
            return
        try:
            self.process(DocumentNames[name], doc)
        except Exception:
            self.dropped["callback"] += 1
            _LOG.exception("0MQ documents: a subscriber failed on a %s document", name)

    async def _poll(self) -> None:
        # Replaces bluesky's loop (bluesky 1.15, whose start() runs self._poll()): every message
        # goes through handle(), which never raises.
        while True:
            message = await self._socket.recv()
            self.handle(message)
