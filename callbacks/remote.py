"""Run a :class:`~callbacks.live.LiveRestorer` in its own process, fed by a 0MQ proxy.

Beamlines run restoration next to, not inside, the RunEngine's process: the RunEngine
publishes its documents with ``bluesky.callbacks.zmq.Publisher`` to ``bluesky-0MQ-proxy``, and
this process subscribes to the proxy's output (``asirp live --zmq HOST:PORT``).

Documents are data, never code: the subscriber is a
:class:`callbacks.dispatcher.SafeRemoteDispatcher`, which decodes msgpack
(:mod:`callbacks.serialization`; the RunEngine publishes with
``Publisher(address, serializer=callbacks.serialization.serializer)``) and logs and drops
messages it cannot decode, unknown document names and failing consumers, so the next run is
restored. Pickle, which runs the sender's code, is only read with ``allow_pickle=True``
(``asirp live --allow-pickle``), and a WARNING says so.

Shutdown: SIGINT and SIGTERM stop the dispatcher's loop. Every raw run still open (no stop
document yet) is then finished: the rows measured so far are restored and its derived run ends
with exit status ``abort`` and the reason, or ``fail`` if that restoration fails or has to be
cancelled after ``grace_s``. When this process also writes the raw runs (``raw_writer``), the
open ones get a stop document with exit status ``abort`` so they are not left open in tiled.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

from callbacks.live import LiveRestorer

_LOG = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _OpenRuns:
    """Remember the raw runs that have started and not stopped (to close them at shutdown)."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, int]] = {}

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.runs[doc["uid"]] = {}
        elif name == "stop":
            self.runs.pop(doc.get("run_start"), None)


def _guarded(callback: Callable[[str, dict[str, Any]], None], what: str):
    def call(name: str, doc: dict[str, Any]) -> None:
        try:
            callback(name, doc)
        except Exception:  # one failing consumer must not stop the dispatcher
            _LOG.exception("%s failed on a %s document", what, name)

    return call


def run_remote(
    address: str,
    restorer: LiveRestorer,
    *,
    prefix: bytes = b"",
    raw_writer: Callable[[str, dict[str, Any]], None] | None = None,
    grace_s: float = 60.0,
    on_ready: Callable[[str], None] | None = None,
    allow_pickle: bool = False,
) -> str:
    """Subscribe ``restorer`` to a 0MQ document proxy until SIGINT or SIGTERM.

    Must be called from the main thread (signal handlers).

    Parameters
    ----------
    address : str
        The proxy's output (subscriber) address, ``HOST:PORT`` or ``tcp://HOST:PORT``.
    restorer : LiveRestorer
        The callback to feed.
    prefix : bytes
        Only documents published with this prefix (``b""``: all).
    raw_writer : callable, optional
        Another consumer of the raw documents (e.g. :func:`callbacks.publish.raw_run_writer`).
    grace_s : float
        At shutdown, how long to let the pending restorations finish before cancelling them, s.
    on_ready : callable, optional
        Called with the address once the subscription is set up.
    allow_pickle : bool
        Read pickled documents (bluesky's default format) instead of msgpack. Unpickling runs
        code chosen by the sender: only for a proxy that only trusted publishers can reach.

    Returns
    -------
    str
        The name of the signal that stopped it.
    """
    from callbacks.dispatcher import SafeRemoteDispatcher

    dispatcher = SafeRemoteDispatcher(address, prefix=prefix, allow_pickle=allow_pickle)
    open_runs = _OpenRuns()
    dispatcher.subscribe(_guarded(open_runs, "the open-run tracker"))
    if raw_writer is not None:
        dispatcher.subscribe(_guarded(raw_writer, "the raw-run writer"))
    dispatcher.subscribe(restorer)
    loop = dispatcher.loop
    stopped_by: list[str] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not stopped_by:
            _LOG.info("asirp live: %s received, shutting down", name)
        stopped_by.append(name)
        loop.stop()

    for signum in SHUTDOWN_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    if on_ready is not None:
        loop.call_soon(on_ready, dispatcher.address)
    try:
        dispatcher.start()
    except RuntimeError:
        # loop.stop() before the polling task ended: how a signal ends the dispatcher.
        if not stopped_by:
            raise
    finally:
        for signum in SHUTDOWN_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
    reason = (
        f"asirp live stopped by {stopped_by[0] if stopped_by else 'exit'} before the raw run ended"
    )
    ended = restorer.finish_open_runs(reason)
    if ended:
        _LOG.warning("asirp live: ended %d open run(s): %s", len(ended), ", ".join(ended))
    if raw_writer is not None:
        for uid in list(open_runs.runs):
            stop = {
                "uid": str(uuid.uuid4()),
                "time": time.time(),
                "run_start": uid,
                "exit_status": "abort",
                "reason": reason,
                "num_events": {},
            }
            _guarded(raw_writer, "the raw-run writer")("stop", stop)
    if not restorer.wait(grace_s):
        _LOG.warning("asirp live: restorations still running after %g s; cancelling", grace_s)
        restorer.close(timeout=grace_s, cancel=True)
    else:
        restorer.close(timeout=grace_s)
    return stopped_by[0] if stopped_by else "exit"
