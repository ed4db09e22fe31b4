"""Simulated µ-XRF beamline and tomography source for ASIRP: numpy physics, ophyd devices.

The physics is pure numpy with an explicit, seeded ``rng`` (:mod:`sim.samples`,
:mod:`sim.beam`, :mod:`sim.ring`, :mod:`sim.spectra`, :mod:`sim.model`, :mod:`sim.tomo`);
the ophyd devices (:mod:`sim.devices`) are thin shells over it that run on a simulated clock.

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
from sim.model import GroundTruth, Measurement, XRFForwardModel
from sim.plans import fly_map
from sim.ring import RingCurrent
from sim.samples import Hotspot, Sample, make_sample
from sim.spectra import DetectorModel, SpectralModel, simulate_spectrum

__all__ = [
    "Beam",
    "DetectorModel",
    "FlyLine",
    "GroundTruth",
    "Hotspot",
    "Measurement",
    "RingCurrent",
    "Sample",
    "SimClock",
    "SimulatedBeamline",
    "SpectralModel",
    "XRFForwardModel",
    "fly_map",
    "make_beamline",
    "make_sample",
    "save_raw_scan",
    "simulate_spectrum",
]
