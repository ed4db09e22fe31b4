"""The types the methods' public functions share.

Each method module defines, next to its spec, a function in the style of scikit-image
(``asirp.richardson_lucy(image, psf, iterations=...)``) that is a thin wrapper over
:func:`asirp.restore`: the same input checks, PSF handling, device choice and results, with the
method's parameters as typed keywords. A test checks that their defaults are the spec's.
"""

from __future__ import annotations

from typing import Literal

import torch

StopRule = Literal["fixed", "discrepancy", "stagnation"]
"""When an iterative method stops (:mod:`asirp.iteration`)."""
IterativeBoundary = Literal["extend", "zero", "periodic"]
"""Edges of the iterative methods (:data:`asirp.registry.ITERATIVE_BOUNDARY`)."""
DirectBoundary = Literal["reflect", "periodic"]
"""Edges of the direct methods (:data:`asirp.registry.DIRECT_BOUNDARY`)."""
Device = str | torch.device
"""``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or a :class:`torch.device`."""
