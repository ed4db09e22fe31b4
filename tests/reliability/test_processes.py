"""Process faults of ``asirp serve``: what it starts dies with it, one database per sqlite file,
registration never deletes others' entries, and an unreachable ``TANGO_HOST`` is one line.

Every server runs on 127.0.0.1 with free ports in child processes; the tests stop (or kill)
them by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import tango

from asirp_device.embedded import (
    DatabaseInUse,
    DatabaseLock,
    EmbeddedDatabase,
    register_device,
)
from tests.asirp_device.conftest import ChildServer, child_environment, free_port

DEVICE = "test/asirp/reliable"
INSTANCE = "reliable"
READY = r"ASIRP ready: device (?P<device>\S+) .*TANGO_HOST=(?P<tango_host>\S+) \("
GONE_WITHIN_S = 10.0


def serve_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "asirp.cli", "serve", *arguments]


def gone(process: psutil.Process) -> bool:
    """Whether ``process`` has exited (a zombie waiting for its new parent counts as exited)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(processes: list[psutil.Process], timeout: float = GONE_WITHIN_S) -> list[int]:
    """PIDs still alive after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    alive = list(processes)
    while alive and time.monotonic() < deadline:
        alive = [process for process in alive if not gone(process)]
        time.sleep(0.05)
    return [process.pid for process in alive]


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL whatever a failed test left running (by PID)."""
    for process in processes:
        if not gone(process):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@dataclass
class Served:
    child: ChildServer
    tango_host: str
    db_file: Path
    data_root: Path


def start_serve(db_file: Path, data_root: Path) -> Served:
    child = ChildServer(
        serve_command(
            "--db-port",
            "0",
            "--db-file",
            str(db_file),
            "--data-root",
            str(data_root),
            "--device",
            DEVICE,
            "--instance",
            INSTANCE,
            "--property",
            "DefaultMethod=wiener",
        ),
        READY,
        env=child_environment(),
    )
    ready = child.wait_ready()
    return Served(child, ready["tango_host"], db_file, data_root)


def interrupt(child: ChildServer, timeout: float = 60.0) -> int:
    """SIGINT (as Ctrl-C), then SIGKILL if it does not exit; return the exit status."""
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGINT)
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.finish()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data_root = tmp_path / "data"
    data_root.mkdir()
    served = start_serve(tmp_path / "state" / "tango.db", data_root)
    descendants = psutil.Process(served.child.process.pid).children(recursive=True)
    try:
        yield served
    finally:
        interrupt(served.child)
        kill_all(descendants)


def test_kill_9_of_serve_leaves_no_process_and_the_database_file_can_be_served_again(
    served: Served,
):
    proxy = tango.DeviceProxy(f"tango://{served.tango_host}/{DEVICE}")
    assert proxy.state() == tango.DevState.ON
    parent = psutil.Process(served.child.process.pid)
    descendants = parent.children(recursive=True)
    commands = [" ".join(process.cmdline()) for process in descendants]
    assert any("databaseds" in command for command in commands), commands
    assert any("asirp_device.server" in command for command in commands), commands

    os.kill(parent.pid, signal.SIGKILL)
    assert served.child.finish() == -signal.SIGKILL
    assert wait_gone(descendants) == [], commands

    again = start_serve(served.db_file, served.data_root)  # the lock went with the processes
    try:
        proxy = tango.DeviceProxy(f"tango://{again.tango_host}/{DEVICE}")
        assert proxy.state() == tango.DevState.ON
        started = psutil.Process(again.child.process.pid).children(recursive=True)
    finally:
        status = interrupt(again.child)
    assert status == 0, again.child.output()
    assert wait_gone(started) == []


def test_a_second_serve_on_the_same_database_file_is_refused_in_one_line(served: Served):
    started = time.monotonic()
    completed = subprocess.run(
        serve_command(
            "--db-port", "0", "--db-file", str(served.db_file), "--data-root", str(served.data_root)
        ),
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("asirp: error: ")
    assert f"already served by PID {served.child.process.pid}" in lines[0]
    assert time.monotonic() - started < 60
    # the first one still serves
    proxy = tango.DeviceProxy(f"tango://{served.tango_host}/{DEVICE}")
    assert proxy.state() == tango.DevState.ON


def test_the_database_lock_follows_the_process_that_holds_it(tmp_path: Path):
    db_file = tmp_path / "tango.db"
    holder = ChildServer(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from asirp_device.embedded import DatabaseLock; "
            f"DatabaseLock(Path({str(db_file)!r})).acquire(); print('LOCKED', flush=True); "
            "sys.stdin.read()",
        ],
        r"LOCKED",
    )
    try:
        holder.wait_ready()
        with pytest.raises(DatabaseInUse, match=f"already served by PID {holder.process.pid}"):
            DatabaseLock(db_file).acquire(wait_s=0.0)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
    lock = DatabaseLock(db_file)
    lock.acquire(wait_s=5.0)
    try:
        assert lock.path.read_text().strip() == str(os.getpid())
    finally:
        lock.release()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    embedded = EmbeddedDatabase(tmp_path / "facility.db", "127.0.0.1", 0)
    try:
        yield embedded.start()
    finally:
        embedded.stop()


def test_serve_registration_adds_its_device_and_never_deletes_others(database: str):
    host, port = database.split(":")
    db = tango.Database(host, int(port))
    other = tango.DbDevInfo()
    other.name, other._class, other.server = "other/dev/1", "Other", "Other/x"
    db.add_device(other)
    db.put_device_property("other/dev/1", {"Setting": ["42"]})
    register_device(database, "asirp/restoration/1", "1", {"DataRoot": "/data/one"})

    others = register_device(database, "bl/asirp/2", "1", {"DataRoot": "/data/two"})

    assert others == ["asirp/restoration/1"]
    assert {"Other/x", "ASIRP/1"} <= set(db.get_server_list("*").value_string)
    info = db.get_device_info("other/dev/1")
    assert (info.class_name, info.ds_full_name) == ("Other", "Other/x")
    assert list(db.get_device_property("other/dev/1", ["Setting"])["Setting"]) == ["42"]
    served = sorted(db.get_device_name("ASIRP/1", "ASIRP").value_string)
    assert served == ["asirp/restoration/1", "bl/asirp/2"]
    first = db.get_device_property("asirp/restoration/1", ["DataRoot"])["DataRoot"]
    assert list(first) == ["/data/one"]
    assert list(db.get_device_name("ASIRP/1", "DServer").value_string) == ["dserver/ASIRP/1"]

    # a name that belongs to another server is refused, and stays where it was
    with pytest.raises(ValueError, match=r"registered in the Tango database .* server Other/x"):
        register_device(database, "other/dev/1", "1")
    assert db.get_device_info("other/dev/1").ds_full_name == "Other/x"
    assert list(db.get_device_name("Other/x", "Other").value_string) == ["other/dev/1"]


def test_an_unreachable_tango_host_is_one_line_and_exit_status_2():
    port = free_port()  # nobody listens there
    started = time.monotonic()
    completed = subprocess.run(
        serve_command("--device", DEVICE, "--instance", INSTANCE),
        env=child_environment(TANGO_HOST=f"127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"asirp: error: cannot reach the Tango database at 127.0.0.1:{port}")
    assert "Traceback" not in completed.stderr
    assert elapsed < 60, elapsed
