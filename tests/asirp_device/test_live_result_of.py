"""``LiveResultOf``: the final live result of one run, without restoring it again.

The book (:class:`asirp_device.live_runs.LiveRunBook`) is checked alone; the device's command
is checked on a real server (``_nodb_server.py`` in a child process) fed by
``bluesky-0MQ-proxy`` (child process) from a RunEngine here, for each refusal reason
(``ASIRP_UnknownRun``, ``ASIRP_NotReady``, ``ASIRP_LiveFailed``), after each of which the
device still answers and restores.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import tango

import asirp
from asirp_device.component import NotReady
from asirp_device.live_runs import MAX_LIVE_RUNS, LiveRunBook, LiveRunFailed, UnknownRun
from asirp_device.wire import decode_result
from tests.asirp_device._scans import BEAM_FWHM_UM, ITERATIONS, handshake, run_scan, wait_until
from tests.asirp_device.conftest import nodb_server, small_map
from tests.asirp_device.test_device import restore_and_wait
from tests.callbacks.conftest import assert_same_restoration

ON = tango.DevState.ON
PROPERTIES = {
    "DefaultIterations": ITERATIONS,
    "DefaultBeamFwhmUm": BEAM_FWHM_UM,
    "ComputeDevice": "cpu",
    "LiveField": "xrf_Cu",
    "LiveNormalize": "i0",
    "LiveEveryRows": 4,
}


# ---------------------------------------------------------------------------- the book alone
def test_the_book_says_pending_restored_failed_or_unknown():
    book = LiveRunBook()
    with pytest.raises(UnknownRun, match="has not seen run 'a'"):
        book.request_id("a")
    book.begin("a")
    book.partial("a")
    with pytest.raises(NotReady, match=r"run a has not arrived yet \(1 partial"):
        book.request_id("a")
    book.restored("a", 41, "derived-a")
    assert book.request_id("a") == 41
    assert book.get("a").derived_uid == "derived-a"
    book.begin("b")
    book.failed("b", "its final live restoration failed:\n  ValueError: too few rows")
    with pytest.raises(LiveRunFailed, match=r"run b has no live result: .* ValueError: too few"):
        book.request_id("b")
    with pytest.raises(TypeError):
        book.request_id(7)  # type: ignore[arg-type]


def test_the_book_keeps_the_latest_runs_and_abandons_open_ones():
    book = LiveRunBook()
    for index in range(MAX_LIVE_RUNS + 3):
        book.begin(f"run-{index}")
    assert len(book) == MAX_LIVE_RUNS
    with pytest.raises(UnknownRun):
        book.request_id("run-0")  # forgotten: the oldest go first
    book.restored(f"run-{MAX_LIVE_RUNS + 2}", 9, None)
    abandoned = book.abandon("live mode was stopped")
    assert len(abandoned) == MAX_LIVE_RUNS - 1
    with pytest.raises(LiveRunFailed, match="live mode was stopped"):
        book.request_id("run-3")
    assert book.request_id(f"run-{MAX_LIVE_RUNS + 2}") == 9


# ---------------------------------------------------------------------------- on the device
@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with nodb_server(PROPERTIES) as trl:
        yield trl


@pytest.fixture
def device(server: str, proxy, publisher) -> Iterator[tango.DeviceProxy]:
    """The device, live on the proxy (handshake done); stopped and checked ON afterwards."""
    device = tango.DeviceProxy(server)
    device.StartLive(proxy.out_address)
    try:
        handshake(publisher, lambda: device.live_documents)
        yield device
    finally:
        device.StopLive()
    device.Reset()
    assert device.state() == ON, device.status()


def refusal(device: tango.DeviceProxy, run_uid: str) -> tango.DevError:
    with pytest.raises(tango.DevFailed) as caught:
        device.LiveResultOf(run_uid)
    return caught.value.args[0]


def assert_still_restores(device: tango.DeviceProxy) -> None:
    image = small_map((16, 16), seed=5)
    restored = restore_and_wait(device, image)
    expected = asirp.restore(
        image, "richardson_lucy", iterations=ITERATIONS, beam_fwhm_um=BEAM_FWHM_UM, pixel_um=10.0
    )
    np.testing.assert_array_equal(restored, expected.image)


def test_the_final_live_result_of_a_run_is_fetched_once_it_arrives(device, publisher):
    error = refusal(device, str(uuid.uuid4()))
    assert error.reason == "ASIRP_UnknownRun"
    assert "has not seen run" in error.desc

    scan = run_scan(12)  # published by hand: first the first half of the rows, no stop
    first = [
        name != "stop" and (name != "event" or doc["seq_num"] <= 6 * 12)
        for name, doc in scan.documents
    ]
    for (name, doc), now in zip(scan.documents, first, strict=True):
        if now:
            publisher(name, doc)
    wait_until(lambda: device.live_run_uid == scan.uid, what="the scan's start")
    error = refusal(device, scan.uid)
    assert error.reason == "ASIRP_NotReady"
    assert "has not arrived yet" in error.desc
    for (name, doc), sent in zip(scan.documents, first, strict=True):
        if not sent:
            publisher(name, doc)
    wait_until(lambda: device.live_runs_restored == 1, what="the final restoration")

    request_id = device.LiveResultOf(scan.uid)
    header, image = decode_result(device.FetchResult(request_id))
    assert header["request_id"] == request_id
    assert header["source"] == scan.uid
    assert header["derived_uid"] is None  # no TiledUri: nothing was stored
    assert header["method"] == "richardson_lucy"
    assert_same_restoration(image, scan.offline().image)
    assert device.LiveResultOf(scan.uid) == request_id  # asking again restores nothing
    assert device.live_runs_restored == 1
    assert device.state() == ON


def test_a_failed_or_unmapped_run_has_no_result_and_the_device_goes_on(device, publisher):
    bad = run_scan(3, 12, publisher=publisher)  # 3 rows: too few to restore
    wait_until(lambda: device.restoration_outcome == "failed", what="the failure")
    error = refusal(device, bad.uid)
    assert error.reason == "ASIRP_LiveFailed"
    assert f"run {bad.uid} has no live result: its final live restoration failed" in error.desc
    handshake_uid = str(uuid.uuid4())  # a run with no map geometry is not restored
    publisher("start", {"uid": handshake_uid, "time": 0.0, "purpose": "handshake"})
    wait_until(lambda: _known(device, handshake_uid), what="the start document")
    error = refusal(device, handshake_uid)
    assert error.reason == "ASIRP_LiveFailed"
    assert "not restored: no 2-D map geometry" in error.desc

    good = run_scan(8, publisher=publisher)
    wait_until(lambda: device.live_runs_restored == 1, what="the next scan")
    header, _ = decode_result(device.FetchResult(device.LiveResultOf(good.uid)))
    assert header["source"] == good.uid
    assert refusal(device, bad.uid).reason == "ASIRP_LiveFailed"  # still known, still failed
    device.StopLive()
    assert device.LiveResultOf(good.uid) == header["request_id"]  # kept across StopLive
    assert_still_restores(device)


def test_a_map_run_with_no_point_of_the_live_field_fails_at_its_stop(server, proxy, publisher):
    device = tango.DeviceProxy(server)
    device.live_field = "xrf_Nowhere"
    try:
        device.StartLive(proxy.out_address)
        handshake(publisher, lambda: device.live_documents)
        scan = run_scan(6, publisher=publisher)
        wait_until(lambda: _known(device, scan.uid, pending=False), what="the run's end")
        error = refusal(device, scan.uid)
        assert error.reason == "ASIRP_LiveFailed"
        assert "no point of its map was recorded" in error.desc
    finally:
        device.StopLive()
        device.live_field = "xrf_Cu"
    assert device.state() == ON
    assert_still_restores(device)


def _known(device: tango.DeviceProxy, run_uid: str, pending: bool = True) -> bool:
    """Whether ``LiveResultOf`` knows the run (and, with ``pending=False``, is done with it)."""
    try:
        device.LiveResultOf(run_uid)
    except tango.DevFailed as error:
        reason = error.args[0].reason
        return reason != "ASIRP_UnknownRun" and (pending or reason != "ASIRP_NotReady")
    return True
