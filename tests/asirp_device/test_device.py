"""The ASIRP Tango device through ``DeviceProxy``, served by ``DeviceTestContext`` in a child.

One device (with a data root) serves the whole module; tests that change settings put them
back. ``FAULT`` and its recovery with ``Init`` need device properties that can change, so they
are checked in ``test_system.py``, where the device lives in a Tango database.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tango

import asirp
from asirp.results_io import read_restoration
from tests.asirp_device.conftest import EventRecorder, nodb_server, small_map

ON, RUNNING = tango.DevState.ON, tango.DevState.RUNNING
CHANGE, DATA_READY = tango.EventType.CHANGE_EVENT, tango.EventType.DATA_READY_EVENT
ITERATIONS = 12
PSF = {"beam_fwhm_um": 40.0, "pixel_um": 8.0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    np.save(outside / "secret.npy", small_map())
    (root / "link").symlink_to(outside)
    with_inf = small_map()
    with_inf[3, 4] = np.inf
    np.save(root / "inf.npy", with_inf)
    np.save(root / "stack.npy", np.ones((3, 16, 16), np.float32))
    return root


@pytest.fixture(scope="module")
def server(data_root: Path) -> Iterator[str]:
    properties = {
        "DataRoot": str(data_root),
        "DefaultIterations": ITERATIONS,
        "DefaultBeamFwhmUm": PSF["beam_fwhm_um"],
        "DefaultPixelUm": PSF["pixel_um"],
    }
    with nodb_server(properties) as trl:
        yield trl


@pytest.fixture
def device(server: str) -> Iterator[tango.DeviceProxy]:
    proxy = tango.DeviceProxy(server)
    yield proxy
    wait_until_not_running(proxy)
    assert proxy.state() == ON, proxy.status()


def wait_until_not_running(proxy: tango.DeviceProxy, timeout: float = 60.0) -> float:
    """Poll until the state is not RUNNING; return the seconds it took."""
    started = time.monotonic()
    while proxy.state() == RUNNING:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still RUNNING after {timeout} s: {proxy.status()}")
        time.sleep(0.005)
    return time.monotonic() - started


def restore_and_wait(proxy: tango.DeviceProxy, image: np.ndarray) -> np.ndarray:
    proxy.write_attribute("input_image", image)
    proxy.Restore()
    wait_until_not_running(proxy)
    assert proxy.state() == ON, proxy.status()
    return proxy.read_attribute("restored_image").value


@functools.cache
def engine_result(seed: int, size: int, method: str = "richardson_lucy") -> asirp.Restoration:
    """What the core engine gives for ``small_map((size, size), seed)`` with the device's setup."""
    params = {"iterations": ITERATIONS} if method != "auto" else {}
    return asirp.restore(small_map((size, size), seed=seed), method, **PSF, **params)


@contextlib.contextmanager
def subscribed(
    proxy: tango.DeviceProxy, subscriptions: list[tuple[str, tango.EventType]]
) -> Iterator[EventRecorder]:
    """Subscribe ``recorder`` to ``subscriptions``; with ``State`` among them, return only once
    pushed State events arrive.

    ``subscribe_event`` returns after the synchronous first event, but the 0MQ connection that
    carries the pushed ones may still be joining (0MQ's "slow joiner"): an event pushed in that
    moment is lost. ``Reset`` (no change to input or result) is repeated until its State event
    comes through.
    """
    recorder = EventRecorder()
    ids = [proxy.subscribe_event(name, kind, recorder) for name, kind in subscriptions]
    try:
        if any(name.lower() == "state" for name, _ in subscriptions):
            deadline = time.monotonic() + 30.0
            while len(recorder.values("state")) < 2:
                assert time.monotonic() < deadline, "no pushed State event within 30 s"
                proxy.Reset()
                with contextlib.suppress(AssertionError):
                    recorder.wait_for(lambda seen: sum(n == "state" for n, _ in seen) >= 2, 0.5)
        yield recorder
    finally:
        for event_id in ids:
            proxy.unsubscribe_event(event_id)
    assert recorder.errors == []


def states_after_subscription(events: list[tuple[str, object]]) -> list[object]:
    states = [value for name, value in events if name == "state"]
    return states[1:]  # the first event is the value at subscription time


def test_restore_matches_the_engine_and_pushes_change_and_data_ready_events(device):
    image = small_map((40, 40), seed=11)
    subscriptions = [
        ("restored_image", CHANGE),
        ("restored_image", DATA_READY),
        ("State", CHANGE),
        ("progress", CHANGE),
    ]
    with subscribed(device, subscriptions) as events:
        events.wait_for(lambda seen: {"state", "restored_image"} <= {n for n, _ in seen})
        device.write_attribute("input_image", image)
        device.Restore()
        events.wait_for(lambda seen: states_after_subscription(seen)[-2:] == [RUNNING, ON])
        events.wait_for(lambda seen: any(n == "restored_image:data_ready" for n, _ in seen))
        restored = device.read_attribute("restored_image").value

    expected = asirp.restore(image, "richardson_lucy", iterations=ITERATIONS, **PSF)
    assert restored.dtype == np.float32
    np.testing.assert_array_equal(restored, expected.image)
    np.testing.assert_array_equal(events.values("restored_image")[-1], expected.image)
    counters = events.values("restored_image:data_ready")
    assert len(counters) == 1
    assert counters[0] >= 1
    assert events.values("progress")[-1] == 100
    assert device.method_used == "richardson_lucy"
    # same image; float64 reductions may differ in the last bit (numpy's SIMD sums depend on
    # memory alignment)
    metrics = json.loads(device.metrics_json)
    assert metrics.pop("request_id") == device.result_id  # the result's request id
    assert metrics == pytest.approx(expected.metrics, rel=1e-12)
    assert device.contrast_std == pytest.approx(expected.metrics["contrast_std"], rel=1e-12)
    assert device.residual == pytest.approx(expected.metrics["residual"], rel=1e-12)
    assert device.iterations_run == expected.params["iterations_run"]
    assert device.last_duration_ms > 0
    assert device.progress == 100
    np.testing.assert_array_equal(device.psf, expected.psf)
    assert device.input_source == "input_image attribute"
    assert "result #" in device.status()


def test_auto_select_uses_the_engine_rule(device):
    image = small_map((24, 24), seed=2, peak=2.0)
    device.auto_select = True
    try:
        restored = restore_and_wait(device, image)
    finally:
        device.auto_select = False
    expected = asirp.restore(image, "auto", **PSF)
    np.testing.assert_array_equal(restored, expected.image)
    assert device.method_used == expected.method
    assert "auto: very low counts" in device.status()


def test_settings_round_trip_with_units(device):
    assert device.available_methods == tuple(asirp.available_methods())
    assert device.iterations == ITERATIONS
    assert device.beam_fwhm_um == PSF["beam_fwhm_um"]
    assert device.get_attribute_config("beam_fwhm_um").unit == "µm"
    assert device.get_attribute_config("restored_image").unit == "counts"
    assert device.get_attribute_config("last_duration_ms").unit == "ms"
    device.method = "landweber"
    device.parameters_json = '{"stop": "fixed", "step": 1.0}'
    try:
        assert device.method == "landweber"
        assert json.loads(device.parameters_json) == {"step": 1.0, "stop": "fixed"}
        restored = restore_and_wait(device, small_map((16, 16), seed=4))
        expected = asirp.restore(
            small_map((16, 16), seed=4),
            "landweber",
            iterations=ITERATIONS,
            stop="fixed",
            step=1.0,
            **PSF,
        )
        np.testing.assert_array_equal(restored, expected.image)
        assert device.iterations_run == ITERATIONS
    finally:
        device.parameters_json = "{}"
        device.method = "richardson_lucy"


Action = Callable[[tango.DeviceProxy], object]
BAD_INPUTS: list[tuple[str, Action, str, str]] = [
    (
        "image too small",
        lambda d: d.write_attribute("input_image", np.ones((2, 2), np.float32)),
        "ASIRP_InvalidInput",
        "too small",
    ),
    (
        "NaN image",
        lambda d: d.write_attribute("input_image", np.full((8, 8), np.nan, np.float32)),
        "API_WAttrOutsideLimit",  # Tango itself refuses NaN/Inf writes
        "NaN or INF",
    ),
    ("Inf in a file", lambda d: d.LoadImage("inf.npy"), "ASIRP_InvalidInput", "NaN or Inf"),
    ("stack in a file", lambda d: d.LoadImage("stack.npy"), "ASIRP_InvalidInput", "stack"),
    (
        "unknown method",
        lambda d: d.write_attribute("method", "magic"),
        "ASIRP_InvalidInput",
        "unknown method 'magic'; available: beam_sr, blind_richardson_lucy",
    ),
    (
        "zero iterations",
        lambda d: d.write_attribute("iterations", 0),
        "ASIRP_InvalidInput",
        "iterations must be between 1 and 100000",
    ),
    (
        "negative iterations",
        lambda d: d.write_attribute("iterations", -4),
        "ASIRP_InvalidInput",
        "got -4",
    ),
    (
        "negative beam",
        lambda d: d.write_attribute("beam_fwhm_um", -1.0),
        "ASIRP_InvalidInput",
        "beam_fwhm_um must be a finite length > 0",
    ),
    (
        "parameters not JSON",
        lambda d: d.write_attribute("parameters_json", "{stop: fixed}"),
        "ASIRP_InvalidInput",
        "JSON object",
    ),
    (
        "unknown parameter",
        lambda d: d.write_attribute("parameters_json", '{"sigma": 2}'),
        "ASIRP_InvalidInput",
        "no parameter 'sigma'",
    ),
    (
        "path outside the data root",
        lambda d: d.LoadImage("../secret.npy"),
        "ASIRP_DataRoot",
        "outside the data root",
    ),
    (
        "absolute path outside",
        lambda d: d.LoadImage("/etc/hostname"),
        "ASIRP_DataRoot",
        "outside the data root",
    ),
    (
        "symlink out of the data root",
        lambda d: d.LoadImage("link/secret.npy"),
        "ASIRP_DataRoot",
        "outside the data root",
    ),
    (
        "save outside the data root",
        lambda d: d.SaveResult("../stolen.h5"),
        "ASIRP_DataRoot",
        "outside the data root",
    ),
    ("missing file", lambda d: d.LoadImage("missing.npy"), "ASIRP_FileError", "file not found"),
    (
        "save as text",
        lambda d: d.SaveResult("result.txt"),
        "ASIRP_InvalidInput",
        "must end with",
    ),
]


@pytest.mark.parametrize(
    ("action", "reason", "message"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_refused_and_the_device_restores_the_next_good_image(
    device, action, reason, message
):
    restore_and_wait(device, small_map((12, 12), seed=7))  # a result, so SaveResult can run
    settings = [device.method, device.iterations, device.beam_fwhm_um, device.parameters_json]

    with pytest.raises(tango.DevFailed) as caught:
        action(device)

    error = caught.value.args[0]
    assert error.reason == reason
    assert message in error.desc
    assert device.state() == ON
    assert [device.method, device.iterations, device.beam_fwhm_um, device.parameters_json] == (
        settings
    )
    restored = restore_and_wait(device, small_map((16, 16), seed=3))
    np.testing.assert_array_equal(restored, engine_result(3, 16).image)


def test_parameters_that_no_longer_fit_the_method_refuse_restore(device):
    device.parameters_json = '{"stop": "fixed"}'
    device.method = "wiener"
    try:
        device.write_attribute("input_image", small_map((16, 16)))
        with pytest.raises(tango.DevFailed) as caught:
            device.Restore()
        assert caught.value.args[0].reason == "ASIRP_InvalidInput"
        assert "method 'wiener' has no parameter 'stop'" in caught.value.args[0].desc
        assert device.state() == ON
    finally:
        device.parameters_json = "{}"
        device.method = "richardson_lucy"


def test_restore_returns_at_once_is_refused_while_running_and_abort_stops_within_1_s(device):
    kept = restore_and_wait(device, small_map((16, 16), seed=5))
    device.iterations = 100_000
    device.parameters_json = '{"stop": "fixed"}'
    device.write_attribute("input_image", small_map((96, 96), seed=6))
    try:
        with subscribed(device, [("State", CHANGE)]) as events:
            started = time.monotonic()
            device.Restore()
            assert time.monotonic() - started < 1.0  # the caller is not blocked
            assert device.state() == RUNNING
            time.sleep(0.2)
            for command in ("Restore", "Reset"):
                with pytest.raises(tango.DevFailed) as caught:
                    device.command_inout(command)
                assert caught.value.args[0].reason == "ASIRP_Busy"
            assert device.state() == RUNNING
            aborted = time.monotonic()
            device.Abort()
            assert wait_until_not_running(device) < 1.0
            assert time.monotonic() - aborted < 1.0
            events.wait_for(lambda seen: states_after_subscription(seen)[-2:] == [RUNNING, ON])
    finally:
        device.iterations = ITERATIONS
        device.parameters_json = "{}"
    assert device.state() == ON
    assert "aborted" in device.status()
    np.testing.assert_array_equal(device.restored_image, kept)


def test_busy_reasons_name_the_way_out(device):
    device.iterations = 100_000
    device.parameters_json = '{"stop": "fixed"}'
    device.write_attribute("input_image", small_map((96, 96), seed=6))
    try:
        device.Restore()
        messages = {}
        for command in ("Restore", "Reset"):
            with pytest.raises(tango.DevFailed) as caught:
                device.command_inout(command)
            messages[command] = caught.value.args[0].desc
        device.Abort()
        wait_until_not_running(device)
    finally:
        device.iterations = ITERATIONS
        device.parameters_json = "{}"
    assert "a restoration is already running" in messages["Restore"]
    assert "call Abort" in messages["Restore"]
    assert "cannot Reset while a restoration is running" in messages["Reset"]


def test_load_and_save_files_inside_the_data_root(device, data_root: Path):
    image = small_map((24, 24), seed=9)
    np.save(data_root / "scan.npy", image)
    resolved = str(data_root.resolve() / "scan.npy")

    assert device.LoadImage("scan.npy") == resolved
    np.testing.assert_array_equal(device.input_image, image)
    assert device.input_source == resolved
    device.Restore()
    wait_until_not_running(device)
    written = device.SaveResult("results/scan_restored.h5")

    assert written == str(data_root.resolve() / "results" / "scan_restored.h5")
    stored = read_restoration(written)
    np.testing.assert_array_equal(stored["image"], device.restored_image)
    assert stored["method"] == "richardson_lucy"
    assert stored["input_path"] == resolved
    assert device.LoadImage(f"{written}::/entry/restored/data") == written
    np.testing.assert_array_equal(device.input_image, stored["image"])
