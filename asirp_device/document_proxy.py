"""A bluesky 0MQ document proxy (``bluesky-0MQ-proxy``) as a supervised child process.

The device's live mode reads a RunEngine's documents from such a proxy: the RunEngine publishes
to its input (``bluesky.callbacks.zmq.Publisher(in_address,
serializer=callbacks.serialization.serializer)``) and ``StartLive(out_address)`` subscribes the
device to its output. :class:`DocumentProxyProcess` runs bluesky's own proxy
(:func:`bluesky.commandline.zmq_proxy.main`) on two free ports of ``127.0.0.1`` (nothing else
reaches it), as a :class:`~asirp_device.processes.Child`: in its own session, killed with this
process, its output forwarded, stopped with SIGTERM then SIGKILL. :func:`handshake` waits until
documents published to it reach a subscriber (0MQ drops what is sent before a connection is
joined). No Tango import.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from asirp_device.processes import START_TIMEOUT_S, Child, child_environment, wait_for

READY_LINE = "Receiving on address"
"""What the proxy prints once both sockets are bound."""

PROXY_CODE = "from bluesky.commandline.zmq_proxy import main; main()"
"""The child's program: bluesky's ``bluesky-0MQ-proxy`` (run through this Python)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class DocumentProxyProcess:
    """``bluesky-0MQ-proxy`` on two free ports of ``host``, as a child process.

    Parameters
    ----------
    host : str
        Interface both sockets bind to (``127.0.0.1``: this machine only).

    Attributes
    ----------
    in_port, out_port : int
        The ports, once :meth:`start` returned (0 before).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.in_port = 0
        self.out_port = 0
        self._child: Child | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the proxy while started, else ``None``."""
        return None if self._child is None else self._child.pid

    @property
    def in_address(self) -> str:
        """``HOST:PORT`` that publishers send to."""
        return f"{self.host}:{self.in_port}"

    @property
    def out_address(self) -> str:
        """``HOST:PORT`` that subscribers (``StartLive``) read from."""
        return f"{self.host}:{self.out_port}"

    def start(
        self, stop: threading.Event | None = None, timeout: float = START_TIMEOUT_S
    ) -> tuple[str, str]:
        """Start the proxy and wait until it says it is bound.

        Parameters
        ----------
        stop : threading.Event, optional
            Set it to give up waiting (raises :class:`~asirp_device.processes.Interrupted`).
        timeout : float
            Longest wait for the proxy, s.

        Returns
        -------
        (str, str)
            ``in_address`` and ``out_address``.

        Raises
        ------
        asirp_device.processes.EmbeddedStartError
            If it exits (a port taken in between: start again) or is not ready in time; it is
            stopped then.
        """
        if self._child is not None:
            raise RuntimeError("the document proxy is already started")
        self.in_port, self.out_port = free_port(self.host), free_port(self.host)
        env = child_environment(None)
        env["PYTHONUNBUFFERED"] = "1"  # the ready line must arrive now, not at exit
        argv = [
            sys.executable,
            "-c",
            PROXY_CODE,
            "--in-address",
            self.in_address,
            "--out-address",
            self.out_address,
        ]
        ready = threading.Event()
        child = Child("0MQ-proxy", argv, env)
        child.watch(lambda line: ready.set() if READY_LINE in line else None)
        self._child = child
        try:
            # a fast child may print before the watcher is in place: its kept lines count too
            # (copied first, in one step: the reader thread appends to them)
            wait_for(
                lambda: ready.is_set() or any(READY_LINE in line for line in tuple(child.lines)),
                child,
                "the 0MQ document proxy",
                stop,
                timeout,
            )
        except BaseException:
            self.stop()
            raise
        return self.in_address, self.out_address

    def stop(self) -> None:
        """Stop the proxy (SIGTERM, then SIGKILL after a grace period); a no-op if not started."""
        child, self._child = self._child, None
        if child is not None:
            child.stop()


def handshake(
    publish: Callable[[str, dict[str, Any]], Any],
    received: Callable[[], int],
    timeout: float = 30.0,
) -> int:
    """Publish empty runs (a start and a stop, no map) until a subscriber has two documents.

    PUB/SUB connections drop what is sent before they are joined (0MQ's "slow joiner"): the
    publisher's to the proxy and the proxy's to the subscriber (the device's live mode). Until
    documents get through, a scan's first documents would be lost; the first to arrive can be a
    stop whose start was dropped, so two are waited for. Live mode lists these runs as not
    restored (no map geometry).

    Parameters
    ----------
    publish : callable
        ``publish(name, doc)``: a ``bluesky.callbacks.zmq.Publisher``.
    received : callable
        How many documents the subscriber has received (the device's ``live_documents``).
    timeout : float
        Longest wait, s.

    Returns
    -------
    int
        Empty runs published.

    Raises
    ------
    TimeoutError
        If no document got through within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    runs = 0
    while received() < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no document reached the subscriber in {timeout:g} s")
        uid = str(uuid.uuid4())
        publish("start", {"uid": uid, "time": time.time(), "purpose": "handshake"})
        publish(
            "stop",
            {
                "uid": str(uuid.uuid4()),
                "run_start": uid,
                "time": time.time(),
                "exit_status": "success",
                "num_events": {},
            },
        )
        runs += 1
        time.sleep(0.2)
    return runs
