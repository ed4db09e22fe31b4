"""The reacting temperature ramp, with a real RunEngine and soft devices."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis, SynGauss

from bluesky_plans.ramp import reactive_ramp


class FakeMonitor(Device):
    """Raises one alarm the first time the temperature passes ``threshold_K``."""

    alarm_count = Cpt(Signal, value=0)
    alarm_frame = Cpt(Signal, value=-1)
    alarm_temperature_K = Cpt(Signal, value=math.nan)
    frames_processed = Cpt(Signal, value=0)


def _setup(threshold_K: float | None):
    temperature = SynAxis(name="temperature")
    detector = SynGauss("xrd", temperature, "temperature", center=0, Imax=1, sigma=1)
    exposure = Signal(name="exposure", value=1.0)
    monitor = FakeMonitor(name="monitor")
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    frames = {"n": 0}

    def watch(name, doc):
        docs.append((name, doc))
        if name == "start":
            frames["n"] = 0
        if name == "event" and "temperature" in doc["data"]:
            frames["n"] += 1
            monitor.frames_processed.put(frames["n"])
            t = doc["data"]["temperature"]
            if threshold_K is not None and t >= threshold_K and monitor.alarm_count.get() == 0:
                monitor.alarm_frame.put(frames["n"] - 1)
                monitor.alarm_temperature_K.put(t)
                monitor.alarm_count.put(1)

    RE.subscribe(watch)
    return RE, docs, temperature, detector, exposure, monitor


def _temperatures(docs):
    descriptors = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    return np.array(
        [
            d["data"]["temperature"]
            for n, d in docs
            if n == "event" and descriptors[d["descriptor"]] == "primary"
        ]
    )


def test_ramp_is_a_generator_function_with_serialisable_plan_args():
    assert inspect.isgeneratorfunction(reactive_ramp)
    RE, docs, temperature, detector, _exposure, monitor = _setup(None)
    RE(reactive_ramp([detector], temperature, 300, 305, 1.0, monitor=monitor, md={"who": "t"}))
    start = docs[0][1]
    assert start["plan_name"] == "reactive_ramp"
    assert start["plan_args"]["monitor"] == "monitor"
    assert start["who"] == "t"
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)
    np.testing.assert_allclose(_temperatures(docs), [300, 301, 302, 303, 304, 305])


def test_an_alarm_holds_then_slows_the_ramp_then_it_resumes():
    RE, docs, temperature, detector, exposure, monitor = _setup(310.0)
    result = RE(
        reactive_ramp(
            [detector], temperature, 300, 340, 2.0, monitor=monitor, slow_step_K=0.5,
            slow_span_K=4.0, hold_frames=2, exposure=exposure, event_exposure_factor=3.0,
            analysis_wait_s=1.0,
        )
    )  # fmt: skip
    temps = _temperatures(docs)
    steps = np.diff(temps)
    alarm_at = int(np.argmax(temps >= 310.0))
    assert np.all(steps[:alarm_at] == pytest.approx(2.0))
    # the hold: equal temperatures right after the alarm frame
    np.testing.assert_allclose(temps[alarm_at : alarm_at + 3], 310.0)
    # then 0.5 K steps up to 314 K, then 2 K again
    slow = steps[alarm_at + 2 :]
    assert np.sum(np.isclose(slow, 0.5)) == 8
    assert np.isclose(slow[-1], 2.0)
    assert temps[-1] == pytest.approx(340.0, abs=2.0)
    feedback = [d for n, d in docs if n == "event" and "asirp_feedback_action" in d["data"]]
    actions = [d["data"]["asirp_feedback_action"] for d in feedback]
    assert actions == ["hold", "slow", "resume"]
    assert "310.00 K" in feedback[0]["data"]["asirp_feedback_reason"]
    assert feedback[0]["data"]["asirp_feedback_exposure"] == pytest.approx(3.0)
    assert exposure.get() == pytest.approx(1.0)  # restored after the event
    decisions = result.plan_result
    assert [d["action"] for d in decisions] == actions
    assert decisions[0]["alarm_temperature_K"] == pytest.approx(310.0)


def test_a_cooling_ramp_steps_down():
    RE, docs, temperature, detector, _exposure, monitor = _setup(None)
    RE(reactive_ramp([detector], temperature, 310, 300, 5.0, monitor=monitor))
    np.testing.assert_allclose(_temperatures(docs), [310, 305, 300])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_K": 0.0}, "step_K"),
        ({"step_K": math.nan}, "step_K"),
        ({"stop_K": 300.0}, "equal"),
        ({"event_exposure_factor": 0.5}, ">= 1"),
        ({"hold_frames": -1}, "hold_frames"),
        ({"slow_step_K": 1e-9}, "exceeds"),
        ({"monitor": object()}, "alarm_count"),
    ],
)
def test_bad_arguments_raise_before_anything_moves(kwargs, message):
    _RE, _docs, temperature, detector, _exposure, monitor = _setup(None)
    args = {"start_K": 300.0, "stop_K": 310.0, "step_K": 1.0, "monitor": monitor, **kwargs}
    plan = reactive_ramp([detector], temperature, **args)
    with pytest.raises(ValueError, match=message):
        next(plan)
    assert temperature.readback.get() == 0
