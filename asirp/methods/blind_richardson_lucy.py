r"""Blind Richardson-Lucy: estimate the beam (PSF) and the image together from an initial guess.

Two stages, for every map of a stack on its own:

1. **Beam width** (``sigma_search="heldout"``, default). Alternating image and PSF updates alone
   cannot find the width: joint maximum likelihood is degenerate, since a blurrier image with a
   narrower PSF fits the counts as well as the true pair (Levin et al. 2011), and from a guess
   narrower than the beam the alternation stays at the guess. The width is therefore chosen
   within a Gaussian family :math:`G_s` (one width, or one per axis with
   ``sigma_axes="per_axis"``) by held-out Poisson likelihood under binomial thinning of the
   counts: restore part of the events with each candidate width, predict the held-out events
   through the forward model and keep the width whose prediction has the lowest Poisson
   deviance (:mod:`asirp.methods._psf_search`). What makes this identify the beam is
   positivity: with a narrower PSF the object is a blurrier copy that never reaches zero, so
   positivity stops regularising the fit and it follows more noise (a slowly worse prediction);
   a wider PSF would need negative lobes next to sharp edges and near-zero regions, which a
   positive object cannot supply (a steeply worse prediction).
2. **Refinement**, from the Gaussian of that width. ``psf_model="gaussian"`` keeps it and runs
   Richardson-Lucy on the image. ``psf_model="free"`` (default) alternates one RL step for the
   image with the current PSF and one for the PSF with the current image, both from the same
   prediction :math:`\mu = h * x + b` and ratio :math:`r = y / \mu` (Fish et al. 1995, MATLAB's
   ``deconvblind``), the PSF step being the MAP-EM step under a Dirichlet prior whose mean is
   the starting PSF :math:`h_0` and whose weight is :math:`\beta` (``psf_prior_weight``) times
   the counts (Green 1990):

   .. math:: x \leftarrow \frac{x}{h \star 1} \, (h \star r), \qquad
             h \leftarrow \frac{1}{1 + \beta} \left( \frac{h}{\sum x} \, (x \star r)
             + \beta h_0 \right)

   (:math:`\star` is correlation). After each step the PSF is projected: it stays
   non-negative, zero outside its window, and sums to 1. Without the prior
   (:math:`\beta = 0`, plain alternation) the PSF narrows while the image is still blurry and
   then gathers noise in its window (on a 50-count mesh its width triples within 150
   iterations); with the default :math:`\beta = 3` it keeps its width within a few per cent
   and the image is as good as with the Gaussian, while a beam that is not quite Gaussian can
   still change its shape a little.

The PSF window is ``psf_support_px`` (square), or else :math:`\pm 4 s` about the centre along
each axis. With ``sigma_search="none"`` the alternation starts from the guess itself (the
earlier behaviour, which does not recover the width).

``Restoration.params`` reports ``estimated_sigma_px`` (the second-moment width of the returned
PSF, rows and columns, per map), ``searched_sigma_px`` (the width found by the search) and
``sigma_search_report`` (per map: the interval, the thinning fraction, the window used, every
width tried with its held-out score excess per held-out pixel, and whether the data
``identified`` the width; :class:`BlindWidthWarning` when they did not).

Cost: the width search restores two thinned copies of 11 candidate widths (35 for
``per_axis``) on a window of at most ``search_window_px`` square, for up to
``search_iterations`` plain RL iterations each (most stop earlier), once per call: about 0.5 s
for a 96 x 96 map on two CPU cores. Each refinement iteration then costs what a non-blind RL
iteration costs with the Gaussian PSF (direct separable blur for a single map on the CPU, four
FFTs otherwise), or five FFTs with the free PSF (the object's, the prediction, the ratio's, the
image correction and the PSF correction; :math:`h \star 1` comes from the PSF's partial sums).

References
----------
.. [1] D. A. Fish, A. M. Brinicombe, E. R. Pike and J. G. Walker, "Blind deconvolution by means
   of the Richardson-Lucy algorithm", JOSA A 12, 58-65 (1995).
.. [2] G. R. Ayers and J. C. Dainty, "Iterative blind deconvolution method and its
   applications", Opt. Lett. 13, 547-549 (1988).
.. [3] A. Levin, Y. Weiss, F. Durand and W. T. Freeman, "Understanding blind deconvolution
   algorithms", IEEE TPAMI 33, 2354-2367 (2011).
.. [4] A. Neufeld, A. Dharamshi, L. L. Gao and D. Witten, "Data thinning for
   convolution-closed distributions", J. Mach. Learn. Res. 25, 1-35 (2024).
.. [5] P. J. Green, "On use of the EM algorithm for penalized likelihood estimation", J. R.
   Stat. Soc. B 52, 443-452 (1990).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from asirp.blur import BlurOperator
from asirp.iteration import IterationControl, estimate_counts_gain
from asirp.methods._common import adjoint_of_ones, non_negative, smooth_initial_estimate
from asirp.methods._gaussian import gaussian_kernels, kernel_radius
from asirp.methods._psf_search import search_sigma
from asirp.methods._public import Device, IterativeBoundary, StopRule
from asirp.psf import psf_sigma_px
from asirp.registry import (
    BACKGROUND,
    ITERATIVE_BOUNDARY,
    CostPrior,
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    iterations_parameter,
    no_grad,
    register_method,
    stopping_parameters,
)
from asirp.restore import restore

SEARCH_SHARE = 0.7
"""Share of the progress bar given to the width search (the rest is the refinement)."""


def widen_support(psf: torch.Tensor, support: int | None, limit: tuple[int, int]) -> torch.Tensor:
    """Pad the initial PSF ``(h, w)`` to the estimation window, with a small positive floor.

    Multiplicative updates never leave zero, so the new pixels get 1e-4 of the peak.
    """
    if support is None:
        return psf
    rows = min(max(support, psf.shape[-2]), limit[0] - (1 - limit[0] % 2))
    cols = min(max(support, psf.shape[-1]), limit[1] - (1 - limit[1] % 2))
    pad_y, pad_x = (rows - psf.shape[-2]) // 2, (cols - psf.shape[-1]) // 2
    widened = F.pad(psf, (pad_x, pad_x, pad_y, pad_y))
    widened = torch.maximum(widened, 1e-4 * psf.max())
    return widened / widened.sum()


def gaussian_start(
    sigma: np.ndarray,
    support: int | None,
    limit: tuple[int, int],
    device: torch.device,
    floor: bool,
) -> torch.Tensor:
    """Per-map Gaussian PSFs ``(B, h, w)`` of widths ``sigma`` ``(B, 2)`` on one window.

    The window is ``support`` (square, odd) when given, else +-4 sigma of the widest map along
    each axis; never larger than the map. Each map's Gaussian is cut at +-4 of its own sigma
    (or the window), so it does not depend on the other maps of a stack. With ``floor`` (the
    free model) every pixel of its own window gets at least 1e-4 of its peak, since
    multiplicative updates never leave zero.
    """
    largest = (limit[0] - 1) // 2, (limit[1] - 1) // 2
    widths = torch.as_tensor(sigma, dtype=torch.float64)
    if support is not None:
        radius = (min(support // 2, largest[0]), min(support // 2, largest[1]))
        psf = gaussian_kernels(widths, radius, truncate=None)
        reach = torch.ones_like(psf, dtype=torch.bool)
    else:
        radius = (
            kernel_radius(float(sigma[:, 0].max()), largest[0]),
            kernel_radius(float(sigma[:, 1].max()), largest[1]),
        )
        psf = gaussian_kernels(widths, radius)
        reach = psf > 0
    if floor:
        psf = torch.where(reach, torch.maximum(psf, 1e-4 * psf.amax(dim=(-2, -1), keepdim=True)), 0)
        psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    return psf.to(device)


def _gain(data: torch.Tensor, problem: Problem, params: dict[str, Any]) -> float:
    """Counts per Poisson event: the problem's when the discrepancy stop set it, else estimated."""
    if params["stop"] == "discrepancy":
        return float(problem.counts_gain)
    return estimate_counts_gain(data.detach().cpu().numpy())


MIN_SEARCH_SIGMA_PX = 0.05
"""Narrowest initial-guess width (either axis, px) the held-out width search can scale."""


class BlindWidthWarning(UserWarning):
    """The held-out search did not determine the beam width.

    ``identified`` is false in the search report: the estimate is at the interval's end, or the
    score hardly rises for wider beams.
    """


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Blind Richardson-Lucy on ``(B, H, W)`` counts; see the module notes."""
    assert problem.psf is not None  # the initial guess, guaranteed by needs_psf
    data = non_negative(problem.data)
    batch = data.shape[0]
    limit = (int(data.shape[-2]), int(data.shape[-1]))
    support = params["psf_support_px"]
    if support is not None and support % 2 == 0:
        support += 1
    guess_sigma = psf_sigma_px(problem.psf.detach().cpu().numpy())
    info: dict[str, Any] = {}

    refine_problem = problem
    if params["sigma_search"] == "heldout" and min(guess_sigma) < MIN_SEARCH_SIGMA_PX:
        # the search scales a 2-D Gaussian; a blur along one axis only (a (1, w) detector-row
        # PSF) has no width to scale on the other
        raise ValueError(
            "blind Richardson-Lucy's held-out width search needs a blur along both axes; this "
            f"PSF's widths are {guess_sigma[0]:.3g} x {guess_sigma[1]:.3g} px (rows x columns): "
            "use sigma_search='none' (the PSF is refined from the guess) or give a 2-D PSF"
        )
    if params["sigma_search"] == "heldout":
        search_problem = dataclasses.replace(
            problem, progress=lambda fraction: problem.progress(SEARCH_SHARE * fraction)
        )
        found = search_sigma(
            data, guess_sigma, params, search_problem, _gain(data, problem, params)
        )
        free = params["psf_model"] == "free"
        psf = gaussian_start(found.sigma, support, limit, data.device, floor=free)
        info["searched_sigma_px"] = [[round(float(v), 4) for v in row] for row in found.sigma]
        info["sigma_search_report"] = found.report
        unsure = [index for index, entry in enumerate(found.report) if not entry["identified"]]
        if unsure:
            bounded = [index for index in unsure if found.report[index]["at_bound"]]
            warnings.warn(
                BlindWidthWarning(
                    f"blind_richardson_lucy: the data do not determine the beam width of map(s) "
                    f"{unsure}"
                    + (f" (at the upper end of the search interval: {bounded})" if bounded else "")
                    + ": the held-out score hardly rises for wider beams, as on maps without "
                    "structure sharper than the beam (smooth samples, an unresolved mesh); the "
                    "estimate may be far off: give a measured PSF"
                ),
                stacklevel=2,
            )
        refine_problem = dataclasses.replace(
            problem,
            progress=lambda fraction: problem.progress(
                SEARCH_SHARE + (1.0 - SEARCH_SHARE) * fraction
            ),
        )
    else:
        psf = widen_support(problem.psf, support, limit).expand(batch, -1, -1).clone()

    estimate, psf, control = _refine(refine_problem, params, data, psf)
    info.update(control.info())
    info["estimated_sigma_px"] = [
        [round(v, 4) for v in psf_sigma_px(kernel)] for kernel in psf.detach().cpu().numpy()
    ]
    info["initial_sigma_px"] = [[round(v, 4) for v in guess_sigma] for _ in range(batch)]
    return MethodOutput(estimate, psf, info)


def _refine(
    problem: Problem, params: dict[str, Any], data: torch.Tensor, psf: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, IterationControl]:
    """RL for the image, alternating with RL for the PSF when ``psf_model="free"``.

    Parameters
    ----------
    problem : Problem
        Progress, cancellation and counts gain.
    params : dict
        The method's resolved parameters.
    data : torch.Tensor
        ``(B, H, W)`` non-negative counts.
    psf : torch.Tensor
        ``(B, h, w)`` starting PSFs, each summing to 1.

    Returns
    -------
    (torch.Tensor, torch.Tensor, IterationControl)
        The restored maps ``(B, H, W)``, the final PSFs ``(B, h, w)`` and the loop's control.
    """
    free = params["psf_model"] == "free"
    shared = not free and psf.shape[0] == 1  # one fixed PSF: the operator may blur directly
    operator = BlurOperator(psf[0] if shared else psf, tuple(data.shape[-2:]), params["boundary"])
    background = params["background"]
    prior, prior_weight = psf.clone(), params["psf_prior_weight"]

    rows, cols = psf.shape[-2:]
    lag_rows = torch.arange(-(rows // 2), rows // 2 + 1, device=data.device) % operator.fft_shape[0]
    lag_cols = torch.arange(-(cols // 2), cols // 2 + 1, device=data.device) % operator.fft_shape[1]
    normaliser = adjoint_of_ones(operator, data)
    estimate = smooth_initial_estimate(operator, data, normaliser)

    control = IterationControl(problem, params)
    for _ in control:
        if free:  # five FFTs: the object's, the prediction, the ratio's and two corrections
            spectrum = operator.object_spectrum(estimate)
            prediction = operator.forward_from_spectrum(spectrum) + background
            ratio_spectrum = operator.data_spectrum(data / prediction.clamp_min(1e-12))
            correction = operator.adjoint_from_spectrum(ratio_spectrum)
            lagged = torch.fft.irfft2(ratio_spectrum * spectrum.conj(), s=operator.fft_shape)
            psf_correction = lagged.index_select(-2, lag_rows).index_select(-1, lag_cols)
            flux = estimate.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
            new_psf = (psf * psf_correction / flux).clamp_min(0.0)
            new_psf = new_psf / new_psf.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
            new_psf = (new_psf + prior_weight * prior) / (1.0 + prior_weight)
        else:
            prediction, ratio = operator.poisson_ratio(estimate, data, background)
            correction = operator.adjoint(ratio)
        estimate = control.step(estimate, estimate * correction / normaliser, data, prediction)
        if free:
            psf = torch.where(control.accepted.view(-1, 1, 1), new_psf, psf)
            operator.set_psf(psf)
            normaliser = adjoint_of_ones(operator, data)
    return operator.crop(estimate), psf, control


SPEC = register_method(
    MethodSpec(
        name="blind_richardson_lucy",
        family="blind",
        needs_psf=True,
        scale=1,
        summary="beam width by held-out likelihood, then alternating RL for image and PSF",
        parameters=(
            iterations_parameter(50, "maximum number of refinement iterations"),
            *stopping_parameters("discrepancy"),
            Parameter(
                "psf_model",
                str,
                "free",
                "refinement: 'free' (alternating image/PSF RL) or 'gaussian' (PSF kept)",
                choices=("free", "gaussian"),
            ),
            Parameter(
                "psf_prior_weight",
                float,
                3.0,
                "free PSF: weight of the starting PSF as a prior, relative to the data (0 = none)",
                minimum=0.0,
                maximum=1000.0,
            ),
            Parameter(
                "sigma_search",
                str,
                "heldout",
                "beam width: 'heldout' (thinned-counts likelihood) or 'none' (start at the guess)",
                choices=("heldout", "none"),
            ),
            Parameter(
                "sigma_axes",
                str,
                "common",
                "'common' (one width, the guess's aspect kept) or 'per_axis' (rows, columns)",
                choices=("common", "per_axis"),
            ),
            Parameter(
                "sigma_min_px",
                float,
                None,
                "lower end of the width search, px (None = guess / 2.5, at least 0.3)",
                minimum=0.1,
                maximum=1000.0,
            ),
            Parameter(
                "sigma_max_px",
                float,
                None,
                "upper end of the width search, px (None = guess x 2.5; at most window / 8)",
                minimum=0.2,
                maximum=1000.0,
            ),
            Parameter(
                "search_iterations",
                int,
                200,
                "most RL iterations per candidate width in the search",
                minimum=10,
                maximum=5000,
            ),
            Parameter(
                "search_counts",
                float,
                100.0,
                "events per fitted subset at the brightest pixels (thinning below 1/2 above it)",
                minimum=5.0,
                maximum=1e6,
            ),
            Parameter(
                "search_window_px",
                int,
                128,
                "side of the map window (the one with most edges) used by the search, px",
                minimum=16,
                maximum=4096,
            ),
            Parameter(
                "psf_support_px",
                int,
                None,
                "side of the square PSF window estimated, px (None = +-4 sigma of the estimate)",
                minimum=3,
                maximum=1025,
            ),
            BACKGROUND,
            ITERATIVE_BOUNDARY,
        ),
        run=run,
        cost_prior=CostPrior(passes=4.0, per_iteration=4.0),
    )
)


def blind_richardson_lucy(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    iterations: int = 50,
    stop: StopRule = "discrepancy",
    discrepancy: float = 1.0,
    tolerance: float = 0.001,
    psf_model: Literal["free", "gaussian"] = "free",
    psf_prior_weight: float = 3.0,
    sigma_search: Literal["heldout", "none"] = "heldout",
    sigma_axes: Literal["common", "per_axis"] = "common",
    sigma_min_px: float | None = None,
    sigma_max_px: float | None = None,
    search_iterations: int = 200,
    search_counts: float = 100.0,
    search_window_px: int = 128,
    psf_support_px: int | None = None,
    background: float = 0.0,
    boundary: IterativeBoundary = "extend",
    seed: int = 0,
    device: Device = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Blind Richardson-Lucy: beam width by held-out likelihood, then image and PSF.

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype (negative values are set to zero); never modified.
    psf : array_like, shape (h, w)
        Initial guess of the point spread function: odd sides, non-negative.
    iterations : int
        Maximum number of refinement iterations.
    stop : {"discrepancy", "fixed", "stagnation"}
        When to stop: after 'iterations', at the Poisson discrepancy, or on stagnation.
    discrepancy : float
        ``stop='discrepancy'`` target: mean Poisson deviance per pixel (1 = noise level).
    tolerance : float
        ``stop='stagnation'`` threshold: relative change of the estimate per iteration.
    psf_model : {"free", "gaussian"}
        Refinement: 'free' (alternating image/PSF RL) or 'gaussian' (PSF kept).
    psf_prior_weight : float
        Free PSF: weight of the starting PSF as a prior, relative to the data (0 = none).
    sigma_search : {"heldout", "none"}
        Beam width: 'heldout' (thinned-counts likelihood) or 'none' (start at the guess).
    sigma_axes : {"common", "per_axis"}
        'common' (one width, the guess's aspect kept) or 'per_axis' (rows, columns).
    sigma_min_px : float, optional
        Lower end of the width search, px (None = guess / 2.5, at least 0.3).
    sigma_max_px : float, optional
        Upper end of the width search, px (None = guess x 2.5; at most window / 8).
    search_iterations : int
        Most RL iterations per candidate width in the search.
    search_counts : float
        Events per fitted subset at the brightest pixels (thinning below 1/2 above it).
    search_window_px : int
        Side of the map window (the one with most edges) used by the search, px.
    psf_support_px : int, optional
        Side of the square PSF window estimated, px (None = +-4 sigma of the estimate).
    background : float
        Constant background in the data (counts per pixel).
    boundary : {"extend", "zero", "periodic"}
        Edges: 'extend' (unknown object past the map), 'zero' or 'periodic'.
    seed : int
        Seed of the method's randomness (the same seed gives the same result).
    device : str or torch.device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    image : numpy.ndarray of float32, shape of ``image``
        The restored map(s), counts.
    psf : numpy.ndarray of float32, shape (h', w') or (B, h', w')
        The estimated PSF (one per map of a stack), sum 1.

    See Also
    --------
    asirp.restore : the same run, with metrics and provenance.
    """
    result = restore(
        image,
        SPEC.name,
        psf=psf,
        device=device,
        seed=seed,
        iterations=iterations,
        stop=stop,
        discrepancy=discrepancy,
        tolerance=tolerance,
        psf_model=psf_model,
        psf_prior_weight=psf_prior_weight,
        sigma_search=sigma_search,
        sigma_axes=sigma_axes,
        sigma_min_px=sigma_min_px,
        sigma_max_px=sigma_max_px,
        search_iterations=search_iterations,
        search_counts=search_counts,
        search_window_px=search_window_px,
        psf_support_px=psf_support_px,
        background=background,
        boundary=boundary,
    )
    assert result.psf is not None  # a blind method returns its estimate
    return result.image, result.psf
