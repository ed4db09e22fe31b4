"""Deep-learning super-resolution: networks, training data, training, tiling, safe weights.

The methods of the ``"super-resolution"`` family (``fca_sr``, ``rrdb_sr``, ``zssr``; see
:mod:`asirp.methods`) are built from these modules:

- :mod:`asirp.sr.degrade`: the forward model (Gaussian beam on the fine grid, area sampling);
- :mod:`asirp.sr.models`: the networks (DFCAN-style, RRDBNet with Real-ESRGAN's layout, ZSSR's);
- :mod:`asirp.sr.data`: synthetic X-ray-like training data and the held-out evaluation set;
- :mod:`asirp.sr.train`: training (``asirp train``);
- :mod:`asirp.sr.inference`: reversible normalisation and overlap tiling;
- :mod:`asirp.sr.weights` and :mod:`asirp.sr.esrgan`: loading weights without executing code;
- :mod:`asirp.sr.consistency`: the check of every result against its input;
- :mod:`asirp.sr.zssr`: zero-shot super-resolution.
"""

from asirp.sr.consistency import ConsistencyWarning
from asirp.sr.weights import UnsafeWeightsError, WeightsArchitectureError, WeightsTooLargeError

__all__ = [
    "ConsistencyWarning",
    "UnsafeWeightsError",
    "WeightsArchitectureError",
    "WeightsTooLargeError",
]
