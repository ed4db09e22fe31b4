"""Built-in restoration methods; importing this package registers them all.

Each module is one method's only home: its :class:`~asirp.registry.MethodSpec` (parameters,
selector grid, cost prior, forward model) and its typed public function, exported as
``asirp.<name>``. The recipe for adding one is in ``CONTRIBUTING.md``.
"""

from asirp.methods import (
    beam_sr,
    blind_richardson_lucy,
    fca_sr,
    landweber,
    richardson_lucy,
    rl_sr,
    rrdb_sr,
    tikhonov,
    van_cittert,
    wiener,
    zssr,
)

__all__ = [
    "beam_sr",
    "blind_richardson_lucy",
    "fca_sr",
    "landweber",
    "richardson_lucy",
    "rl_sr",
    "rrdb_sr",
    "tikhonov",
    "van_cittert",
    "wiener",
    "zssr",
]
