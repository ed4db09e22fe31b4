"""Temporal live mode: :class:`asirp_device.temporal_live.TemporalLiveMode`, then the device.

``bluesky-0MQ-proxy`` runs in a child process (the module's ``proxy`` fixture); documents are
composed here with ``event_model`` from frames of the simulated powder beamline (128 x 128 px,
inline) and published with bluesky's ``Publisher`` (msgpack). The first tests drive the
Tango-free mode directly; the last ones the real device server in a child process through
``DeviceProxy``.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import tango
from bluesky.callbacks.zmq import Publisher
from event_model import compose_run

from asirp.diffraction import TemporalSettings
from asirp_device.component import ComponentState, RestorationComponent
from asirp_device.settings import Settings
from asirp_device.temporal_live import (
    ChangeValues,
    TemporalBusy,
    TemporalLiveMode,
    TemporalOptions,
    validate_temporal_options,
)
from callbacks.serialization import serializer
from callbacks.temporal_config import METADATA_KEY
from sim.diffraction import small_geometry
from sim.xrd_devices import make_xrd_beamline
from tests.asirp_device._scans import handshake, wait_until
from tests.asirp_device.conftest import DocumentProxy, EventRecorder, free_port, nodb_server

GEOMETRY = small_geometry(factor=8)  # 128 x 128 px of 600 µm: a frame in about a millisecond
SETTINGS = TemporalSettings(n_bins=300, restore=False, min_reference_frames=8)
CHANGE_AT = 24  # frames before the sample changes in test_documents_in_values_and_status_out
ON, ALARM = tango.DevState.ON, tango.DevState.ALARM
CHANGE, ARCHIVE = tango.EventType.CHANGE_EVENT, tango.EventType.ARCHIVE_EVENT
GARBAGE = "__asirp_test_garbage__"


def publisher_with_garbage(address: str) -> Publisher:
    """A msgpack publisher that sends undecodable bytes for a document holding ``GARBAGE``."""

    def serialize(doc: dict[str, Any]) -> bytes:
        return b"\xc1 never msgpack" if GARBAGE in doc else serializer(doc)

    return Publisher(address, serializer=serialize)


@dataclass
class TemporalRun:
    """The documents of one composed temperature ramp, in order."""

    uid: str = ""
    documents: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, publisher: Publisher, pause_s: float = 0.0) -> None:
        for name, doc in self.documents:
            publisher(name, doc)
            if name == "event" and pause_s:
                time.sleep(pause_s)


def ramp_frames(
    n_frames: int, *, change_at: int | None = None, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames of a 1 K-step ramp from 300 K, and its temperatures, K.

    Before ``change_at`` the sample is the cubic phase of the ``new_phase`` beamline; from it
    on, a minor second phase is fully there (a change of shape a detector must catch).
    """
    beamline = make_xrd_beamline(
        "new_phase", seed=seed, geometry=GEOMETRY, n_frames=121, ramp_K=(300.0, 420.0)
    )
    onset = beamline.sequence.onset_K
    temperatures = 300.0 + np.arange(n_frames, dtype=float)
    rng = np.random.default_rng([seed, 7])
    frames = []
    for index in range(n_frames):
        changed = change_at is not None and index >= change_at
        # rendered well before the truth's onset, or well past it (the whole minor phase
        # there), with a slow expansion on either side: only the change is a change of shape
        rendered = (onset + 15.0 if changed else onset - 45.0) + 0.25 * index
        frames.append(beamline.model.frame(rendered, rng=rng, exposure_s=5.0))
    return frames, temperatures


def temporal_run(
    frames: Sequence[np.ndarray],
    temperatures: Sequence[float],
    *,
    metadata: dict[str, Any] | None = None,
    nan_at: Sequence[int] = (),
) -> TemporalRun:
    """A run as the RunEngine would publish it, frames inline (``xrd_image``, ``temperature``)."""
    temporal = {
        "geometry": GEOMETRY.as_dict(),
        "settings": SETTINGS.as_dict(),
        "image_field": "xrd_image",
        "temperature_field": "temperature",
    }
    bundle = compose_run(
        metadata={"plan_name": "test_ramp", METADATA_KEY: temporal, **(metadata or {})}
    )
    run = TemporalRun(bundle.start_doc["uid"], [("start", bundle.start_doc)])
    rows, cols = GEOMETRY.shape_px
    descriptor = bundle.compose_descriptor(
        name="primary",
        data_keys={
            "xrd_image": {"source": "SIM:xrd", "dtype": "array", "shape": [rows, cols],
                          "units": "counts"},
            "temperature": {"source": "SIM:T", "dtype": "number", "shape": [], "units": "K"},
        },
    )  # fmt: skip
    run.documents.append(("descriptor", descriptor.descriptor_doc))
    start_time = bundle.start_doc["time"]
    for index, (frame, temperature) in enumerate(zip(frames, temperatures, strict=True)):
        image = np.asarray(frame, dtype=np.float32)
        if index in nan_at:
            image = image.copy()
            image[5, 7] = np.nan
        now = start_time + 1.0 + index
        event = descriptor.compose_event(
            data={"xrd_image": image, "temperature": float(temperature)},
            timestamps={"xrd_image": now, "temperature": now},
            seq_num=index + 1,
            time=now,
        )
        run.documents.append(("event", event))
    run.documents.append(("stop", bundle.compose_stop(exit_status="success")))
    return run


def make_component() -> RestorationComponent:
    return RestorationComponent(Settings(compute_device="cpu"))


# ---------------------------------------------------------------------- Tango-free
def test_options_are_checked():
    assert validate_temporal_options(TemporalOptions(tiled_uri=" http://x ")).tiled_uri == (
        "http://x"
    )
    for options, message in [
        (TemporalOptions(n_bins=8), "n_bins must be between"),
        (TemporalOptions(n_bins=True), "n_bins must be an integer"),
        (TemporalOptions(false_alarm_interval_frames=5.0), ">= 20 frames"),
        (TemporalOptions(false_alarm_interval_frames=math.nan), ">= 20 frames"),
        (TemporalOptions(restore=1), "restore must be a bool"),  # type: ignore[arg-type]
        (TemporalOptions(grace_s=-1.0), "grace_s"),
    ]:
        with pytest.raises((TypeError, ValueError), match=message):
            validate_temporal_options(options)
    values = ChangeValues()
    assert values.changed(ChangeValues()) == []  # NaN equals NaN here
    assert replace(values, score=1.0, alarm_count=2).changed(values) == ["score", "alarm_count"]


@pytest.fixture
def mode(proxy: DocumentProxy) -> Iterator[tuple[TemporalLiveMode, Publisher]]:
    component = make_component()
    live = TemporalLiveMode(component, TemporalOptions(restore=False, grace_s=10.0))
    publisher = publisher_with_garbage(proxy.in_address)
    live.start(proxy.out_address)
    try:
        handshake(publisher, lambda: live.documents)
        yield live, publisher
    finally:
        live.stop()
        publisher.close()
    assert not live.live
    assert component.state == ComponentState.ON, component.status


def test_documents_in_values_and_status_out(mode):
    live, publisher = mode
    seen: list[ChangeValues] = []
    statuses: list[str] = []
    live.add_values_callback(seen.append)
    live.add_status_callback(statuses.append)
    with pytest.raises(TemporalBusy, match="already running"):
        live.start("127.0.0.1:1")

    # a run whose metadata is unusable is not analysed, and says why
    bad = temporal_run([], [], metadata={METADATA_KEY: {"geometry": {"shape_px": "big"}}})
    bad.publish(publisher)
    wait_until(lambda: f"run {bad.uid} is not analysed" in live.status, what="the refusal")
    # a message that does not decode is dropped
    publisher("event", {GARBAGE: True})
    wait_until(lambda: "1 message(s) dropped" in live.status, what="the dropped message")

    frames, temperatures = ramp_frames(40, change_at=CHANGE_AT)
    run = temporal_run(frames, temperatures, nan_at=(3,))
    run.publish(publisher, pause_s=0.01)
    wait_until(lambda: live.values.frames == 40, timeout=60, what="40 frames handled")
    wait_until(lambda: f"run {run.uid} ended (success)" in live.status, what="the run's end")

    values = live.values
    assert values.run_uid == run.uid
    assert values.frames == 40  # handled: the NaN frame is skipped, the run goes on
    assert values.frames_skipped == 1
    assert math.isfinite(values.score)
    assert math.isfinite(values.cusum)
    assert "1 skipped" in live.status
    assert values.alarm, live.status
    assert values.alarm_count >= 1
    # none before the change: frame indices count analysed frames (the NaN one is not)
    first = next(v for v in seen if v.run_uid == run.uid and v.alarm)
    assert first.alarm_frame >= CHANGE_AT - 1
    assert first.alarm_count == 1
    record = json.loads(values.alarm_json)
    assert record["run_uid"] == run.uid
    assert record["frame_index"] == values.alarm_frame
    assert record["temperature_K"] == pytest.approx(values.alarm_temperature_K)
    assert values.alarm_temperature_K >= temperatures[CHANGE_AT]
    assert record["onset_frame_index"] <= values.alarm_frame
    assert record["q_ranges_A"]
    assert all(low < high for low, high in record["q_ranges_A"])
    assert 0.5 <= record["confidence"] <= 1.0
    assert values.alarm_time_s == pytest.approx(record["time_s"])
    assert any("CHANGE DETECTED" in status for status in statuses)
    # listeners saw the frames one by one, and the count rise once per alarm
    counts = [v.frames for v in seen if v.run_uid == run.uid]
    assert counts == sorted(counts)
    assert counts[-1] == 40
    alarms = sorted({v.alarm_count for v in seen})
    assert alarms == list(range(alarms[0], alarms[-1] + 1))

    # a new analysed run starts its own values; the alarm count goes on
    quiet = temporal_run(frames[:3], temperatures[:3])
    quiet.publish(publisher)
    wait_until(lambda: live.values.run_uid == quiet.uid and live.values.frames == 3,
               what="the next run")  # fmt: skip
    assert not live.values.alarm
    assert live.values.alarm_count == values.alarm_count


def test_a_failure_after_start_returned_is_alarm_and_the_mode_starts_again(proxy, monkeypatch):
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 1)  # fail within 2 s
    component = make_component()
    options = TemporalOptions(restore=False, tiled_uri=f"http://127.0.0.1:{free_port()}/api")
    live = TemporalLiveMode(component, options)
    returned = threading.Event()

    def hold_the_connection_until_start_returned(status: str) -> None:
        if "connecting to the tiled server" in status:
            returned.wait(10)

    live.add_status_callback(hold_the_connection_until_start_returned)
    live.start(proxy.out_address, timeout=0.0)
    returned.set()
    wait_until(lambda: not live.live, what="temporal live mode to end")
    assert component.state is ComponentState.ALARM
    assert "temporal live mode from" in component.status
    assert "ended: cannot connect to the tiled server" in component.status
    assert "call StartTemporalLive again" in component.status
    assert live.stop() is False
    live.set_options(replace(options, tiled_uri=""))
    live.start(proxy.out_address)  # usable again
    try:
        assert live.live
    finally:
        live.stop()
    component.reset()
    assert component.state is ComponentState.ON


# ---------------------------------------------------------------------- the device
@pytest.fixture(scope="module")
def device_trl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("temporal-data")
    with nodb_server({"DataRoot": str(root), "ComputeDevice": "cpu"}) as trl:
        yield trl


@pytest.fixture
def device(device_trl: str) -> Iterator[tango.DeviceProxy]:
    proxy = tango.DeviceProxy(device_trl)
    yield proxy
    proxy.StopTemporalLive()
    assert proxy.temporal_address == ""
    assert proxy.state() == ON, proxy.status()


EXPECTED_ATTRIBUTES = {
    # name: (unit, display unit, format, min, max)
    "change_score": ("1", "1", "%.3f", None, None),
    "change_cusum": ("1", "1", "%.3f", None, None),
    "change_frames": ("1", "1", "%d", "0", None),
    "change_frames_skipped": ("1", "1", "%d", "0", None),
    "change_alarm_count": ("1", "1", "%d", "0", None),
    "change_alarm_frame": ("1", "1", "%d", "-1", None),
    "change_alarm_time_s": ("s", "s", "%.3f", None, None),
    "change_alarm_temperature_K": ("K", "K", "%.2f", None, None),
    "xrd_n_bins": ("1", "1", "%d", "32", "16384"),
    "xrd_false_alarm_interval_frames": ("frames", "frames", "%.0f", "20", None),
}


def test_the_device_declares_and_pushes_its_change_attributes(device, proxy):
    for name, (unit, display, fmt, low, high) in EXPECTED_ATTRIBUTES.items():
        config = device.get_attribute_config(name)
        assert (config.unit, config.display_unit, config.format) == (unit, display, fmt), name
        assert config.label not in ("", name), name
        assert len(config.description) > 30, name
        if low is not None:
            assert float(config.min_value) == float(low), name
        if high is not None:
            assert float(config.max_value) == float(high), name
    for name in ("change_alarm", "change_alarm_json", "change_run_uid", "xrd_restore"):
        config = device.get_attribute_config(name)
        assert config.label not in ("", name), name
        assert len(config.description) > 30, name
    assert device.change_alarm_frame == -1
    assert math.isnan(device.change_score)
    assert json.loads(device.change_alarm_json) == {}
    assert device.get_attribute_config("xrd_n_bins").writable == tango.AttrWriteType.READ_WRITE

    recorder = EventRecorder()
    # pushed by the code: subscribing needs no polling (no API_AttributePollingNotStarted)
    ids = [
        device.subscribe_event(name, kind, recorder)
        for name in ("change_score", "change_alarm_count", "change_frames", "change_run_uid")
        for kind in (CHANGE, ARCHIVE)
    ]
    publisher = Publisher(proxy.in_address, serializer=serializer)
    try:
        device.xrd_restore = False
        device.xrd_n_bins = SETTINGS.n_bins
        endpoint = device.StartTemporalLive(proxy.out_address)
        assert device.temporal_address == endpoint == f"tcp://{proxy.out_address}"
        handshake(publisher, lambda: device.temporal_documents)
        frames, temperatures = ramp_frames(12)
        run = temporal_run(frames, temperatures)
        run.publish(publisher, pause_s=0.01)
        wait_until(lambda: device.change_frames == 12, timeout=60, what="12 frames analysed")
        recorder.wait_for(lambda seen: ("change_frames", 12) in seen, timeout=30)
        assert device.change_run_uid == run.uid
        assert f"temporal live mode: subscribed to {endpoint}" in device.status()
        assert device.state() == ON
    finally:
        publisher.close()
        for event_id in ids:
            device.unsubscribe_event(event_id)
    assert recorder.errors == []
    assert (("change_run_uid", run.uid)) in recorder.events
    frames_pushed = recorder.values("change_frames")
    # each value arrives twice (change and archive event), in order
    assert [n for n in frames_pushed if n > 0] == [n for n in range(1, 13) for _ in (0, 1)]
    scores = recorder.values("change_score")
    assert scores[0::2] == pytest.approx(scores[1::2], nan_ok=True)  # change, then archive
    pushed = scores[0::2]
    assert len(pushed) >= 3
    assert pushed[-1] == pytest.approx(device.change_score)
    # pushed when the value changes, not with every frame (the warm-up's scores are all 0)
    assert all(a != b for a, b in itertools.pairwise(pushed))


def test_bad_requests_are_refused_with_asirp_reasons_and_the_device_stays_usable(device, proxy):
    for address, message in [
        ("nonsense", "malformed live address"),
        ("127.0.0.1:99999", "between 1 and 65535"),
    ]:
        with pytest.raises(tango.DevFailed) as caught:
            device.StartTemporalLive(address)
        assert caught.value.args[0].reason == "ASIRP_InvalidInput"
        assert message in caught.value.args[0].desc
    assert device.temporal_address == ""
    device.StopTemporalLive()  # not live: a no-op
    device.StartTemporalLive(proxy.out_address)
    with pytest.raises(tango.DevFailed) as caught:
        device.StartTemporalLive(proxy.out_address)
    assert caught.value.args[0].reason == "ASIRP_LiveActive"
    # settings may change while live: they apply from the next start
    device.xrd_false_alarm_interval_frames = 500.0
    assert device.xrd_false_alarm_interval_frames == 500.0
    with pytest.raises(tango.DevFailed):  # below min_value: Tango refuses it
        device.xrd_n_bins = 4
    assert device.state() == ON
    device.StopTemporalLive()
    device.xrd_false_alarm_interval_frames = 20_000.0
