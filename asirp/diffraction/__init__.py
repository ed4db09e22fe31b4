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
"""

from asirp.diffraction.geometry import DetectorGeometry

__all__ = ["DetectorGeometry"]
