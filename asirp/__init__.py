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

Each method also has a typed function in the style of scikit-image, a thin wrapper over
:func:`restore` that returns the restored array (float32):

>>> from asirp.psf import gaussian_psf
>>> restored = asirp.richardson_lucy(counts, gaussian_psf(2.0), iterations=20, stop="fixed")
>>> restored.shape, restored.dtype
((64, 64), dtype('float32'))
"""

from asirp import _builtin  # noqa: F401  (registers the built-in methods; before any look-up)
from asirp._version import __version__
from asirp.methods.beam_sr import beam_sr
from asirp.methods.blind_richardson_lucy import blind_richardson_lucy
from asirp.methods.fca_sr import fca_sr
from asirp.methods.landweber import landweber
from asirp.methods.richardson_lucy import richardson_lucy
from asirp.methods.rl_sr import rl_sr
from asirp.methods.rrdb_sr import rrdb_sr
from asirp.methods.tikhonov import tikhonov
from asirp.methods.van_cittert import van_cittert
from asirp.methods.wiener import unsupervised_wiener, wiener
from asirp.methods.zssr import zssr
from asirp.registry import (
    CostPrior,
    MethodSpec,
    Parameter,
    RestorationCancelled,
    SelectorGrid,
    available_methods,
    get_method,
    method_specs,
    register_method,
    unregister_method,
)
from asirp.restore import Restoration, restore
from asirp.selection import Selection, select

__all__ = [
    "CostPrior",
    "MethodSpec",
    "Parameter",
    "Restoration",
    "RestorationCancelled",
    "Selection",
    "SelectorGrid",
    "__version__",
    "available_methods",
    "beam_sr",
    "blind_richardson_lucy",
    "fca_sr",
    "get_method",
    "landweber",
    "method_specs",
    "register_method",
    "restore",
    "richardson_lucy",
    "rl_sr",
    "rrdb_sr",
    "select",
    "tikhonov",
    "unregister_method",
    "unsupervised_wiener",
    "van_cittert",
    "wiener",
    "zssr",
]
