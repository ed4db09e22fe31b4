"""The live tab on a real ASIRP device server (child process): events, settings, ROI, failures."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tango
from qtpy.QtCore import QTimer

from asirp_gui.rescan import JsonFileSender
from tests.asirp_device.conftest import free_port, small_map, start_nodb_server
from tests.asirp_gui.conftest import DEVICE_PROPERTIES

WAIT_MS = 20_000


@pytest.fixture
def live(window, tmp_path: Path):
    """The live tab, sending rescans as JSON files under ``tmp_path/queue``."""
    window.live.sender = JsonFileSender(tmp_path / "queue")
    return window.live


def connect(qtbot, live, trl: str) -> None:
    live.connect_device(trl)
    qtbot.waitUntil(lambda: live.proxy is not None, timeout=WAIT_MS)


def connect_ended(live) -> bool:
    return not live.busy() and "Connecting" not in live.message.text()


def test_a_restored_map_arrives_by_event_and_an_roi_is_sent(qtbot, live, device_trl, tmp_path):
    connect(qtbot, live, device_trl)
    assert live.beam_fwhm_um.value() == DEVICE_PROPERTIES["DefaultBeamFwhmUm"]
    assert live.pixel_um.value() == DEVICE_PROPERTIES["DefaultPixelUm"]
    image = small_map((32, 32), seed=3)
    device = tango.DeviceProxy(device_trl)
    device.write_attribute("input_image", image)
    live.command("Restore")
    qtbot.waitUntil(lambda: live.restored is not None and live.raw is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: live.state.text() == "ON", timeout=WAIT_MS)
    np.testing.assert_array_equal(live.raw, image)
    np.testing.assert_array_equal(live.restored, device.read_attribute("restored_image").value)
    assert live.progress.value() == 100
    assert live.message.text().startswith(("Restore: ", "Result restored with"))
    assert live.settings.value("live/device") == device_trl  # remembered for the next start
    qtbot.waitUntil(lambda: live.outcome.text() == "succeeded", timeout=WAIT_MS)
    cautions = list(device.read_attribute("result_cautions").value or ())
    expected = "\n".join(cautions) if cautions else "none"
    qtbot.waitUntil(lambda: live.cautions.text() == expected, timeout=WAIT_MS)
    assert not np.array_equal(live.restored, image)

    live.restored_view.add_roi()
    (x0, x1), (y0, y1) = live.restored_view.roi_um()
    assert (x0, x1, y0, y1) == (64.0, 192.0, 64.0, 192.0)  # middle half of 32 px × 8 µm
    item = live.send_roi()
    written = tmp_path / "queue" / "rescan_0001.json"
    qtbot.waitUntil(lambda: str(written) in live.message.text(), timeout=WAIT_MS)  # a worker sends
    assert json.loads(written.read_text()) == item
    assert item["name"] == "grid_scan"
    roi = item["kwargs"]["md"]["roi"]
    assert (roi["x_min_um"], roi["x_max_um"], roi["y_min_um"], roi["y_max_um"]) == (x0, x1, y0, y1)
    live.shutdown()


def test_settings_are_written_to_the_device(qtbot, live, device_trl):
    connect(qtbot, live, device_trl)
    device = tango.DeviceProxy(device_trl)
    method_before = device.read_attribute("method").value
    live.beam_fwhm_um.setValue(33.0)
    live.method.setCurrentText("wiener")
    assert live.iterations.value() == DEVICE_PROPERTIES["DefaultIterations"]
    live.iterations.setValue(7)
    live.write_settings()
    qtbot.waitUntil(lambda: live.message.text() == "Settings written.", timeout=WAIT_MS)
    assert device.read_attribute("beam_fwhm_um").value == 33.0
    assert device.read_attribute("method").value == "wiener"
    assert device.read_attribute("iterations").value == 7
    device.write_attribute("iterations", DEVICE_PROPERTIES["DefaultIterations"])
    device.write_attribute("beam_fwhm_um", DEVICE_PROPERTIES["DefaultBeamFwhmUm"])
    device.write_attribute("method", method_before)
    live.shutdown()


def test_a_device_that_is_down_gives_a_message(qtbot, live):
    missing = f"tango://127.0.0.1:{free_port()}/no/such/device#dbase=no"
    live.timeout_s.setValue(1.0)
    live.connect_device(missing)
    qtbot.waitUntil(lambda: connect_ended(live), timeout=WAIT_MS)
    assert live.proxy is None
    assert "API_" in live.message.text() or "TRANSIENT" in live.message.text()
    live.write_settings()
    assert live.message.text() == "Not connected."


@pytest.fixture
def stopped_server() -> Iterator[str]:
    """A device server whose process is stopped (SIGSTOP): it accepts connections, never answers."""
    child = start_nodb_server(DEVICE_PROPERTIES)
    trl = child.wait_ready()["trl"]
    os.kill(child.process.pid, signal.SIGSTOP)
    try:
        yield trl
    finally:
        os.kill(child.process.pid, signal.SIGCONT)
        assert child.stop() == 0, child.output()


def test_a_device_that_times_out_gives_a_message(qtbot, live, stopped_server):
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(50)
    live.timeout_s.setValue(0.5)
    live.connect_device(stopped_server)
    qtbot.waitUntil(lambda: connect_ended(live), timeout=WAIT_MS)
    timer.stop()
    assert live.proxy is None
    # The GUI thread kept running throughout (Tango's own 3 s connect timeout included:
    # the connection is pinged before the client timeout is set, see LiveTab.connect_device).
    assert len(ticks) > 10
    assert np.diff(ticks).max() < 0.5
    assert "timeout" in live.message.text().lower() or "TRANSIENT" in live.message.text()
