r"""Gaussian beam width by held-out Poisson likelihood: the parametric stage of blind RL.

Why the beam width is identifiable at all
-----------------------------------------
With a Gaussian PSF of standard deviation :math:`s` and a non-negative object, the data of a
beam :math:`\sigma` can be explained as well by *any* narrower beam (the object absorbs the
missing blur, :math:`G_\sigma = G_s * G_{\sqrt{\sigma^2 - s^2}}`), so the joint likelihood
:math:`\max_x p(y \mid x, s)` never prefers the true width (Levin et al. 2011). A *wider* beam,
though, needs an object with negative lobes next to every sharp edge, which positivity forbids
when the map has near-zero regions (meshes, stars, hotspots: the usual µ-XRF test samples). The
criterion used here measures both effects on counts the restoration did not see.

Criterion
---------
The counts are split by binomial thinning (:mod:`asirp.heldout`, with the references): two
disjoint subsets :math:`y_1, y_2` each draw every event with probability :math:`p`, so that
:math:`y_f` and :math:`y - y_f` are independent Poisson maps of means :math:`p\mu` and
:math:`(1-p)\mu`.
For a candidate width :math:`s`, Richardson-Lucy restores each subset (no acceleration, from
the smoothed start), and its prediction, scaled by :math:`(1-p)/p`, is scored against the held
counts by the Poisson deviance

.. math:: S_k(s) = \sum_{f=1,2} 2 \sum_i \left[ \tilde y_{f,i} \ln
          \frac{\tilde y_{f,i}}{\hat\mu_{f,i}} - \tilde y_{f,i} + \hat\mu_{f,i} \right],
          \qquad \tilde y_f = y - y_f, \quad
          \hat\mu_f = \tfrac{1-p}{p} \left( G_s * x_f^{(k)} + p\,b \right),

and the score of :math:`s` is :math:`S(s) = \min_{k \le K} S_k(s)` (the iteration count is
chosen by the held-out counts too). With a narrower beam than the truth the object is a blurrier
copy of the true one that never touches zero, so positivity no longer regularises the fit,
which follows a little more of the noise: the score is flat or rises slowly below the true
width. With a wider beam the sharp edges cannot be reached with a positive object: the score
rises steeply above it.

Choice: the *widest* width whose score is within one standard error of the best score
(``SE_RULE``; the one-standard-error rule of Breiman et al. 1984, Hastie et al. 2009, sect.
7.10), the standard error of a difference of scores being
:math:`\sqrt{N \operatorname{var}_i(d_i - d_i^{\star})}` over the :math:`N` pixels' deviance
terms. Within the flat part the data do not prefer a width; preferring the sharpest object
consistent with them puts the estimate at the foot of the wall, where positivity starts to
bind. The width is searched in log-space: a coarse grid of 5 widths over
``[sigma_min_px, sigma_max_px]``, then 6 more between the widest acceptable width and the next
wider one tried (a step of about 7 % for the default interval), and a linear interpolation of the
excess score (in standard errors) to the threshold between those two. Candidates that have
passed their best, or cannot come within one standard error of the best of their map any more,
leave the batch early. With ``sigma_axes="per_axis"`` each axis is then widened on its own in
the same way (rows, columns, then both again), from the common estimate.

The fit fraction :math:`p` is 1/2 (two complementary halves) unless the map is bright: then
each subset keeps about ``search_counts`` events at the brightest pixels
(:math:`p = \min(1/2, C / y_{99.5\%})`) and the rest is held out. Early-stopped RL is a good
predictor at tens to a few hundred counts; at thousands of counts the true beam's slow
convergence makes a narrower beam predict better and the criterion would drift low (by about
25 % on meshes at 1000 counts with :math:`p = 1/2`). Fixing the count level of the fits keeps
the criterion in the regime where it tracks the beam, and the large held-out part makes the
score precise.

Limits: the search uses :math:`K` (``search_iterations``) RL iterations per candidate, and
this cap is part of the estimator. On a fine mesh whose period is close to the beam width
positivity hardly binds below about 1.2 :math:`\sigma` at 50-200 counts, and with many more
iterations the wall moves there (+20 %); with the default :math:`K` = 200 the estimate is 0 to
+13 % off the beam on the test meshes (peak 50 to 1000 counts) and Siemens star. A wide axis of
an anisotropic beam on such a mesh can need more iterations than :math:`K` to deconvolve, and
is then underestimated. Maps without near-zero regions or sharp edges (smooth tissue) do not
identify the width: the score is then flat and the estimate is not meaningful. The report's
``wall`` (the score excess at the nearest width tried 1.2 times wider than the estimate, per
held-out pixel and per unit of the held-out to fitted ratio :math:`(1-p)/p`) measures this, and
``identified`` is false when it is below ``WALL_MIN`` or the estimate is at the interval's upper
end; blind RL then warns (:class:`asirp.methods.blind_richardson_lucy.BlindWidthWarning`).
Below about 30 counts at the brightest pixels the estimate drifts low.

Why the wall is divided by :math:`(1-p)/p`: a prediction that misses the fitted subset's mean
by :math:`\delta` misses the held-out mean by :math:`\delta (1-p)/p`, whose deviance per pixel,
about :math:`(\delta (1-p)/p)^2 / ((1-p)/p\,\mu)`, grows as :math:`(1-p)/p`. On bright maps
(:math:`p \ll 1/2`, up to 45 times more held-out than fitted counts at 5000 counts) the raw
excess of a smooth image's *gentle* rise passed a threshold set at :math:`p = 1/2`: on a smooth
microscopy image (``skimage.data.cell``, beam sigma 2 px, 1000 to 5000 counts) the search
called a width of about 4 px identified. Divided by the ratio, the wall is measured in the
fitted subset's counts, which the thinning keeps at the same level (``search_counts``) at every
brightness, so one threshold holds at all count levels; at :math:`p = 1/2` (maps up to
2 ``search_counts`` at the brightest pixels) nothing changes. Measured with the width search on
96 x 96 maps (beam sigma 1.5, 2 and 3 px, peaks 50, 300 and 3000 counts, guesses 0.7 and 1.4
times the truth): on the tuning maps (meshes, Siemens stars, hotspot tissue, ``moon``,
``coins``; seeds 11 and 12) the estimates called identified were within 46 % of the truth
before and within 19 % after (27 of 90 identified, 21 of them within 15 %); on held-out maps
(``cell``, ``camera``, ``hubble_deep_field``, a mesh and tissue; seed 31) within 25 % before
(16 of 45 identified) and 15.5 % after (7 of 45, 6 within 15 %).

References
----------
.. [1] A. Levin, Y. Weiss, F. Durand and W. T. Freeman, "Understanding blind deconvolution
   algorithms", IEEE TPAMI 33, 2354-2367 (2011).
.. [2] S. J. Reeves and R. M. Mersereau, "Blur identification by the method of generalized
   cross-validation", IEEE Trans. Image Process. 1, 301-311 (1992).
.. [3] L. Breiman, J. Friedman, R. Olshen and C. Stone, "Classification and Regression Trees",
   Wadsworth (1984); T. Hastie, R. Tibshirani and J. Friedman, "The Elements of Statistical
   Learning", 2nd ed., Springer (2009).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from asirp.blur import BlurOperator
from asirp.heldout import (
    Folds,
    make_folds,
    poisson_deviance_offset,
    poisson_deviance_terms,
    standard_error,
    structured_window,
)
from asirp.methods._gaussian import gaussian_kernels, kernel_radius
from asirp.registry import Problem

COARSE_POINTS = 5
"""Candidates of the first, coarse grid over the search interval (log-spaced)."""

REFINE_POINTS = (6,)
"""New candidates of each refinement round, evenly spaced in log-sigma between the widest
acceptable candidate so far and the next wider one tried (each round divides that step by one
more than this)."""

CHECK_EVERY = 5
"""Iterations between the checks that let finished or hopeless candidates leave the batch."""

SE_RULE = 1.0
"""A width is acceptable while its held-out score is within this many standard errors of the
best one (the one-standard-error rule); the widest acceptable width is kept."""

WALL_STEP = 1.2
"""The wall of the criterion is measured at the nearest width tried at least this factor wider
than the estimate (geometric mean of the axes)."""

WALL_MIN = 0.012
"""Smallest score excess at :data:`WALL_STEP` times the estimate, per held-out pixel and per unit
of the held-out to fitted ratio ``(1 - p) / p``, for the width to count as identified (module
notes). Measured with ``bench/eval_blind_sigma.py``-style maps at ``p = 1/2``: meshes the beam
resolves (sigma 1.5 and 2.5 px, 50 and 200 counts) gave 0.016 to 0.37, an unresolved mesh
(sigma 3.5 px) 0.009 or less, smooth tissue 0.005 or less."""

AXIS_RANGE = 2.5
"""``per_axis``: each axis is widened by at most this factor from the common-width estimate."""

AXIS_POINTS = 3
"""``per_axis``: candidates of the coarse grid along each axis (its start included)."""

AXIS_REFINE_POINTS = (3,)
"""``per_axis``: new candidates of each refinement round along an axis."""


def heldout_scores(
    folds: Folds,
    sigmas: np.ndarray,
    *,
    iterations: int,
    boundary: str,
    problem: Problem,
    progress: Callable[[float], None],
    leader: tuple[np.ndarray, torch.Tensor] | None = None,
) -> tuple[np.ndarray, torch.Tensor]:
    """Held-out Poisson deviance of Gaussian candidates, ``min`` over RL iterations.

    Every (map, candidate, subset) triple is one image of a batch restored together with its
    own PSF. Candidates leave the batch early (checked every ``CHECK_EVERY`` iterations):

    - once their score has not improved for as long again as the iteration of their best score
      (at least 20 iterations): the held-out deviance of RL falls, then rises as it starts to fit
      the noise;
    - once they cannot come within ``SE_RULE`` standard errors of the best score of their map
      any more, even if they kept improving until ``iterations`` at the rate of their last
      ``CHECK_EVERY`` iterations (the held-out deviance falls ever more slowly; the score
      reported for them is their best so far, an upper bound of what they would reach).

    The FFT grid shrinks with the widest candidate left.

    Parameters
    ----------
    folds : Folds
        Thinned counts of ``B`` maps.
    sigmas : numpy.ndarray
        ``(B, n, 2)`` candidate widths (rows, columns), pixels.
    iterations : int
        Most RL iterations per candidate (``K``).
    boundary : str
        Boundary of the blur operator.
    problem : Problem
        For cancellation.
    progress : callable
        ``progress(fraction)`` of this call's work.
    leader : (numpy.ndarray, torch.Tensor), optional
        Best score ``(B,)`` and its per-pixel deviance ``(B, h, w)`` already known for each map.

    Returns
    -------
    scores : numpy.ndarray
        ``(B, n)`` the best summed held-out deviance (events) of each candidate.
    maps : torch.Tensor
        ``(B, n, h, w)`` its per-pixel terms (both subsets added).
    """
    batch, count = sigmas.shape[:2]
    shape = tuple(folds.fit.shape[-2:])
    device = folds.fit.device
    flat = torch.as_tensor(sigmas.reshape(-1, 2), dtype=torch.float64)
    fit = folds.fit[:, None].expand(-1, count, -1, -1, -1).reshape(-1, *shape)
    held = folds.held[:, None].expand(-1, count, -1, -1, -1).reshape(-1, *shape)
    fraction = torch.as_tensor(folds.fraction, dtype=torch.float32, device=device)
    fraction = fraction[:, None, None].expand(-1, count, 2).reshape(-1, 1, 1)
    scale = (1.0 - fraction) / fraction
    background = folds.background * fraction
    owner = torch.arange(batch * count, device=device) // count  # map of each candidate
    if leader is None:
        known = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
        known_maps = torch.zeros((batch, *shape), device=device)
    else:
        known = torch.as_tensor(leader[0], dtype=torch.float64, device=device)
        known_maps = leader[1]

    def build(rows: torch.Tensor) -> tuple[BlurOperator, torch.Tensor]:
        """Operator and ``H^T 1`` for the batch rows ``rows`` (two per candidate)."""
        widest = flat[rows // 2].amax(dim=0)
        radius = (
            kernel_radius(float(widest[0]), (shape[0] - 1) // 2),
            kernel_radius(float(widest[1]), (shape[1] - 1) // 2),
        )
        psfs = gaussian_kernels(flat[rows // 2], radius).to(device)
        operator = BlurOperator(psfs, shape, boundary)
        return operator, operator.adjoint_of_ones().clamp_min(1e-6)

    # Per candidate (all of them): best score, its iteration and its per-pixel terms. Scores are
    # kept as half deviances without the terms that do not depend on the prediction
    # (y log y - y, the same for every candidate of a map): sum of mu - y log mu.
    best = torch.full((batch * count,), math.inf, dtype=torch.float64, device=device)
    best_at = torch.zeros(batch * count, dtype=torch.int64, device=device)
    best_maps = torch.zeros((batch * count, *shape), device=device)
    offset = poisson_deviance_offset(held).view(-1, 2).sum(1)
    known = known / 2.0 - offset.view(batch, count)[:, 0]
    known_maps = known_maps / 2.0

    # The batch being iterated: two rows (subsets) per candidate still running.
    alive = torch.arange(batch * count, device=device)
    rows = torch.arange(batch * count * 2, device=device)
    run_fit, run_held = fit.clone(), held.clone()
    run_scale, run_background = scale.clone(), background.clone()
    run_best, run_best_at, run_maps = best[alive], best_at[alive], best_maps[alive]
    checkpoint = run_best.clone()
    operator, normaliser = build(rows)
    estimate = operator.adjoint(run_fit) / normaliser
    estimate = torch.maximum(
        estimate, 1e-3 * run_fit.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    )
    for iteration in range(iterations):
        problem.check_cancel()
        prediction = (operator.forward(estimate) + run_background).clamp_min_(1e-12)
        mean = prediction * run_scale
        terms = poisson_deviance_terms(run_held, mean).view(-1, 2, *shape).sum(dim=1)
        totals = terms.sum(dim=(-2, -1), dtype=torch.float64)
        improved = totals < run_best
        run_best = torch.where(improved, totals, run_best)
        run_best_at = torch.where(improved, iteration, run_best_at)
        run_maps = torch.where(improved.view(-1, 1, 1), terms, run_maps)
        estimate = operator.multiplicative_adjoint(run_fit / prediction, estimate, normaliser)
        progress((iteration + 1) / iterations)
        if iteration % CHECK_EVERY != CHECK_EVERY - 1:
            continue
        passed = iteration - run_best_at > torch.clamp(run_best_at, min=20)
        # The leader of each map: the best score known before this call or in this call.
        best[alive], best_at[alive], best_maps[alive] = run_best, run_best_at, run_maps
        per_map = best.view(batch, count)
        ours, where = per_map.min(dim=1)
        ahead = ours < known
        leaders = torch.where(ahead, ours, known)
        leader_maps = torch.where(
            ahead.view(-1, 1, 1),
            best_maps[torch.arange(batch, device=device) * count + where],
            known_maps,
        )
        owners = owner[alive]
        rate = (checkpoint - run_best).clamp_min(0.0) / CHECK_EVERY
        reachable = run_best - rate * (iterations - 1 - iteration)
        slack = SE_RULE * standard_error(run_maps, leader_maps[owners]).nan_to_num(0.0)
        hopeless = (reachable > leaders[owners] + slack) & (iteration >= 20)
        checkpoint = run_best.clone()
        done = passed | hopeless
        if bool(done.all()):
            break
        if bool(done.any()):
            keep, keep_rows = ~done, (~done).repeat_interleave(2)
            alive, rows = alive[keep], rows[keep_rows]
            run_fit, run_held = run_fit[keep_rows], run_held[keep_rows]
            run_scale, run_background = run_scale[keep_rows], run_background[keep_rows]
            run_best, run_best_at, run_maps = run_best[keep], run_best_at[keep], run_maps[keep]
            checkpoint = checkpoint[keep]
            old_shape = operator.object_shape
            operator, normaliser = build(rows)
            top = (old_shape[0] - operator.object_shape[0]) // 2
            left = (old_shape[1] - operator.object_shape[1]) // 2
            estimate = estimate[keep_rows][
                ...,
                top : top + operator.object_shape[0],
                left : left + operator.object_shape[1],
            ].contiguous()
    best[alive], best_maps[alive] = run_best, run_maps
    scores = 2.0 * (best + offset)
    return scores.view(batch, count).cpu().numpy(), 2.0 * best_maps.view(batch, count, *shape)


@dataclass
class SearchResult:
    """Outcome of :func:`search_sigma` for a stack of ``B`` maps.

    Attributes
    ----------
    sigma : numpy.ndarray
        ``(B, 2)`` estimated widths (rows, columns), pixels.
    report : list of dict
        Per map: the estimate, the interval searched, whether the estimate is at its upper end,
        the thinning fraction, the window, how much the score varies over the widths tried
        (``score_span``) and every width tried with its score.
    """

    sigma: np.ndarray
    report: list[dict[str, Any]] = field(default_factory=list)


class _Scorer:
    """Scores candidates of a stack and judges them against the best of each map.

    Every width pair tried is remembered per map with its score and per-pixel deviance. A
    candidate is *acceptable* when its score is within ``SE_RULE`` standard errors (of the
    difference, :func:`standard_error`) of the best score of its map so far.
    """

    def __init__(self, folds: Folds, params: dict[str, Any], problem: Problem, budget: int):
        self.folds, self.params, self.problem = folds, params, problem
        self.tried: list[dict[tuple[float, float], tuple[float, torch.Tensor]]] = [
            {} for _ in folds.fraction
        ]
        self.budget, self.spent = budget, 0

    def leader(self, index: int) -> tuple[float, torch.Tensor | None]:
        """Best score and its per-pixel deviance for map ``index`` (``inf``, None if none)."""
        if not self.tried[index]:
            return math.inf, None
        return min(self.tried[index].values(), key=lambda item: item[0])

    def excess(self, index: int, pair: tuple[float, float]) -> float:
        """``(score - best) / standard error - SE_RULE`` of a tried pair: <= 0 if acceptable."""
        score, deviance = self.tried[index][pair]
        best, best_map = self.leader(index)
        if score <= best:
            return -SE_RULE
        error = float(standard_error(deviance, best_map))
        return (score - best) / max(error, 1e-9) - SE_RULE

    def __call__(self, sigmas: np.ndarray) -> None:
        """Score candidates ``(B, n, 2)`` (results go to :attr:`tried`)."""
        count = sigmas.shape[1]

        def report(fraction: float) -> None:
            self.problem.progress(min(1.0, (self.spent + fraction * count) / self.budget))

        leaders = [self.leader(index) for index in range(len(self.tried))]
        shape = tuple(self.folds.fit.shape[-2:])
        maps = torch.stack(
            [
                m if m is not None else torch.zeros(shape, device=self.folds.fit.device)
                for _, m in leaders
            ]
        )
        scores, deviance = heldout_scores(
            self.folds,
            sigmas,
            iterations=self.params["search_iterations"],
            boundary=self.params["boundary"],
            problem=self.problem,
            progress=report,
            leader=(np.array([score for score, _ in leaders]), maps),
        )
        self.spent += count
        for index, memory in enumerate(self.tried):
            for column, pair in enumerate(sigmas[index]):
                key = (float(pair[0]), float(pair[1]))
                memory[key] = (float(scores[index, column]), deviance[index, column])


def _line_search(
    scorer: _Scorer,
    start: np.ndarray,
    direction: np.ndarray,
    low: float,
    high: float,
    coarse: int,
    refine: tuple[int, ...],
) -> np.ndarray:
    """Widest acceptable point along ``log sigma = log start + t * direction``, ``t`` in bounds.

    A coarse grid of ``coarse`` points over ``[low, high]``, then rounds of ``refine`` points
    between the widest acceptable point and the next wider one, and last the linear
    interpolation (in ``t``) of :meth:`_Scorer.excess` between those two to its zero.

    Parameters
    ----------
    scorer : _Scorer
        Scores and judges candidates of the stack.
    start : numpy.ndarray
        ``(B, 2)`` widths at ``t = 0``, pixels.
    direction : numpy.ndarray
        ``(2,)`` non-negative direction in log-sigma (``(1, 1)``: both axes, ``(1, 0)``: rows).
    low, high : float
        Bounds of ``t``.
    coarse : int
        Points of the coarse grid (both bounds included).
    refine : tuple of int
        New points of each refinement round.

    Returns
    -------
    numpy.ndarray
        ``(B, 2)`` the widths found.
    """
    batch = start.shape[0]

    def pairs(t: np.ndarray) -> np.ndarray:  # (B, n) -> (B, n, 2)
        return start[:, None, :] * np.exp(t[..., None] * direction[None, None, :])

    tried: list[dict[float, tuple[float, float]]] = [{} for _ in range(batch)]  # t -> pair
    grid = np.tile(np.linspace(low, high, coarse), (batch, 1))

    def excess(index: int, t: float) -> float:
        return scorer.excess(index, tried[index][t])

    def bracket(index: int) -> tuple[float, float | None]:
        """Widest acceptable ``t`` of map ``index`` and the next tried ``t`` above it."""
        row = sorted(tried[index])
        ok = [t for t in row if excess(index, t) <= 0.0]
        widest = max(ok) if ok else row[0]
        above = [t for t in row if t > widest]
        return widest, (min(above) if above else None)

    for round_count in (0, *refine):
        if round_count:
            new = []
            for index in range(batch):
                widest, above = bracket(index)
                end = above if above is not None else widest
                steps = range(1, round_count + 1)
                new.append([widest + (end - widest) * j / (round_count + 1) for j in steps])
            grid = np.array(new)
        candidates = pairs(grid)
        scorer(candidates)
        for index in range(batch):
            for t, pair in zip(grid[index], candidates[index], strict=True):
                tried[index][float(t)] = (float(pair[0]), float(pair[1]))
    result = np.zeros(batch)
    for index in range(batch):
        widest, above = bracket(index)
        if excess(index, widest) > 0.0:  # nothing acceptable on this line: keep its best point
            result[index] = min(tried[index], key=lambda t: scorer.tried[index][tried[index][t]][0])
        elif above is None:
            result[index] = widest
        else:
            inside, outside = -excess(index, widest), excess(index, above)
            result[index] = widest + (above - widest) * inside / max(inside + outside, 1e-12)
    return start * np.exp(result[:, None] * direction[None, :])


def search_sigma(
    data: torch.Tensor,
    guess_sigma: tuple[float, float],
    params: dict[str, Any],
    problem: Problem,
    gain: float,
) -> SearchResult:
    """Estimate a Gaussian beam width per map by held-out Poisson likelihood (module notes).

    Parameters
    ----------
    data : torch.Tensor
        ``(B, H, W)`` non-negative counts.
    guess_sigma : (float, float)
        The initial guess's width (rows, columns), pixels: the centre of the default search
        interval and, for ``sigma_axes="common"``, the aspect ratio kept.
    params : dict
        The method's resolved parameters (``sigma_min_px``, ``sigma_max_px``, ``sigma_axes``,
        ``search_iterations``, ``search_counts``, ``search_window_px``, ``background``,
        ``boundary``).
    problem : Problem
        Seed, cancellation and progress.
    gain : float
        Detector counts per Poisson event (1 for raw counts).

    Returns
    -------
    SearchResult
        The widths and what was tried.
    """
    stack = data.detach().cpu().double().numpy() / gain
    batch = stack.shape[0]
    windows = [structured_window(image, params["search_window_px"]) for image in stack]
    events = np.stack([np.round(image[w]) for image, w in zip(stack, windows, strict=True)])
    events = np.clip(events, 0, None).astype(np.int64)
    mean_guess = math.sqrt(guess_sigma[0] * guess_sigma[1])
    window_side = min(events.shape[-2:])
    low_px = params["sigma_min_px"] or max(0.3, mean_guess / 2.5)
    high_px = params["sigma_max_px"] or mean_guess * 2.5
    high_px = min(high_px, window_side / 8.0)
    if not high_px > low_px:
        raise ValueError(
            f"empty beam-width search interval [{low_px:g}, {high_px:g}] px "
            f"(the upper end is at most the search window / 8 = {window_side / 8.0:g} px)"
        )
    shape_ratio = np.array([guess_sigma[0], guess_sigma[1]]) / mean_guess
    sigma = np.zeros((batch, 2))
    report = []
    for index in range(batch):  # one map at a time: its result does not depend on the others

        def progress(fraction: float, done: int = index) -> None:
            problem.progress((done + fraction) / batch)

        folds = make_folds(
            events[index : index + 1],
            params["search_counts"],
            params["background"] / gain,
            problem.seed,
            data.device,
        )
        scorer = _Scorer(folds, params, dataclasses.replace(problem, progress=progress), 1)
        sigma[index] = _search_map(scorer, shape_ratio * low_px, high_px, params)
        tried = sorted(scorer.tried[0].items(), key=lambda item: item[0][0] * item[0][1])
        best_score = scorer.leader(0)[0]
        pixels = float(events[index].size * 2)
        chosen = math.sqrt(sigma[index, 0] * sigma[index, 1])
        # the held-out deviance of a given misfit grows with the held-out to fitted ratio:
        # divided by it, the wall is in the fitted subset's counts (module notes)
        heldout_ratio = (1.0 - float(folds.fraction[0])) / float(folds.fraction[0])
        wider = [
            (math.sqrt(pair[0] * pair[1]), (s - best_score) / pixels / heldout_ratio)
            for pair, (s, _) in tried
            if math.sqrt(pair[0] * pair[1]) >= WALL_STEP * chosen
        ]
        wall = min(wider)[1] if wider else None
        at_bound = bool(chosen >= high_px / 1.02)
        report.append(
            {
                "sigma_px": [round(float(v), 4) for v in sigma[index]],
                "interval_px": [round(low_px, 4), round(high_px, 4)],
                "at_bound": at_bound,
                "wall": None if wall is None else round(wall, 6),
                "identified": bool(not at_bound and wall is not None and wall >= WALL_MIN),
                "score_span": round(max(s - best_score for _, (s, _) in tried) / pixels, 6),
                "fit_fraction": round(float(folds.fraction[0]), 4),
                "window": [
                    windows[index][0].start,
                    windows[index][0].stop,
                    windows[index][1].start,
                    windows[index][1].stop,
                ],
                "tried": [
                    [round(pair[0], 4), round(pair[1], 4), round((s - best_score) / pixels, 6)]
                    for pair, (s, _) in tried
                ],
            }
        )
    return SearchResult(sigma, report)


def _search_map(
    scorer: _Scorer, start: np.ndarray, high_px: float, params: dict[str, Any]
) -> np.ndarray:
    """The width search of one map: common width, then each axis for ``per_axis``.

    Parameters
    ----------
    scorer : _Scorer
        Scores candidates of the map.
    start : numpy.ndarray
        ``(2,)`` the narrowest widths of the interval (rows, columns), pixels.
    high_px : float
        Upper end of the interval (geometric mean of the widths), pixels.
    params : dict
        The method's resolved parameters.

    Returns
    -------
    numpy.ndarray
        ``(2,)`` the widths found, pixels.
    """
    per_axis = params["sigma_axes"] == "per_axis"
    common_cost = COARSE_POINTS + sum(REFINE_POINTS)
    axis_cost = AXIS_POINTS + sum(AXIS_REFINE_POINTS)
    scorer.budget = common_cost + (4 * axis_cost if per_axis else 0)
    span = math.log(high_px / math.sqrt(start[0] * start[1]))
    sigma = _line_search(scorer, start[None], np.ones(2), 0.0, span, COARSE_POINTS, REFINE_POINTS)
    if per_axis:  # widen each axis on its own: rows, columns, then both again
        for axis in (0, 1, 0, 1):
            stretch = min(math.log(high_px / sigma[0, axis]), math.log(AXIS_RANGE))
            if stretch > 0:
                sigma = _line_search(
                    scorer, sigma, np.eye(2)[axis], 0.0, stretch, AXIS_POINTS, AXIS_REFINE_POINTS
                )
    return sigma[0]
