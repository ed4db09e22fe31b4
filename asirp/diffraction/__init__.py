"""Powder diffraction time series: geometry, pyFAI integration, 1-D restoration, change detection.

The core of temporal feedback (no control-system imports). A frame from an area detector is
integrated to I(q) with pyFAI, the instrumental broadening is removed from I(q), and an online
detector scores every new pattern against a shift-tolerant model of the recent ones, so that a
smooth thermal expansion stays quiet while a change of shape (a peak splitting, a new phase)
raises an alarm.

Modules
-------
:mod:`asirp.diffraction.geometry`
    Detector geometry (:class:`DetectorGeometry`), shared with the simulator.
:mod:`asirp.diffraction.integrate`
    pyFAI azimuthal integration (:class:`PatternIntegrator`) to a :class:`Pattern`.
:mod:`asirp.diffraction.profile`
    Instrumental width from a calibrant (:func:`fit_instrument_profile`,
    :class:`InstrumentProfile`, CeO2 d-spacings).
:mod:`asirp.diffraction.deconvolve`
    Richardson-Lucy on I(q) with a banded q-dependent Gaussian (:func:`richardson_lucy_1d`).
:mod:`asirp.diffraction.change`
    Shift-tolerant CUSUM detector of shape changes (:class:`ShapeChangeDetector`,
    :class:`Alarm`, :func:`cusum_threshold`).
:mod:`asirp.diffraction.pipeline`
    Frame in, score out: :class:`TemporalAnalyzer`, :class:`TemporalSettings`,
    :class:`FrameScore`.
"""

from asirp.diffraction.change import Alarm, ShapeChangeDetector, cusum_threshold, siegmund_arl0
from asirp.diffraction.deconvolve import blur_operator, richardson_lucy_1d
from asirp.diffraction.geometry import DetectorGeometry
from asirp.diffraction.integrate import Pattern, PatternIntegrator
from asirp.diffraction.pipeline import FrameScore, TemporalAnalyzer, TemporalSettings
from asirp.diffraction.profile import (
    CEO2_D_SPACINGS_A,
    InstrumentProfile,
    fit_instrument_profile,
)

__all__ = [
    "CEO2_D_SPACINGS_A",
    "Alarm",
    "DetectorGeometry",
    "FrameScore",
    "InstrumentProfile",
    "Pattern",
    "PatternIntegrator",
    "ShapeChangeDetector",
    "TemporalAnalyzer",
    "TemporalSettings",
    "blur_operator",
    "cusum_threshold",
    "fit_instrument_profile",
    "richardson_lucy_1d",
    "siegmund_arl0",
]
