"""ASIRP: adaptable synchrotron image restoration, the core engine.

The engine is control-system agnostic (numpy, scipy, torch, h5py): the Tango device, the Bluesky
callbacks and the plans all call :func:`restore`.

Examples
--------
>>> import numpy as np, asirp
>>> counts = np.random.default_rng(0).poisson(100.0, size=(64, 64))
>>> result = asirp.restore(counts, "richardson_lucy", beam_fwhm_um=50, pixel_um=10)
>>> result.image.shape, result.method
((64, 64), 'richardson_lucy')
"""

from asirp import _builtin  # noqa: F401  (registers the built-in methods; before any look-up)
from asirp._version import __version__
from asirp.registry import (
    MethodSpec,
    Parameter,
    RestorationCancelled,
    available_methods,
    get_method,
    method_specs,
    register_method,
)
from asirp.restore import Restoration, restore
from asirp.selection import Selection, select

__all__ = [
    "MethodSpec",
    "Parameter",
    "Restoration",
    "RestorationCancelled",
    "Selection",
    "__version__",
    "available_methods",
    "get_method",
    "method_specs",
    "register_method",
    "restore",
    "select",
]
