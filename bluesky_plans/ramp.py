"""A temperature ramp that reacts to changes detected in its diffraction frames.

:func:`reactive_ramp` steps a temperature controller from ``start_K`` to ``stop_K`` and takes
one reading of the detectors at every step, in one run. After every frame it reads a *change
monitor*: any readable device with an ``alarm_count`` signal that counts the alarms raised on
this run's frames so far. Two monitors exist:

- in-process, :class:`callbacks.change_signals.ChangeSignals` fed by a
  :class:`callbacks.temporal.TemporalMonitor` subscribed to the RunEngine;
- through the control system, the ASIRP Tango device in live mode, read with its ophyd-async
  client (its ``alarm_count`` attribute).

The plan never imports either: it reads signals, so the same plan runs both ways and under the
queue server (devices by name).

When ``alarm_count`` grows, the plan reacts as an experimenter would at a phase change:

1. **hold** the temperature for ``hold_frames`` frames, with the exposure multiplied by
   ``event_exposure_factor`` when an ``exposure`` signal is given (better statistics on the
   new state);
2. **slow** the ramp to ``slow_step_K`` until ``slow_span_K`` past the temperature of the
   alarm (finer temperature steps through the transition; a new alarm extends the span);
3. **resume** the normal step and exposure.

Every decision is recorded in the run itself, as an event of the ``asirp_feedback`` stream
(action, reason, the alarm's frame and temperature), and returned as a list of dicts. The frames
before the event are kept by the monitor's pre-event buffer (the derived run's ``pre_event``
stream); the plan's own frames are all recorded in ``primary``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from ophyd import Component as Cpt
from ophyd import Device, Signal

from bluesky_plans.arguments import positive_number

ACTIONS = ("hold", "slow", "resume")
"""What the plan may decide after an alarm, in the order it happens."""

MAX_FRAMES = 100_000
"""Most frames one ramp may take (a guard against a step that never reaches ``stop_K``)."""


class FeedbackRecord(Device):
    """Soft signals the plan writes before reading them into its ``asirp_feedback`` stream."""

    action = Cpt(Signal, value="", kind="hinted")
    reason = Cpt(Signal, value="")
    frame = Cpt(Signal, value=-1)
    alarm_frame = Cpt(Signal, value=-1)
    alarm_temperature_K = Cpt(Signal, value=-1.0)  # -1: unknown
    step_K = Cpt(Signal, value=-1.0)
    exposure = Cpt(Signal, value=-1.0)


def _read_number(reading: Any, default: float) -> float:
    """The value of ``bps.rd``: a number, or ``default`` when the signal has none."""
    try:
        value = float(reading)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def reactive_ramp(
    detectors: Sequence[Any],
    temperature: Any,
    start_K: float,
    stop_K: float,
    step_K: float,
    *,
    monitor: Any,
    slow_step_K: float | None = None,
    slow_span_K: float | None = None,
    hold_frames: int = 3,
    exposure: Any = None,
    event_exposure_factor: float = 2.0,
    analysis_wait_s: float = 0.0,
    poll_s: float = 0.02,
    md: Mapping[str, Any] | None = None,
):
    """Ramp the temperature, read the detectors at every step, react to detected changes.

    A generator function (the queue server's rule): arguments are checked when the RunEngine
    starts it, before the first message, so a bad argument moves nothing.

    Parameters
    ----------
    detectors : sequence of readable devices
        Read at every step (e.g. ``[xrd]``), with ``temperature``.
    temperature : settable, readable device
        The temperature controller, K.
    start_K, stop_K : float
        First and last temperature, K (``stop_K`` may be below ``start_K``: a cooling ramp).
    step_K : float
        Normal temperature step, K (> 0; its sign follows the ramp).
    monitor : readable device
        Has an ``alarm_count`` signal (alarms raised on this run so far); optional
        ``alarm_frame``, ``alarm_temperature_K`` and ``frames_processed`` signals are read when
        present.
    slow_step_K : float, optional
        Step through a detected event, K (default ``step_K / 4``).
    slow_span_K : float, optional
        How far past the alarm's temperature the ramp stays slow, K (default ``8 * step_K``).
    hold_frames : int
        Frames taken at constant temperature right after an alarm (0: no hold).
    exposure : settable signal, optional
        The detector's exposure time; multiplied by ``event_exposure_factor`` during the hold
        and the slow span, restored afterwards.
    event_exposure_factor : float
        Exposure factor around an event (>= 1).
    analysis_wait_s : float
        After each frame, wait up to this long for the monitor's ``frames_processed`` to reach
        the frames taken, so the decision uses the latest frame (0: never wait; the reaction
        then lags by the analysis latency).
    poll_s : float
        Polling interval of that wait, s.
    md : mapping, optional
        Metadata added to the start document.

    Returns
    -------
    generator
        The plan; its return value is the list of decisions (dicts: ``action``, ``reason``,
        ``frame``, ``alarm_frame``, ``alarm_temperature_K``, ``step_K``, ``temperature_K``).

    Raises
    ------
    ValueError
        Non-finite or non-positive steps, a ramp of zero length or with more than
        :data:`MAX_FRAMES` frames, a factor below 1, a negative hold, a monitor without
        ``alarm_count``.
    """
    for name, value in (("start_K", start_K), ("stop_K", stop_K)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite temperature > 0 K, got {value!r}")
    if start_K == stop_K:
        raise ValueError("start_K and stop_K are equal: nothing to ramp")
    step = positive_number("step_K", step_K)
    slow = positive_number("slow_step_K", step / 4 if slow_step_K is None else slow_step_K)
    span = positive_number("slow_span_K", 8 * step if slow_span_K is None else slow_span_K)
    factor = positive_number("event_exposure_factor", event_exposure_factor)
    if factor < 1:
        raise ValueError(f"event_exposure_factor must be >= 1, got {factor}")
    if isinstance(hold_frames, bool) or not isinstance(hold_frames, int) or hold_frames < 0:
        raise ValueError(f"hold_frames must be an integer >= 0, got {hold_frames!r}")
    if not (isinstance(analysis_wait_s, int | float) and 0 <= analysis_wait_s < 3600):
        raise ValueError(f"analysis_wait_s must be in [0, 3600) s, got {analysis_wait_s!r}")
    poll = positive_number("poll_s", poll_s)
    if abs(stop_K - start_K) / slow > MAX_FRAMES:
        raise ValueError(
            f"the ramp {start_K}-{stop_K} K at {slow} K steps exceeds {MAX_FRAMES} frames"
        )
    if not hasattr(monitor, "alarm_count"):
        raise ValueError("monitor must have an alarm_count signal (ChangeSignals or the device)")
    direction = 1.0 if stop_K > start_K else -1.0
    record = FeedbackRecord(name="asirp_feedback")
    plan_args = {
        "detectors": [getattr(d, "name", repr(d)) for d in detectors],
        "temperature": getattr(temperature, "name", repr(temperature)),
        "start_K": float(start_K),
        "stop_K": float(stop_K),
        "step_K": step,
        "monitor": getattr(monitor, "name", repr(monitor)),
        "slow_step_K": slow,
        "slow_span_K": span,
        "hold_frames": hold_frames,
        "exposure": None if exposure is None else getattr(exposure, "name", repr(exposure)),
        "event_exposure_factor": factor,
        "analysis_wait_s": float(analysis_wait_s),
    }
    start_md = {
        "plan_name": "reactive_ramp",
        "plan_args": plan_args,
        "motors": [getattr(temperature, "name", "temperature")],
        "asirp_feedback": {"kind": "temporal", "actions": list(ACTIONS)},
        **dict(md or {}),
    }
    readables = [*detectors, temperature]

    def past(value: float, limit: float) -> bool:
        return (value - limit) * direction > 1e-9

    def wait_for_analysis(frames_taken: int):
        if analysis_wait_s <= 0 or not hasattr(monitor, "frames_processed"):
            return
        waited = 0.0
        while waited < analysis_wait_s:
            done = _read_number((yield from bps.rd(monitor.frames_processed)), -1)
            if done >= frames_taken:
                return
            yield from bps.sleep(poll)
            waited += poll

    def decide(
        action: str,
        reason: str,
        frame: int,
        alarm: tuple[int, float],
        step_now: float,
        exposure_now: float,
        temperature_now: float,
        decisions: list,
    ):
        # ophyd's Signal.set never completes on NaN (NaN != NaN): -1 stands for "unknown"
        known = [v if math.isfinite(v) else -1.0 for v in (alarm[1], step_now, exposure_now)]
        yield from bps.mv(
            record.action, action, record.reason, reason, record.frame, frame,
            record.alarm_frame, alarm[0], record.alarm_temperature_K, known[0],
            record.step_K, known[1], record.exposure, known[2],
        )  # fmt: skip
        yield from bps.trigger_and_read([record], name="asirp_feedback")
        decisions.append(
            {
                "action": action,
                "reason": reason,
                "frame": frame,
                "alarm_frame": alarm[0],
                "alarm_temperature_K": alarm[1],
                "step_K": step_now,
                "temperature_K": temperature_now,
            }
        )

    decisions: list[dict[str, Any]] = []

    @bpp.run_decorator(md=start_md)
    def inner():
        base_exposure = math.nan
        if exposure is not None:
            base_exposure = _read_number((yield from bps.rd(exposure)), math.nan)
        seen_alarms = _read_number((yield from bps.rd(monitor.alarm_count)), 0)
        target = float(start_K)
        frames = 0
        slow_until: float | None = None
        while not past(target, stop_K) and frames < MAX_FRAMES:
            yield from bps.mv(temperature, target)
            yield from bps.trigger_and_read(readables)
            frames += 1
            yield from wait_for_analysis(frames)
            alarms = _read_number((yield from bps.rd(monitor.alarm_count)), seen_alarms)
            if alarms > seen_alarms:
                seen_alarms = alarms
                alarm_frame = -1
                alarm_temperature = math.nan
                if hasattr(monitor, "alarm_frame"):
                    alarm_frame = int(_read_number((yield from bps.rd(monitor.alarm_frame)), -1))
                if hasattr(monitor, "alarm_temperature_K"):
                    alarm_temperature = _read_number(
                        (yield from bps.rd(monitor.alarm_temperature_K)), math.nan
                    )
                alarm = (alarm_frame, alarm_temperature)
                event_exposure = base_exposure * factor
                if exposure is not None and math.isfinite(base_exposure):
                    yield from bps.mv(exposure, event_exposure)
                reason = (
                    f"alarm {int(alarms)} on frame {alarm_frame} at {alarm_temperature:.2f} K: "
                    "the diffraction pattern changed shape"
                )
                if hold_frames:
                    yield from decide(
                        "hold", f"{reason}; {hold_frames} frames at {target:.2f} K",
                        frames, alarm, 0.0, event_exposure, target, decisions,
                    )  # fmt: skip
                    for _ in range(hold_frames):
                        yield from bps.trigger_and_read(readables)
                        frames += 1
                anchor = alarm_temperature if math.isfinite(alarm_temperature) else target
                slow_until = anchor + direction * span
                yield from decide(
                    "slow", f"{reason}; {slow:g} K steps to {slow_until:.2f} K",
                    frames, alarm, slow, event_exposure, target, decisions,
                )  # fmt: skip
            elif slow_until is not None and past(target + direction * slow, slow_until):
                if exposure is not None and math.isfinite(base_exposure):
                    yield from bps.mv(exposure, base_exposure)
                yield from decide(
                    "resume", f"{span:g} K past the event without a new alarm",
                    frames, (-1, math.nan), step, base_exposure, target, decisions,
                )  # fmt: skip
                slow_until = None
            target += direction * (slow if slow_until is not None else step)
        if exposure is not None and math.isfinite(base_exposure):
            yield from bps.mv(exposure, base_exposure)

    yield from inner()  # run_decorator returns the run uid: the decisions are returned below
    return decisions
