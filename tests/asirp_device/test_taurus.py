"""Taurus 5.4 on the ASIRP device (offscreen Qt): a ``TaurusForm`` of the operator's settings
shows write values equal to the read values, right after the server starts and after a write.

The device is served by ``asirp serve`` with its embedded database (Taurus resolves a device
through a Tango database).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt loads

from collections.abc import Iterator

import pytest
import tango

from tests.asirp_device.conftest import ChildServer, child_environment
from tests.asirp_device.test_system import READY, interrupt, serve_command

DEVICE = "test/asirp/taurus"
SETTINGS = {"method": "richardson_lucy", "auto_select": False, "iterations": 23}
SETTINGS_UM = {"beam_fwhm_um": 35.0, "pixel_um": 4.0}


@pytest.fixture(scope="module")
def device_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("taurus")
    server = ChildServer(
        serve_command(
            *("--db-port", "0", "--db-file", str(folder / "tango.db")),
            *("--device", DEVICE, "--instance", "taurus"),
            *("--property", "DefaultIterations=23", "--property", "DefaultBeamFwhmUm=35"),
            *("--property", "DefaultPixelUm=4"),
        ),
        READY,
        env=child_environment(),
    )
    try:
        yield f"tango://{server.wait_ready()['tango_host']}/{DEVICE}"
    finally:
        status = interrupt(server)
    assert status == 0, server.output()


def shown(form, count: int) -> dict[str, tuple[object, object]]:
    """(read value, write value) that each row of ``form`` shows, by attribute name."""
    rows = {}
    for index in range(count):
        row = form[index]
        name = row.getModel().rsplit("/", 1)[-1]
        reading = row.getModelObj().read(cache=False)
        write_widget = row.writeWidget()
        assert write_widget is not None, name
        rows[name] = (reading.rvalue, reading.wvalue, write_widget.getValue())
    return rows


def magnitude(value: object) -> object:
    return getattr(value, "magnitude", value)


# Taurus 5.4 calls pint APIs that pint deprecates (third-party, on import)
@pytest.mark.filterwarnings(
    "ignore:This function will be removed in future versions of pint:DeprecationWarning"
)
def test_taurus_form_shows_write_values_equal_to_read_values(qtbot, device_uri: str):
    from taurus.qt.qtgui.panel import TaurusForm

    names = [*SETTINGS, *SETTINGS_UM]
    form = TaurusForm()
    qtbot.addWidget(form)
    form.setModel([f"{device_uri}/{name}" for name in names])
    for name, (read, written, widget) in shown(form, len(names)).items():
        expected = {**SETTINGS, **SETTINGS_UM}[name]
        assert magnitude(read) == magnitude(written) == expected, name
        assert magnitude(widget) == expected, name

    tango.DeviceProxy(device_uri).write_attribute("pixel_um", 2.5)
    qtbot.waitUntil(lambda: magnitude(form[4].getModelObj().read(cache=False).rvalue) == 2.5)
    read, written, widget = shown(form, len(names))["pixel_um"]
    assert magnitude(read) == magnitude(written) == 2.5
    form.setModel([])
