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
The counts are split by binomial thinning (Poisson data thinning; Leiner et al. 2023, Neufeld
et al. 2024): two disjoint subsets :math:`y_1, y_2` each draw every event with probability
:math:`p` (:math:`y_f \sim \mathrm{Binomial}(y, p)`), so that, for Poisson data, :math:`y_f` and
:math:`y - y_f` are independent Poisson maps with means :math:`p\mu` and :math:`(1-p)\mu`.
For a candidate width :math:`s`, Richardson-Lucy restores each subset (no acceleration, from
the smoothed start), and its prediction, scaled by :math:`(1-p)/p`, is scored against the held
counts by the Poisson deviance

.. math:: S_k(s) = \sum_{f=1,2} 2 \sum_i \left[ \tilde y_{f,i} \ln
          \frac{\tilde y_{f,i}}{\hat\mu_{f,i}} - \tilde y_{f,i} + \hat\mu_{f,i} \right],
          \qquad \tilde y_f = y - y_f, \quad
          \hat\mu_f = \tfrac{1-p}{p} \left( G_s * x_f^{(k)} + p\,b \right),

and the score of :math:`s` is :math:`\min_{k \le K} S_k(s)` (the iteration count is chosen by
the held-out counts too). With a narrower beam than the truth the object is a blurrier copy of
the true one that never touches zero, so positivity no longer regularises the fit, which
follows more of the noise: the score rises slowly below the true width. With a wider beam the
sharp edges cannot be reached with a positive object: the score rises steeply above it. The width
is searched in log-space: a coarse grid of 5 widths over ``[sigma_min_px, sigma_max_px]``, then
4 and 2 more inside the bracket of the best so far (a step of about 8 % in the end), and the
vertex of the parabola through the best three. Candidates that have passed their best, or
cannot catch up with the best of their map any more, leave the batch early.

The fit fraction :math:`p` is 1/2 (two complementary halves) unless the map is bright: then
each subset keeps about ``search_counts`` events at the brightest pixels
(:math:`p = \min(1/2, C / y_{99.5\%})`) and the rest is held out. Early-stopped RL is a good
predictor at tens to a few hundred counts; at thousands of counts the true beam's slow
convergence makes a narrower beam predict better and the criterion would drift low (by about
25 % on meshes at 1000 counts with :math:`p = 1/2`). Fixing the count level of the fits keeps
the criterion in the regime where it tracks the beam, and the large held-out part makes the
score precise.

Limits: the search uses :math:`K` (``search_iterations``) RL iterations per candidate. On a
fine mesh whose period is close to the beam width, positivity hardly binds below about
1.2 :math:`\sigma` at 50-200 counts, and with many more iterations the optimum drifts to that
wall (+20 %); the default :math:`K` = 200 keeps it within a few per cent of the beam on the test
meshes and stars. Maps without near-zero regions or sharp edges (smooth tissue) do not identify
the width: the score is then flat and the estimate is not meaningful (``score_span`` in the
report: the largest excess of a tried width over the best, per held-out pixel, is then about
0.01 or less). Below about 30 counts at the brightest pixels the estimate drifts low.

References
----------
.. [1] J. Leiner, B. Duan, L. Wasserman and A. Ramdas, "Data fission: splitting a single data
   point", J. Am. Stat. Assoc. (2023).
.. [2] A. Neufeld, A. Dharamshi, L. L. Gao and D. Witten, "Data thinning for
   convolution-closed distributions", J. Mach. Learn. Res. 25, 1-35 (2024).
.. [3] A. Levin, Y. Weiss, F. Durand and W. T. Freeman, "Understanding blind deconvolution
   algorithms", IEEE TPAMI 33, 2354-2367 (2011).
.. [4] S. J. Reeves and R. M. Mersereau, "Blur identification by the method of generalized
   cross-validation", IEEE Trans. Image Process. 1, 301-311 (1992).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from asirp.blur import BlurOperator
from asirp.registry import Problem

TRUNCATE = 4.0
"""Gaussian kernels are cut at this many standard deviations (as :func:`asirp.psf.gaussian_psf`)."""

COARSE_POINTS = 5
"""Candidates of the first, coarse grid over the search interval (log-spaced)."""

REFINE_POINTS = (4, 2)
"""New candidates of each refinement round, evenly spaced in log-sigma inside the bracket of
the best candidate so far (so each round divides the grid step by one more than this)."""

CHECK_EVERY = 5
"""Iterations between the checks that let finished or hopeless candidates leave the batch."""

ASPECT_RANGE = 2.5
"""``per_axis``: the aspect ratio (rows / columns) is searched within this factor of the one
found for the common width."""


def gaussian_kernels(sigmas: torch.Tensor, radius: tuple[int, int]) -> torch.Tensor:
    """Pixel-integrated, normalised Gaussian kernels, one per row of ``sigmas``.

    Each pixel holds the integral of the Gaussian over that pixel (error functions), as
    :func:`asirp.psf.gaussian_psf` does, so the two agree on the same window.

    Parameters
    ----------
    sigmas : torch.Tensor
        ``(M, 2)`` standard deviations along rows and columns, pixels, > 0.
    radius : (int, int)
        Half-size of the window along rows and columns, pixels.

    Returns
    -------
    torch.Tensor
        ``(M, 2 * radius[0] + 1, 2 * radius[1] + 1)``, float32, each summing to 1.
    """
    profiles = []
    for axis in (0, 1):
        edges = torch.arange(-radius[axis], radius[axis] + 2, dtype=torch.float64) - 0.5
        scaled = edges[None, :] / (math.sqrt(2.0) * sigmas[:, axis : axis + 1].double())
        weights = torch.diff(0.5 * torch.special.erf(scaled), dim=1)
        profiles.append(weights / weights.sum(dim=1, keepdim=True))
    kernels = profiles[0][:, :, None] * profiles[1][:, None, :]
    return (kernels / kernels.sum(dim=(-2, -1), keepdim=True)).to(torch.float32)


def kernel_radius(sigma: float, limit: int) -> int:
    """Half-size of a Gaussian window, ``ceil(4 sigma)`` (at least 1), at most ``limit``."""
    return int(min(max(1, math.ceil(TRUNCATE * sigma)), max(1, limit)))


def thin_counts(
    events: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint binomial thinnings of a count map.

    Every event goes to the first subset with probability ``fraction``, to the second with
    probability ``fraction``, and stays out of both otherwise (a multinomial split). For Poisson
    counts the two subsets and the rest are independent Poisson maps.

    Parameters
    ----------
    events : numpy.ndarray
        Non-negative integer counts ``(H, W)``.
    fraction : float
        In (0, 1/2].
    rng : numpy.random.Generator
        Seeded generator.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The two subsets, int64 ``(H, W)``.
    """
    first = rng.binomial(events, fraction)
    if fraction >= 0.5:
        return first, events - first
    second = rng.binomial(events - first, fraction / (1.0 - fraction))
    return first, second


def structured_window(image: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window of a map with the most edge energy.

    Edge energy is the sum of squared differences of the map after a 3 x 3 box average (which
    lowers the noise). Windows are tried on a grid of steps ``size // 4``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` counts.
    size : int
        Window side, pixels.

    Returns
    -------
    (slice, slice)
        Rows and columns of the window (the whole axis where it is not longer than ``size``).
    """
    rows, cols = image.shape
    if rows <= size and cols <= size:
        return slice(0, rows), slice(0, cols)
    padded = np.pad(image.astype(np.float64), 1, mode="edge")
    smooth = sum(padded[dy : dy + rows, dx : dx + cols] for dy in range(3) for dx in range(3)) / 9.0
    energy = np.zeros_like(smooth)
    energy[:-1, :] += np.diff(smooth, axis=0) ** 2
    energy[:, :-1] += np.diff(smooth, axis=1) ** 2
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    size_y, size_x = min(size, rows), min(size, cols)
    step = max(1, size // 4)
    starts_y = sorted({*range(0, rows - size_y + 1, step), rows - size_y})
    starts_x = sorted({*range(0, cols - size_x + 1, step), cols - size_x})
    best, where = -1.0, (0, 0)
    for top in starts_y:
        for left in starts_x:
            total = (
                table[top + size_y, left + size_x]
                - table[top, left + size_x]
                - table[top + size_y, left]
                + table[top, left]
            )
            if total > best:
                best, where = total, (top, left)
    return slice(where[0], where[0] + size_y), slice(where[1], where[1] + size_x)


@dataclass
class Folds:
    """Thinned counts of a stack of maps, for the held-out scores.

    Attributes
    ----------
    fit : torch.Tensor
        ``(B, 2, h, w)`` the two fitted subsets of every map (events).
    held : torch.Tensor
        ``(B, 2, h, w)`` the counts held out from each (events).
    fraction : numpy.ndarray
        ``(B,)`` the thinning probability of each map.
    background : float
        Background of the full map, events per pixel.
    """

    fit: torch.Tensor
    held: torch.Tensor
    fraction: np.ndarray
    background: float


def make_folds(
    events: np.ndarray, counts: float, background: float, seed: int, device: torch.device
) -> Folds:
    """Thin each map of a stack into two fitted subsets and their held-out complements.

    The generator of each map is seeded by ``seed`` and a checksum of the map, so a map gets
    the same split whatever stack or chunk it is restored in.

    Parameters
    ----------
    events : numpy.ndarray
        ``(B, h, w)`` non-negative integer counts (Poisson events).
    counts : float
        Target events per subset at the brightest pixels (99.5th percentile).
    background : float
        Background, events per pixel.
    seed : int
        The restoration's seed.
    device : torch.device
        Where the tensors go.
    """
    fits, helds, fractions = [], [], []
    for image in events:
        checksum = zlib.crc32(np.ascontiguousarray(image).tobytes())
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, checksum])
        bright = float(np.percentile(image, 99.5))
        fraction = 0.5 if bright <= 2.0 * counts else max(counts / bright, 1e-3)
        first, second = thin_counts(image, fraction, rng)
        fits.append(np.stack([first, second]))
        helds.append(np.stack([image - first, image - second]))
        fractions.append(fraction)

    def tensor(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays).astype(np.float32)).to(device)

    return Folds(tensor(fits), tensor(helds), np.asarray(fractions), float(background))


def heldout_scores(
    folds: Folds,
    sigmas: np.ndarray,
    *,
    iterations: int,
    boundary: str,
    problem: Problem,
    progress: Callable[[float], None],
    known_best: np.ndarray | None = None,
) -> np.ndarray:
    """Held-out Poisson deviance of Gaussian candidates, ``min`` over RL iterations.

    Every (map, candidate, subset) triple is one image of a batch restored together with its
    own PSF. Candidates leave the batch early (every ``CHECK_EVERY`` iterations):

    - once their score has not improved for as long again as the iteration of their best score
      (at least 20 iterations): the held-out deviance of RL falls, then rises as it starts to fit
      the noise;
    - once they cannot reach the best score of their map any more, even if they kept improving
      until ``iterations`` at the rate of the last ``CHECK_EVERY`` iterations (the held-out
      deviance falls ever more slowly, so the score reported for them is their best so far, an
      upper bound of what they would reach).

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
    known_best : numpy.ndarray, optional
        ``(B,)`` best scores already known for each map (from earlier candidates).

    Returns
    -------
    numpy.ndarray
        ``(B, n)`` the best summed held-out deviance (events), lower is better.
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
    reference = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
    if known_best is not None:
        reference = torch.as_tensor(known_best, dtype=torch.float64, device=device)
    owner = torch.arange(batch * count, device=device) // count  # map of each candidate

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

    members = torch.arange(batch * count * 2, device=device)  # image index of each batch row
    best = torch.full((batch * count,), math.inf, dtype=torch.float64, device=device)
    best_at = torch.zeros(batch * count, dtype=torch.int64, device=device)
    checkpoint = best.clone()
    operator, normaliser = build(members)
    estimate = operator.adjoint(fit) / normaliser
    estimate = torch.maximum(estimate, 1e-3 * fit.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-6))
    for iteration in range(iterations):
        problem.check_cancel()
        prediction = operator.forward(estimate) + background[members]
        prediction = prediction.clamp_min(1e-12)
        held_now, mean = held[members], scale[members] * prediction
        deviance = 2.0 * (torch.xlogy(held_now, held_now / mean) - held_now + mean)
        totals = deviance.sum(dim=(-2, -1), dtype=torch.float64).view(-1, 2).sum(dim=1)
        candidates = members[::2] // 2
        improved = totals < best[candidates]
        best[candidates] = torch.where(improved, totals, best[candidates])
        best_at[candidates] = torch.where(improved, iteration, best_at[candidates])
        estimate = estimate * operator.adjoint(fit[members] / prediction) / normaliser
        progress((iteration + 1) / iterations)
        if iteration % CHECK_EVERY != CHECK_EVERY - 1:
            continue
        since = iteration - best_at[candidates]
        passed = since > torch.clamp(best_at[candidates], min=20)
        leader = torch.minimum(
            reference, torch.full_like(reference, math.inf).scatter_reduce(0, owner, best, "amin")
        )
        rate = (checkpoint[candidates] - best[candidates]).clamp_min(0.0) / CHECK_EVERY
        reachable = best[candidates] - rate * (iterations - 1 - iteration)
        hopeless = (reachable > leader[owner[candidates]]) & (iteration >= 2 * CHECK_EVERY)
        checkpoint[candidates] = best[candidates]
        done = passed | hopeless
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).repeat_interleave(2)
            members = members[keep]
            old_shape = operator.object_shape
            operator, normaliser = build(members)
            top = (old_shape[0] - operator.object_shape[0]) // 2
            left = (old_shape[1] - operator.object_shape[1]) // 2
            estimate = estimate[keep][
                ...,
                top : top + operator.object_shape[0],
                left : left + operator.object_shape[1],
            ]
    return best.view(batch, count).cpu().numpy()


@dataclass
class SearchResult:
    """Outcome of :func:`search_sigma` for a stack of ``B`` maps.

    Attributes
    ----------
    sigma : numpy.ndarray
        ``(B, 2)`` estimated widths (rows, columns), pixels.
    report : list of dict
        Per map: the estimate, the candidates tried with their scores, the fit fraction, the
        window, whether the estimate is at a bound of the search interval and how flat the
        score is.
    """

    sigma: np.ndarray
    report: list[dict[str, Any]] = field(default_factory=list)


def _parabola_vertex(points: list[tuple[float, float]]) -> float:
    """Vertex (log-sigma) of the parabola through the best point and its two neighbours.

    ``points`` are ``(log sigma, score)`` sorted by log sigma. The vertex is kept between the
    neighbours; at an end of the list the best point itself is returned.
    """
    index = min(range(len(points)), key=lambda i: points[i][1])
    if index == 0 or index == len(points) - 1:
        return points[index][0]
    (x0, f0), (x1, f1), (x2, f2) = points[index - 1 : index + 2]
    numerator = (x1 - x0) ** 2 * (f1 - f2) - (x1 - x2) ** 2 * (f1 - f0)
    denominator = (x1 - x0) * (f1 - f2) - (x1 - x2) * (f1 - f0)
    if denominator == 0:  # three equal scores
        return x1
    vertex = x1 - 0.5 * numerator / denominator
    return float(min(max(vertex, x0), x2))


class _Scorer:
    """Scores candidates for a stack, remembering every (sigma pair, score) tried per map."""

    def __init__(self, folds: Folds, params: dict[str, Any], problem: Problem, budget: int):
        self.folds, self.params, self.problem = folds, params, problem
        self.tried: list[dict[tuple[float, float], float]] = [{} for _ in folds.fraction]
        self.budget, self.spent = budget, 0

    def __call__(self, sigmas: np.ndarray) -> np.ndarray:
        """Scores ``(B, n)`` of candidates ``(B, n, 2)``."""
        count = sigmas.shape[1]

        def report(fraction: float) -> None:
            self.problem.progress(min(1.0, (self.spent + fraction * count) / self.budget))

        known = [min(memory.values(), default=math.inf) for memory in self.tried]
        scores = heldout_scores(
            self.folds,
            sigmas,
            iterations=self.params["search_iterations"],
            boundary=self.params["boundary"],
            problem=self.problem,
            progress=report,
            known_best=np.asarray(known),
        )
        self.spent += count
        for index, memory in enumerate(self.tried):
            for pair, score in zip(sigmas[index], scores[index], strict=True):
                memory[(float(pair[0]), float(pair[1]))] = float(score)
        return scores


def _refinement(row: list[tuple[float, float]], count: int) -> list[float]:
    """``count`` new points in the bracket of the best of ``row`` (sorted ``(t, score)``).

    With neighbours on both sides, half of them go evenly on each side; at an end of the
    list, all go evenly on the inner side.
    """
    best = min(range(len(row)), key=lambda i: row[i][1])
    centre = row[best][0]
    if best == 0 or best == len(row) - 1:
        other = row[1][0] if best == 0 else row[-2][0]
        return [centre + (other - centre) * j / (count + 1) for j in range(1, count + 1)]
    left, right, side = row[best - 1][0], row[best + 1][0], count // 2
    return [centre + (left - centre) * j / (side + 1) for j in range(1, side + 1)] + [
        centre + (right - centre) * j / (side + 1) for j in range(1, count - side + 1)
    ]


def _line_search(
    scorer: _Scorer,
    centre: np.ndarray,
    direction: np.ndarray,
    half_width: float,
    coarse: int,
) -> np.ndarray:
    """Minimise the score along ``log sigma = log centre + t * direction``, ``|t| <= half_width``.

    A coarse grid of ``coarse`` points (both ends included), then the rounds of
    ``REFINE_POINTS`` inside the bracket of the best point, then the vertex of the parabola
    through the best point and its neighbours.

    Parameters
    ----------
    scorer : _Scorer
        Scores candidates of the stack.
    centre : numpy.ndarray
        ``(B, 2)`` reference widths (``t = 0``).
    direction : numpy.ndarray
        ``(2,)`` direction in log-sigma (``(1, 1)``: common scale, ``(1/2, -1/2)``: aspect).
    half_width : float
        Bound of ``|t|``.
    coarse : int
        Points of the coarse grid.

    Returns
    -------
    numpy.ndarray
        ``(B,)`` the best ``t`` of each map.
    """
    batch = centre.shape[0]

    def pairs(t: np.ndarray) -> np.ndarray:  # (B, n) -> (B, n, 2)
        return centre[:, None, :] * np.exp(t[..., None] * direction[None, None, :])

    grid = np.tile(np.linspace(-half_width, half_width, coarse), (batch, 1))
    points: list[list[tuple[float, float]]] = [[] for _ in range(batch)]
    for count in (0, *REFINE_POINTS):
        if count:
            grid = np.array([_refinement(row, count) for row in points])
        scores = scorer(pairs(grid))
        for row, ts, values in zip(points, grid, scores, strict=True):
            row.extend((float(t), float(v)) for t, v in zip(ts, values, strict=True))
            row.sort()
    return np.array([_parabola_vertex(row) for row in points])


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
    folds = make_folds(
        events,
        params["search_counts"],
        params["background"] / gain,
        problem.seed,
        data.device,
    )
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
    per_axis = params["sigma_axes"] == "per_axis"
    per_line = COARSE_POINTS + sum(REFINE_POINTS)
    scorer = _Scorer(folds, params, problem, per_line * (2 if per_axis else 1))

    shape_ratio = np.array([guess_sigma[0], guess_sigma[1]]) / mean_guess
    centre = np.tile(shape_ratio * math.sqrt(low_px * high_px), (batch, 1))
    common = _line_search(
        scorer, centre, np.ones(2), 0.5 * math.log(high_px / low_px), COARSE_POINTS
    )
    sigma = centre * np.exp(common)[:, None]
    if per_axis:  # aspect (rows / columns) at a fixed geometric mean
        aspect = _line_search(
            scorer, sigma, np.array([0.5, -0.5]), math.log(ASPECT_RANGE), COARSE_POINTS
        )
        sigma = sigma * np.exp(np.outer(aspect, [0.5, -0.5]))

    report = []
    for index in range(batch):
        tried = sorted(scorer.tried[index].items(), key=lambda item: item[0][0] * item[0][1])
        best_score = min(score for _, score in tried)
        pixels = float(events[index].size * 2)
        at_bound = bool(
            math.sqrt(sigma[index, 0] * sigma[index, 1]) <= low_px * 1.02
            or math.sqrt(sigma[index, 0] * sigma[index, 1]) >= high_px / 1.02
        )
        report.append(
            {
                "sigma_px": [round(float(v), 4) for v in sigma[index]],
                "interval_px": [round(low_px, 4), round(high_px, 4)],
                "at_bound": at_bound,
                "score_span": round(max(score - best_score for _, score in tried) / pixels, 6),
                "fit_fraction": round(float(folds.fraction[index]), 4),
                "window": [
                    windows[index][0].start,
                    windows[index][0].stop,
                    windows[index][1].start,
                    windows[index][1].stop,
                ],
                "tried": [
                    [round(pair[0], 4), round(pair[1], 4), round((score - best_score) / pixels, 6)]
                    for pair, score in tried
                ],
            }
        )
    return SearchResult(sigma, report)
