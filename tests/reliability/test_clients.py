"""One client's result is its own: request ids, ``Submit`` and ``FetchResult`` on a real server.

The audit found that with 4 clients sharing ``input_image`` and reading ``restored_image``,
746 of 1262 maps a client read back came from another client's input. Here every client
submits its own map (and settings) in one call and fetches the result of its own request id.
The device runs in a child process (``DeviceTestContext``, see ``tests/asirp_device``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tango

import asirp
from asirp_device.requests import RESULT_CACHE_SIZE
from asirp_device.wire import decode_result, encode_map
from tests.asirp_device.conftest import EventRecorder, nodb_server, small_map

ON, RUNNING = tango.DevState.ON, tango.DevState.RUNNING
METHOD = "wiener"
PSF = {"beam_fwhm_um": 30.0, "pixel_um": 10.0}
CLIENTS = 4
REQUESTS_PER_CLIENT = 5
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    properties = {
        "DefaultMethod": METHOD,
        "DefaultBeamFwhmUm": PSF["beam_fwhm_um"],
        "DefaultPixelUm": PSF["pixel_um"],
    }
    with nodb_server(properties) as trl:
        yield trl


@pytest.fixture
def device(server: str) -> Iterator[tango.DeviceProxy]:
    proxy = tango.DeviceProxy(server)
    yield proxy
    deadline = time.monotonic() + TIMEOUT_S
    while proxy.state() == RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.state() == ON, proxy.status()


def reason(error: tango.DevFailed) -> str:
    return error.args[0].reason


def submit(proxy: tango.DeviceProxy, image: np.ndarray, **settings: Any) -> int:
    """``Submit`` the map, retrying while the device is busy with another request."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return int(proxy.command_inout("Submit", encode_map(image, **settings)))
        except tango.DevFailed as error:
            if reason(error) != "ASIRP_Busy" or time.monotonic() > deadline:
                raise
        time.sleep(0.002)


def fetch(proxy: tango.DeviceProxy, request_id: int) -> tuple[dict[str, Any], np.ndarray]:
    """``FetchResult(request_id)``, waiting while that request still runs."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return decode_result(proxy.command_inout("FetchResult", request_id))
        except tango.DevFailed as error:
            if reason(error) != "ASIRP_NotReady" or time.monotonic() > deadline:
                raise
        time.sleep(0.002)


def engine(image: np.ndarray, **psf: float) -> np.ndarray:
    return asirp.restore(image, METHOD, **psf).image


def test_four_clients_each_fetch_the_restoration_of_their_own_input(server: str):
    # distinct maps (seed, level) and a distinct beam per client: a crossed input or crossed
    # settings would both show
    inputs = {
        client: [
            small_map((32, 32), seed=100 * client + k, peak=40.0 * (client + 1))
            for k in range(REQUESTS_PER_CLIENT)
        ]
        for client in range(CLIENTS)
    }
    beams = {client: 20.0 + 8.0 * client for client in range(CLIENTS)}
    fetched: dict[int, list[tuple[int, dict[str, Any], np.ndarray]]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS)

    def run(client: int) -> None:
        try:
            proxy = tango.DeviceProxy(server)
            proxy.set_timeout_millis(30_000)
            barrier.wait(60)
            mine = []
            for image in inputs[client]:
                request_id = submit(proxy, image, beam_fwhm_um=beams[client], pixel_um=10.0)
                header, restored = fetch(proxy, request_id)
                mine.append((request_id, header, restored.copy()))
            fetched[client] = mine
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(client,)) for client in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S * 2)
    assert not errors, errors
    assert sorted(fetched) == list(range(CLIENTS))

    ids = [request_id for results in fetched.values() for request_id, _, _ in results]
    assert len(set(ids)) == CLIENTS * REQUESTS_PER_CLIENT  # every request has its own id
    matches = 0
    for client, results in fetched.items():
        for image, (request_id, header, restored) in zip(inputs[client], results, strict=True):
            assert header["request_id"] == request_id
            assert header["method"] == METHOD
            assert header["shape"] == [32, 32]
            expected = engine(image, beam_fwhm_um=beams[client], pixel_um=10.0)
            if np.allclose(restored, expected, rtol=1e-5, atol=1e-4):
                matches += 1
    assert matches == CLIENTS * REQUESTS_PER_CLIENT


def test_restore_returns_the_id_that_result_id_metrics_and_fetch_result_carry(device):
    image = small_map((24, 24), seed=7)
    device.write_attribute("input_image", image)
    request_id = device.Restore()
    assert isinstance(request_id, int)
    assert request_id > 0
    header, fetched = fetch(device, request_id)
    assert device.result_id == request_id
    assert json.loads(device.metrics_json)["request_id"] == request_id
    expected = engine(image, **PSF)
    np.testing.assert_allclose(fetched, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(device.read_attribute("restored_image").value, fetched)
    assert header["request_id"] == request_id
    # a Submit after it does not change what that id returns, nor the shared input slot
    other = submit(device, small_map((24, 24), seed=8, peak=300.0))
    assert other > request_id
    _, later = fetch(device, other)
    _, again = fetch(device, request_id)
    np.testing.assert_array_equal(again, fetched)
    assert not np.allclose(later, fetched)
    np.testing.assert_array_equal(device.read_attribute("input_image").value, image)


def test_result_id_event_comes_before_the_restored_image_event(device):
    recorder = EventRecorder()
    change = tango.EventType.CHANGE_EVENT
    names = ("result_id", "restored_image")
    ids = [device.subscribe_event(name, change, recorder) for name in names]
    try:
        recorder.wait_for(lambda seen: {"result_id", "restored_image"} <= {n for n, _ in seen})
        request_id = submit(device, small_map((16, 16), seed=9))
        recorder.wait_for(lambda seen: ("result_id", request_id) in seen)
        recorder.wait_for(lambda seen: [n for n, _ in seen].count("restored_image") >= 2)
    finally:
        for event_id in ids:
            device.unsubscribe_event(event_id)
    seen = [name for name, _ in recorder.events]
    announced = recorder.events.index(("result_id", request_id))
    first_image_after = seen.index("restored_image", 2)  # the two subscription events first
    assert announced < first_image_after
    assert recorder.errors == []


def test_unknown_evicted_and_malformed_requests_are_refused_with_a_reason(device):
    first = submit(device, small_map((8, 8), seed=1))
    fetch(device, first)
    last = first
    for k in range(RESULT_CACHE_SIZE):
        last = submit(device, small_map((8, 8), seed=2 + k))
        fetch(device, last)
    with pytest.raises(tango.DevFailed) as evicted:
        device.command_inout("FetchResult", first)
    assert reason(evicted.value) == "ASIRP_UnknownRequest"
    assert "no longer kept" in evicted.value.args[0].desc
    with pytest.raises(tango.DevFailed) as never:
        device.command_inout("FetchResult", 12345)
    assert reason(never.value) == "ASIRP_UnknownRequest"
    assert fetch(device, last)[0]["request_id"] == last

    header, data = encode_map(small_map((8, 8)))
    bad_inputs = [
        (header, data[:-4]),  # one float short
        (json.dumps({"shape": [8, 8], "dtype": "complex64"}), data),
        (json.dumps({"shape": [8, 8], "dtype": "float32", "colour": "red"}), data),
        ("not json", data),
        encode_map(np.full((8, 8), np.nan, np.float32)),
        encode_map(small_map((8, 8)), method="no_such_method"),
    ]
    for argument in bad_inputs:
        with pytest.raises(tango.DevFailed) as refused:
            device.command_inout("Submit", argument)
        assert reason(refused.value) == "ASIRP_InvalidInput", argument[0]
    assert device.state() == ON
