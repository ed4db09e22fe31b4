"""``zssr``: zero-shot super-resolution, a CNN trained on the input map itself at restoration time.

No trained weights: each map teaches a small network how its own lower-resolution version maps
back to it (the beam and area-sampling forward model, with noise like the map's), and the
network then super-resolves the map. Bounded by ``iterations`` and ``time_budget_s`` per map, with
early stopping on held-back crops; reproducible for a given ``seed``. See :mod:`asirp.sr.zssr`.
"""

from __future__ import annotations

from asirp.registry import MethodSpec, register_method
from asirp.sr.zssr import PARAMETERS, run

register_method(
    MethodSpec(
        name="zssr",
        family="super-resolution",
        needs_psf=False,
        scale=2,
        summary="zero-shot SR: a small CNN trained on the map itself (time-bounded, seeded)",
        parameters=PARAMETERS,
        run=run,
        batchable=True,
    )
)
