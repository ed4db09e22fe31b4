"""Live mode without Tango: :class:`asirp_device.live.LiveMode` fed by a real 0MQ proxy.

``bluesky-0MQ-proxy`` runs in a child process on free 127.0.0.1 ports; the RunEngine runs here
and publishes with bluesky's ``Publisher``. The component publishes what live mode restores.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from bluesky.callbacks.zmq import Publisher

from asirp_device.component import ComponentState, NotReady, RestorationComponent
from asirp_device.live import (
    LiveBusy,
    LiveError,
    LiveMode,
    LiveOptions,
    parse_address,
    restorer_arguments,
    validate_options,
)
from asirp_device.requests import ResultRecord
from asirp_device.settings import Settings
from tests.asirp_device._scans import (
    BEAM_FWHM_UM,
    ITERATIONS,
    handshake,
    run_scan,
    wait_until,
)
from tests.asirp_device.conftest import DocumentProxy, free_port
from tests.callbacks.conftest import assert_same_restoration

OPTIONS = LiveOptions(field="xrf_Cu", normalize="i0", every_rows=4)


def make_component(**settings: object) -> tuple[RestorationComponent, list[ResultRecord]]:
    component = RestorationComponent(
        Settings(iterations=ITERATIONS, beam_fwhm_um=BEAM_FWHM_UM, compute_device="cpu", **settings)
    )
    records: list[ResultRecord] = []
    component.add_result_callback(records.append)
    return component, records


@pytest.fixture
def live(
    proxy: DocumentProxy, publisher: Publisher
) -> Iterator[tuple[LiveMode, list[ResultRecord]]]:
    component, records = make_component()
    mode = LiveMode(component, OPTIONS)
    mode.start(proxy.out_address)
    try:
        handshake(publisher, lambda: mode.documents)
        yield mode, records
    finally:
        mode.stop()
    assert not mode.live


def test_a_scan_is_restored_live_like_the_engine_restores_its_map(live, publisher):
    mode, records = live
    statuses: list[str] = []
    mode.add_status_callback(statuses.append)
    wait_until(  # the handshake's empty runs
        lambda: "is not restored: no 2-D map geometry" in mode.status, what="the handshake runs"
    )

    scan = run_scan(16, publisher=publisher)
    wait_until(lambda: mode.runs_restored == 1, what="the final restoration")

    final = records[-1]
    assert final.source == scan.uid
    assert final.restoration.image.shape == (16, 16)
    assert final.restoration.method == "richardson_lucy"
    assert final.restoration.params["iterations_run"] == ITERATIONS
    offline = scan.offline()  # at the scan's step (STEP_UM), not the component's pixel_um
    np.testing.assert_array_equal(final.restoration.psf, offline.psf)
    assert_same_restoration(final.restoration.image, offline.image)
    partials = records[:-1]
    assert partials, "every_rows=4: partial maps are published while the scan runs"
    assert all(record.source == scan.uid for record in partials)
    assert all(record.restoration.image.shape[0] < 16 for record in partials)
    assert [record.sequence for record in records] == list(range(1, len(records) + 1))
    assert mode.run_uid == scan.uid
    assert mode.address == f"tcp://{mode.address.removeprefix('tcp://')}"
    assert f"run {scan.uid}: final restoration" in mode.status
    assert "1 run(s) restored" in mode.status
    assert any(f"mapping run {scan.uid} (16x16 points)" in line for line in statuses)
    assert any(f"run {scan.uid} ended (success)" in line for line in statuses)


def test_stop_finishes_the_run_in_progress_with_its_measured_rows(proxy, publisher):
    component, records = make_component()
    mode = LiveMode(component, LiveOptions(field="xrf_Cu", normalize="i0", every_rows=0))
    statuses: list[str] = []
    mode.add_status_callback(statuses.append)
    scan = run_scan(12)  # not published: the documents are sent by hand below
    mode.start(proxy.out_address)
    try:
        handshake(publisher, lambda: mode.documents)
        before = mode.documents
        sent = 0
        for name, doc in scan.documents:
            if name == "stop" or (name == "event" and doc["seq_num"] > 6 * 12):
                continue
            publisher(name, doc)
            sent += 1
        wait_until(lambda: mode.documents >= before + sent, what="the first 6 rows")
        assert mode.run_uid == scan.uid
        assert records == []  # every_rows=0: nothing before the run ends
    finally:
        assert mode.stop() is True

    assert not mode.live
    assert mode.address == mode.run_uid == mode.status == ""
    assert statuses[-1] == ""  # the listeners hear that live mode ended
    assert len(records) == 1
    assert records[0].source == scan.uid
    assert records[0].restoration.image.shape == (6, 12)
    assert np.isfinite(records[0].restoration.image).all()
    assert component.state is ComponentState.ON
    assert any(f"finishing run(s) {scan.uid}" in line for line in statuses)
    assert mode.stop() is False  # idempotent


def test_a_failed_live_restoration_raises_alarm_and_the_next_run_clears_it(live, publisher):
    mode, records = live
    component = mode._component
    bad = run_scan(3, 12, publisher=publisher)  # 3 rows: fewer than a restoration needs
    wait_until(lambda: component.state is ComponentState.ALARM, what="ALARM")
    assert f"live restoration of run {bad.uid} failed" in component.status
    assert "only 3 row(s) measured" in component.status
    assert f"run {bad.uid}: final restoration 1 failed" in mode.status
    assert records == []
    assert mode.live  # live mode goes on

    good = run_scan(8, publisher=publisher)
    wait_until(lambda: mode.runs_restored == 1, what="the next run")
    assert component.state is ComponentState.ON
    assert records[-1].source == good.uid
    assert "result #" in component.status


def test_start_refuses_bad_addresses_a_second_start_and_a_missing_field():
    component, _ = make_component()
    mode = LiveMode(component, OPTIONS)
    for address, message in [
        ("nonsense", "malformed live address"),
        ("127.0.0.1", "malformed live address"),
        ("127.0.0.1:port", "malformed live address"),
        (":5578", "malformed live address"),
        ("127.0.0.1:0", "between 1 and 65535"),
        ("127.0.0.1:70000", "between 1 and 65535"),
        ("no-such-host.invalid:5578", "cannot resolve the host"),
    ]:
        with pytest.raises(ValueError, match=message):
            mode.start(address)
    with pytest.raises(TypeError, match="string"):
        mode.start(5578)  # type: ignore[arg-type]
    assert not mode.live

    empty = LiveMode(component)
    with pytest.raises(NotReady, match="set live_field"):
        empty.start(f"127.0.0.1:{free_port()}")
    assert not empty.live

    # 0MQ connects lazily: a proxy that is not up yet is fine
    endpoint = mode.start(f"tcp://localhost:{free_port()}")
    try:
        assert mode.live
        assert mode.address == endpoint
        assert endpoint.startswith("tcp://localhost:")
        assert "waiting for documents" in mode.status
        with pytest.raises(LiveBusy, match="already running"):
            mode.start(f"127.0.0.1:{free_port()}")
        with pytest.raises(LiveBusy, match="call StopLive"):
            mode.set_options(LiveOptions(field="xrf_Ar"))
        assert mode.address == endpoint
    finally:
        started = time.monotonic()
        assert mode.stop() is True
    assert time.monotonic() - started < 2.0
    assert not mode.live
    mode.set_options(LiveOptions(field="xrf_Ar"))
    assert mode.options.field == "xrf_Ar"
    assert component.state is ComponentState.ON


def test_parse_address_forms():
    assert parse_address("127.0.0.1:5578") == ("127.0.0.1", 5578)
    assert parse_address(" tcp://localhost:1 ") == ("localhost", 1)
    assert parse_address("[::1]:5578") == ("::1", 5578)


def test_options_are_validated():
    assert validate_options(LiveOptions(field=" xrf_Cu , xrf_Ar ")).fields == ("xrf_Cu", "xrf_Ar")
    for options, message in [
        (LiveOptions(field="xrf Cu"), "no spaces"),
        (LiveOptions(every_rows=-1), "every_rows"),
        (LiveOptions(position_scale_um=0.0), "position_scale_um"),
        (LiveOptions(grace_s=float("nan")), "grace_s"),
    ]:
        with pytest.raises(ValueError, match=message):
            validate_options(options)


def test_the_restorer_gets_the_component_settings():
    options = LiveOptions(field="xrf_Cu,xrf_Ar", normalize="i0", every_rows=0)
    rl = restorer_arguments(Settings(iterations=7, parameters={"stop": "fixed"}), options)
    assert rl["method"] == "richardson_lucy"
    assert rl["params"] == {"iterations": 7, "stop": "fixed"}
    assert rl["field"] == ("xrf_Cu", "xrf_Ar")
    assert rl["normalize"] == "i0"
    assert rl["every_rows"] is None
    assert rl["beam_fwhm_um"] == 50.0
    wiener = restorer_arguments(Settings(method="wiener", iterations=7), options)
    assert wiener["params"] == {}  # wiener takes no iterations
    auto = restorer_arguments(Settings(auto_select=True, parameters={"stop": "fixed"}), options)
    assert (auto["method"], auto["params"]) == ("auto", {})
    with pytest.raises(NotReady, match="live_field"):
        restorer_arguments(Settings(), LiveOptions())


def test_a_published_result_clears_alarm_and_report_failure_waits_for_a_running_restoration():
    component, _ = make_component()
    assert component.report_failure("live restoration of run x failed: boom") is True
    assert component.state is ComponentState.ALARM
    assert component.status == "live restoration of run x failed: boom"
    import asirp
    from tests.asirp_device.conftest import small_map

    record = component.publish_result(
        asirp.restore(small_map(), "wiener", beam_fwhm_um=50.0, pixel_um=10.0), str(uuid.uuid4())
    )
    assert component.state is ComponentState.ON
    assert f"result #{record.sequence}" in component.status

    component.set_iterations(100_000)
    component.set_parameters({"stop": "fixed"})
    component.set_input(small_map((96, 96)))
    component.start()
    try:
        assert component.report_failure("too late") is False
        assert component.state is ComponentState.RUNNING
    finally:
        component.shutdown()


def test_with_a_tiled_uri_each_scan_gets_a_derived_run_in_tiled(proxy, publisher, tmp_path):
    from callbacks.publish import derived_runs, read_final_map
    from callbacks.tiled_server import EmbeddedTiledServer

    component, records = make_component()
    with EmbeddedTiledServer(tmp_path / "tiled") as server:
        mode = LiveMode(component, replace(OPTIONS, every_rows=0, tiled_uri=server.uri))
        mode.start(proxy.out_address)
        try:
            handshake(publisher, lambda: mode.documents)
            scan = run_scan(8, publisher=publisher)
            wait_until(lambda: mode.runs_restored == 1, what="the final restoration")
        finally:
            mode.stop()
        client = server.client()
        (derived,) = derived_runs(client, scan.uid).values()
        assert derived.metadata["start"]["method"] == "richardson_lucy"
        assert derived.metadata["stop"]["exit_status"] == "success"
        np.testing.assert_array_equal(read_final_map(derived), records[-1].restoration.image)


def test_an_unreachable_tiled_server_refuses_start(proxy, monkeypatch):
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)  # fail within 2 s
    component, _ = make_component()
    mode = LiveMode(component, replace(OPTIONS, tiled_uri=f"http://127.0.0.1:{free_port()}/api"))
    with pytest.raises(LiveError, match="cannot connect to the tiled server"):
        mode.start(proxy.out_address)
    assert not mode.live


def test_a_failure_after_start_returned_ends_live_mode_with_alarm(proxy, monkeypatch):
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)
    component, _ = make_component()
    mode = LiveMode(component, replace(OPTIONS, tiled_uri=f"http://127.0.0.1:{free_port()}/api"))
    returned = threading.Event()

    def hold_the_connection_until_start_returned(status: str) -> None:
        if "connecting to the tiled server" in status:
            returned.wait(10)

    mode.add_status_callback(hold_the_connection_until_start_returned)
    mode.start(proxy.out_address, timeout=0.0)
    returned.set()
    wait_until(lambda: not mode.live, what="live mode to end")
    assert component.state is ComponentState.ALARM
    assert "ended: cannot connect to the tiled server" in component.status
    assert "call StartLive again" in component.status
    assert mode.stop() is False
