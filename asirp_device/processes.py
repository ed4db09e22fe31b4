"""Child processes of ``asirp serve``: started tied to the supervisor, watched, stopped; the lock.

One job: supervising the processes ``asirp serve`` starts (:mod:`asirp_device.embedded` says
which ones and in what order). :func:`spawn` starts a child in its own session; :class:`Child`
forwards its output line by line to our stderr and stops it (SIGTERM, then SIGKILL after
:data:`STOP_TIMEOUT_S`); :func:`wait_for` polls until a child is ready, has exited or was
stopped. :class:`DatabaseLock` keeps a second supervisor off the same sqlite file.

Clean-up when the supervisor is killed
    On Linux every child gets ``SIGKILL`` from the kernel when the supervisor dies, even by
    ``kill -9`` (``prctl(PR_SET_PDEATHSIG)``, set from a thread that lives as long as the
    process, see :func:`spawn`).
One database per sqlite file
    :class:`DatabaseLock` is an exclusive ``flock`` on ``<db file>.lock`` (the supervisor's PID
    is written in it), passed to the database process so that the lock lasts as long as either
    of them; the kernel releases it when they die.

No Tango import: this module only starts and watches processes.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 90.0
"""How long the database and the device server may take to start, s."""

STOP_TIMEOUT_S = 10.0
"""Grace period between SIGTERM and SIGKILL when stopping a child, s."""


class EmbeddedStartError(OSError):
    """The database or the device server could not be started (the message says why)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while starting."""


def child_environment(tango_host: str | None) -> dict[str, str]:
    """Our environment with ``TANGO_HOST`` replaced (or removed when ``None``).

    ``ORBscanGranularity=1`` (s) lets omniORB close idle connections quickly, so a child stops
    within about a second of SIGTERM instead of the default five.
    """
    env = {key: value for key, value in os.environ.items() if key != "TANGO_HOST"}
    if tango_host is not None:
        env["TANGO_HOST"] = tango_host
    env.setdefault("ORBscanGranularity", "1")
    return env


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


class Child:
    """A child process whose merged output is forwarded, line by line, to our stderr.

    Lines containing one of ``hidden`` are kept (in ``lines``, and for the watchers) but not
    forwarded.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
        hidden: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.hidden = tuple(hidden)  # text of lines that are kept but not forwarded
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
            if not any(fragment in text for fragment in self.hidden):
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


def wait_for(
    ready: Callable[[], bool],
    child: Child,
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
