"""ophyd (v1) devices of the simulated powder-diffraction beamline: temperature and detector.

The devices run on the :class:`~sim.devices.SimClock` of :mod:`sim.devices`: a temperature move
charges ``|ΔT| / ramp_rate + settle_time``, an exposure charges its duration and the readout;
nothing sleeps and every Status is returned finished, so a ramp of an hour runs in seconds.

Devices
-------
:class:`SimTemperatureController`
    Sample heater/cryostream in K: ``<name>_readback`` (hinted, with 0.01 K of thermometer
    noise), ``<name>_setpoint``, configuration ``<name>_ramp_rate`` (K/s) and
    ``<name>_settle_time`` (s).
:class:`SimDiffractionDetector`
    Area detector rendering the frames of a :class:`~sim.diffraction.PowderFrameModel` at the
    sample temperature, with the flux of the storage ring: ``<name>_image`` (uint32 frame, or a
    datum reference to an AD_HDF5 file), ``<name>_temperature`` (K, thermometer reading during
    the exposure), ``<name>_ring_current`` (mA, mean over the exposure), ``<name>_total_counts``
    (hinted) and configuration ``<name>_exposure`` (s).

:func:`make_xrd_beamline` builds one beamline (:class:`XRDBeamline`) from a seeded random
ground truth (:func:`sim.diffraction.random_sequence`).
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from event_model import compose_resource
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus, Status
from ophyd.utils import LimitError

from asirp import nexus
from asirp.diffraction.geometry import DetectorGeometry
from asirp.safe_files import atomic_write
from sim.devices import SimClock
from sim.diffraction import (
    PowderFrameModel,
    PowderSequence,
    calibrant_model,
    random_sequence,
)
from sim.ring import RingCurrent

AD_HDF5_DATASET = "/entry/data/data"
"""Dataset of the frames in an AD_HDF5 file, ``(frames, rows, cols)``."""


def _finished(device: Any) -> DeviceStatus:
    status = DeviceStatus(device)
    status.set_finished()
    return status


def _checked_number(owner: str, what: str, value: Any, low: float, high: float, unit: str):
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{owner}: {what} must be a number of {unit}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{owner}: {what} must be finite, got {value!r}")
    if not low <= number <= high:
        raise LimitError(f"{owner}: {what} {number} {unit} is outside {low}...{high} {unit}")
    return number


class _LimitedSignal(Signal):
    """A soft setting with limits, set synchronously (``limits`` and ``unit`` set by the owner)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = (-math.inf, math.inf)
        self.unit = ""

    def check_value(self, value: Any, **kwargs: Any) -> None:
        """Refuse non-numbers (TypeError), NaN (ValueError) and values outside the limits."""
        _checked_number(self.name, "value", value, *self.bounds, self.unit)

    def set(self, value: Any, **kwargs: Any) -> Status:
        """Put ``value`` now (no hardware to wait for); returns a finished Status."""
        self.put(float(value))
        status = Status(self)
        status.set_finished()
        return status


def _with_units(described: dict[str, dict[str, Any]], units: dict[str, str]) -> dict:
    for key, unit in units.items():
        if key in described:
            described[key]["units"] = unit
    return described


class SimTemperatureController(Device):
    """Sample temperature controller whose ramps take simulated time.

    The sample reaches the setpoint when the ramp and the settling time are over (the clock is
    charged both); the thermometer reads the true sample temperature plus Gaussian noise.

    Parameters
    ----------
    clock : SimClock
        Shared clock.
    rng : numpy.random.Generator
        Random generator of the thermometer noise.
    limits : (float, float)
        Allowed setpoints, K.
    ramp_rate_K_per_s : float
        Ramp rate, K/s.
    settle_time_s : float
        Settling after each move, s.
    noise_K : float
        Standard deviation of the thermometer noise, K.
    init_K : float
        Starting temperature, K.
    name : str
        Device name (prefix of its readings).
    """

    readback = Cpt(Signal, value=300.0, kind="hinted")
    setpoint = Cpt(Signal, value=300.0, kind="normal")
    ramp_rate = Cpt(_LimitedSignal, value=10.0 / 60.0, kind="config")
    settle_time = Cpt(_LimitedSignal, value=2.0, kind="config")

    def __init__(
        self,
        *,
        clock: SimClock,
        rng: np.random.Generator,
        limits: tuple[float, float] = (80.0, 1300.0),
        ramp_rate_K_per_s: float = 10.0 / 60.0,
        settle_time_s: float = 2.0,
        noise_K: float = 0.01,
        init_K: float = 300.0,
        name: str = "temperature",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self._clock = clock
        self._rng = rng
        low, high = (float(v) for v in limits)
        if not 0 < low < high:
            raise ValueError(f"limits must be (low, high) with 0 < low < high K, got {limits!r}")
        self._limits = (low, high)
        self.egu = "K"
        self.noise_K = _checked_number(name, "noise_K", noise_K, 0.0, 10.0, "K")
        self.ramp_rate.bounds, self.ramp_rate.unit = (1e-4, 100.0), "K/s"
        self.settle_time.bounds, self.settle_time.unit = (0.0, 3600.0), "s"
        self.ramp_rate.put(ramp_rate_K_per_s, timestamp=clock.now)
        self.settle_time.put(settle_time_s, timestamp=clock.now)
        self._sample_K = self.check_value(init_K)
        self.setpoint.put(self._sample_K, timestamp=clock.now)
        self.readback.put(self.measure_K(), timestamp=clock.now)

    @property
    def limits(self) -> tuple[float, float]:
        """Allowed setpoints, K."""
        return self._limits

    @property
    def low_limit(self) -> float:
        """Lowest setpoint, K."""
        return self._limits[0]

    @property
    def high_limit(self) -> float:
        """Highest setpoint, K."""
        return self._limits[1]

    @property
    def position(self) -> float:
        """Last thermometer reading, K."""
        return float(self.readback.get())

    @property
    def sample_K(self) -> float:
        """True sample temperature, K (the setpoint once reached; truth, not a reading)."""
        return self._sample_K

    def check_value(self, value: Any) -> float:
        """``value`` as a setpoint in K; TypeError, ValueError (NaN) or LimitError otherwise."""
        return _checked_number(self.name, "temperature", value, *self._limits, "K")

    def measure_K(self) -> float:
        """One thermometer reading: the sample temperature plus noise, K."""
        return self._sample_K + self.noise_K * float(self._rng.standard_normal())

    def move_time(self, delta_K: float) -> float:
        """Time a change of ``delta_K`` takes (ramp and settling), s."""
        if delta_K == 0:
            return 0.0
        return abs(delta_K) / float(self.ramp_rate.get()) + float(self.settle_time.get())

    def set(self, value: float, **kwargs: Any) -> DeviceStatus:
        """Ramp to ``value`` K; the clock is charged the ramp and settling. Returns done Status."""
        target = self.check_value(value)
        end = self._clock.schedule(self.move_time(target - self._sample_K))
        self.setpoint.put(target, timestamp=self._clock.now)
        self._sample_K = target
        self.readback.put(self.measure_K(), timestamp=end)
        return _finished(self)

    def move(self, value: float, **kwargs: Any) -> DeviceStatus:
        """Alias of :meth:`set`."""
        return self.set(value)

    def stop(self, *, success: bool = False) -> None:
        """Stop (moves are instantaneous in simulated time; nothing to do)."""

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys of the readings, with units (K)."""
        return _with_units(super().describe(), {self.readback.name: "K", self.setpoint.name: "K"})

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """Data keys of the configuration, with units."""
        return _with_units(
            super().describe_configuration(),
            {self.ramp_rate.name: "K/s", self.settle_time.name: "s"},
        )


@dataclass(frozen=True)
class FrameRecord:
    """What one exposure was (the truth behind a frame).

    Attributes
    ----------
    start_s : float
        Start of the exposure on the simulated clock, s.
    exposure_s : float
        Exposure, s.
    sample_K : float
        True sample temperature, K.
    flux_scale : float
        Mean ring current over the exposure / top current.
    path : pathlib.Path or None
        File written (external delivery), else None.
    """

    start_s: float
    exposure_s: float
    sample_K: float
    flux_scale: float
    path: Path | None = None


class SimDiffractionDetector(Device):
    """Area detector of the powder beamline (use :func:`make_xrd_beamline`).

    Parameters
    ----------
    model : PowderFrameModel
        Renders the frames.
    controller : SimTemperatureController
        Gives the sample temperature and the thermometer reading.
    clock : SimClock
        Shared clock.
    ring : RingCurrent
        Storage-ring current (flux ∝ current).
    rng : numpy.random.Generator
        Random generator of the counts.
    exposure_s : float
        Initial exposure, s (limits 1 ms to 1 h).
    readout_s : float
        Dead time after each exposure, s.
    inline : bool
        True: the frame is the event's data. False: each frame goes to its own AD_HDF5 file in
        ``write_root`` and the event holds a datum reference (resource and datum documents from
        :meth:`collect_asset_docs`).
    write_root : str or os.PathLike, optional
        Existing folder of the files (external delivery only).
    approximate_noise : bool
        Passed to :meth:`~sim.diffraction.PowderFrameModel.frame`.
    name : str
        Device name (prefix of its readings).
    """

    image = Cpt(Signal, value=0, kind="normal")
    temperature = Cpt(Signal, value=0.0, kind="normal")
    ring_current = Cpt(Signal, value=0.0, kind="normal")
    total_counts = Cpt(Signal, value=0, kind="hinted")
    exposure = Cpt(_LimitedSignal, value=1.0, kind="config")

    def __init__(
        self,
        *,
        model: PowderFrameModel,
        controller: SimTemperatureController,
        clock: SimClock,
        ring: RingCurrent,
        rng: np.random.Generator,
        exposure_s: float = 1.0,
        readout_s: float = 0.01,
        inline: bool = True,
        write_root: str | os.PathLike | None = None,
        approximate_noise: bool = False,
        name: str = "xrd",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if not isinstance(model, PowderFrameModel):
            raise TypeError(f"model must be a PowderFrameModel, got {type(model).__name__}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self.model = model
        self._controller = controller
        self._clock = clock
        self._ring = ring
        self._rng = rng
        self.readout_s = _checked_number(name, "readout_s", readout_s, 0.0, 60.0, "s")
        self.approximate_noise = bool(approximate_noise)
        self.inline = bool(inline)
        if self.inline:
            if write_root is not None:
                raise ValueError("write_root is only for external delivery (inline=False)")
            self.write_root: Path | None = None
        else:
            if write_root is None:
                raise ValueError("external delivery (inline=False) needs a write_root folder")
            root = Path(write_root).resolve()
            if not root.is_dir():
                raise ValueError(f"write_root {root} is not an existing folder")
            self.write_root = root
        self.exposure.bounds, self.exposure.unit = (1e-3, 3600.0), "s"
        self.exposure.put(exposure_s, timestamp=clock.now)
        rows, cols = model.shape
        blank = np.zeros((rows, cols), dtype=np.uint32)
        self.image.put(blank if self.inline else "", timestamp=clock.now)
        self._asset_docs: list[tuple[str, dict[str, Any]]] = []
        self.last_frame: np.ndarray = blank
        """The last frame counted, ``(rows, cols)`` uint32 (also in external delivery)."""
        self.records: list[FrameRecord] = []
        """The truth of every exposure so far, in order."""

    def trigger(self) -> DeviceStatus:
        """Count one exposure at the current sample temperature; returns a done Status."""
        start = self._clock.sync()  # the temperature move finishes first
        exposure = float(self.exposure.get())
        flux = float(self._ring.mean_current_ma(start, exposure)) / self._ring.top_current_ma
        sample_K = self._controller.sample_K
        frame = self.model.frame(
            sample_K,
            rng=self._rng,
            flux_scale=flux,
            exposure_s=exposure,
            approximate_noise=self.approximate_noise,
        )
        reading_K = self._controller.measure_K()
        end = self._clock.advance(exposure + self.readout_s)
        path = None
        if self.inline:
            self.image.put(frame, timestamp=end)
        else:
            path = self._write(frame)
            resource = compose_resource(
                spec="AD_HDF5",
                root=str(self.write_root),
                resource_path=path.name,
                resource_kwargs={"frame_per_point": 1},
            )
            datum = resource.compose_datum(datum_kwargs={"point_number": 0})
            self._asset_docs.append(("resource", resource.resource_doc))
            self._asset_docs.append(("datum", datum))
            self.image.put(datum["datum_id"], timestamp=end)
        self.temperature.put(reading_K, timestamp=end)
        self.ring_current.put(flux * self._ring.top_current_ma, timestamp=end)
        self.total_counts.put(int(frame.sum(dtype=np.uint64)), timestamp=end)
        self.last_frame = frame
        self.records.append(FrameRecord(start, exposure, sample_K, flux, path))
        return _finished(self)

    def _write(self, frame: np.ndarray) -> Path:
        """Write ``frame`` as ``(1, rows, cols)`` in a new AD_HDF5 file, atomically; its path."""
        import h5py  # lazy: only external delivery writes files

        assert self.write_root is not None  # external delivery checked it at construction
        path = self.write_root / f"{self.name}_{uuid.uuid4().hex}.h5"
        # atomic_write fills a temporary file in the same folder and links it into place, so a
        # reader never opens a half-written frame
        with atomic_write(path) as output, h5py.File(output.file, "w") as handle:
            # valid NeXus (signal, pixel axes, @default chain) that silx opens as an image
            entry = nexus.create_entry(handle)
            y, x = nexus.pixel_axes(frame.shape)
            nexus.write_nxdata(
                entry, "data", frame[np.newaxis], [None, y, x], compression=None, default=True
            )
        return path

    def collect_asset_docs(self):
        """Yield the ``('resource', doc)`` and ``('datum', doc)`` of the frames since last call."""
        docs, self._asset_docs = self._asset_docs, []
        yield from docs

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys of the readings, with units; the image is external in file delivery."""
        described = super().describe()
        rows, cols = self.model.shape
        key = self.image.name
        if self.inline:
            described[key].update(shape=[rows, cols], dtype="array", dtype_numpy="<u4")
        else:
            # ophyd's area-detector convention: (frames per point, rows, cols)
            described[key] = {
                "source": f"SIM:{key}",
                "dtype": "array",
                "dtype_numpy": "<u4",
                "shape": [1, rows, cols],
                "external": "FILESTORE:",
            }
        return _with_units(
            described,
            {
                key: "counts",
                self.temperature.name: "K",
                self.ring_current.name: "mA",
                self.total_counts.name: "counts",
            },
        )

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """Data keys of the configuration, with units."""
        return _with_units(super().describe_configuration(), {self.exposure.name: "s"})


@dataclass
class XRDBeamline:
    """One simulated powder beamline (see :func:`make_xrd_beamline`).

    Attributes
    ----------
    sequence : PowderSequence
        Ground truth of the ramp, including the hidden onset (``sequence.onset_K``): for
        evaluation only, never for the code under test.
    geometry : DetectorGeometry
        Detector geometry.
    model : PowderFrameModel
        Frame renderer.
    clock : SimClock
        Shared clock.
    ring : RingCurrent
        Storage ring.
    temperature : SimTemperatureController
        Sample temperature controller (a movable).
    detector : SimDiffractionDetector
        Area detector.
    """

    sequence: PowderSequence
    geometry: DetectorGeometry
    model: PowderFrameModel
    clock: SimClock
    ring: RingCurrent
    temperature: SimTemperatureController
    detector: SimDiffractionDetector
    instrument: dict[str, Any] = field(default_factory=dict)
    """:class:`~sim.diffraction.PowderFrameModel` options shared by the calibrant."""
    _calibrant: PowderFrameModel | None = field(default=None, repr=False)

    def temperatures(self) -> np.ndarray:
        """Temperatures of the ramp's frames ``(n_frames,)``, K."""
        return self.sequence.temperatures()

    def calibrant_frame(self, rng: np.random.Generator, *, exposure_s: float = 1.0) -> np.ndarray:
        """A CeO2 frame with this beamline's detector and instrument, full flux.

        Parameters
        ----------
        rng : numpy.random.Generator
            Random generator of the counts.
        exposure_s : float
            Exposure, s.

        Returns
        -------
        numpy.ndarray
            ``(rows, cols)`` uint32, counts. The true widths are
            ``self.calibrant_model().fwhm_q_A(q, sample=False)`` (instrument) and
            ``(..., detector=True)`` (with pixel and PSF).
        """
        return self.calibrant_model().frame(295.0, rng=rng, exposure_s=exposure_s)

    def calibrant_model(self) -> PowderFrameModel:
        """Frame model of the CeO2 calibrant on this beamline (built once)."""
        if self._calibrant is None:
            self._calibrant = calibrant_model(self.geometry, **self.instrument)
        return self._calibrant


def make_xrd_beamline(
    kind: str = "splitting",
    seed: int = 0,
    *,
    geometry: DetectorGeometry | None = None,
    inline: bool = True,
    write_root: str | os.PathLike | None = None,
    ramp_K: tuple[float, float] = (300.0, 420.0),
    n_frames: int = 121,
    exposure_s: float = 1.0,
    ring: RingCurrent | None = None,
    ramp_rate_K_per_s: float = 10.0 / 60.0,
    settle_time_s: float = 2.0,
    approximate_noise: bool = False,
    instrument: dict[str, Any] | None = None,
    detector_name: str = "xrd",
    temperature_name: str = "temperature",
) -> XRDBeamline:
    """A simulated powder beamline on a seeded random ramp.

    Parameters
    ----------
    kind : {"splitting", "new_phase", "none"}
        Hidden event.
    seed : int
        Seed of the truth (:func:`~sim.diffraction.random_sequence`), the counts and the
        thermometer noise.
    geometry : DetectorGeometry, optional
        Detector (default: 1024² of 75 µm at 200 mm, 0.5 Å; :func:`sim.diffraction.small_geometry`
        for 256²).
    inline : bool
        Frames in the events (True) or in AD_HDF5 files under ``write_root`` (False).
    write_root : str or os.PathLike, optional
        Existing folder of the files (external delivery only).
    ramp_K : (float, float)
        Start and stop of the ramp, K (the controller starts at the start).
    n_frames : int
        Frames along the ramp (sets the onset window of the truth).
    exposure_s : float
        Initial exposure, s.
    ring : RingCurrent, optional
        Storage ring (default :class:`~sim.ring.RingCurrent()`: 200 mA top, 10 min injections).
    ramp_rate_K_per_s : float
        Controller ramp rate, K/s.
    settle_time_s : float
        Settling after each temperature step, s.
    approximate_noise : bool
        Faster, approximate counting noise (see :meth:`PowderFrameModel.frame`).
    instrument : dict, optional
        :class:`~sim.diffraction.PowderFrameModel` options (``instrument_fwhm_deg``, ``eta``,
        ``psf_sigma_px``, ``intensity_scale``, ``polarization_factor``).
    detector_name, temperature_name : str
        Device names (prefixes of the readings).

    Returns
    -------
    XRDBeamline
        ``.sequence.onset_K`` is the hidden truth: for evaluation only.
    """
    sequence = random_sequence(seed, kind, n_frames=n_frames, ramp_K=ramp_K)
    geometry = DetectorGeometry() if geometry is None else geometry
    options = dict(instrument or {})
    model = PowderFrameModel(geometry, sequence, **options)
    clock = SimClock()
    ring = RingCurrent() if ring is None else ring
    # independent streams: the truth (seed), the thermometer and the counts
    temperature = SimTemperatureController(
        clock=clock,
        rng=np.random.default_rng([seed, 1]),
        ramp_rate_K_per_s=ramp_rate_K_per_s,
        settle_time_s=settle_time_s,
        init_K=float(ramp_K[0]),
        name=temperature_name,
    )
    detector = SimDiffractionDetector(
        model=model,
        controller=temperature,
        clock=clock,
        ring=ring,
        rng=np.random.default_rng([seed, 2]),
        exposure_s=exposure_s,
        inline=inline,
        write_root=write_root,
        approximate_noise=approximate_noise,
        name=detector_name,
    )
    return XRDBeamline(sequence, geometry, model, clock, ring, temperature, detector, options)
