"""Helpers for the Tango tests: servers in child processes, and an event recorder.

Every Tango server runs in its own process (two servers in one process crash, and torch's
thread pools do not survive ``fork``): :class:`ChildServer` starts a Python child, forwards its
output, and waits for a readiness line. Clients (``DeviceProxy``, ophyd-async) run in the test
process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bluesky.callbacks.zmq import Publisher

from callbacks.serialization import serializer

HERE = Path(__file__).parent
NODB_SERVER = HERE / "_nodb_server.py"
STARTUP_TIMEOUT_S = 120.0


def small_map(shape: tuple[int, int] = (32, 32), seed: int = 0, peak: float = 80.0) -> np.ndarray:
    """A seeded Poisson map (float32 counts): a checkerboard of 8 px squares on a background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    truth = peak * (0.05 + ((rows // 8 + cols // 8) % 2))
    return rng.poisson(truth).astype(np.float32)


def child_environment(**overrides: str | None) -> dict[str, str]:
    """This process's environment without ``TANGO_HOST``, with ``overrides`` applied."""
    env = {key: value for key, value in os.environ.items() if key != "TANGO_HOST"}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class ChildServer:
    """A child process that prints a line matching ``ready`` (a regex) once it serves.

    Its stdin stays open; closing it (:meth:`stop`) asks the DeviceTestContext helper to exit.
    The regex is searched anywhere in a line, since other threads of the child print too.
    """

    def __init__(self, argv: Sequence[str], ready: str, env: dict[str, str] | None = None) -> None:
        self.ready = re.compile(ready)
        self.lines: list[str] = []
        self._ready: queue.Queue[re.Match[str] | None] = queue.Queue()
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env if env is not None else child_environment(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            match = self.ready.search(line)
            if match:
                self._ready.put(match)
        self._ready.put(None)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> re.Match[str]:
        """The readiness match; raises with the child's output if it does not come."""
        try:
            match = self._ready.get(timeout=timeout)
        except queue.Empty:
            match = None
        if match is None:
            self.kill()
            raise RuntimeError(f"child not ready: {self.output()}")
        return match

    def output(self) -> str:
        return "\n".join(self.lines[-40:])

    def request_stop(self) -> None:
        """Close the child's stdin (it exits cleanly when it sees the end of its input)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

    def stop(self, timeout: float = 60.0) -> int:
        """Close stdin and wait for the child; kill it if it does not exit in time."""
        self.request_stop()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.finish()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish()

    def finish(self) -> int:
        """Wait for the exit and close the pipes; return the exit status."""
        status = self.process.wait()
        self._reader.join(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        return status


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DocumentProxy:
    """``bluesky-0MQ-proxy`` in a child process on free 127.0.0.1 ports.

    Publishers send to ``in_address``; subscribers (the device's live mode) read from
    ``out_address``. :meth:`stop` terminates it (it does not read stdin).
    """

    def __init__(self) -> None:
        self.in_port, self.out_port = free_port(), free_port()
        self.child = ChildServer(
            [
                str(Path(sys.executable).parent / "bluesky-0MQ-proxy"),
                "--in-address",
                f"127.0.0.1:{self.in_port}",
                "--out-address",
                f"127.0.0.1:{self.out_port}",
            ],
            r"Receiving on address",
            env=child_environment(PYTHONUNBUFFERED="1"),
        )
        self.child.wait_ready()

    @property
    def in_address(self) -> str:
        return f"127.0.0.1:{self.in_port}"

    @property
    def out_address(self) -> str:
        return f"127.0.0.1:{self.out_port}"

    def stop(self) -> int:
        process = self.child.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.child.request_stop()
        return self.child.finish()


def start_nodb_server(properties: dict[str, Any]) -> ChildServer:
    """Start ``_nodb_server.py`` (DeviceTestContext, no database) with device ``properties``.

    ``wait_ready()["trl"]`` is then the device's TRL.
    """
    import json

    return ChildServer(
        [sys.executable, str(NODB_SERVER), json.dumps(properties)],
        r"ASIRP_READY (?P<trl>tango://\S+)",
        # as asirp serve does (asirp_device.embedded.SERVER_OMP_WAIT_POLICY); a quick shutdown
        env=child_environment(OMP_WAIT_POLICY="PASSIVE", ORBscanGranularity="1"),
    )


@contextlib.contextmanager
def nodb_server(properties: dict[str, Any]) -> Iterator[str]:
    """Run ``_nodb_server.py`` with device ``properties``; yield the device's TRL.

    The server is stopped on exit and must exit with status 0.
    """
    child = start_nodb_server(properties)
    try:
        yield child.wait_ready()["trl"]
    finally:
        status = child.stop()
    assert status == 0, child.output()


class EventRecorder:
    """Collects Tango events as ``(attribute, value)``.

    Data-ready events are recorded as ``("<attribute>:data_ready", counter)``.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.errors: list[str] = []
        self._condition = threading.Condition()

    def __call__(self, event: Any) -> None:
        name = event.attr_name.rsplit("/", 1)[-1].split("#")[0].lower()
        with self._condition:
            if event.err:
                self.errors.append(f"{name}: {event.errors}")
            elif hasattr(event, "ctr"):
                self.events.append((f"{name}:data_ready", event.ctr))
            else:
                self.events.append((name, event.attr_value.value))
            self._condition.notify_all()

    def values(self, name: str) -> list[Any]:
        with self._condition:
            return [value for attribute, value in self.events if attribute == name]

    def wait_for(
        self, predicate: Callable[[list[tuple[str, Any]]], bool], timeout: float = 30.0
    ) -> None:
        """Wait until ``predicate(events)`` is true; fail with what arrived otherwise."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = [(n, getattr(v, "shape", v)) for n, v in self.events]
                    raise AssertionError(f"events did not arrive in {timeout} s: {summary}")
                self._condition.wait(remaining)


@pytest.fixture(scope="module")
def proxy() -> Iterator[DocumentProxy]:
    """A bluesky 0MQ proxy in a child process for the tests of a module."""
    proxy = DocumentProxy()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def publisher(proxy: DocumentProxy) -> Iterator[Publisher]:
    """A bluesky 0MQ publisher into ``proxy`` (msgpack, as live mode reads by default)."""
    publisher = Publisher(proxy.in_address, serializer=serializer)
    yield publisher
    publisher.close()
