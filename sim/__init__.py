"""Simulated µ-XRF and powder-diffraction beamlines and a tomography source: physics, devices.

The physics is pure numpy with an explicit, seeded ``rng`` (:mod:`sim.samples`,
:mod:`sim.beam`, :mod:`sim.ring`, :mod:`sim.spectra`, :mod:`sim.model`, :mod:`sim.tomo`);
the ophyd devices (:mod:`sim.devices`) are thin shells over it that run on a simulated clock.
The powder-diffraction beamline (a temperature ramp with a hidden structural event) has its
physics in :mod:`sim.diffraction` and its devices in :mod:`sim.xrd_devices`. The tomography
beamline (rotation stage, shutter, sample in/out, camera) is in :mod:`sim.tomo_devices`.

Examples
--------
>>> import sim
>>> bl = sim.make_beamline(sample="ag300", beam_fwhm_um=50.0, seed=0)
>>> sorted(bl.model.roi_names)
['Ar', 'Cu']
"""

from sim.beam import Beam
from sim.beamline import SimulatedBeamline, make_beamline, save_raw_scan
from sim.devices import FlyLine, SimClock
from sim.diffraction import (
    PowderFrameModel,
    PowderSequence,
    TransitionEvent,
    calibrant_frame,
    make_sequence,
    random_sequence,
    small_geometry,
)
from sim.model import GroundTruth, Measurement, XRFForwardModel
from sim.plans import fly_map
from sim.ring import RingCurrent
from sim.samples import Hotspot, Sample, make_sample
from sim.spectra import DetectorModel, SpectralModel, simulate_spectrum
from sim.tomo_devices import TomoBeamline, make_tomo_beamline
from sim.xrd_devices import (
    SimDiffractionDetector,
    SimTemperatureController,
    XRDBeamline,
    make_xrd_beamline,
)

__all__ = [
    "Beam",
    "DetectorModel",
    "FlyLine",
    "GroundTruth",
    "Hotspot",
    "Measurement",
    "PowderFrameModel",
    "PowderSequence",
    "RingCurrent",
    "Sample",
    "SimClock",
    "SimDiffractionDetector",
    "SimTemperatureController",
    "SimulatedBeamline",
    "SpectralModel",
    "TomoBeamline",
    "TransitionEvent",
    "XRDBeamline",
    "XRFForwardModel",
    "calibrant_frame",
    "fly_map",
    "make_beamline",
    "make_sample",
    "make_sequence",
    "make_tomo_beamline",
    "make_xrd_beamline",
    "random_sequence",
    "save_raw_scan",
    "simulate_spectrum",
    "small_geometry",
]
