"""The temporal monitor's state as ophyd signals a plan can read: :class:`ChangeSignals`.

An in-process plan cannot subscribe to a callback, but it can read signals. Feed a
:class:`ChangeSignals` from a :class:`~callbacks.temporal.TemporalMonitor` (it is a listener)
and the plan reacts to a change with ``yield from bps.rd(signals.alarm_count)``::

    signals = ChangeSignals(name="temporal")
    signals.attach(monitor)
    ...
    if (yield from bps.rd(signals.alarm_count)) > 0:
        temperature = yield from bps.rd(signals.alarm_temperature_K)

The signals are read-only for plans (``put`` and ``set`` raise ``ReadOnlyError``); only the
monitor's updates change them, from its worker thread, under a lock so that a reader on
another thread never sees a half-applied update's values change again before the next one.
They describe the run of the latest update: they restart from zero when a new run's first
frame is analysed. Subscriptions (``signal.subscribe``) run in the monitor's worker thread.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device
from ophyd.signal import Signal, SignalRO

__all__ = ["ChangeSignals"]


class _FedSignal(SignalRO):
    """A read-only soft signal that only its :class:`ChangeSignals` writes."""

    def _feed(self, value: Any, timestamp: float) -> None:
        # Signal.put with force=True: SignalRO.put refuses every caller, the device included.
        Signal.put(self, value, timestamp=timestamp, force=True)


class ChangeSignals(Device):
    """Soft signals of the temporal monitor's latest state (read-only for plans).

    Parameters
    ----------
    name : str
        Device name (signal names are ``{name}_{attribute}``).

    Attributes
    ----------
    run_uid : signal of str
        Raw run of the latest update (``""`` before any).
    frames_processed : signal of int
        Frames of that run analysed.
    score, cusum : signal of float
        The latest frame's change score and CUSUM (NaN before any).
    alarm_count : signal of int
        Alarms of that run so far.
    alarm_frame : signal of int
        Frame index of the latest alarm (-1: none yet).
    alarm_onset_frame : signal of int
        Frame index where the latest alarm's change began (-1: none yet).
    alarm_temperature_K, alarm_time_s : signal of float
        Temperature, K, and time since the run's start, s, of the latest alarm (NaN: none).
    """

    run_uid = Cpt(_FedSignal, value="", kind="config")
    frames_processed = Cpt(_FedSignal, value=0, kind="hinted")
    score = Cpt(_FedSignal, value=math.nan, kind="normal")
    cusum = Cpt(_FedSignal, value=math.nan, kind="normal")
    alarm_count = Cpt(_FedSignal, value=0, kind="hinted")
    alarm_frame = Cpt(_FedSignal, value=-1, kind="normal")
    alarm_onset_frame = Cpt(_FedSignal, value=-1, kind="normal")
    alarm_temperature_K = Cpt(_FedSignal, value=math.nan, kind="normal")
    alarm_time_s = Cpt(_FedSignal, value=math.nan, kind="normal")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._feed_lock = threading.Lock()
        self._tokens: dict[int, Any] = {}

    def __call__(self, update: Any) -> None:
        """Apply one :class:`~callbacks.temporal.TemporalUpdate` (the listener entry point)."""
        score = update.score
        alarm = score.alarm
        now = time.time()
        values: dict[str, Any] = {}
        with self._feed_lock:
            if update.run_uid != self.run_uid.get():
                values.update(
                    run_uid=str(update.run_uid),
                    alarm_frame=-1,
                    alarm_onset_frame=-1,
                    alarm_temperature_K=math.nan,
                    alarm_time_s=math.nan,
                )
            values.update(
                frames_processed=int(update.frames_processed),
                score=float(score.score),
                cusum=float(score.cusum),
                alarm_count=int(update.alarm_count),
            )
            if alarm is not None:
                values.update(
                    alarm_frame=int(alarm.frame_index),
                    alarm_onset_frame=int(alarm.onset_frame_index),
                    alarm_temperature_K=math.nan
                    if alarm.temperature_K is None
                    else float(alarm.temperature_K),
                    alarm_time_s=float(alarm.time_s),
                )
            # alarm details before the count: a plan that sees the count rise reads them ready
            order = sorted(values, key=lambda key: key == "alarm_count")
            for key in order:
                getattr(self, key)._feed(values[key], now)

    def attach(self, monitor: Any) -> int:
        """Listen to a :class:`~callbacks.temporal.TemporalMonitor`; return a token."""
        token = monitor.add_listener(self)
        self._tokens[token] = monitor
        return token

    def detach(self, token: int) -> None:
        """Stop listening (the token :meth:`attach` returned)."""
        monitor = self._tokens.pop(token, None)
        if monitor is not None:
            monitor.remove_listener(token)
