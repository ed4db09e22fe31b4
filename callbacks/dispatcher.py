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

Messages larger than ``max_message_bytes`` (default :data:`MAX_MESSAGE_BYTES`) are refused by
0MQ itself (``ZMQ_MAXMSGSIZE``): the connection is dropped before the message is buffered, so a
hostile or broken publisher cannot make this process allocate an arbitrary amount. 0MQ does not
reconnect after that; the receive loop watches the socket's disconnections and connects again,
so the next messages are received as usual (what the proxy sent meanwhile is lost, as for any
0MQ subscriber that joins late).

Pickle is only used when the caller asks for it (``allow_pickle=True``; ``asirp live
--allow-pickle``, the device property ``LiveAllowPickle``): unpickling runs code chosen by the
sender, so that trusts every process that can publish to the proxy to run code in this one,
and a WARNING says so.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import pickle
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio
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
MAX_MESSAGE_BYTES = 256 << 20
"""Largest 0MQ message accepted by default, bytes (256 MiB: an event page of several detector
frames fits; a document that would not fit in memory does not)."""
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
    max_message_bytes : int
        Largest message received (``ZMQ_MAXMSGSIZE``); a larger one disconnects its sender
        before it is buffered. Not with bluesky's ``curve_config`` (its own socket set-up).

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
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        if deserializer is None:
            deserializer = pickle.loads if allow_pickle else msgpack_deserializer
        if not 1 <= int(max_message_bytes) < 2**62:
            raise ValueError(f"max_message_bytes must be >= 1, got {max_message_bytes}")
        super().__init__(address, prefix=prefix, deserializer=deserializer, **kwargs)
        self.max_message_bytes = int(max_message_bytes)
        if kwargs.get("curve_config") is None:
            # bluesky (1.15) makes its socket in a private set-up function that start() calls;
            # this one is the same with the size limit set before the socket connects
            self._RemoteDispatcher__factory = self._set_up_socket
        self.allow_pickle = bool(allow_pickle)
        self.dropped: collections.Counter[str] = collections.Counter()
        if self.allow_pickle:
            _LOG.warning(PICKLE_WARNING, self.address)

    def _set_up_socket(self) -> None:
        """The subscriber socket, with ``ZMQ_MAXMSGSIZE``, connected and subscribed to all."""
        asyncio.set_event_loop(self.loop)
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        self._socket.connect(self.address)
        self._socket.setsockopt_string(zmq.SUBSCRIBE, "")

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

    def _reconnect(self) -> None:
        """Connect again after 0MQ dropped the connection.

        0MQ does not, after a message over ``ZMQ_MAXMSGSIZE``: a protocol error ends the
        connection for good.
        """
        self.dropped["reconnect"] += 1
        count = self.dropped["reconnect"]
        if count <= MAX_LOGGED_PER_REASON or count % 1000 == 0:
            _LOG.error(
                "0MQ documents: the connection to %s ended (a message over %d bytes, or the "
                "proxy went away); connecting again (%d so far)",
                self.address,
                self.max_message_bytes,
                count,
            )
        with contextlib.suppress(zmq.ZMQError):  # already gone
            self._socket.disconnect(self.address)
        self._socket.connect(self.address)

    async def _poll(self) -> None:
        # Replaces bluesky's loop (bluesky 1.15, whose start() runs self._poll()): every message
        # goes through handle(), which never raises; a dropped connection is made again.
        monitor = self._socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        poller = zmq.asyncio.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while True:
                ready = dict(await poller.poll())
                if monitor in ready:
                    await monitor.recv_multipart()  # the event itself says nothing more
                    self._reconnect()
                if self._socket in ready:
                    self.handle(await self._socket.recv())
        finally:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.disable_monitor()
            monitor.close(linger=0)
