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

For super-resolution (``scale > 1``) the prior is :data:`SR_PRIOR_METHOD` (``beam_sr``, the
network told the beam; with its self-ensemble in the thorough mode): the best single method at
x2 and x4 on the training-side held-out maps (:func:`asirp.sr.data.heldout_set`; mean gains
over bicubic with the self-ensemble: x2 +6.18 dB against 5.92 for ``rrdb_sr``, 5.25 ``fca_sr``,
5.16 ``zssr``, 3.69 ``rl_sr``; x4 +3.55 against 3.20, 2.94, -0.03, 2.82). The split score judges
predictions of the measured data, which detail finer than the data hardly changes, so another
candidate displaces the prior only when its estimated gain is :data:`SR_PRIOR_MARGIN_DB` higher
(:func:`keeps_sr_prior`); the input still wins when nothing beats it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NEGATIVE_FRACTION_LIMIT = 0.01
"""More negative pixels than this fraction: the data are not counts."""
LOW_COUNTS_MEAN = 3.0
"""Below this mean (counts per pixel), the rule runs a few fixed iterations with TV."""


SR_PRIOR_METHOD = "beam_sr"
"""The super-resolution candidate ``auto`` keeps unless another is clearly better."""

SR_PRIOR_MARGIN_DB = 0.5
"""Estimated gain (dB) by which another super-resolution candidate must beat the prior (as the
``tomo_projection`` margin over the input: a near-tie is the score's noise)."""


def keeps_sr_prior(prior_gain_db: float | None, best_gain_db: float | None) -> bool:
    """Whether the super-resolution prior stays chosen over a better-scored candidate.

    ``prior_gain_db`` and ``best_gain_db`` are their estimated gains over the input (dB). The
    prior stays when it beats the input (gain > 0) and the best is within
    :data:`SR_PRIOR_MARGIN_DB` of it.
    """
    if prior_gain_db is None or best_gain_db is None or prior_gain_db <= 0.0:
        return False
    return best_gain_db - prior_gain_db <= SR_PRIOR_MARGIN_DB


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
