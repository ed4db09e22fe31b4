"""What the caller tells the selector about the data: the context, its checks, the kind of scan.

:func:`make_context` checks the caller's description (modality, whether the PSF is known, a
second measurement, the latency budget, the mode, the scale, the allowed candidates) and builds
a :class:`SelectionContext`; :func:`how_to_split` says how such data are split, and
:func:`scan_kind` which earlier scans were "of the same kind" (for remembered choices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.psf import ResolvedPSF, psf_sigma_px
from asirp.registry import get_method
from asirp.selection.candidates import IDENTITY
from asirp.selection.policy import MODALITIES
from asirp.selection.prior import NEGATIVE_FRACTION_LIMIT
from asirp.selection.score import ALPHA_RANGE
from asirp.validation import as_image_stack

MODES = ("cheap", "thorough")


CHEAP_REGION_PX = 96
"""Side of the region scored in the cheap mode, px."""


THOROUGH_REGION_PX = 256
"""Side of the region scored in the thorough mode, px."""


@dataclass(frozen=True)
class SelectionContext:
    """What the caller tells the selector about the data (validated by :func:`make_context`).

    Attributes
    ----------
    modality : {"xrf_map", "tomo_projection", "image"}
        Kind of data: µ-XRF maps are counts (binomial split); flat-fielded tomography
        projections are not (data fission); ``"image"`` decides from the data.
    psf_known : bool
        Whether the PSF is the true one (``False``: a guess; blind methods are candidates).
    second : numpy.ndarray or None
        An independent second measurement ``(B, H, W)``, float32 (used for the split).
    budget_ms : float or None
        Latency budget for selection plus restoration, ms.
    mode : {"cheap", "thorough"}
        How much to try.
    scale : int
        Output scale (1: deconvolution; 2 or 4: super-resolution).
    names : tuple of str or None
        Methods the caller allows (``None``: every fitting one).
    psf : numpy.ndarray or None
        The PSF on the input grid, ``(h, w)``, sum 1.
    psf_description : dict
        Where it came from (beam FWHM and pixel size in µm, sigma, file...).
    counts_gain : float or None
        Values per detected count, when the caller knows it (``1 / I0`` of a normalised map):
        the binomial split thins counts of that size instead of estimating it from the noise.
    """

    modality: str = "image"
    psf_known: bool = True
    second: np.ndarray | None = None
    budget_ms: float | None = None
    mode: str = "thorough"
    scale: int = 1
    names: tuple[str, ...] | None = None
    psf: np.ndarray | None = None
    psf_description: dict[str, Any] = field(default_factory=dict)
    counts_gain: float | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary (the second measurement by its shape only)."""
        given = {} if self.counts_gain is None else {"counts_gain": self.counts_gain}
        return {
            **given,
            "modality": self.modality,
            "psf_known": self.psf_known,
            "psf": self.psf_description,
            "second_measurement": list(self.second.shape) if self.second is not None else None,
            "budget_ms": self.budget_ms,
            "mode": self.mode,
            "scale": self.scale,
            "candidates": list(self.names) if self.names is not None else None,
        }


def make_context(
    stack: np.ndarray,
    resolved_psf: ResolvedPSF | None,
    *,
    modality: str = "image",
    psf_known: bool | None = None,
    second: Any = None,
    budget_ms: float | None = None,
    mode: str | None = None,
    scale: int = 1,
    candidates: Any = None,
) -> SelectionContext:
    """Check the caller's context and build a :class:`SelectionContext`.

    Parameters
    ----------
    stack : numpy.ndarray
        The data ``(B, H, W)``.
    resolved_psf : ResolvedPSF or None
        The PSF (:func:`asirp.psf.resolve_psf` checked its description: a negative beam FWHM or
        pixel size is refused there).
    modality, psf_known, second, budget_ms, mode, scale, candidates
        See :func:`select`.

    Raises
    ------
    ValueError
        Unknown modality or mode, a second measurement of another shape, a budget <= 0, a
        scale < 1, an unknown candidate name.
    TypeError
        Values of the wrong type.
    """
    if not isinstance(modality, str) or modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; allowed: {', '.join(MODALITIES)}")
    if psf_known is None:
        psf_known = resolved_psf is not None
    if not isinstance(psf_known, bool | np.bool_):
        raise TypeError(f"psf_known must be true or false, got {psf_known!r}")
    second_stack = None
    if second is not None:
        second_stack, _ = as_image_stack(second, "second measurement")
        if second_stack.shape != stack.shape:
            raise ValueError(
                f"the second measurement has shape {np.shape(second)}, but the image has shape "
                f"{stack.shape if stack.shape[0] > 1 else stack.shape[1:]}; they must match"
            )
    if budget_ms is not None:
        if isinstance(budget_ms, bool) or not isinstance(budget_ms, int | float | np.number):
            raise TypeError(f"budget_ms must be a number of milliseconds, got {budget_ms!r}")
        if not math.isfinite(float(budget_ms)) or budget_ms <= 0:
            raise ValueError(f"budget_ms must be finite and > 0 (ms), got {budget_ms!r}")
        budget_ms = float(budget_ms)
    if mode is None:
        mode = "cheap" if budget_ms is not None else "thorough"
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    names = None
    if candidates is not None:
        if isinstance(candidates, str):
            candidates = (candidates,)
        names = tuple(str(name) for name in candidates)
        for name in names:
            if name != IDENTITY:
                get_method(name)
    return SelectionContext(
        modality=modality,
        psf_known=bool(psf_known),
        second=second_stack,
        budget_ms=budget_ms,
        mode=mode,
        scale=int(scale),
        names=names,
        psf=resolved_psf.array if resolved_psf is not None else None,
        psf_description=resolved_psf.description if resolved_psf is not None else {},
    )


TOMO_ALPHA_FLOOR = 1e-2
r"""Lowest band floor :math:`\alpha` for tomography projections (see :func:`alpha_floor`)."""


def alpha_floor(context: SelectionContext) -> float:
    r"""The lowest band floor :math:`\alpha` the score may use for this context.

    :func:`asirp.selection.score.band_alpha` sets :math:`\alpha` from the data's noise over
    their whole variance. A flat-fielded sinogram's variance is the slowly varying attenuation
    of the object, which says nothing of the signal near the band edge, where deconvolution
    acts: the ratio came out about 100 times too small, and a band that wide let noise
    amplified by up to :math:`1/4\alpha` decide the ranking (``auto`` chose Wiener or Van
    Cittert, which made reconstructions worse). For ``"tomo_projection"`` the floor is
    :data:`TOMO_ALPHA_FLOOR`, fixed on tuning seeds 0-8 of the simulator's tomography phantom
    (1000, 5000 and 30000 open-beam counts); ``bench/bench_tomo_quality.py`` evaluates it on
    other seeds and the real tooth.
    """
    return TOMO_ALPHA_FLOOR if context.modality == "tomo_projection" else ALPHA_RANGE[0]


TOMO_MARGIN_DB = 0.5
"""Estimated gain a restoration needs over the input for ``"tomo_projection"`` (dB)."""


def identity_margin_db(context: SelectionContext) -> float:
    """The estimated gain over the input (dB) that a restoration must reach to be chosen.

    For ``"tomo_projection"`` :data:`TOMO_MARGIN_DB`: a near-tie with doing nothing is decided
    by the score's noise, and filtered back-projection amplifies what a restoration got wrong,
    so the input is kept unless a restoration is clearly better (on the tuning phantoms the
    chosen methods' estimated gains were 1.2 to 2.3 dB; near-ties had been within 0.1 dB).
    0 otherwise: the best score wins, as measured for maps (``bench/eval_selector.py``).
    """
    return TOMO_MARGIN_DB if context.modality == "tomo_projection" else 0.0


def emphasis_for(context: SelectionContext) -> str:
    """How the score weights errors over frequency (:func:`asirp.selection.score.band_weights`).

    ``"ramp"`` for tomography projections: the selector scores a sinogram, and what counts is the
    error of its filtered back-projection, which weights the detector axis by ``|f|``; ``"flat"``
    for maps and images, which are the result themselves.
    """
    return "ramp" if context.modality == "tomo_projection" else "flat"


def how_to_split(stack: np.ndarray, context: SelectionContext) -> tuple[str, str]:
    """How to split the data: ``"measurements"``, ``"fission"`` or ``"binomial"``, and why."""
    if context.second is not None:
        return "measurements", "a second independent measurement was given"
    if context.modality == "tomo_projection":
        return "fission", "tomography projections after flat-field are not counts"
    negative = float(np.mean(stack < 0))
    if negative > NEGATIVE_FRACTION_LIMIT:
        return "fission", f"{100 * negative:.1f} % of the pixels are negative (not counts)"
    return "binomial", "the data are non-negative counts"


def scan_kind(stack: np.ndarray, context: SelectionContext) -> str:
    """Key of "the same kind of scan" for remembered choices.

    Modality, scale, PSF sigma (to 0.25 px), count level (half decades of the mean), map shape
    and split kind.
    """
    if context.psf is not None:
        sigma = float(np.sqrt(np.prod(psf_sigma_px(context.psf))))
        blur = f"{round(4 * sigma) / 4:g}px"
    else:
        blur = "none"
    mean = float(np.mean(np.abs(stack)))
    level = f"1e{round(2 * math.log10(mean)) / 2:g}" if mean > 0 else "0"
    kind, _ = how_to_split(stack, context)
    shape = "x".join(str(n) for n in stack.shape[1:])
    return (
        f"{context.modality}|scale={context.scale}|psf={blur}|counts={level}|shape={shape}"
        f"|split={kind}"
    )
