"""The ASIRP device follows Tango conventions (issue 17): events with detection criteria,
memorized settings whose write values equal their read values (also after ``Init``), State
ALARM only for attribute alarms, long-running-command attributes, Tango logging, versionId.

One device serves the module (a child process without a database); the restart test starts its
own server with the embedded database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tango

import asirp
from tests.asirp_device.conftest import (
    ChildServer,
    EventRecorder,
    child_environment,
    small_map,
    start_nodb_server,
)
from tests.asirp_device.test_device import subscribed, wait_until_not_running

ON, ALARM = tango.DevState.ON, tango.DevState.ALARM
CHANGE, ARCHIVE = tango.EventType.CHANGE_EVENT, tango.EventType.ARCHIVE_EVENT
SETTINGS = ("method", "auto_select", "iterations", "beam_fwhm_um", "pixel_um", "parameters_json")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, list[str]]]:
    """The device's TRL and the server's output lines (Tango's console log goes there)."""
    child = start_nodb_server(
        {"DefaultIterations": 5, "DefaultBeamFwhmUm": 30.0, "DefaultPixelUm": 6.0}
    )
    try:
        yield child.wait_ready()["trl"], child.lines
    finally:
        status = child.stop()
    assert status == 0, child.output()


@pytest.fixture
def device(served: tuple[str, list[str]]) -> tango.DeviceProxy:
    return tango.DeviceProxy(served[0])


def restore(proxy: tango.DeviceProxy, seed: int) -> int:
    proxy.write_attribute("input_image", small_map((24, 24), seed=seed))
    request_id = proxy.Restore()
    wait_until_not_running(proxy)
    return request_id


def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def test_every_attribute_has_a_label_and_description(device):
    for name in device.get_attribute_list():
        config = device.get_attribute_config(name)
        if name in ("State", "Status"):
            continue
        assert config.label not in ("", name), name
        assert config.description not in ("", "No description"), name
    pixel = device.get_attribute_config("pixel_um")
    assert (pixel.unit, pixel.display_unit, pixel.format) == ("µm", "µm", "%.3f")
    progress = device.get_attribute_config("progress")
    assert (progress.min_value, progress.max_value, progress.unit) == ("0", "100", "%")


def test_write_values_equal_read_values_from_the_start(device):
    for name in SETTINGS:
        reading = device.read_attribute(name)
        assert reading.w_value == reading.value, name
    device.write_attribute("pixel_um", 7.5)
    reading = device.read_attribute("pixel_um")
    assert reading.value == reading.w_value == 7.5
    device.write_attribute("pixel_um", 6.0)


def test_change_and_archive_events_after_a_write_and_after_restore(device):
    subscriptions = [
        (name, kind)
        for name in ("iterations", "method", "contrast_std", "metrics_json", "restored_image")
        for kind in (CHANGE, ARCHIVE)
    ]
    with subscribed(device, subscriptions) as events:
        events.wait_for(lambda seen: len({n for n, _ in seen}) == 5)
        before = len(events.values("iterations"))
        device.write_attribute("iterations", 7)
        events.wait_for(lambda seen: len([1 for n, v in seen if n == "iterations"]) >= before + 2)
        assert events.values("iterations")[-2:] == [7, 7]  # change and archive
        request_id = restore(device, seed=3)
        metrics = device.read_attribute("metrics_json").value
        events.wait_for(lambda seen: events.values("metrics_json")[-2:] == [metrics] * 2)
        contrast = device.read_attribute("contrast_std").value
        assert events.values("contrast_std")[-2:] == [contrast, contrast]
        assert json.loads(metrics)["request_id"] == request_id
    device.write_attribute("iterations", 5)


def test_init_keeps_the_settings_and_the_input(device):
    device.write_attribute("beam_fwhm_um", 44.0)
    device.write_attribute("auto_select", True)
    image = small_map((16, 16), seed=9)
    device.write_attribute("input_image", image)
    try:
        device.Init()
        assert device.state() == ON
        for name, value in (("beam_fwhm_um", 44.0), ("auto_select", True)):
            reading = device.read_attribute(name)
            assert reading.value == reading.w_value == value, name
        np.testing.assert_array_equal(device.read_attribute("input_image").value, image)
    finally:
        device.write_attribute("beam_fwhm_um", 30.0)
        device.write_attribute("auto_select", False)


def test_an_attribute_alarm_gives_state_alarm_and_a_failure_is_an_outcome(device):
    restore(device, seed=4)
    contrast = device.read_attribute("contrast_std").value
    config = device.get_attribute_config("contrast_std")
    config.alarms.max_alarm = str(contrast / 2)
    device.set_attribute_config(config)
    try:
        assert device.read_attribute("contrast_std").quality == tango.AttrQuality.ATTR_ALARM
        assert device.state() == ALARM
    finally:
        config.alarms.max_alarm = "Not specified"
        device.set_attribute_config(config)
    assert device.state() == ON
    assert device.restoration_outcome == "succeeded"
    # a failed restoration (outcome "failed", State ON) is checked with live mode in
    # test_device_live.py and test_live_result_of.py


def test_a_value_crossing_its_alarm_limit_pushes_state_alarm_and_back(device):
    config = device.get_attribute_config("contrast_std")
    config.alarms.max_alarm = "0"  # every contrast is at or above it: the next result alarms
    device.set_attribute_config(config)
    try:
        with subscribed(device, [("State", CHANGE), ("Status", CHANGE)]) as events:
            restore(device, seed=6)
            events.wait_for(lambda seen: events.values("state")[-1:] == [ALARM])
            events.wait_for(lambda seen: "ALARM: contrast_std" in events.values("status")[-1])
            assert device.state() == ALARM
    finally:
        config.alarms.max_alarm = "Not specified"
        device.set_attribute_config(config)
    with subscribed(device, [("State", CHANGE)]) as events:
        restore(device, seed=7)  # the new result is checked against no limit: ON is pushed
        events.wait_for(lambda seen: events.values("state")[-1:] == [ON])
    assert "ALARM" not in device.status()


def test_a_setting_written_beyond_its_alarm_limit_pushes_state_alarm(device):
    config = device.get_attribute_config("beam_fwhm_um")
    config.alarms.max_alarm = "100"  # µm
    device.set_attribute_config(config)
    try:
        with subscribed(device, [("State", CHANGE)]) as events:
            device.write_attribute("beam_fwhm_um", 120.0)
            events.wait_for(lambda seen: events.values("state")[-1:] == [ALARM])
            device.write_attribute("beam_fwhm_um", 30.0)
            events.wait_for(lambda seen: events.values("state")[-1:] == [ON])
    finally:
        config.alarms.max_alarm = "Not specified"
        device.set_attribute_config(config)
        device.write_attribute("beam_fwhm_um", 30.0)


def test_result_cautions_are_an_attribute_with_events(device):
    device.write_attribute("beam_fwhm_um", 1.0)  # a beam far narrower than the 6 µm pixels
    try:
        with subscribed(device, [("result_cautions", CHANGE)]) as events:
            restore(device, seed=8)
            events.wait_for(lambda seen: len(events.values("result_cautions")) >= 2)
        cautions = list(device.result_cautions or ())
        assert cautions, "a sub-pixel beam gives a caution"
        assert list(events.values("result_cautions")[-1]) == cautions
        assert all(caution in device.status() for caution in cautions)
    finally:
        device.write_attribute("beam_fwhm_um", 30.0)
    restore(device, seed=8)
    assert not list(device.result_cautions or ())  # the same map with its real beam: none


def test_long_commands_report_progress_and_outcome_by_request_id(device):
    recorder = EventRecorder()
    names = ("longRunningCommandStatus", "longRunningCommandResult")
    ids = [device.subscribe_event(name, CHANGE, recorder) for name in names]
    try:
        request_id = restore(device, seed=5)

        def completed() -> bool:
            results = recorder.values("longrunningcommandresult")
            return any(tuple(value)[:1] == (str(request_id),) for value in results)

        wait_until(completed, "pushed result of the command")
    finally:
        for event_id in ids:
            device.unsubscribe_event(event_id)
    command_id, outcome = device.longRunningCommandResult
    assert command_id == str(request_id)
    assert json.loads(outcome)["status"] == "COMPLETED"
    pairs = list(device.longRunningCommandStatus)
    assert pairs[pairs.index(str(request_id)) + 1] == "COMPLETED"
    assert list(device.longRunningCommandProgress) == [str(request_id), "100"]


def test_version_build_state_and_info_logging(device, served):
    assert device.versionId == asirp.__version__
    assert f"pytango {tango.__version__}" in device.buildState
    device.add_logging_target("console::cout")
    device.set_logging_level(4)  # INFO
    try:
        request_id = restore(device, seed=6)
        wait_until(
            lambda: any(f"Restore accepted: request {request_id}" in line for line in served[1]),
            "INFO line on the server's console",
        )
    finally:
        device.set_logging_level(1)
        device.remove_logging_target("console::cout")


def test_a_restarted_server_finds_the_operators_settings_again(tmp_path):
    """``asirp serve`` twice on one database file: the memorized settings come back."""
    from tests.asirp_device.test_system import READY, interrupt, serve_command

    arguments = ("--db-port", "0", "--db-file", str(tmp_path / "tango.db"))
    arguments += ("--device", "test/asirp/restart", "--instance", "restart")
    chosen = {"method": "landweber", "iterations": 17, "beam_fwhm_um": 41.5, "pixel_um": 2.5}
    for run in ("first", "second"):
        server = ChildServer(serve_command(*arguments), READY, env=child_environment())
        try:
            ready = server.wait_ready()
            device = tango.DeviceProxy(f"tango://{ready['tango_host']}/test/asirp/restart")
            if run == "first":
                for name, value in chosen.items():
                    device.write_attribute(name, value)
            else:
                for name, value in chosen.items():
                    reading = device.read_attribute(name)
                    assert reading.value == reading.w_value == value, name
        finally:
            status = interrupt(server)
        assert status == 0, server.output()
        assert "[databaseds] Ready to accept request" in server.lines
        assert not any("TANGO_HOST env. variable not set" in line for line in server.lines)
