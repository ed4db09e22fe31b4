"""System test with real processes on loopback: ``asirp serve`` (embedded sqlite database and the
device server), a client process with ``DeviceProxy`` and events, the ophyd-async client in a
RunEngine plan, a second ``asirp serve`` registering in the first one's database (``TANGO_HOST``
set), and a clean stop of everything on SIGINT.

The second ``asirp serve`` is started as soon as the first is ready, so that its start-up
overlaps the client tests.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import bluesky.plan_stubs as bps
import numpy as np
import psutil
import pytest
import tango
from bluesky import RunEngine
from bluesky.plans import count
from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import init_devices

import asirp
from asirp.cli import main as asirp_main
from asirp_device.client import ASIRPClient
from tests.asirp_device.conftest import HERE, ChildServer, child_environment, small_map

DEVICE = "test/asirp/system"
ITERATIONS = 9
PSF = {"beam_fwhm_um": 30.0, "pixel_um": 6.0}
READY = r"ASIRP ready: device (?P<device>\S+) .*TANGO_HOST=(?P<tango_host>\S+) \((?P<mode>[^)]*)\)"


@dataclass
class Served:
    server: ChildServer
    tango_host: str
    data_root: Path
    children: list[psutil.Process]
    facility: ChildServer


def serve_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "asirp.cli", "serve", *arguments]


def interrupt(child: ChildServer, timeout: float = 60.0) -> int:
    """SIGINT, as Ctrl-C would; return the exit status."""
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGINT)
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.finish()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("served")
    data_root = folder / "data"
    data_root.mkdir()
    server = ChildServer(
        serve_command(
            "--db-port",
            "0",
            "--db-file",
            str(folder / "tango.db"),
            "--data-root",
            str(data_root),
            "--device",
            DEVICE,
            "--instance",
            "system",
            "--property",
            f"DefaultIterations={ITERATIONS}",
            "--property",
            f"DefaultBeamFwhmUm={PSF['beam_fwhm_um']}",
            "--property",
            f"DefaultPixelUm={PSF['pixel_um']}",
        ),
        READY,
        env=child_environment(),
    )
    facility = None
    try:
        ready = server.wait_ready()
        children = psutil.Process(server.process.pid).children(recursive=True)
        facility = ChildServer(
            serve_command("--device", "test/asirp/facility", "--instance", "facility"),
            READY,
            env=child_environment(TANGO_HOST=ready["tango_host"]),
        )
        yield Served(server, ready["tango_host"], data_root, children, facility)
    finally:
        if facility is not None:
            interrupt(facility)
        interrupt(server)


def test_the_device_is_registered_in_the_embedded_database(served: Served):
    host, port = served.tango_host.split(":")
    database = tango.Database(host, int(port))
    info = database.get_device_info(DEVICE)
    assert info.class_name == "ASIRP"
    assert info.ds_full_name == "ASIRP/system"
    properties = database.get_device_property(DEVICE, ["DataRoot", "DefaultIterations"])
    assert list(properties["DataRoot"]) == [str(served.data_root.resolve())]
    assert list(properties["DefaultIterations"]) == [str(ITERATIONS)]
    assert len(served.children) == 2  # the database and the device server
    assert any("databaseds" in " ".join(child.cmdline()) for child in served.children)


def test_a_client_process_restores_through_the_database_with_events(served: Served, tmp_path: Path):
    image = small_map((40, 40), seed=21)
    np.save(tmp_path / "input.npy", image)
    completed = subprocess.run(
        [
            sys.executable,
            str(HERE / "_client.py"),
            DEVICE,
            str(tmp_path / "input.npy"),
            str(tmp_path / "output.npy"),
        ],
        env=child_environment(TANGO_HOST=served.tango_host),
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])

    expected = asirp.restore(image, "richardson_lucy", iterations=ITERATIONS, **PSF)
    np.testing.assert_array_equal(np.load(tmp_path / "output.npy"), expected.image)
    assert summary["finished"] is True
    assert summary["errors"] == []
    assert summary["class"] == "ASIRP"
    assert summary["server"] == "ASIRP/system"
    assert summary["state"] == "ON"
    assert summary["method_used"] == "richardson_lucy"
    events = [tuple(event) for event in summary["events"]]
    states = [value for name, value in events if name == "state"]
    assert states[-2:] == ["RUNNING", "ON"]
    assert ("restored_image", [40, 40]) in events
    assert any(name == "data_ready" for name, _ in events)


def test_the_ophyd_async_client_reads_the_restored_map_in_a_plan(served: Served):
    engine = RunEngine({}, call_returns_result=True)
    with init_devices():
        client = ASIRPClient(f"tango://{served.tango_host}/{DEVICE}", name="asirp")
    image = small_map((32, 32), seed=22).astype(np.float64)

    def restore_map():
        yield from bps.mv(client.input_image, image)
        yield from bps.trigger(client, wait=True)
        restored = yield from bps.rd(client.restored_image)
        method = yield from bps.rd(client.method_used)
        return restored, method

    restored, method = engine(restore_map()).plan_result
    expected = asirp.restore(image, "richardson_lucy", iterations=ITERATIONS, **PSF)
    np.testing.assert_array_equal(restored, expected.image)
    assert method == "richardson_lucy"

    # with the state monitored (as a live display would), trigger still waits for this result
    states: list[object] = []

    async def monitor(on: bool) -> None:
        if on:
            client.State.subscribe_reading(states.append)
            for _ in range(200):  # the first reading comes by event: wait for it (busy hosts)
                if states:
                    break
                await asyncio.sleep(0.05)
        else:
            client.State.clear_sub(states.append)

    call_in_bluesky_event_loop(monitor(True))
    try:
        image = small_map((32, 32), seed=24).astype(np.float64)
        monitored, _ = engine(restore_map()).plan_result
    finally:
        call_in_bluesky_event_loop(monitor(False))
    fresh = asirp.restore(image, "richardson_lucy", iterations=ITERATIONS, **PSF)
    np.testing.assert_array_equal(monitored, fresh.image)
    assert states

    documents: list[tuple[str, dict]] = []
    engine(count([client]), lambda name, document: documents.append((name, document)))
    (descriptor,) = [document for name, document in documents if name == "descriptor"]
    (event,) = [document for name, document in documents if name == "event"]
    assert descriptor["data_keys"]["asirp-restored_image"]["shape"] == [32, 32]
    np.testing.assert_array_equal(event["data"]["asirp-restored_image"], fresh.image)
    assert descriptor["configuration"]["asirp"]["data"]["asirp-iterations"] == ITERATIONS
    assert event["data"]["asirp-State"] == "ON"

    # a second RunEngine runs its own event loop (the next session, the next test): the client
    # must connect from it too
    second_engine = RunEngine({}, call_returns_result=True)
    with init_devices():
        again = ASIRPClient(f"tango://{served.tango_host}/{DEVICE}", name="again")

    def read_back():
        return (yield from bps.rd(again.restored_image))

    np.testing.assert_array_equal(second_engine(read_back()).plan_result, fresh.image)


def test_bad_properties_give_fault_and_init_recovers(served: Served):
    host, port = served.tango_host.split(":")
    database = tango.Database(host, int(port))
    proxy = tango.DeviceProxy(f"tango://{served.tango_host}/{DEVICE}")
    database.put_device_property(DEVICE, {"DefaultIterations": ["0"]})
    try:
        proxy.Init()
        assert proxy.state() == tango.DevState.FAULT
        status = proxy.status()
        assert "iterations must be between 1 and 100000" in status
        assert "got 0" in status
        assert "fix the device properties and run Init" in status
        for command in ("Restore", "Reset", "Abort"):
            with pytest.raises(tango.DevFailed) as caught:
                proxy.command_inout(command)
            assert caught.value.args[0].reason == "ASIRP_Fault"
        with pytest.raises(tango.DevFailed, match="iterations must be between"):
            proxy.read_attribute("method")
    finally:
        database.put_device_property(DEVICE, {"DefaultIterations": [str(ITERATIONS)]})
        proxy.Init()
    assert proxy.state() == tango.DevState.ON
    assert proxy.iterations == ITERATIONS
    image = small_map((16, 16), seed=23)
    proxy.write_attribute("input_image", image)
    proxy.Restore()
    deadline = time.monotonic() + 60
    while proxy.state() == tango.DevState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    expected = asirp.restore(image, "richardson_lucy", iterations=ITERATIONS, **PSF)
    np.testing.assert_array_equal(proxy.restored_image, expected.image)


def test_with_tango_host_set_serve_registers_in_that_database(served: Served):
    second = served.facility
    try:
        ready = second.wait_ready()
        assert ready["mode"] == "TANGO_HOST"
        assert ready["tango_host"] == served.tango_host
        proxy = tango.DeviceProxy(f"tango://{served.tango_host}/test/asirp/facility")
        assert proxy.state() == tango.DevState.ON
        assert proxy.info().server_id == "ASIRP/facility"
        started = psutil.Process(second.process.pid).children(recursive=True)
        assert len(started) == 1  # the device server only: no second database
    finally:
        status = interrupt(second)
    assert status == 0, second.output()
    assert not any(child.is_running() for child in started)
    first = tango.DeviceProxy(f"tango://{served.tango_host}/{DEVICE}")
    assert first.state() == tango.DevState.ON  # the embedded database and device run on


def test_serve_refuses_bad_arguments_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert asirp_main(["serve", "--property", "DefaultMethod"]) == 2
    assert "--property expects NAME=VALUE" in capsys.readouterr().err
    assert asirp_main(["serve", "--data-root", str(tmp_path / "missing")]) == 2
    assert "is not an existing folder" in capsys.readouterr().err


def test_the_console_script_is_named_after_the_server():
    (script,) = entry_points(group="console_scripts", name="ASIRP")
    assert script.value == "asirp_device.server:main"
    (command,) = entry_points(group="asirp.commands", name="serve")
    assert command.value == "asirp_device.command:register"


def test_sigint_stops_the_server_and_the_database(served: Served):
    # runs last in this module: it ends the processes the fixture started
    interrupt(served.facility)  # already stopped unless its test was deselected
    status = interrupt(served.server)
    assert status == 0, served.server.output()
    psutil.wait_procs(served.children, timeout=10)
    assert not any(child.is_running() for child in served.children)
    assert "Ctrl-C stops" in served.server.output()
