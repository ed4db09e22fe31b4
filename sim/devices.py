"""ophyd (v1) devices of the simulated µ-XRF beamline: thin shells over the forward model.

Time is simulated: a :class:`SimClock` shared by every device advances by the motion time of
each move (distance / velocity + acceleration and settling), by each exposure and by each fly
line, and never sleeps. Every Status is returned finished, so a scan of hours of beamline time
runs in seconds, deterministically. Moves issued together (``bps.mv(y, a, x, b)``) overlap:
the clock only waits for the slowest when the next exposure starts.

Devices
-------
:class:`SimMotor`
    Sample-stage axis in µm with a velocity (``readback`` is named after the motor).
:class:`SimXRFDetector`
    Multi-element fluorescence detector: one hinted count signal per ROI
    (``<name>_<element>``, e.g. ``xrf_Cu``), the summed spectrum (``<name>_spectrum``, read
    only when spectra are enabled), ROI counts per detector element, live time, dead time and
    a ``dwell_time`` setting.
:class:`SimI0`
    Incident-flux monitor (reading ``<name>``) and the ring current.
:class:`SimFlyer`
    Fly-scan flyer: ``prepare(FlyLine)`` then ``kickoff``/``complete``/``collect_pages``
    (bluesky's flyer protocol); each flown line becomes one event page.

The XRF detector and I0 count the same gate: triggered in the same step they report the same
time window (as a scaler and an XRF detector driven by one hardware trigger).

One job, one module (about 650 lines): the devices share the clock and the exposure gate, and
splitting them would scatter one timing model over several files.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd import DynamicDeviceComponent as DDC
from ophyd.status import DeviceStatus
from ophyd.utils import LimitError

from sim.model import Measurement, XRFForwardModel


class SimClock:
    """Simulated time in seconds, shared by the devices of one beamline.

    Parameters
    ----------
    start_s : float
        Time at creation, s (also the origin of the ring-current sawtooth).
    """

    def __init__(self, start_s: float = 0.0) -> None:
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be finite, got {start_s!r}")
        self._now = float(start_s)
        self._busy_until = float(start_s)
        self.moves = 0
        """Number of motions scheduled so far (an exposure after a move is a new point)."""

    @property
    def now(self) -> float:
        """Current simulated time, s."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Let ``seconds`` pass (after any pending motion); return the new time."""
        if not seconds >= 0:
            raise ValueError(f"cannot advance the clock by {seconds!r} s")
        self.sync()
        self._now += float(seconds)
        self._busy_until = max(self._busy_until, self._now)
        return self._now

    def schedule(self, seconds: float) -> float:
        """Start an action of ``seconds`` now (it overlaps other pending ones); return its end."""
        if not seconds >= 0:
            raise ValueError(f"cannot schedule an action of {seconds!r} s")
        self.moves += 1
        end = self._now + float(seconds)
        self._busy_until = max(self._busy_until, end)
        return end

    def sync(self) -> float:
        """Wait for every pending action; return the time."""
        self._now = max(self._now, self._busy_until)
        return self._now


def _finished(device: Device) -> DeviceStatus:
    status = DeviceStatus(device)
    status.set_finished()
    return status


LENGTH_UNITS = "um"
"""Units of stage positions in data keys (the string the project's raw files and NeXus use)."""


def _annotated(
    described: dict[str, dict[str, Any]], extras: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Merge extra properties (``units``, ``dims``, ...) into the data keys that exist.

    Event-model data keys accept properties beyond the schema's (``additionalProperties``);
    readers such as :mod:`callbacks.tiled_scan` find ROI channel ranges and the energy
    calibration there.
    """
    for key, extra in extras.items():
        if key in described:
            described[key].update(extra)
    return described


class MotorFault(RuntimeError):
    """A simulated motor fault (:attr:`SimMotor.fault_zone_um`)."""


class SimMotor(Device):
    """A sample-stage axis in µm whose moves take simulated time.

    Parameters
    ----------
    clock : SimClock
        Shared clock.
    limits : (float, float)
        Travel limits, µm.
    velocity_um_s : float
        Speed, µm/s.
    acceleration_time_s : float
        Time to reach the speed (added once per move), s.
    settle_time_s : float
        Settling after each move, s.
    init_pos : float
        Starting position, µm.
    name : str
        Device name (also the name of its reading).
    """

    readback = Cpt(Signal, value=0.0, kind="hinted")
    setpoint = Cpt(Signal, value=0.0, kind="normal")
    velocity = Cpt(Signal, value=1000.0, kind="config")
    acceleration_time = Cpt(Signal, value=0.02, kind="config")
    settle_time = Cpt(Signal, value=0.005, kind="config")

    units = LENGTH_UNITS
    """Units of positions in data keys (a subclass for another axis sets its own)."""
    unit_text = "µm"
    """The units as messages spell them."""

    def __init__(
        self,
        *,
        clock: SimClock,
        limits: tuple[float, float],
        velocity_um_s: float = 1000.0,
        acceleration_time_s: float = 0.02,
        settle_time_s: float = 0.005,
        init_pos: float = 0.0,
        name: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.readback.name = self.name
        self._clock = clock
        low, high = (float(v) for v in limits)
        if not low < high:
            raise ValueError(f"limits must be (low, high) with low < high, got {limits!r}")
        self._limits = (low, high)
        self.egu = self.units
        if not velocity_um_s > 0:
            raise ValueError(f"velocity_um_s must be > 0, got {velocity_um_s!r}")
        if not (acceleration_time_s >= 0 and settle_time_s >= 0):
            raise ValueError("acceleration_time_s and settle_time_s must be >= 0 s")
        for signal, value in (
            (self.velocity, velocity_um_s),
            (self.acceleration_time, acceleration_time_s),
            (self.settle_time, settle_time_s),
        ):
            signal.put(float(value), timestamp=clock.now)
        self._check(init_pos)
        self.readback.put(float(init_pos), timestamp=clock.now)
        self.setpoint.put(float(init_pos), timestamp=clock.now)

    @property
    def limits(self) -> tuple[float, float]:
        """Travel limits, µm."""
        return self._limits

    @property
    def low_limit(self) -> float:
        """Lower travel limit, µm."""
        return self._limits[0]

    @property
    def high_limit(self) -> float:
        """Upper travel limit, µm."""
        return self._limits[1]

    @property
    def position(self) -> float:
        """Current position, µm."""
        return float(self.readback.get())

    def check_value(self, value: Any) -> float:
        """``value`` as a position; TypeError, ValueError (NaN/Inf) or LimitError."""
        unit = self.unit_text
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise TypeError(f"{self.name}: position must be a number of {unit}, got {value!r}")
        target = float(value)
        if not math.isfinite(target):
            raise ValueError(f"{self.name}: position must be finite, got {value!r}")
        if not self._limits[0] <= target <= self._limits[1]:
            raise LimitError(
                f"{self.name}: {target} {unit} is outside the limits {self._limits[0]}..."
                f"{self._limits[1]} {unit}"
            )
        return target

    _check = check_value

    def move_time(self, distance_um: float) -> float:
        """Time a move of ``distance_um`` takes (speed, acceleration, settling), s."""
        if distance_um == 0:
            return 0.0
        velocity = float(self.velocity.get())
        if not velocity > 0:
            raise ValueError(f"{self.name}: velocity must be > 0 µm/s, got {velocity}")
        return (
            abs(distance_um) / velocity
            + float(self.acceleration_time.get())
            + float(self.settle_time.get())
        )

    fault_zone_um: tuple[float, float] | None = None
    """A simulated fault: a move whose target lies in ``[low, high]`` µm stalls, and its
    Status fails with :class:`MotorFault` (the axis stays where it was). ``None``: no fault."""

    def set(self, value: float, **kwargs: Any) -> DeviceStatus:
        """Move to ``value`` µm; the clock is charged the move time. Returns a done Status.

        A target inside :attr:`fault_zone_um` returns a failed Status instead.
        """
        target = self._check(value)
        zone = self.fault_zone_um
        if zone is not None and zone[0] <= target <= zone[1]:
            status = DeviceStatus(self)
            status.set_exception(
                MotorFault(f"{self.name}: simulated stall moving to {target} {self.unit_text}")
            )
            return status
        end = self._clock.schedule(self.move_time(target - self.position))
        self.setpoint.put(target, timestamp=self._clock.now)
        self.readback.put(target, timestamp=end)
        return _finished(self)

    def move(self, value: float, **kwargs: Any) -> DeviceStatus:
        """Alias of :meth:`set`."""
        return self.set(value)

    def _place(self, value: float, timestamp: float) -> None:
        """Put the axis at ``value`` µm without charging time (the flyer moved it)."""
        self.setpoint.put(float(value), timestamp=timestamp)
        self.readback.put(float(value), timestamp=timestamp)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys of the readings: readback and setpoint in :attr:`units` (``"um"``)."""
        units = {"units": self.units}
        return _annotated(
            super().describe(), {self.readback.name: units, self.setpoint.name: units}
        )

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """Data keys of the configuration, with units (µm/s, s)."""
        return _annotated(
            super().describe_configuration(),
            {
                self.velocity.name: {"units": f"{self.units}/s"},
                self.acceleration_time.name: {"units": "s"},
                self.settle_time.name: {"units": "s"},
            },
        )

    def stop(self, *, success: bool = False) -> None:
        """Stop (moves are instantaneous in simulated time; nothing to do)."""


@dataclass
class LogEntry:
    """Points counted in one step exposure or one fly line (all arrays ``(n,)``)."""

    y_um: np.ndarray
    x_um: np.ndarray
    start_s: np.ndarray
    dwell_s: np.ndarray
    measurement: Measurement
    fly: bool


@dataclass
class _Window:
    start_s: float
    dwell_s: float
    moves: int
    end_s: float
    result: Measurement
    consumers: set[int] = field(default_factory=set)


class ExposureGate:
    """Counting windows shared by the detectors triggered at one point.

    Parameters
    ----------
    model : XRFForwardModel
        Forward model.
    clock : SimClock
        Shared clock.
    position : callable
        Returns the stage position ``(y_um, x_um)`` now.
    rng : numpy.random.Generator
        Random generator of the counts.
    overhead_s : float
        Dead time of each exposure (readout, trigger latency), s.
    """

    def __init__(
        self,
        model: XRFForwardModel,
        clock: SimClock,
        position: Callable[[], tuple[float, float]],
        rng: np.random.Generator,
        *,
        overhead_s: float = 0.002,
    ) -> None:
        self.model = model
        self.clock = clock
        self.position = position
        self.rng = rng
        self.overhead_s = float(overhead_s)
        self.spectra = False
        self._last: _Window | None = None
        self.log: list[LogEntry] = []
        """Every counting window so far (step points and fly lines), in order."""

    def expose(self, consumer: object, dwell_s: float) -> _Window:
        """The counting window of ``consumer`` for one point.

        It is the window just counted at this point if ``consumer`` has not used it yet (the
        detectors of one step share it), otherwise a new one (the clock moves on by the dwell
        and the readout overhead).
        """
        if not (isinstance(dwell_s, int | float) and math.isfinite(dwell_s) and dwell_s > 0):
            raise ValueError(f"dwell time must be > 0 s, got {dwell_s!r}")
        now = self.clock.sync()
        last = self._last
        if (
            last is not None
            and last.end_s == now
            and last.moves == self.clock.moves
            and last.dwell_s == dwell_s
            and id(consumer) not in last.consumers
        ):
            last.consumers.add(id(consumer))
            return last
        y, x = self.position()
        amounts = self.model.amounts_at(np.array([y]), np.array([x]))
        result = self.model.measure(amounts, now, dwell_s, self.rng, spectra=self.spectra)
        self.log.append(
            LogEntry(
                np.array([y]),
                np.array([x]),
                np.array([now]),
                np.array([float(dwell_s)]),
                result,
                fly=False,
            )
        )
        end = self.clock.advance(dwell_s + self.overhead_s)
        self._last = _Window(now, float(dwell_s), self.clock.moves, end, result, {id(consumer)})
        return self._last


def _roi_defn(names: tuple[str, ...]) -> OrderedDict:
    return OrderedDict((n, (Signal, None, {"kind": "hinted", "value": 0})) for n in names)


class SimXRFDetector(Device):
    """Multi-element XRF detector on the simulated beamline (use :func:`make_xrf_detector`).

    Readings: ``<name>_<roi>`` ROI counts summed over the detector elements (hinted),
    ``<name>_det_roi_counts`` ``(n_det, n_roi)`` counts per detector element,
    ``<name>_live_time`` ``(n_det,)`` s, ``<name>_dead_time`` (fraction, mean over the
    elements) and, when spectra are enabled, ``<name>_spectrum`` ``(n_channels,)``.
    Configuration: ``dwell_time`` (s), energy calibration and beam energy.
    """

    roi_names: tuple[str, ...] = ()

    dwell_time = Cpt(Signal, value=0.1, kind="config")
    calibration_offset_kev = Cpt(Signal, value=0.0, kind="config")
    calibration_gain_kev = Cpt(Signal, value=0.01, kind="config")
    incident_energy_kev = Cpt(Signal, value=13.0, kind="config")
    det_roi_counts = Cpt(Signal, value=np.zeros((1, 1), dtype=np.int64), kind="normal")
    live_time = Cpt(Signal, value=np.zeros(1), kind="normal")
    dead_time = Cpt(Signal, value=0.0, kind="normal")
    spectrum = Cpt(Signal, value=np.zeros(1, dtype=np.int64), kind="omitted")

    def __init__(self, *, gate: ExposureGate, dwell_s: float = 0.1, name: str, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self._gate = gate
        model = gate.model
        det = model.detector
        now = gate.clock.now
        for roi in self.roi_names:
            getattr(self.roi, roi).name = f"{self.name}_{roi}"
        self.dwell_time.put(float(dwell_s), timestamp=now)
        self.calibration_offset_kev.put(det.calibration.offset_kev, timestamp=now)
        self.calibration_gain_kev.put(det.calibration.gain_kev_per_channel, timestamp=now)
        self.incident_energy_kev.put(model.spectral.incident_energy_kev, timestamp=now)
        n_det, n_roi = det.n_elements, len(self.roi_names)
        self.det_roi_counts.put(np.zeros((n_det, n_roi), dtype=np.int64), timestamp=now)
        self.live_time.put(np.zeros(n_det), timestamp=now)
        self.spectrum.put(np.zeros(det.n_channels, dtype=np.int64), timestamp=now)
        self.last_window: _Window | None = None

    @property
    def rois(self) -> dict[str, Any]:
        """ROI name -> :class:`asirp.xrf.lines.ChannelROI` of each count signal."""
        return dict(zip(self._gate.model.roi_names, self._gate.model.rois, strict=True))

    @property
    def record_spectra(self) -> bool:
        """Whether full spectra are drawn and read (``<name>_spectrum``)."""
        return self._gate.spectra

    @record_spectra.setter
    def record_spectra(self, value: bool) -> None:
        self._gate.spectra = bool(value)
        self.spectrum.kind = Kind.normal if value else Kind.omitted

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys of the readings, with units, dimension names, ROIs and calibration.

        Each ROI count (``<name>_<roi>``) carries its channel range (``roi``: name,
        first and last channel, line energy in keV), the energy calibration
        (``calibration``) and the detector's channel count (``detector_channels``), so that
        a reader of the run alone (a fly scan records no detector configuration) can rebuild
        the ROIs; ``<name>_det_roi_counts`` names its axes ``detector_element`` x ``roi``
        and lists its ROIs in column order (``rois``).
        """
        det = self._gate.model.detector
        calibration = det.calibration.as_dict()
        rois = self.rois
        extras: dict[str, dict[str, Any]] = {
            self.det_roi_counts.name: {
                "units": "counts",
                "dtype_numpy": "<i8",
                "dims": ["detector_element", "roi"],
                "rois": [rois[r].as_dict() for r in self.roi_names],
            },
            self.live_time.name: {
                "units": "s",
                "dtype_numpy": "<f8",
                "dims": ["detector_element"],
            },
            self.dead_time.name: {"units": "fraction"},
            self.spectrum.name: {
                "units": "counts",
                "dtype_numpy": "<i8",
                "dims": ["channel"],
                "calibration": calibration,
            },
        }
        for roi in self.roi_names:
            extras[getattr(self.roi, roi).name] = {
                "units": "counts",
                "roi": rois[roi].as_dict(),
                "calibration": calibration,
                "detector_channels": det.n_channels,
            }
        return _annotated(super().describe(), extras)

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """Data keys of the configuration, with units (s, keV, keV per channel)."""
        return _annotated(
            super().describe_configuration(),
            {
                self.dwell_time.name: {"units": "s"},
                self.calibration_offset_kev.name: {"units": "keV"},
                self.calibration_gain_kev.name: {"units": "keV/channel"},
                self.incident_energy_kev.name: {"units": "keV"},
            },
        )

    def trigger(self) -> DeviceStatus:
        """Count one dwell at the current stage position; returns a done Status."""
        window = self._gate.expose(self, float(self.dwell_time.get()))
        self.last_window = window
        result, stamp = window.result, window.end_s
        totals = result.roi_totals[0]
        for k, roi in enumerate(self.roi_names):
            getattr(self.roi, roi).put(int(totals[k]), timestamp=stamp)
        self.det_roi_counts.put(result.roi_counts[0].copy(), timestamp=stamp)
        self.live_time.put(result.live_time_s[0].copy(), timestamp=stamp)
        self.dead_time.put(float(result.dead_time[0]), timestamp=stamp)
        if result.spectra is not None:
            self.spectrum.put(result.spectra[0].sum(axis=0, dtype=np.int64), timestamp=stamp)
        return _finished(self)


def make_xrf_detector(gate: ExposureGate, *, name: str = "xrf", dwell_s: float = 0.1):
    """Build the XRF detector with one count signal per ROI of the gate's model.

    Parameters
    ----------
    gate : ExposureGate
        Shared counting gate.
    name : str
        Device name (prefix of its readings).
    dwell_s : float
        Initial dwell time, s.

    Returns
    -------
    SimXRFDetector
    """
    names = gate.model.roi_names
    cls = type(
        "SimXRFDetector_" + "_".join(names),
        (SimXRFDetector,),
        {
            "roi_names": names,
            "roi": DDC(_roi_defn(names), kind="hinted"),
            "__module__": __name__,
        },
    )
    return cls(gate=gate, dwell_s=dwell_s, name=name)


class SimI0(Device):
    """Incident-flux monitor (ion chamber and scaler) counting the XRF detector's gate.

    Readings: ``<name>`` monitor counts (hinted) and ``<name>_ring_current`` (mA, mean over the
    window).
    """

    counts = Cpt(Signal, value=0.0, kind="hinted")
    ring_current = Cpt(Signal, value=0.0, kind="normal")

    def __init__(
        self, *, gate: ExposureGate, dwell: Callable[[], float], name: str, **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.counts.name = self.name
        self._gate = gate
        self._dwell = dwell

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys of the readings, with units (counts, mA)."""
        return _annotated(
            super().describe(),
            {self.counts.name: {"units": "counts"}, self.ring_current.name: {"units": "mA"}},
        )

    def trigger(self) -> DeviceStatus:
        """Count the gate's window (the XRF dwell time); returns a done Status."""
        window = self._gate.expose(self, float(self._dwell()))
        self.counts.put(float(window.result.i0[0]), timestamp=window.end_s)
        self.ring_current.put(float(window.result.ring_current_ma[0]), timestamp=window.end_s)
        return _finished(self)


@dataclass(frozen=True)
class FlyLine:
    """One fly-scan line: the stage moves along x at constant speed, counting every period.

    Attributes
    ----------
    y_um : float
        Row, µm.
    x_start_um, x_stop_um : float
        Ends of the counted stretch, µm (either direction).
    speed_um_s : float
        Stage speed, µm/s.
    period_s : float
        Counting period (one bin), s.
    """

    y_um: float
    x_start_um: float
    x_stop_um: float
    speed_um_s: float
    period_s: float

    @property
    def bin_um(self) -> float:
        """Distance travelled per period, µm."""
        return self.speed_um_s * self.period_s

    @property
    def n_bins(self) -> int:
        """Number of bins (periods) in the line."""
        return max(1, round(abs(self.x_stop_um - self.x_start_um) / self.bin_um))


class SimFlyer(Device):
    """Fly-scan flyer over the stage motors, the XRF model and I0.

    ``prepare(FlyLine)`` moves to the start of the line (charging the motion time);
    ``kickoff()`` starts it; ``complete()`` flies it (the clock advances by the run-up plus
    ``n_bins * period``) and stores its bins; ``collect_pages()`` yields one event page per
    line flown since the last collect, in stream ``stream_name``, with the same reading names
    as a step scan (motor names, ``<xrf>_<roi>``, ``<xrf>_dead_time``, ``<i0>``).

    Parameters
    ----------
    x, y : SimMotor
        Fast and slow stage axes.
    xrf : SimXRFDetector
        Detector whose reading names and spectra setting are used.
    i0 : SimI0
        Monitor whose reading name is used.
    gate : ExposureGate
        Shared model, clock and random generator.
    max_speed_um_s : float
        Fastest allowed stage speed, µm/s.
    min_period_s : float
        Shortest allowed counting period, s.
    stream_name : str
        Event stream of the collected pages.
    name : str
        Device name.
    """

    speed = Cpt(Signal, value=1000.0, kind="config")
    period = Cpt(Signal, value=0.01, kind="config")

    def __init__(
        self,
        *,
        x: SimMotor,
        y: SimMotor,
        xrf: SimXRFDetector,
        i0: SimI0,
        gate: ExposureGate,
        max_speed_um_s: float = 5000.0,
        min_period_s: float = 0.01,
        substeps: int = 5,
        stream_name: str = "primary",
        name: str = "flyer",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self._x, self._y, self._xrf, self._i0, self._gate = x, y, xrf, i0, gate
        self.max_speed_um_s = float(max_speed_um_s)
        self.min_period_s = float(min_period_s)
        self.substeps = int(substeps)
        self.stream_name = stream_name
        self._line: FlyLine | None = None
        self._kicked = False
        self._pages: list[dict[str, Any]] = []
        self.collected: list[tuple[FlyLine, Measurement]] = []
        """Every line collected so far with its :class:`~sim.model.Measurement`."""

    def _keys(self) -> list[str]:
        keys = [self._x.name, self._y.name]
        keys += [getattr(self._xrf.roi, r).name for r in self._xrf.roi_names]
        keys += [self._xrf.dead_time.name, self._i0.name, self._i0.ring_current.name]
        if self._gate.spectra:
            keys.append(self._xrf.spectrum.name)
        return keys

    def describe_collect(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Data keys of the collected stream: ``{stream_name: {key: data key}}``."""
        described: dict[str, dict[str, Any]] = {}
        for device in (self._x, self._y, self._xrf, self._i0):
            described.update(device.describe())
        return {self.stream_name: {key: dict(described[key]) for key in self._keys()}}

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """Data keys of the configuration, with units (µm/s, s)."""
        return _annotated(
            super().describe_configuration(),
            {self.speed.name: {"units": f"{LENGTH_UNITS}/s"}, self.period.name: {"units": "s"}},
        )

    def prepare(self, value: FlyLine) -> DeviceStatus:
        """Check a line and move to its start (y and x); returns a done Status."""
        if not isinstance(value, FlyLine):
            raise TypeError(f"{self.name}.prepare needs a FlyLine, got {type(value).__name__}")
        line = value
        for name in ("y_um", "x_start_um", "x_stop_um", "speed_um_s", "period_s"):
            if not math.isfinite(getattr(line, name)):
                raise ValueError(f"{name} must be finite, got {getattr(line, name)!r}")
        if not 0 < line.speed_um_s <= self.max_speed_um_s:
            raise ValueError(
                f"speed_um_s must be in (0, {self.max_speed_um_s}] µm/s, got {line.speed_um_s}"
            )
        if line.period_s < self.min_period_s:
            raise ValueError(f"period_s must be >= {self.min_period_s} s, got {line.period_s}")
        if line.x_start_um == line.x_stop_um:
            raise ValueError("x_start_um and x_stop_um must differ")
        self._x._check(line.x_stop_um)
        self._y.set(line.y_um)
        self._x.set(line.x_start_um)
        self.speed.put(line.speed_um_s, timestamp=self._gate.clock.now)
        self.period.put(line.period_s, timestamp=self._gate.clock.now)
        self._line = line
        return _finished(self)

    def kickoff(self) -> DeviceStatus:
        """Start the prepared line; returns a done Status."""
        if self._line is None:
            raise RuntimeError(f"{self.name}: prepare(FlyLine(...)) before kickoff()")
        self._kicked = True
        return _finished(self)

    def complete(self) -> DeviceStatus:
        """Fly the line (simulated time) and keep its bins for :meth:`collect_pages`."""
        if not self._kicked or self._line is None:
            raise RuntimeError(f"{self.name}: kickoff() before complete()")
        line, gate, clock = self._line, self._gate, self._gate.clock
        clock.sync()
        run_up = float(self._x.acceleration_time.get())
        clock.advance(run_up)
        n = line.n_bins
        direction = 1.0 if line.x_stop_um > line.x_start_um else -1.0
        step = direction * line.bin_um
        edges = line.x_start_um + step * np.arange(n + 1)
        starts = clock.now + line.period_s * np.arange(n)
        amounts = gate.model.amounts_along(
            np.full(n, line.y_um), edges[:-1], edges[1:], substeps=self.substeps
        )
        result = gate.model.measure(amounts, starts, line.period_s, gate.rng, spectra=gate.spectra)
        gate.log.append(
            LogEntry(
                np.full(n, float(line.y_um)),
                0.5 * (edges[:-1] + edges[1:]),
                starts,
                np.full(n, line.period_s),
                result,
                fly=True,
            )
        )
        clock.advance(n * line.period_s + run_up)
        stamps = (starts + line.period_s).tolist()
        centres = 0.5 * (edges[:-1] + edges[1:])
        self._x._place(float(edges[-1]), clock.now)
        data: dict[str, list[Any]] = {
            self._x.name: centres.tolist(),
            self._y.name: [float(line.y_um)] * n,
        }
        totals = result.roi_totals
        for k, roi in enumerate(self._xrf.roi_names):
            data[getattr(self._xrf.roi, roi).name] = totals[:, k].tolist()
        data[self._xrf.dead_time.name] = result.dead_time.tolist()
        data[self._i0.name] = result.i0.tolist()
        data[self._i0.ring_current.name] = result.ring_current_ma.tolist()
        if result.spectra is not None:
            data[self._xrf.spectrum.name] = [
                s.sum(axis=0, dtype=np.int64).tolist() for s in result.spectra
            ]
        self._pages.append(
            {
                "time": stamps,
                "data": data,
                "timestamps": {key: stamps for key in data},
                "measurement": result,
                "line": line,
            }
        )
        self._kicked = False
        return _finished(self)

    def collect_pages(self) -> Iterator[dict[str, Any]]:
        """Yield one partial event page per line flown since the last collect."""
        pages, self._pages = self._pages, []
        for page in pages:
            yield {"time": page["time"], "data": page["data"], "timestamps": page["timestamps"]}
            self.collected.append((page["line"], page["measurement"]))
