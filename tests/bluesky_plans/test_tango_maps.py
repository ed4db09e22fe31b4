"""``TangoMaps``: the coarse map is the device's live result, restored once and stored in tiled.

The provider's logic runs first against a fake client (a RunEngine, no server): polling,
fallbacks and region recording. Then the system: ``adaptive_roi_scan`` in a RunEngine here,
publishing through ``bluesky-0MQ-proxy`` (child process) to the ASIRP device (``_nodb_server.py``
in a child process) in live mode, writing derived runs to an embedded tiled server; the plan reads
the device's live result of the coarse run, and nothing restores a map in this process.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tango
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher
from ophyd_async.core import init_devices

import asirp.registry
import sim
from asirp_device.client import ASIRPClient, LiveReply
from asirp_device.document_proxy import DocumentProxyProcess, handshake
from bluesky_plans.adaptive import AdaptiveReport, adaptive_roi_scan
from bluesky_plans.budget import StageTiming
from bluesky_plans.maps import REGIONS_KEY, MapOutcome, TangoMaps
from callbacks.publish import derived_runs, read_final_map
from callbacks.raw_maps import RawMaps
from callbacks.serialization import serializer
from callbacks.tiled_server import EmbeddedTiledServer
from tests.asirp_device.conftest import free_port, start_nodb_server

RAW = np.arange(20, dtype=np.float32).reshape(4, 5)


# ---------------------------------------------------------------------------- fake device
class FakeClient:
    """Answers ``live_result`` with the given replies in turn (the last one repeats)."""

    def __init__(self, *replies: LiveReply | Exception) -> None:
        self.replies = list(replies)
        self.calls = 0

    async def live_result(self, run_uid: str) -> LiveReply:
        self.calls += 1
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


class FakeRawMaps:
    def raw_map(self, run_uid: str) -> np.ndarray | None:
        return RAW if run_uid == "coarse" else None


def ready(source: str = "coarse", shape: tuple[int, int] = RAW.shape) -> LiveReply:
    header = {
        "request_id": 5,
        "method": "richardson_lucy",
        "metrics": {"sharpness": 1.5},
        "source": source,
        "derived_uid": "derived-1",
    }
    return LiveReply("ready", "", header, np.full(shape, 2.0, dtype=np.float32))


def outcome_of(maps: TangoMaps, run_uid: str = "coarse") -> MapOutcome:
    def plan():
        return (yield from maps.restored_map(run_uid, pixel_um=(50.0, 50.0), beam_fwhm_um=50.0))

    return RunEngine({}, call_returns_result=True)(plan()).plan_result


def test_the_device_result_is_used_once_it_is_ready():
    pending = LiveReply("pending", "ASIRP_NotReady: not arrived yet")
    client = FakeClient(LiveReply("unknown", "ASIRP_UnknownRun: not seen"), pending, ready())
    outcome = outcome_of(TangoMaps(client, FakeRawMaps()))
    assert outcome.ok
    assert client.calls == 3
    np.testing.assert_array_equal(outcome.raw, RAW)
    np.testing.assert_array_equal(outcome.restored, np.full(RAW.shape, 2.0))
    assert (outcome.method, outcome.derived_uid) == ("richardson_lucy", "derived-1")
    assert outcome.metrics == {"sharpness": 1.5}
    assert outcome.describe() == {
        "map_used": "restored",
        "method": "richardson_lucy",
        "fallback_reason": None,
        "derived_uid": "derived-1",
    }


@pytest.mark.parametrize(
    ("client", "options", "reason"),
    [
        (
            FakeClient(LiveReply("failed", "ASIRP_LiveFailed: too few rows")),
            {},
            "ASIRP_LiveFailed: too few rows",
        ),
        (FakeClient(LiveReply("error", "ASIRP_Fault: broken")), {}, "ASIRP_Fault: broken"),
        (FakeClient(ConnectionError("gone")), {}, "ConnectionError: gone"),
        (
            FakeClient(LiveReply("unknown", "ASIRP_UnknownRun: not seen")),
            {"unknown_s": 0.1},
            "did not see run coarse within 0.1 s",
        ),
        (
            FakeClient(LiveReply("pending", "ASIRP_NotReady: later")),
            {"timeout_s": 0.1},
            "no final live result of run coarse from the device within 0.1 s",
        ),
        (FakeClient(ready(source="other")), {}, "the device's result is of 'other'"),
        (FakeClient(ready(shape=(3, 3))), {}, "device returned shape (3, 3)"),
    ],
)
def test_no_device_result_falls_back_to_the_raw_map_with_the_reason(client, options, reason):
    outcome = outcome_of(TangoMaps(client, FakeRawMaps(), **options))
    assert not outcome.ok
    assert reason in outcome.reason
    np.testing.assert_array_equal(outcome.image, RAW)
    assert outcome.derived_uid is None
    assert outcome.describe()["derived_uid"] is None


def test_a_run_without_an_in_process_raw_map_is_a_wiring_error():
    with pytest.raises(RuntimeError, match="no raw map of run elsewhere"):
        outcome_of(TangoMaps(FakeClient(ready()), FakeRawMaps()), "elsewhere")


class FakeNode:
    def __init__(self) -> None:
        self.metadata: dict[str, Any] = {"start": {"uid": "derived-1"}}

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata.update(metadata)


def test_regions_are_recorded_in_the_derived_run_or_logged_as_not(caplog):
    node = FakeNode()
    maps = TangoMaps(FakeClient(ready()), FakeRawMaps(), tiled={"derived-1": node})
    restored = MapOutcome(RAW, RAW, "richardson_lucy", derived_uid="derived-1")
    regions = [{"x_min_um": 0.0, "x_max_um": 1.0, "y_min_um": 0.0, "y_max_um": 1.0}]
    maps.record_regions(restored, regions)
    assert node.metadata == {"start": {"uid": "derived-1"}, REGIONS_KEY: regions}
    with caplog.at_level("INFO", logger="bluesky_plans.maps"):
        maps.record_regions(MapOutcome(RAW, None, None, "device down"), regions)
        TangoMaps(FakeClient(ready()), FakeRawMaps()).record_regions(restored, regions)
        broken = TangoMaps(FakeClient(ready()), FakeRawMaps(), tiled={})
        broken.record_regions(restored, regions)  # no such node: logged, not raised
    messages = [record.getMessage() for record in caplog.records]
    assert any("no derived run (device down)" in message for message in messages)
    assert any("was given no tiled client" in message for message in messages)
    assert any("recording 1 region(s) in derived run derived-1 failed" in m for m in messages)


# ---------------------------------------------------------------------------- the system
BEAM_UM = 50.0
RANGE_UM = (-150.0, 150.0)  # 7 x 7 coarse points at 50 µm


@dataclasses.dataclass
class Served:
    trl: str
    device: tango.DeviceProxy
    proxy: DocumentProxyProcess
    tiled: EmbeddedTiledServer


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    """tiled here; the 0MQ proxy and the device (live on it, writing to tiled) as children.

    The device boots while tiled starts (about 10 s: tiled initialises its catalog), so its
    ``TiledUri`` is made up front from a free port and a key.
    """
    port, key = free_port(), secrets.token_hex(8)
    uri = f"http://127.0.0.1:{port}/api/v1?api_key={key}"
    properties = {
        "DefaultMethod": "richardson_lucy",
        "DefaultIterations": 10,
        "DefaultBeamFwhmUm": BEAM_UM,
        "ComputeDevice": "cpu",
        "LiveField": "xrf_Se",
        "LiveNormalize": "i0",
        "LiveEveryRows": 0,  # final maps only: each run is restored exactly once
        "TiledUri": uri,
    }
    child = start_nodb_server(properties)
    proxy = tiled = None
    try:
        proxy = DocumentProxyProcess()
        proxy.start()
        tiled = EmbeddedTiledServer(tmp_path / "tiled", api_key=key, port=port)
        assert tiled.uri == uri
        trl = child.wait_ready()["trl"]
        device = tango.DeviceProxy(trl)
        device.StartLive(proxy.out_address)
        try:
            yield Served(trl, device, proxy, tiled)
        finally:
            device.StopLive()
    finally:
        status = child.stop()  # first: its tiled client goes before the tiled server
        if proxy is not None:
            proxy.stop()
        if tiled is not None:
            tiled.close()
    assert status == 0, child.output()


@pytest.fixture
def in_process_restorations(monkeypatch) -> list[str]:
    """Every restoration method run in this process (names), through the engine's registry."""
    ran: list[str] = []
    for name, spec in list(asirp.registry._REGISTRY.items()):

        def counted(problem, params, _run=spec.run, _name=name):
            ran.append(_name)
            return _run(problem, params)

        monkeypatch.setitem(asirp.registry._REGISTRY, name, dataclasses.replace(spec, run=counted))
    return ran


def _final_result_of(device: tango.DeviceProxy, run_uid: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return device.LiveResultOf(run_uid)
        except tango.DevFailed as error:
            if error.args[0].reason != "ASIRP_NotReady" or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_the_decision_map_is_the_device_live_result_stored_in_tiled(
    served, in_process_restorations
):
    engine = RunEngine({})
    publisher = Publisher(served.proxy.in_address, serializer=serializer)
    documents: list[tuple[str, dict]] = []
    try:
        handshake(publisher, lambda: served.device.live_documents)
        engine.subscribe(publisher)
        raw_maps = RawMaps("xrf_Se", normalize="i0")
        engine.subscribe(raw_maps)
        engine.subscribe(lambda name, doc: documents.append((name, doc)))
        with init_devices():
            client = ASIRPClient(served.trl, name="asirp")
        catalog = served.tiled.client()
        maps = TangoMaps(client, raw_maps, timeout_s=30.0, tiled=catalog)
        beamline = sim.make_beamline("seed", beam_fwhm_um=BEAM_UM, seed=2, field_um=400.0)
        timing = StageTiming(dwell_s=beamline.xrf.dwell_time.get(), velocity_um_s=1000.0)
        report = AdaptiveReport()
        engine(
            adaptive_roi_scan(
                beamline.detectors,
                beamline.x,
                beamline.y,
                RANGE_UM,
                RANGE_UM,
                50.0,
                maps=maps,
                beam_fwhm_um=BEAM_UM,
                target_resolution_um=40.0,
                timing=timing,
                max_rois=2,
                report=report,
            )
        )
    finally:
        publisher.close()
    outcome = report.coarse_outcome
    assert outcome.ok, outcome.reason
    assert report.fine_uids, "no region was rescanned"
    # every run (coarse and fine) restored once, on the device; none here
    headers = [
        json.loads(served.device.FetchResult(_final_result_of(served.device, uid))[0])
        for uid in report.uids
    ]
    assert [header["source"] for header in headers] == report.uids
    # the device published exactly one result per run, the coarse run's first: nothing else
    # was restored there (no partial map, no Restore of an input_image)
    assert [header["sequence"] for header in headers] == list(range(1, len(report.uids) + 1))
    assert served.device.live_runs_restored == len(report.uids)
    assert served.device.read_attribute("input_source").value == ""
    assert in_process_restorations == []
    assert headers[0]["derived_uid"] == outcome.derived_uid

    # the map of the decision is the one stored in tiled
    catalog = served.tiled.client()
    (derived,) = derived_runs(catalog, report.coarse_uid).values()
    assert derived.metadata["start"]["uid"] == outcome.derived_uid
    assert derived.metadata["stop"]["restorations"] == 1
    np.testing.assert_array_equal(outcome.restored, read_final_map(derived))
    stored_raw = derived["restored"]["input_map"].read()[-1]
    np.testing.assert_array_equal(outcome.raw, stored_raw)  # the map it restored, assembled here

    starts = [doc for name, doc in documents if name == "start"]
    assert [doc["uid"] for doc in starts] == report.uids
    for doc, region in zip(starts[1:], report.regions, strict=True):
        assert doc["coarse_uid"] == report.coarse_uid
        assert doc["derived_uid"] == outcome.derived_uid
        assert doc["roi"] == region.as_dict()
        assert doc["map_used"] == "restored"

    # the regions it produced, recorded in the derived run (adaptive_roi_scan does this too
    # once it calls record_regions; recording twice writes the same list)
    regions = [region.as_dict() for region in report.regions]
    maps.record_regions(outcome, regions)
    assert catalog[outcome.derived_uid].metadata[REGIONS_KEY] == regions
    assert catalog[outcome.derived_uid].metadata["start"]["uid"] == outcome.derived_uid
