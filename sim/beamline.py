"""The simulated µ-XRF beamline: :func:`make_beamline` wires the model, the clock and devices.

Examples
--------
>>> from bluesky import RunEngine
>>> from bluesky.plans import grid_scan
>>> import sim
>>> bl = sim.make_beamline(sample="ag300", beam_fwhm_um=50.0, seed=0)
>>> RE = RunEngine({})
>>> uid, = RE(grid_scan([bl.xrf, bl.i0], bl.y, -100, 100, 21, bl.x, -100, 100, 21))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asirp.xrf.raw import RawXRFScan, write_raw_scan
from sim.beam import Beam
from sim.devices import (
    ExposureGate,
    SimClock,
    SimFlyer,
    SimI0,
    SimMotor,
    SimXRFDetector,
    make_xrf_detector,
)
from sim.model import GroundTruth, XRFForwardModel
from sim.ring import RingCurrent
from sim.samples import MESHES, Sample, make_sample
from sim.spectra import DetectorModel, SpectralModel


class SimulatedBeamline:
    """Devices and ground truth of one simulated beamline (build it with :func:`make_beamline`).

    Parameters
    ----------
    model : XRFForwardModel
        The forward model.
    clock : SimClock
        Simulated clock shared by the devices.
    rng : numpy.random.Generator
        Random generator of the counts.
    limits_um : ((float, float), (float, float))
        Travel limits of y and x, µm.
    dwell_s : float
        Initial dwell time, s.
    velocity_um_s : float
        Stage speed, µm/s.
    max_fly_speed_um_s, min_fly_period_s : float
        Fly-scan limits.
    seed : int or None
        Seed the beamline was built with (recorded in raw-scan metadata).

    Attributes
    ----------
    x, y : SimMotor
        Sample-stage axes, µm (x fast/horizontal, y slow/vertical).
    xrf : SimXRFDetector
        Fluorescence detector (``xrf_<element>`` counts, ``xrf_Ar``, spectra on demand).
    i0 : SimI0
        Incident-flux monitor (reading ``i0``) and ring current.
    flyer : SimFlyer
        Fly-scan flyer (see :func:`sim.plans.fly_map`).
    truth : GroundTruth
        Sample maps, beam-blurred maps, beam PSF, hotspots, noise-free expected counts.
    clock : SimClock
        Simulated time, s.
    model : XRFForwardModel
        The forward model.
    ring : RingCurrent
        Ring current.
    seed : int or None
        Seed the beamline was built with.
    """

    def __init__(
        self,
        *,
        model: XRFForwardModel,
        clock: SimClock,
        rng: np.random.Generator,
        limits_um: tuple[tuple[float, float], tuple[float, float]],
        dwell_s: float,
        velocity_um_s: float,
        max_fly_speed_um_s: float,
        min_fly_period_s: float,
        seed: int | None,
    ) -> None:
        self.model = model
        self.clock = clock
        self.ring = model.ring
        self.seed = seed
        (y_low, y_high), (x_low, x_high) = limits_um
        self.x = SimMotor(
            clock=clock, limits=(x_low, x_high), velocity_um_s=velocity_um_s, name="x"
        )
        self.y = SimMotor(
            clock=clock, limits=(y_low, y_high), velocity_um_s=velocity_um_s, name="y"
        )
        self.gate = ExposureGate(model, clock, lambda: (self.y.position, self.x.position), rng)
        self.xrf: SimXRFDetector = make_xrf_detector(self.gate, name="xrf", dwell_s=dwell_s)
        self.i0 = SimI0(gate=self.gate, dwell=self.xrf.dwell_time.get, name="i0")
        self.flyer = SimFlyer(
            x=self.x,
            y=self.y,
            xrf=self.xrf,
            i0=self.i0,
            gate=self.gate,
            max_speed_um_s=max_fly_speed_um_s,
            min_period_s=min_fly_period_s,
            name="flyer",
        )
        self.truth = GroundTruth(model)

    @property
    def detectors(self) -> list[Any]:
        """The readable detectors of a step scan: ``[xrf, i0]``."""
        return [self.xrf, self.i0]

    @property
    def sample(self) -> Sample:
        """The sample."""
        return self.model.sample

    @property
    def beam(self) -> Beam:
        """The beam."""
        return self.model.beam

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (sample, beam, ring, detector, flux)."""
        det = self.model.detector
        return {
            "sample": self.sample.name,
            "sample_description": self.sample.description,
            "elements": list(self.sample.elements),
            "beam": self.beam.as_dict(),
            "flux_ph_s": self.model.flux_ph_s,
            "reference_current_ma": self.model.reference_current_ma,
            "ring": {
                "top_current_ma": self.ring.top_current_ma,
                "lifetime_h": self.ring.lifetime_h,
                "injection_period_s": self.ring.injection_period_s,
                "phase_s": self.ring.phase_s,
            },
            "incident_energy_kev": self.model.spectral.incident_energy_kev,
            "detector": {
                "n_elements": det.n_elements,
                "n_channels": det.n_channels,
                "calibration": det.calibration.as_dict(),
                "dead_time_s": det.dead_time_s,
            },
            "rois": {r.name: r.as_dict() for r in self.model.rois},
            "seed": self.seed,
        }

    # -- raw scans ------------------------------------------------------------------------------
    def clear_log(self) -> None:
        """Forget the points counted so far (the next :meth:`raw_scan` starts after this)."""
        self.gate.log.clear()

    def raw_scan(self, **metadata: Any) -> RawXRFScan:
        """The points counted since the last :meth:`clear_log` as a raw scan with spectra.

        Spectra must have been recorded (``xrf.record_spectra = True`` or
        ``make_beamline(..., record_spectra=True)``) for every point.

        Parameters
        ----------
        **metadata
            Extra JSON-serialisable metadata (``step_um``, ``title``, ...), merged over the
            beamline's own (sample, beam FWHM, dwell, scan kind, beam energy, seed).

        Returns
        -------
        asirp.xrf.raw.RawXRFScan
        """
        log = self.gate.log
        if not log:
            raise ValueError("no points were counted since the log was cleared; run a scan first")
        if any(entry.measurement.spectra is None for entry in log):
            raise ValueError(
                "some points were counted without spectra; set xrf.record_spectra = True "
                "(or make_beamline(..., record_spectra=True)) before the scan"
            )
        y = np.concatenate([e.y_um for e in log])
        x = np.concatenate([e.x_um for e in log])
        start = np.concatenate([e.start_s for e in log])
        dwell = np.concatenate([e.dwell_s for e in log])
        line_index = np.empty(y.size, dtype=np.int64)
        line, last_y, position = -1, math.nan, 0
        for entry in log:
            n = entry.y_um.size
            if entry.fly or entry.y_um[0] != last_y:
                line += 1
            line_index[position : position + n] = line
            last_y = float(entry.y_um[-1])
            position += n
        fly = all(e.fly for e in log)
        kind = "fly" if fly else _step_kind(x, line_index)
        spectra = np.concatenate([e.measurement.spectra for e in log])
        if spectra.max(initial=0) < np.iinfo(np.uint16).max:
            spectra = spectra.astype(np.uint16)
        info = self.describe()
        facts: dict[str, Any] = {
            "sample": self.sample.name,
            "beam_fwhm_um": list(self.beam.fwhm_um),
            "dwell_s": float(np.median(dwell)),
            "scan_kind": kind,
            "incident_energy_kev": info["incident_energy_kev"],
            "flux_ph_s": info["flux_ph_s"],
            "rois": info["rois"],
            "seed": self.seed,
            "simulated": True,
        }
        facts.update(metadata)
        return RawXRFScan(
            spectra=spectra,
            x_um=x,
            y_um=y,
            i0=np.concatenate([e.measurement.i0 for e in log]),
            live_time_s=np.concatenate([e.measurement.live_time_s for e in log]),
            real_time_s=np.concatenate([e.measurement.real_time_s for e in log]),
            time_s=start - start[0],
            line_index=line_index,
            calibration=self.model.detector.calibration,
            metadata=facts,
        )

    def save_raw_scan(self, path: str | Path, **metadata: Any) -> Path:
        """Write :meth:`raw_scan` with :func:`asirp.xrf.raw.write_raw_scan`; return the path."""
        return write_raw_scan(path, self.raw_scan(**metadata))


def _step_kind(x: np.ndarray, line_index: np.ndarray) -> str:
    """``"snake"`` when successive lines run in opposite x directions, else ``"raster"``."""
    directions = []
    for line in np.unique(line_index):
        xs = x[line_index == line]
        if xs.size > 1:
            directions.append(np.sign(xs[-1] - xs[0]))
    if len(directions) > 1 and all(a == -b != 0 for a, b in itertools.pairwise(directions)):
        return "snake"
    return "raster"


def save_raw_scan(beamline: SimulatedBeamline, path: str | Path, **metadata: Any) -> Path:
    """Write the points a beamline counted since its last ``clear_log()`` as a raw scan.

    Parameters
    ----------
    beamline : SimulatedBeamline
        The beamline (spectra must have been recorded).
    path : str or pathlib.Path
        Output HDF5 file (layout of :mod:`asirp.xrf.raw`).
    **metadata
        Extra metadata for the file.

    Returns
    -------
    pathlib.Path
    """
    return beamline.save_raw_scan(path, **metadata)


def make_beamline(
    sample: str | Sample = "ag300",
    beam_fwhm_um: float | Sequence[float] = 50.0,
    seed: int | None = 0,
    *,
    field_um: float | Sequence[float] = 1000.0,
    fine_pixel_um: float | None = None,
    incident_energy_kev: float = 13.0,
    flux_ph_s: float | None = None,
    beam_tail_fraction: float = 0.0,
    beam_tail_fwhm_um: float | Sequence[float] | None = None,
    ring: RingCurrent | None = None,
    detector: DetectorModel | None = None,
    dwell_s: float = 0.1,
    velocity_um_s: float = 1000.0,
    max_fly_speed_um_s: float = 5000.0,
    min_fly_period_s: float = 0.01,
    start_time_s: float = 0.0,
    record_spectra: bool = False,
    sample_options: Mapping[str, Any] | None = None,
) -> SimulatedBeamline:
    """Build a simulated µ-XRF beamline.

    Parameters
    ----------
    sample : str or Sample
        ``"ag300"``, ``"ag175"``, ``"seed"``, ``"siemens"``, ``"line_pairs"``, ``"foil"``
        (see :mod:`sim.samples`), or a :class:`~sim.samples.Sample` (its grid must cover the
        field plus the beam's reach).
    beam_fwhm_um : float or (float, float)
        Beam FWHM, µm, isotropic or (vertical, horizontal).
    seed : int or None
        Seed of the sample layout and of the counts (``None``: fresh entropy).
    field_um : float or (float, float)
        Stage travel, µm: the motors move within ``±field_um / 2``; the sample is built over
        that field plus a margin of the beam's reach.
    fine_pixel_um : float, optional
        Pixel of the sample grid, µm (default ``min(2, FWHM / 10)``).
    incident_energy_kev : float
        Beam energy, keV (13 keV excites Se, Zn, Fe, Cu K lines and Au L lines).
    flux_ph_s : float, optional
        Photons/s at the ring's top current (default: the sample's recommended flux, i.e. the
        attenuators a beamline scientist would choose for it).
    beam_tail_fraction, beam_tail_fwhm_um : float
        Beam tails (see :class:`~sim.beam.Beam`).
    ring : RingCurrent, optional
        Ring current (default 200 mA top, 4 h lifetime, injection every 600 s).
    detector : DetectorModel, optional
        XRF detector (default 4 elements, 4096 channels of 10 eV).
    dwell_s : float
        Initial dwell time of the detector, s.
    velocity_um_s : float
        Stage speed for step moves, µm/s.
    max_fly_speed_um_s, min_fly_period_s : float
        Fly-scan limits (the seed beamline flies at up to 5 mm/s with a 10 ms period).
    start_time_s : float
        Simulated time at creation, s (sets where the ring's sawtooth starts).
    record_spectra : bool
        Draw full spectra for every point (needed for raw scans; costs memory).
    sample_options : mapping, optional
        Options for the sample's function (e.g. ``{"angle_deg": 5.0}``, ``{"n_hotspots": 8}``).

    Returns
    -------
    SimulatedBeamline
    """
    beam = Beam(beam_fwhm_um, beam_tail_fraction, beam_tail_fwhm_um)
    field = np.atleast_1d(np.asarray(field_um, dtype=float))
    if field.size not in (1, 2) or not np.all(np.isfinite(field)) or np.any(field <= 0):
        raise ValueError(f"field_um must be > 0, as a number or (height, width), got {field_um!r}")
    field_y, field_x = float(field[0]), float(field[-1])
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    layout_seq, count_seq = np.random.SeedSequence(seed).spawn(2)
    if isinstance(sample, Sample):
        the_sample = sample
        margin = 0.0
    elif isinstance(sample, str):
        pixel = fine_pixel_um if fine_pixel_um is not None else min(2.0, min(beam.fwhm_um) / 10)
        margin = math.ceil(beam.support_um / pixel) * pixel
        options = dict(sample_options or {})
        if sample.lower() in MESHES:
            options.setdefault("incident_energy_kev", incident_energy_kev)
        the_sample = make_sample(
            sample,
            field_um=(field_y + 2 * margin, field_x + 2 * margin),
            pixel_um=pixel,
            rng=np.random.default_rng(layout_seq),
            **options,
        )
    else:
        raise TypeError(f"sample must be a name or a Sample, got {type(sample).__name__}")
    height, width = the_sample.extent_um
    if field_y > height + 1e-6 or field_x > width + 1e-6:
        raise ValueError(
            f"the sample covers {height:g} x {width:g} µm, less than the field "
            f"{field_y:g} x {field_x:g} µm"
        )
    spectral = SpectralModel(
        the_sample.elements,
        incident_energy_kev=incident_energy_kev,
        detector=detector,
        matrix_formula=the_sample.matrix_formula,
    )
    flux = (
        flux_ph_s
        if flux_ph_s is not None
        else the_sample.description.get("recommended_flux_ph_s", 1.0e9)
    )
    model = XRFForwardModel(the_sample, beam, ring or RingCurrent(), spectral, flux_ph_s=flux)
    clock = SimClock(start_time_s)
    beamline = SimulatedBeamline(
        model=model,
        clock=clock,
        rng=np.random.default_rng(count_seq),
        limits_um=((-field_y / 2, field_y / 2), (-field_x / 2, field_x / 2)),
        dwell_s=dwell_s,
        velocity_um_s=velocity_um_s,
        max_fly_speed_um_s=max_fly_speed_um_s,
        min_fly_period_s=min_fly_period_s,
        seed=None if seed is None else int(seed),
    )
    beamline.xrf.record_spectra = record_spectra
    return beamline
