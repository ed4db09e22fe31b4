"""Live mode of the ASIRP Tango device: ``StartLive`` / ``StopLive`` with real processes.

``bluesky-0MQ-proxy`` and the device (``DeviceTestContext`` in ``_nodb_server.py``) run in child
processes on 127.0.0.1; this process runs the RunEngine, publishing to the proxy with bluesky's
``Publisher``, and the ``DeviceProxy`` client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import tango

import asirp
from tests.asirp_device._scans import BEAM_FWHM_UM, ITERATIONS, handshake, run_scan, wait_until
from tests.asirp_device.conftest import free_port, nodb_server, small_map, start_nodb_server
from tests.asirp_device.test_device import restore_and_wait, subscribed
from tests.callbacks.conftest import assert_same_restoration

ON = tango.DevState.ON
CHANGE, DATA_READY = tango.EventType.CHANGE_EVENT, tango.EventType.DATA_READY_EVENT
PIXEL_UM = 10.0  # the device's pixel_um; live scans use their own step (20 µm)
PROPERTIES = {
    "DefaultIterations": ITERATIONS,
    "DefaultBeamFwhmUm": BEAM_FWHM_UM,
    "DefaultPixelUm": PIXEL_UM,
    "ComputeDevice": "cpu",
    "LiveField": "xrf_Cu",
    "LiveNormalize": "i0",
    "LiveEveryRows": 4,
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with nodb_server(PROPERTIES) as trl:
        yield trl


@pytest.fixture
def device(server: str) -> Iterator[tango.DeviceProxy]:
    proxy = tango.DeviceProxy(server)
    yield proxy
    proxy.StopLive()
    assert proxy.live_address == ""
    assert proxy.state() == ON, proxy.status()


def test_start_live_restores_a_scan_and_pushes_the_restored_map(device, proxy, publisher):
    assert device.live_address == ""
    assert (device.live_field, device.live_normalize) == ("xrf_Cu", "i0")
    subscriptions = [
        ("restored_image", CHANGE),
        ("restored_image", DATA_READY),
        ("State", CHANGE),
        ("Status", CHANGE),
    ]
    with subscribed(device, subscriptions) as events:
        started = time.monotonic()
        endpoint = device.StartLive(proxy.out_address)
        assert time.monotonic() - started < 1.0  # returns at once
        assert endpoint == f"tcp://{proxy.out_address}"
        assert device.live_address == endpoint
        assert device.state() == ON
        handshake(publisher, lambda: device.live_documents)

        scan = run_scan(16, publisher=publisher)
        wait_until(lambda: device.live_runs_restored == 1, what="the scan's final map")
        events.wait_for(
            lambda seen: any(
                name == "restored_image" and getattr(value, "shape", None) == (16, 16)
                for name, value in seen
            )
        )
        read_back = device.read_attribute("restored_image").value  # after the final map
        events.wait_for(lambda seen: len(events.values("restored_image:data_ready")) >= 2)
        status = device.status()
        live_statuses = [s for s in events.values("status") if "live mode: subscribed" in s]

    offline = scan.offline()
    pushed = [v for v in events.values("restored_image") if getattr(v, "shape", None) == (16, 16)]
    assert len(pushed) == 1  # the final map; the partial ones have fewer rows
    assert_same_restoration(pushed[0], offline.image)
    np.testing.assert_array_equal(read_back, pushed[0])
    partial = [v for v in events.values("restored_image") if 0 < getattr(v, "shape", (0,))[0] < 16]
    assert partial, "LiveEveryRows=4: partial maps are pushed while the scan runs"
    counters = events.values("restored_image:data_ready")
    assert counters == sorted(counters)
    assert device.live_run_uid == scan.uid
    assert device.method_used == "richardson_lucy"
    assert device.iterations_run == ITERATIONS
    np.testing.assert_array_equal(device.psf, offline.psf)  # the scan's step, not pixel_um
    assert f"live mode: subscribed to {endpoint}; 1 run(s) restored" in status
    assert f"run {scan.uid}: final restoration" in status
    assert any(f"mapping run {scan.uid}" in line for line in live_statuses)
    assert device.state() == ON

    device.StopLive()
    assert device.live_address == ""
    assert device.live_run_uid == ""
    assert device.live_runs_restored == 0
    assert "live mode" not in device.status()
    np.testing.assert_array_equal(device.restored_image, pushed[0])  # the last result is kept
    image = small_map((24, 24), seed=12)
    restored = restore_and_wait(device, image)
    expected = asirp.restore(
        image, "richardson_lucy", iterations=ITERATIONS, beam_fwhm_um=BEAM_FWHM_UM, pixel_um=10.0
    )
    np.testing.assert_array_equal(restored, expected.image)


def test_bad_live_requests_are_refused_and_the_device_stays_on(device, proxy):
    for address, message in [
        ("nonsense", "malformed live address"),
        ("127.0.0.1:99999", "between 1 and 65535"),
        ("no-such-host.invalid:5578", "cannot resolve the host"),
    ]:
        with pytest.raises(tango.DevFailed) as caught:
            device.StartLive(address)
        assert caught.value.args[0].reason == "ASIRP_InvalidInput"
        assert message in caught.value.args[0].desc
        assert device.live_address == ""
        assert device.state() == ON

    device.StopLive()  # not live: a no-op
    endpoint = device.StartLive(proxy.out_address)
    try:
        refusals = [
            (lambda: device.StartLive(f"127.0.0.1:{free_port()}"), "already running"),
            (lambda: device.write_attribute("live_field", "xrf_Ar"), "call StopLive"),
            (lambda: device.write_attribute("live_normalize", ""), "call StopLive"),
        ]
        for action, message in refusals:
            with pytest.raises(tango.DevFailed) as caught:
                action()
            assert caught.value.args[0].reason == "ASIRP_LiveActive"
            assert message in caught.value.args[0].desc
        assert device.live_address == endpoint
        assert device.live_field == "xrf_Cu"
        assert device.state() == ON
        # Restore is allowed while live
        image = small_map((16, 16), seed=3)
        restored = restore_and_wait(device, image)
        expected = asirp.restore(
            image,
            "richardson_lucy",
            iterations=ITERATIONS,
            beam_fwhm_um=BEAM_FWHM_UM,
            pixel_um=PIXEL_UM,
        )
        np.testing.assert_array_equal(restored, expected.image)
        assert "live mode: subscribed" in device.status()
    finally:
        device.StopLive()
    device.StopLive()  # idempotent

    device.live_field = ""
    try:
        with pytest.raises(tango.DevFailed) as caught:
            device.StartLive(proxy.out_address)
        assert caught.value.args[0].reason == "ASIRP_NotReady"
        assert "set live_field" in caught.value.args[0].desc
    finally:
        device.live_field = "xrf_Cu"
    device.live_field = "xrf_Cu, xrf_Ar"
    device.live_normalize = ""
    assert (device.live_field, device.live_normalize) == ("xrf_Cu, xrf_Ar", "")
    device.live_field, device.live_normalize = "xrf_Cu", "i0"
    assert device.state() == ON


def test_a_failed_live_run_is_the_outcome_until_the_next_result(device, proxy, publisher):
    device.StartLive(proxy.out_address)
    handshake(publisher, lambda: device.live_documents)
    bad = run_scan(3, 12, publisher=publisher)  # 3 rows: too few to restore
    wait_until(lambda: device.restoration_outcome == "failed", what="the failure")
    assert device.state() == ON  # a failed restoration is an outcome, not an attribute alarm
    assert f"live restoration of run {bad.uid} failed" in device.status().splitlines()[0]
    assert device.live_address != ""  # live mode goes on
    run_scan(8, publisher=publisher)
    wait_until(lambda: device.live_runs_restored == 1, what="the next scan")
    wait_until(lambda: device.restoration_outcome == "succeeded", what="the next result")
    assert device.status().startswith("result #")
    assert device.result_source == device.live_run_uid  # the newest result is live


def test_stopping_the_server_stops_live_mode_mid_scan(proxy, publisher):
    child = start_nodb_server(PROPERTIES)
    try:
        device = tango.DeviceProxy(child.wait_ready()["trl"])
        device.StartLive(proxy.out_address)
        handshake(publisher, lambda: device.live_documents)
        scan = run_scan(12)
        before, sent = device.live_documents, 0
        for name, doc in scan.documents:
            if name == "stop" or (name == "event" and doc["seq_num"] > 5 * 12):
                continue
            publisher(name, doc)
            sent += 1
        wait_until(lambda: device.live_documents >= before + sent, what="the first rows")
        assert device.live_run_uid == scan.uid
    finally:
        started = time.monotonic()
        status = child.stop()
    assert status == 0, child.output()
    assert time.monotonic() - started < 30.0
    # delete_device stopped live mode, which finished the open run (logged as a warning)
    assert any(f"stopping: finishing run(s) {scan.uid}" in line for line in child.lines), (
        child.output()
    )


def test_the_live_address_property_starts_live_mode_with_the_device(proxy, publisher):
    with nodb_server({**PROPERTIES, "LiveAddress": proxy.out_address}) as trl:
        device = tango.DeviceProxy(trl)
        assert device.live_address == f"tcp://{proxy.out_address}"
        assert device.state() == ON
        handshake(publisher, lambda: device.live_documents)
        scan = run_scan(8, publisher=publisher)
        wait_until(lambda: device.live_runs_restored == 1, what="the scan's final map")
        assert device.live_run_uid == scan.uid
        assert device.restored_image.shape == (8, 8)


def test_a_bad_live_address_property_is_a_failure_and_the_device_still_restores():
    with nodb_server({**PROPERTIES, "LiveAddress": "no port here"}) as trl:
        device = tango.DeviceProxy(trl)
        assert device.state() == ON  # the device works: the failure is its outcome
        assert device.restoration_outcome == "failed"
        assert "live mode could not start from LiveAddress 'no port here'" in device.status()
        assert device.live_address == ""
        image = small_map((16, 16), seed=4)
        restored = restore_and_wait(device, image)
        assert device.state() == ON
        expected = asirp.restore(
            image,
            "richardson_lucy",
            iterations=ITERATIONS,
            beam_fwhm_um=BEAM_FWHM_UM,
            pixel_um=10.0,
        )
        np.testing.assert_array_equal(restored, expected.image)
