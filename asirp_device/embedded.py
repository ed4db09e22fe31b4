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
    Steps 2 and 3 in that database; the server listens on ``host`` too (127.0.0.1 unless
    told otherwise: ``--host`` names the interface other machines reach it on).

The children run in their own sessions, so a Ctrl-C in the terminal reaches only the supervisor:
on SIGINT or SIGTERM it stops the server first (SIGTERM, then SIGKILL after a grace period),
then the database, and returns 0. If a child exits by itself, the rest is stopped and 1 is
returned. Registrations and properties persist in the database file between runs.

Clean-up when the supervisor is killed
    On Linux every child gets ``SIGKILL`` from the kernel when the supervisor dies, even by
    ``kill -9`` (``prctl(PR_SET_PDEATHSIG)``, set from a thread that lives as long as the
    process, see :func:`spawn`). Neither child starts processes of its own (pytango's database
    server and the device server are single Python processes), so nothing is left behind.
One database per sqlite file
    The embedded database holds an exclusive ``flock`` on ``<db file>.lock`` (the supervisor's
    PID is written in it) and passes it to the database process, so the lock lasts as long as
    either of them; the kernel releases it when they die. A second ``asirp serve`` on the same
    file is refused with ``... already served by PID N``.
Registration
    :func:`register_device` adds or updates only the named device of ``ASIRP/<instance>``; it
    never deletes or moves another entry, and refuses a name that belongs to another server.

This module runs the deployment (:func:`serve`, :class:`EmbeddedDatabase`,
:class:`ServerProcess`); supervising the child processes and the database lock are in
:mod:`asirp_device.processes`, the registration in :mod:`asirp_device.registration`. Their
public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

import tango

from asirp_device import SERVER_NAME
from asirp_device.processes import (
    LOCK_WAIT_S,
    PARENT_DEATH_SIGNAL,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Child,
    DatabaseInUse,
    DatabaseLock,
    EmbeddedStartError,
    Interrupted,
    child_environment,
    spawn,
    wait_for,
)
from asirp_device.registration import (
    DATABASE_TIMEOUT_S,
    DatabaseUnreachable,
    connect_database,
    devfailed_text,
    register_device,
)

__all__ = [
    "DATABASE_INSTANCE",
    "DATABASE_TIMEOUT_S",
    "LOCK_WAIT_S",
    "PARENT_DEATH_SIGNAL",
    "SERVER_OMP_WAIT_POLICY",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "DatabaseInUse",
    "DatabaseLock",
    "DatabaseUnreachable",
    "EmbeddedDatabase",
    "EmbeddedStartError",
    "Interrupted",
    "ServerProcess",
    "connect_database",
    "default_db_file",
    "parse_properties",
    "register_device",
    "serve",
    "spawn",
]

DATABASE_INSTANCE = "2"
"""Instance name of the embedded database server (device ``sys/database/2``)."""

_TANGO_HOST_NOT_SET = "TANGO_HOST env. variable not set"
"""What pytango's database server prints when started on port 0 without TANGO_HOST."""

_LISTENING = re.compile(r"Database DS listening on: host=(?P<host>\S+), port=(?P<port>\d+)")


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


SERVER_OMP_WAIT_POLICY = "PASSIVE"
"""``OMP_WAIT_POLICY`` given to the device server unless the environment sets one.

torch's OpenMP threads otherwise spin while they wait for work; on a machine shared with other
processes (the control-room case) they then take the cores the computing thread needs. Measured
on 2 busy cores (load about 11): a 256 x 256 Richardson-Lucy restoration of 10 iterations took
a median 589 ms in the server with the default policy and 21 ms with ``PASSIVE``.
"""


class EmbeddedDatabase:
    """pytango's sqlite Tango database server, run as a child process.

    While it runs it holds :class:`DatabaseLock` on ``<db_file>.lock``: a second embedded
    database on the same file is refused (:class:`DatabaseInUse`).

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
        self._child: Child | None = None
        self._lock = DatabaseLock(self.db_file)

    def start(self, stop: threading.Event | None = None) -> str:
        """Start the database and wait until it accepts requests; return its ``TANGO_HOST``.

        Raises
        ------
        DatabaseInUse
            If another embedded database serves the same file.
        EmbeddedStartError
            If the database does not start.
        """
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            return self._start(stop)
        except BaseException:
            self.stop()
            raise

    def _start(self, stop: threading.Event | None) -> str:
        # with a fixed port, TANGO_HOST is what the database would work out itself (setting it
        # spares a warning); with port 0 the port is only known once it listens
        env = child_environment(f"{self.host}:{self.port}" if self.port else None)
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

        assert self._lock.fd is not None
        # with port 0 the database cannot be given its TANGO_HOST before it listens, and its
        # own start-up then says "TANGO_HOST env. variable not set": harmless, and misleading
        # next to our ready line (which gives TANGO_HOST), so it is not forwarded
        child = Child(
            "databaseds",
            argv,
            env,
            pass_fds=(self._lock.fd,),
            hidden=(_TANGO_HOST_NOT_SET,) if not self.port else (),
        )
        child.watch(listen)
        self._child = child
        wait_for(lambda: "port" in found, child, "the embedded Tango database", stop)
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
    def child(self) -> Child | None:
        """The running child, if started."""
        return self._child

    def stop(self) -> None:
        """Stop the database server (SIGTERM, then SIGKILL after a grace period), then unlock."""
        if self._child is not None:
            self._child.stop()
        self._lock.release()


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
    environment : mapping, optional
        Variables added to the server's environment, for secrets that must not be device
        properties (kept in the database and readable by clients): ``TILED_API_KEY`` for the
        tiled server of ``TiledUri``.
    """

    def __init__(
        self,
        tango_host: str,
        instance: str,
        listen_host: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.tango_host = tango_host
        self.instance = instance
        self.listen_host = listen_host
        self.environment = dict(environment or {})
        self._child: Child | None = None

    def start(self, device_name: str, stop: threading.Event | None = None) -> None:
        """Start the server and wait until ``device_name`` answers a ping."""
        env = child_environment(self.tango_host)
        env.setdefault("OMP_WAIT_POLICY", SERVER_OMP_WAIT_POLICY)
        env.update(self.environment)
        argv = [sys.executable, "-m", "asirp_device.server", self.instance]
        if self.listen_host is not None:
            argv += ["-ORBendPoint", f"giop:tcp:{self.listen_host}:0"]
        child = Child(SERVER_NAME, argv, env)
        self._child = child
        trl = f"tango://{self.tango_host}/{device_name}"

        def answers() -> bool:
            try:
                tango.DeviceProxy(trl).ping()
            except tango.DevFailed:
                return False
            return True

        wait_for(answers, child, f"the {SERVER_NAME} device server", stop)

    @property
    def child(self) -> Child | None:
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
        Interface the embedded database and the device server listen on (with an existing
        ``TANGO_HOST`` too).
    properties : mapping of str to str, optional
        Other device properties to write.

    Returns
    -------
    int
        0 after a requested stop, 1 when a child exited by itself.

    Raises
    ------
    DatabaseInUse
        When another ``asirp serve`` serves the same sqlite file.
    DatabaseUnreachable
        When ``TANGO_HOST`` is set and no database answers there (within
        :data:`DATABASE_TIMEOUT_S` per host).
    EmbeddedStartError
        When a child does not start, or the database refuses a request.
    ValueError
        For bad arguments, or a device name registered for another server.
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
        children: list[Child | None] = []
        try:
            if embedded:
                database = EmbeddedDatabase(db_file or default_db_file(), host, db_port)
                running.callback(database.stop)
                tango_host = database.start(stop)
                children.append(database.child)
            others = register_device(tango_host, device_name, instance, properties)
            if others:
                print(
                    f"asirp serve: server {SERVER_NAME}/{instance} also serves "
                    f"{', '.join(others)} (registered earlier; use another --instance to "
                    "serve only this device)",
                    file=sys.stderr,
                    flush=True,
                )
            # 127.0.0.1 unless told otherwise, with an existing TANGO_HOST too: the device
            # is reachable from other machines only when --host names an interface.
            server = ServerProcess(tango_host, instance, host)
            running.callback(server.stop)
            server.start(device_name, stop)
            children.append(server.child)
        except Interrupted:
            return 0
        except tango.DevFailed as error:  # one line for the command line, not a traceback
            raise EmbeddedStartError(
                f"the Tango database at {tango_host} refused a request: {devfailed_text(error)}"
            ) from None
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
