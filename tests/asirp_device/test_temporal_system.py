"""System test of temporal feedback, with real processes on loopback.

- ``bluesky-0MQ-proxy`` in a child process;
- the ASIRP device server in another child process, in temporal live mode from the start
  (``TemporalLiveAddress`` = the proxy's output), reading external frames inside its
  ``DataRoot``;
- in this process, a RunEngine publishing to the proxy (msgpack) a
  :func:`bluesky_plans.ramp.reactive_ramp` over the simulated powder beamline (a hidden
  cubic-to-tetragonal splitting inside the ramp; 256 x 256 px frames written as areaDetector
  HDF5 files into the data root), whose change monitor is the device itself, read through
  :class:`asirp_device.client.ASIRPChangeClient`.

Nothing is faked: the frames go through 0MQ and the files, the device integrates, restores and
scores them, and the plan reacts to what it reads over Tango.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tango
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher
from ophyd_async.core import init_devices

from asirp.diffraction import PatternIntegrator, TemporalSettings, fit_instrument_profile
from asirp_device.client import ASIRPChangeClient
from bluesky_plans.ramp import reactive_ramp
from callbacks.serialization import serializer
from sim.diffraction import small_geometry
from sim.xrd_devices import make_xrd_beamline
from tests.asirp_device._scans import handshake, wait_until
from tests.asirp_device.conftest import DocumentProxy, nodb_server

START_K, STOP_K, STEP_K = 300.0, 360.0, 1.0
SLOW_STEP_K, SLOW_SPAN_K, HOLD_FRAMES = 0.25, 2.0, 2
SEED = 0  # the truth's onset is near 324.6 K: 24 frames before it


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xrd-frames")


@pytest.fixture(scope="module")
def device_trl(proxy: DocumentProxy, data_root: Path) -> Iterator[str]:
    properties = {
        "DataRoot": str(data_root),
        "ComputeDevice": "cpu",
        "TemporalLiveAddress": proxy.out_address,
    }
    with nodb_server(properties) as trl:
        yield trl


def temporal_metadata(beamline) -> dict:
    """``asirp_temporal`` of the ramp: geometry, settings, the profile fitted on CeO2."""
    geometry = beamline.geometry
    settings = TemporalSettings(restore=True)
    calibrant = beamline.calibrant_frame(np.random.default_rng(11), exposure_s=10.0)
    profile = fit_instrument_profile(PatternIntegrator(geometry, n_bins=settings.n_bins)(calibrant))
    return {
        "geometry": geometry.as_dict(),
        "settings": settings.as_dict(),
        "profile": profile.as_dict(),
        "image_field": "xrd_image",
        "temperature_field": "xrd_temperature",
    }


def stream(documents: list[tuple[str, dict]], name: str) -> list[dict]:
    """The data of the events of stream ``name``, in order."""
    descriptors = {d["uid"] for n, d in documents if n == "descriptor" and d["name"] == name}
    return [d["data"] for n, d in documents if n == "event" and d["descriptor"] in descriptors]


def test_the_device_detects_the_transition_and_the_ramp_slows_down(
    proxy: DocumentProxy, device_trl: str, data_root: Path
):
    device = tango.DeviceProxy(device_trl)
    assert device.temporal_address == f"tcp://{proxy.out_address}"
    assert device.state() == tango.DevState.ON, device.status()

    beamline = make_xrd_beamline(
        "splitting",
        seed=SEED,
        geometry=small_geometry(factor=4),  # 256 x 256 px
        inline=False,
        write_root=data_root,
        ramp_K=(START_K, STOP_K),
        n_frames=round((STOP_K - START_K) / STEP_K) + 1,
    )
    onset_K = beamline.sequence.onset_K  # the hidden truth: only to judge the outcome
    assert START_K + 20 * STEP_K < onset_K < STOP_K - 10 * STEP_K

    engine = RunEngine({}, call_returns_result=True)
    publisher = Publisher(proxy.in_address, serializer=serializer)
    documents: list[tuple[str, dict]] = []
    engine.subscribe(lambda name, doc: documents.append((name, doc)))
    engine.subscribe(publisher)
    try:
        handshake(publisher, lambda: device.temporal_documents)
        with init_devices():
            change = ASIRPChangeClient(device_trl, name="change")
        plan = reactive_ramp(
            [beamline.detector],
            beamline.temperature,
            START_K,
            STOP_K,
            STEP_K,
            monitor=change,
            slow_step_K=SLOW_STEP_K,
            slow_span_K=SLOW_SPAN_K,
            hold_frames=HOLD_FRAMES,
            exposure=beamline.detector.exposure,
            analysis_wait_s=20.0,  # the device analyses each frame before the plan decides
            md={"asirp_temporal": temporal_metadata(beamline)},
        )
        result = engine(plan)
    finally:
        publisher.close()
    (run_uid,) = result.run_start_uids

    # the device analysed the ramp's frames (read from the data root) and raised an alarm
    primary = stream(documents, "primary")
    wait_until(lambda: device.change_frames == len(primary), what="every frame analysed")
    assert device.change_run_uid == run_uid
    assert device.change_alarm
    assert device.change_alarm_count >= 1
    assert device.state() == tango.DevState.ON, device.status()  # an alarm is not a failure
    status = device.status()
    assert "CHANGE DETECTED" in status or "ended (success)" in status, status
    latest = json.loads(device.change_alarm_json)
    assert latest["run_uid"] == run_uid
    assert latest["q_ranges_A"]

    # the plan saw it (its asirp_feedback stream): hold, then slow; the first alarm came
    # after the true onset, and soon
    feedback = stream(documents, "asirp_feedback")
    actions = [event["asirp_feedback_action"] for event in feedback]
    assert actions[:2] == ["hold", "slow"], actions
    first = feedback[0]
    alarm_K = first["asirp_feedback_alarm_temperature_K"]
    assert onset_K <= alarm_K <= onset_K + 6.0, (onset_K, feedback)
    assert first["asirp_feedback_alarm_frame"] >= 0

    # the recorded temperatures: regular steps until the alarm, smaller ones after it
    setpoints = np.array([event["temperature_setpoint"] for event in primary])
    steps = np.diff(setpoints)
    alarm_step = first["asirp_feedback_frame"] - 1  # after the frame the plan reacted on
    before, after = steps[:alarm_step], steps[alarm_step : alarm_step + 8]
    np.testing.assert_allclose(before, STEP_K)
    np.testing.assert_allclose(after[:HOLD_FRAMES], 0.0)  # the hold
    assert np.max(after) < STEP_K
    assert np.mean(after) < 0.5 * np.mean(before)
    assert np.any(np.isclose(after, SLOW_STEP_K))
    # the exposure was raised around the event
    assert first["asirp_feedback_exposure"] > beamline.detector.exposure.get()
