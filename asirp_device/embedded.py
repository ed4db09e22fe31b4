"""``asirp serve``: the ASIRP device with its own sqlite Tango database, or in an existing one.

Embedded (no ``TANGO_HOST``)
    1. pytango's database server (``python -m tango.databaseds.database``, sqlite file named by
       ``PYTANGO_DATABASE_NAME``, instance ``2``) is started on ``host:db_port``; with port 0 it
       picks a free port and reports it (``--print-host-port``).
    2. The device is registered (server ``ASIRP/<instance>``, class ``ASIRP``) with its
       ``DataRoot`` and any other properties given.
    3. The server runs as ``python -m asirp_device.server <instance>`` with that ``TANGO_HOST``,
       listening on ``host`` only (and ``OMP_WAIT_POLICY=PASSIVE`` unless set, see
       :data:`SERVER_OMP_WAIT_POLICY`).
Facility (``TANGO_HOST`` set)
    Steps 2 and 3 in that database; the server listens on every interface.

The children run in their own sessions, so a Ctrl-C in the terminal reaches only the supervisor:
on SIGINT or SIGTERM it stops the server first (SIGTERM, then SIGKILL after a grace period),
then the database, and returns 0. If a child exits by itself, the rest is stopped and 1 is
returned. Registrations and properties persist in the database file between runs.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

import tango

from asirp_device import SERVER_NAME

DATABASE_INSTANCE = "2"
"""Instance name of the embedded database server (device ``sys/database/2``)."""

START_TIMEOUT_S = 90.0
"""How long the database and the device server may take to start, s."""

STOP_TIMEOUT_S = 10.0
"""Grace period between SIGTERM and SIGKILL when stopping a child, s."""

_LISTENING = re.compile(r"Database DS listening on: host=(?P<host>\S+), port=(?P<port>\d+)")
_DEVICE_NAME = re.compile(r"^[^/\s]+/[^/\s]+/[^/\s]+$")


class EmbeddedStartError(OSError):
    """The database or the device server could not be started (the message says why)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while starting."""


def default_db_file() -> Path:
    """``$XDG_STATE_HOME/asirp/tango_database.db`` (``~/.local/state/asirp/...`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "asirp" / "tango_database.db"


def parse_properties(pairs: Sequence[str]) -> dict[str, str]:
    """Turn ``NAME=VALUE`` strings into a property dict.

    Raises
    ------
    ValueError
        For an item without ``=`` or with an empty name.
    """
    properties: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"--property expects NAME=VALUE, got {pair!r}")
        properties[name.strip()] = value.strip()
    return properties


def _child_environment(tango_host: str | None) -> dict[str, str]:
    """Our environment with ``TANGO_HOST`` replaced (or removed when ``None``).

    ``ORBscanGranularity=1`` (s) lets omniORB close idle connections quickly, so a child stops
    within about a second of SIGTERM instead of the default five.
    """
    env = {key: value for key, value in os.environ.items() if key != "TANGO_HOST"}
    if tango_host is not None:
        env["TANGO_HOST"] = tango_host
    env.setdefault("ORBscanGranularity", "1")
    return env


SERVER_OMP_WAIT_POLICY = "PASSIVE"
"""``OMP_WAIT_POLICY`` given to the device server unless the environment sets one.

torch's OpenMP threads otherwise spin while they wait for work; on a machine shared with other
processes (the control-room case) they then take the cores the computing thread needs. Measured
on 2 busy cores (load about 11): a 256 x 256 Richardson-Lucy restoration of 10 iterations took
a median 589 ms in the server with the default policy and 21 ms with ``PASSIVE``.
"""


class _Child:
    """A child process whose merged output is forwarded, line by line, to our stderr."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=12)
        self._watchers: list[Callable[[str], None]] = []
        self.process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._forward, name=f"{name}-output", daemon=True)
        self._reader.start()

    def watch(self, watcher: Callable[[str], None]) -> None:
        """Call ``watcher(line)`` for every later line of output."""
        self._watchers.append(watcher)

    def _forward(self) -> None:
        stream = self.process.stdout
        if stream is None:
            return
        for line in stream:
            text = line.rstrip("\n")
            self.lines.append(text)
            print(f"[{self.name}] {text}", file=sys.stderr, flush=True)
            for watcher in list(self._watchers):
                watcher(text)

    @property
    def pid(self) -> int:
        """Process id."""
        return self.process.pid

    def exited(self) -> int | None:
        """The exit status, or ``None`` while running."""
        return self.process.poll()

    def output_tail(self) -> str:
        """The last lines of output, for error messages."""
        return " | ".join(self.lines) or "(no output)"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; return the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=2.0)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()  # at EOF: the reader is done with it
        return self.process.returncode


def _wait_for(
    ready: Callable[[], bool],
    child: _Child,
    what: str,
    stop: threading.Event | None,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll ``ready()`` until true; raise if ``child`` exits, on timeout, or when stopped."""
    deadline = time.monotonic() + timeout
    while not ready():
        if stop is not None and stop.is_set():
            raise Interrupted(what)
        status = child.exited()
        if status is not None:
            output = child.output_tail()
            hint = ""
            if "Address in use" in output:
                hint = (
                    "its port is taken (another Tango database?): choose another --db-port "
                    "(0 picks a free one) or set TANGO_HOST to use the running database; "
                )
            raise EmbeddedStartError(
                f"{what}: {child.name} exited with status {status}: {hint}{output}"
            )
        if time.monotonic() > deadline:
            raise EmbeddedStartError(
                f"{what}: {child.name} did not get ready in {timeout:.0f} s: {child.output_tail()}"
            )
        time.sleep(0.1)


class EmbeddedDatabase:
    """pytango's sqlite Tango database server, run as a child process.

    Parameters
    ----------
    db_file : str or os.PathLike
        The sqlite file (created with the Tango schema if missing; its folder too).
    host : str
        Interface to listen on (``127.0.0.1`` keeps it on this machine).
    port : int
        TCP port; 0 picks a free one.
    """

    def __init__(self, db_file: str | os.PathLike, host: str = "127.0.0.1", port: int = 10000):
        self.db_file = Path(db_file).expanduser().resolve()
        self.host = host
        self.port = port
        self._child: _Child | None = None

    def start(self, stop: threading.Event | None = None) -> str:
        """Start the database and wait until it accepts requests; return its ``TANGO_HOST``."""
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        # with a fixed port, TANGO_HOST is what the database would work out itself (setting it
        # spares a warning); with port 0 the port is only known once it listens
        env = _child_environment(f"{self.host}:{self.port}" if self.port else None)
        env["PYTANGO_DATABASE_NAME"] = str(self.db_file)
        argv = [
            sys.executable,
            "-m",
            "tango.databaseds.database",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--print-host-port",
            DATABASE_INSTANCE,
        ]
        found: dict[str, int] = {}

        def listen(line: str) -> None:
            match = _LISTENING.search(line)
            if match:
                found["port"] = int(match["port"])

        child = _Child("databaseds", argv, env)
        child.watch(listen)
        self._child = child
        _wait_for(lambda: "port" in found, child, "the embedded Tango database", stop)
        self.port = found["port"]
        database = tango.Database(self.host, self.port)  # raises if it does not answer
        database.get_info()
        return self.tango_host

    @property
    def tango_host(self) -> str:
        """``host:port`` for clients (the machine's name when listening on every interface)."""
        host = socket.getfqdn() if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.port}"

    @property
    def child(self) -> _Child | None:
        """The running child, if started."""
        return self._child

    def stop(self) -> None:
        """Stop the database server (SIGTERM, then SIGKILL after a grace period)."""
        if self._child is not None:
            self._child.stop()


def _split_tango_host(tango_host: str) -> tuple[str, int]:
    host, _, port = tango_host.split(",")[0].strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TANGO_HOST must be host:port, got {tango_host!r}")
    return host, int(port)


def register_device(
    tango_host: str,
    device_name: str,
    instance: str,
    properties: Mapping[str, str] | None = None,
) -> None:
    """Register ``device_name`` (class ``ASIRP``) as the only device of ``ASIRP/<instance>``.

    Other ``ASIRP`` devices left in that server by earlier runs are removed; ``properties``
    are written (existing ones not named stay as they are).
    """
    if not _DEVICE_NAME.match(device_name):
        raise ValueError(f"device name must be domain/family/member, got {device_name!r}")
    if not instance or "/" in instance:
        raise ValueError(f"instance must be a non-empty name without '/', got {instance!r}")
    database = tango.Database(*_split_tango_host(tango_host))
    server = f"{SERVER_NAME}/{instance}"
    for name in database.get_device_name(server, SERVER_NAME).value_string:
        if name.lower() != device_name.lower():
            database.delete_device(name)
    info = tango.DbDevInfo()
    info.name = device_name
    info._class = SERVER_NAME
    info.server = server
    database.add_server(server, [info], with_dserver=True)
    if properties:
        database.put_device_property(device_name, {k: [v] for k, v in properties.items()})


class ServerProcess:
    """The ``ASIRP`` device server as a child process.

    Parameters
    ----------
    tango_host : str
        ``host:port`` of the database it registers with.
    instance : str
        Server instance name.
    listen_host : str, optional
        Interface for the server's CORBA endpoint; every interface when ``None``.
    """

    def __init__(self, tango_host: str, instance: str, listen_host: str | None = None) -> None:
        self.tango_host = tango_host
        self.instance = instance
        self.listen_host = listen_host
        self._child: _Child | None = None

    def start(self, device_name: str, stop: threading.Event | None = None) -> None:
        """Start the server and wait until ``device_name`` answers a ping."""
        env = _child_environment(self.tango_host)
        env.setdefault("OMP_WAIT_POLICY", SERVER_OMP_WAIT_POLICY)
        argv = [sys.executable, "-m", "asirp_device.server", self.instance]
        if self.listen_host is not None:
            argv += ["-ORBendPoint", f"giop:tcp:{self.listen_host}:0"]
        child = _Child(SERVER_NAME, argv, env)
        self._child = child
        trl = f"tango://{self.tango_host}/{device_name}"

        def answers() -> bool:
            try:
                tango.DeviceProxy(trl).ping()
            except tango.DevFailed:
                return False
            return True

        _wait_for(answers, child, f"the {SERVER_NAME} device server", stop)

    @property
    def child(self) -> _Child | None:
        """The running child, if started."""
        return self._child

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period)."""
        if self._child is not None:
            self._child.stop()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (old handlers restored after)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve(
    *,
    device_name: str,
    instance: str,
    data_root: str | os.PathLike | None = None,
    db_file: str | os.PathLike | None = None,
    db_port: int = 10000,
    host: str = "127.0.0.1",
    properties: Mapping[str, str] | None = None,
) -> int:
    """Run the device (and, without ``TANGO_HOST``, its database) until SIGINT or SIGTERM.

    Parameters
    ----------
    device_name : str
        Tango device name, domain/family/member.
    instance : str
        Server instance (``ASIRP <instance>``).
    data_root : str or os.PathLike, optional
        Written as the ``DataRoot`` property; embedded mode uses the current folder when
        ``None``, facility mode then keeps what the database holds.
    db_file : str or os.PathLike, optional
        sqlite file of the embedded database (:func:`default_db_file` when ``None``).
    db_port : int
        Port of the embedded database (0: a free one).
    host : str
        Interface of the embedded database and server.
    properties : mapping of str to str, optional
        Other device properties to write.

    Returns
    -------
    int
        0 after a requested stop, 1 when a child exited by itself.
    """
    properties = dict(properties or {})
    tango_host = os.environ.get("TANGO_HOST", "").strip()
    embedded = not tango_host
    if embedded and data_root is None:
        data_root = Path.cwd()
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        if not root.is_dir():
            raise ValueError(f"data root {os.fspath(data_root)!r} is not an existing folder")
        properties["DataRoot"] = str(root)
    with _stop_on_signals() as stop, contextlib.ExitStack() as running:
        children: list[_Child | None] = []
        try:
            if embedded:
                database = EmbeddedDatabase(db_file or default_db_file(), host, db_port)
                running.callback(database.stop)
                tango_host = database.start(stop)
                children.append(database.child)
            register_device(tango_host, device_name, instance, properties)
            server = ServerProcess(tango_host, instance, host if embedded else None)
            running.callback(server.stop)
            server.start(device_name, stop)
            children.append(server.child)
        except Interrupted:
            return 0
        mode = f"embedded database {db_file or default_db_file()}" if embedded else "TANGO_HOST"
        print(
            f"ASIRP ready: device {device_name} (server {SERVER_NAME}/{instance}), "
            f"TANGO_HOST={tango_host} ({mode}); Ctrl-C stops",
            flush=True,
        )
        while not stop.wait(0.5):
            for child in children:
                if child is not None and child.exited() is not None:
                    print(
                        f"asirp serve: {child.name} exited with status {child.exited()}; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
    return 0
