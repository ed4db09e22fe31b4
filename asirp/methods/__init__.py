"""Built-in restoration methods; importing this package registers them all."""

from asirp.methods import (
    blind_richardson_lucy,
    fca_sr,
    landweber,
    richardson_lucy,
    rrdb_sr,
    tikhonov,
    van_cittert,
    wiener,
    zssr,
)

__all__ = [
    "blind_richardson_lucy",
    "fca_sr",
    "landweber",
    "richardson_lucy",
    "rrdb_sr",
    "tikhonov",
    "van_cittert",
    "wiener",
    "zssr",
]
