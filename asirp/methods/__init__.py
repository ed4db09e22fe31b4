"""Built-in restoration methods; importing this package registers them all."""

from asirp.methods import (
    blind_richardson_lucy,
    landweber,
    richardson_lucy,
    tikhonov,
    van_cittert,
    wiener,
)

__all__ = [
    "blind_richardson_lucy",
    "landweber",
    "richardson_lucy",
    "tikhonov",
    "van_cittert",
    "wiener",
]
