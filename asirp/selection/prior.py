"""The rule prior of ``method="auto"``: what it did before it measured anything.

The selector keeps this rule (:func:`choose_method`) as its prior: it orders the candidates (its
choice is scored first, so a tight budget still scores it), and it decides alone for maps too
small to split and score.

1. No PSF described: refuse, naming the ways to give one (a beam FWHM and scan step, a sigma in
   pixels, an array or a file) or ``blind_richardson_lucy`` with a guess.
2. More than 1 % of the pixels are negative: the data are not counts, so the Poisson model does
   not hold; use ``tikhonov`` with a Laplacian regulariser and a GCV-chosen weight.
3. Otherwise (counts, raw or normalised): ``richardson_lucy`` with Biggs-Andrews acceleration,
   stopped by the Poisson discrepancy principle (at most 200 iterations); when the counts are
   so low (mean below 3 per pixel) that the discrepancy is met before the first iteration,
   10 iterations with a light total-variation term instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NEGATIVE_FRACTION_LIMIT = 0.01
"""More negative pixels than this fraction: the data are not counts."""
LOW_COUNTS_MEAN = 3.0
"""Below this mean (counts per pixel), the rule runs a few fixed iterations with TV."""


@dataclass
class AutoChoice:
    """The method chosen by the rule, the parameters it sets and why (in plain words)."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def choose_method(stack: np.ndarray, has_psf: bool) -> AutoChoice:
    """Apply the documented rule to maps ``(B, H, W)``.

    Raises
    ------
    ValueError
        If no PSF is described (the rule only covers non-blind deconvolution).
    """
    if not has_psf:
        raise ValueError(
            "method='auto' needs the PSF: give beam_fwhm_um and pixel_um (µm), psf_sigma_px, "
            "or a psf array/file; or choose method='blind_richardson_lucy' with an initial guess"
        )
    negative_fraction = float(np.mean(stack < 0))
    if negative_fraction > NEGATIVE_FRACTION_LIMIT:
        return AutoChoice(
            "tikhonov",
            {"regulariser": "laplacian", "positivity": False},
            f"{100 * negative_fraction:.1f} % of the pixels are negative, so the data are not "
            "counts: Tikhonov with a Laplacian regulariser weighted by generalised "
            "cross-validation",
        )
    mean = float(np.mean(stack))
    if mean < LOW_COUNTS_MEAN:
        return AutoChoice(
            "richardson_lucy",
            {"iterations": 10, "stop": "fixed", "tv_weight": 0.01, "acceleration": False},
            f"very low counts (mean {mean:.2g} per pixel): 10 Richardson-Lucy iterations with "
            "total-variation weight 0.01",
        )
    return AutoChoice(
        "richardson_lucy",
        {"iterations": 200, "stop": "discrepancy", "acceleration": True},
        "non-negative counts: Richardson-Lucy (Poisson maximum likelihood) with Biggs-Andrews "
        "acceleration, stopped at the Poisson discrepancy",
    )
