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
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import queue
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
from typing import Any

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


_PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal the kernel sends a process when its parent thread exits."""

PARENT_DEATH_SIGNAL = signal.SIGKILL
"""What a child gets when the process that started it dies (SIGKILL: it cannot hang)."""


def _death_signal_hook(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child die with ``parent_pid`` (Linux), or ``None``.

    The hook runs in the child between ``fork`` and ``exec``: it asks the kernel for
    :data:`PARENT_DEATH_SIGNAL` when the parent dies, then kills the child at once if the parent
    died before that request (the child was re-parented already). Elsewhere than Linux there is
    no such request, and ``None`` is returned.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    death_signal = int(PARENT_DEATH_SIGNAL)

    def hook() -> None:
        if prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0 or os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


class _Spawner:
    """One long-lived thread that starts every child process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not the process:
    a child started from a short-lived thread would be killed when that thread returns. Forking
    from this thread, which lives as long as the process, ties the children to the process.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], subprocess.Popen[str]], queue.SimpleQueue[Any]]
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="asirp-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            start, reply = self._requests.get()
            try:
                reply.put(start())
            except BaseException as error:  # handed to the caller, raised there
                reply.put(error)

    def popen(self, start: Callable[[], subprocess.Popen[str]]) -> subprocess.Popen[str]:
        """Run ``start()`` (which calls ``subprocess.Popen``) in the spawner thread."""
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put((start, reply))
        outcome = reply.get()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


_SPAWNER: _Spawner | None = None
_SPAWNER_LOCK = threading.Lock()


def spawn(
    argv: Sequence[str], env: Mapping[str, str], pass_fds: Sequence[int] = ()
) -> subprocess.Popen[str]:
    """Start a child in its own session that dies with this process (on Linux, even on SIGKILL).

    stdin is ``/dev/null``; stdout and stderr are merged into one text pipe. ``pass_fds`` stay
    open in the child (the database lock, see :class:`DatabaseLock`).
    """
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = _Spawner()
        spawner = _SPAWNER
    hook = _death_signal_hook(os.getpid())

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            preexec_fn=hook,
        )

    return spawner.popen(start)


class _Child:
    """A child process whose merged output is forwarded, line by line, to our stderr."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=12)
        self._watchers: list[Callable[[str], None]] = []
        self.process = spawn(argv, env, pass_fds)
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


LOCK_WAIT_S = 5.0
"""How long a lock left by a dead ``asirp serve`` may take to go (its children dying), s."""


class DatabaseInUse(EmbeddedStartError):
    """Another ``asirp serve`` (or the database it started) serves the same sqlite file."""


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


class DatabaseLock:
    """An exclusive ``flock`` on ``<db file>.lock`` while an embedded database serves the file.

    The lock is on the open file, so it lasts while this process or a child given the
    descriptor (:attr:`fd`, passed to the database process) keeps it open, and the kernel
    releases it when they are gone, even after ``kill -9``. The file holds the PID of the
    process that took the lock; it is never deleted (deleting a lock file races).

    Parameters
    ----------
    db_file : pathlib.Path
        The sqlite file (its folder must exist).
    """

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.path = db_file.with_name(db_file.name + ".lock")
        self._fd: int | None = None

    @property
    def fd(self) -> int | None:
        """The locked descriptor while held, else ``None``."""
        return self._fd

    def acquire(self, wait_s: float = LOCK_WAIT_S) -> None:
        """Take the lock, or raise :class:`DatabaseInUse` saying which PID holds it.

        A lock whose recorded owner has exited is waited for up to ``wait_s`` s (the children
        of a killed ``asirp serve`` are still dying); one held by a live owner is refused at
        once.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                owner = self._owner(fd)
                owner_alive = owner is not None and _pid_alive(owner)
                if owner_alive or time.monotonic() > deadline:
                    raise DatabaseInUse(self._in_use_message(owner, owner_alive))
                time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _owner(fd: int) -> int | None:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None

    def _in_use_message(self, owner: int | None, owner_alive: bool) -> str:
        where = f"the Tango database file {self.db_file} is"
        advice = "stop it first, or give another --db-file"
        if owner is None:
            return f"{where} already served by another process (lock {self.path}); {advice}"
        if owner_alive:
            return f"{where} already served by PID {owner} (lock {self.path}); {advice}"
        return (
            f"{where} still locked by processes that PID {owner} (exited) started "
            f"(lock {self.path}); {advice}"
        )

    def release(self) -> None:
        """Close our descriptor (the lock goes once the database process has exited too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
        self._child: _Child | None = None
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

        assert self._lock.fd is not None
        child = _Child("databaseds", argv, env, pass_fds=(self._lock.fd,))
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
        """Stop the database server (SIGTERM, then SIGKILL after a grace period), then unlock."""
        if self._child is not None:
            self._child.stop()
        self._lock.release()


DATABASE_TIMEOUT_S = 5.0
"""How long reaching a Tango database (TCP connect, then its first answer) may take, s."""


class DatabaseUnreachable(EmbeddedStartError):
    """Nothing answers as a Tango database at ``TANGO_HOST``."""


def _split_tango_host(tango_host: str) -> tuple[str, int]:
    host, _, port = tango_host.split(",")[0].strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TANGO_HOST must be host:port, got {tango_host!r}")
    return host, int(port)


def _devfailed_text(error: tango.DevFailed) -> str:
    """The first description of a ``DevFailed``, on one line."""
    description = error.args[0].desc if error.args else str(error)
    return " ".join(str(description).split())


def connect_database(tango_host: str, timeout_s: float = DATABASE_TIMEOUT_S) -> tango.Database:
    """A client of the Tango database at ``tango_host`` (``host:port[,host:port...]``).

    Each ``host:port`` is first tried with a plain TCP connection (at most ``timeout_s`` s), so
    an unreachable database is reported quickly instead of through omniORB's retries; the first
    one that answers as a Tango database is returned.

    Raises
    ------
    ValueError
        For a ``tango_host`` that is not ``host:port``.
    DatabaseUnreachable
        When no database answers; the message names ``tango_host`` and why.
    """
    entries = [entry.strip() for entry in tango_host.split(",") if entry.strip()]
    if not entries:
        raise ValueError(f"TANGO_HOST must be host:port, got {tango_host!r}")
    problems: list[str] = []
    for entry in entries:
        host, port = _split_tango_host(entry)
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except OSError as error:
            problems.append(f"{host}:{port}: {error.strerror or error}")
            continue
        try:
            database = tango.Database(host, port)
            database.set_timeout_millis(int(1000 * timeout_s))
            database.get_info()
        except tango.DevFailed as error:
            problems.append(f"{host}:{port}: {_devfailed_text(error)}")
            continue
        return database
    raise DatabaseUnreachable(
        f"cannot reach the Tango database at {tango_host} ({'; '.join(problems)}); check that "
        "TANGO_HOST names a running database, or unset it to start an embedded one"
    )


def register_device(
    tango_host: str,
    device_name: str,
    instance: str,
    properties: Mapping[str, str] | None = None,
) -> list[str]:
    """Add ``device_name`` (class ``ASIRP``) to server ``ASIRP/<instance>``, touching nothing else.

    Only this device's entry is written (when it is missing), with the server's admin device
    ``dserver/ASIRP/<instance>`` if the database did not create it; ``properties`` are written
    to this device (existing ones not named stay as they are). No device or server is ever
    deleted or moved, so this is safe against a facility database: other devices of the same
    server stay registered and are served with it.

    Returns
    -------
    list of str
        The other devices of ``ASIRP/<instance>`` (they start with the server too).

    Raises
    ------
    ValueError
        For a malformed name or instance, or a device name that the database gives to another
        server or class (it is not moved: choose another ``--device``).
    DatabaseUnreachable
        When the database does not answer.
    """
    if not _DEVICE_NAME.match(device_name):
        raise ValueError(f"device name must be domain/family/member, got {device_name!r}")
    if not instance or "/" in instance:
        raise ValueError(f"instance must be a non-empty name without '/', got {instance!r}")
    database = connect_database(tango_host)
    server = f"{SERVER_NAME}/{instance}"
    try:
        existing = database.get_device_info(device_name)
    except tango.DevFailed as error:
        if not error.args or error.args[0].reason != "DB_DeviceNotDefined":
            raise
        existing = None
    if existing is not None and (
        existing.ds_full_name.lower() != server.lower() or existing.class_name != SERVER_NAME
    ):
        raise ValueError(
            f"device {device_name} is registered in the Tango database at {tango_host} for "
            f"server {existing.ds_full_name} (class {existing.class_name}); asirp serve does "
            "not move it: choose another --device (or the --instance it belongs to)"
        )
    if existing is None:
        info = tango.DbDevInfo()
        info.name = device_name
        info._class = SERVER_NAME
        info.server = server
        database.add_device(info)
    if not list(database.get_device_name(server, "DServer").value_string):
        admin = tango.DbDevInfo()
        admin.name = f"dserver/{server}"
        admin._class = "DServer"
        admin.server = server
        database.add_device(admin)
    if properties:
        database.put_device_property(device_name, {k: [v] for k, v in properties.items()})
    served = database.get_device_name(server, SERVER_NAME).value_string
    return sorted(name for name in served if name.lower() != device_name.lower())


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
        children: list[_Child | None] = []
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
                f"the Tango database at {tango_host} refused a request: {_devfailed_text(error)}"
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
