"""The live tab's Taurus form on a real device registered in ``asirp serve``'s embedded database:
its rows read the device, an attribute in alarm shows Taurus's alarm quality, and a device
without a database gets a message instead of a form.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tango

from asirp_gui.taurus_panel import TAURUS_ATTRIBUTES
from tests.asirp_device.conftest import ChildServer, child_environment, small_map
from tests.asirp_device.test_device import wait_until_not_running
from tests.asirp_device.test_system import READY, interrupt, serve_command

DEVICE = "test/asirp/guitaurus"

# Taurus 5.4 calls pint APIs that pint deprecates (third-party)
pytestmark = pytest.mark.filterwarnings(
    "ignore:This function will be removed in future versions of pint:DeprecationWarning"
)


@pytest.fixture(scope="module")
def device_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("gui_taurus")
    server = ChildServer(
        serve_command(
            *("--db-port", "0", "--db-file", str(folder / "tango.db")),
            *("--device", DEVICE, "--instance", "guitaurus"),
            *("--property", "DefaultIterations=4", "--property", "DefaultPixelUm=6"),
        ),
        READY,
        env=child_environment(),
    )
    try:
        yield f"tango://{server.wait_ready()['tango_host']}/{DEVICE}"
    finally:
        status = interrupt(server)
    assert status == 0, server.output()


def test_the_taurus_form_reads_the_device_and_shows_an_alarm(window, device_uri):
    from taurus.core import AttrQuality

    device = tango.DeviceProxy(device_uri)
    device.write_attribute("input_image", small_map((24, 24), seed=2))
    device.Restore()
    wait_until_not_running(device)
    live = window.live
    live.device_name.setText(device_uri)
    live.open_taurus()
    form = live.taurus_form
    assert form is not None, live.message.text()
    assert len(form.getItems()) == len(TAURUS_ATTRIBUTES)
    rows = {row.getModel().rsplit("/", 1)[-1]: row for row in form.getItems()}
    assert rows["iterations"].getModelObj().read(cache=False).rvalue == 4
    contrast = rows["contrast_std"].getModelObj()
    assert contrast.read(cache=False).quality == AttrQuality.ATTR_VALID
    config = device.get_attribute_config("contrast_std")
    config.alarms.max_alarm = "0"
    device.set_attribute_config(config)
    try:
        assert contrast.read(cache=False).quality == AttrQuality.ATTR_ALARM
    finally:
        config.alarms.max_alarm = "Not specified"
        device.set_attribute_config(config)
    live.shutdown()
    assert live.taurus_form is None


def test_a_device_without_a_database_gets_a_message(window):
    live = window.live
    live.device_name.setText("tango://127.0.0.1:1/test/asirp/1#dbase=no")
    live.open_taurus()
    assert live.taurus_form is None
    assert live.message.text().startswith("Taurus form not opened: ")
    assert "database" in live.message.text()
