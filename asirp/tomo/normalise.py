"""Flat/dark correction of projections, and ``-log``: transmission into line integrals.

Transmission ``T = (P - median(darks)) / (median(flats) - median(darks))``; medians reject the
odd zinger in a flat or dark frame. Non-positive transmission (a dead pixel, a dark frame above
the projection, an open-beam pixel at zero) has no logarithm: it is clipped to
:data:`MIN_TRANSMISSION` and counted, so the caller can say how many pixels were changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_TRANSMISSION = 1e-6
"""Transmission below this is clipped to it before ``-log`` (so ``-log`` is at most 13.8)."""


@dataclass
class Transmission:
    """Flat/dark-corrected projections.

    Attributes
    ----------
    values : numpy.ndarray
        ``(N, R, C)`` float32 transmission (1 = open beam), clipped to >= ``MIN_TRANSMISSION``.
    clipped : int
        How many pixels were at or below zero (or had no open-beam signal) and were clipped.
    """

    values: np.ndarray
    clipped: int

    def caution(self) -> str | None:
        """One sentence when pixels were clipped, else ``None``."""
        if self.clipped == 0:
            return None
        return (
            f"{self.clipped} pixel(s) of the projections had no positive transmission "
            f"(dead pixels or darks above the signal) and were set to {MIN_TRANSMISSION:g}"
        )


def flat_dark_correct(
    projections: np.ndarray, flats: np.ndarray, darks: np.ndarray
) -> Transmission:
    """Transmission of projections from median flats and darks.

    Parameters
    ----------
    projections : numpy.ndarray
        ``(N, R, C)`` detector counts.
    flats, darks : numpy.ndarray
        ``(F, R, C)`` open-beam and ``(D, R, C)`` dark frames, counts.

    Returns
    -------
    Transmission
        Float32 ``(N, R, C)`` transmission and the count of clipped pixels.
    """
    dark = np.median(darks, axis=0).astype(np.float32)
    open_beam = np.median(flats, axis=0).astype(np.float32) - dark
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (projections.astype(np.float32) - dark) / open_beam
    bad = ~(values > MIN_TRANSMISSION)  # also NaN/Inf where the open beam is zero or negative
    bad |= ~np.isfinite(values)
    values[bad] = MIN_TRANSMISSION
    return Transmission(values=values.astype(np.float32, copy=False), clipped=int(bad.sum()))


def minus_log(transmission: np.ndarray) -> np.ndarray:
    """Line integrals ``-log(T)``, float32, same shape (``T`` clipped to ``MIN_TRANSMISSION``)."""
    clipped = np.maximum(np.asarray(transmission, dtype=np.float32), np.float32(MIN_TRANSMISSION))
    return (-np.log(clipped)).astype(np.float32)
