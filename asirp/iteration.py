r"""Iteration control shared by the iterative methods: fixed count, discrepancy, stagnation.

``stop="fixed"``
    Run exactly ``iterations`` iterations.
``stop="discrepancy"``
    Stop at the first iterate whose predicted data :math:`\mu = Hx + b` is as close to the data
    :math:`y` as Poisson noise allows (the discrepancy principle for Poisson data, Bertero et al.
    2010): the mean Poisson deviance per pixel

    .. math:: D = \frac{2}{N g} \sum_i \left[ y_i \ln \frac{y_i}{\mu_i} - (y_i - \mu_i) \right]

    falls to ``discrepancy`` times its expected value for Poisson noise about :math:`\mu`
    (:func:`expected_poisson_deviance`: 1 for high counts, :math:`1 + 1/(6\mu)` at moderate
    counts, less than 1 below about one count, which keeps the rule honest for sparse maps;
    Zanella et al. 2013). ``g`` is the
    number of detector counts per Poisson event: the caller's ``counts_gain`` when given
    (:func:`asirp.restore`; the live restorer gives the one its flux monitor implies), else 1
    for integer counts and, for maps that are not (normalised by I0, say), an estimate from the
    noise (:func:`estimate_counts_gain`, rough on small maps with structure finer than the beam).
    Iterating past this point fits the noise.
``stop="stagnation"``
    Stop once the relative change :math:`\|x_{k+1} - x_k\| / \|x_k\|` is below ``tolerance``.

In every case ``iterations`` caps the count. Each image of a stack stops on its own; the number
of iterations each one ran is reported as ``iterations_run``.

References
----------
.. [1] M. Bertero, P. Boccacci, G. Talenti, R. Zanella and L. Zanni, "A discrepancy principle for
   Poisson data", Inverse Problems 26, 105004 (2010).
.. [2] R. Zanella, P. Boccacci, L. Zanni and M. Bertero, "Corrigendum: Efficient
   gradient projection methods for edge-preserving removal of Poisson noise", Inverse Problems
   29, 119501 (2013).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from asirp.registry import Problem


def poisson_deviance(data: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Mean Poisson deviance per pixel of each image, shape ``(B,)``.

    Parameters
    ----------
    data : torch.Tensor
        Measured counts ``(B, H, W)``, non-negative.
    prediction : torch.Tensor
        Predicted counts ``(B, H, W)``, positive.
    """
    prediction = prediction.clamp_min(1e-12)
    terms = torch.xlogy(data, data / prediction) - data + prediction
    return 2.0 * terms.mean(dim=(-2, -1))


_TABLE_LOG_MEAN = np.linspace(np.log(1e-3), np.log(1e4), 281)


def _expected_deviance_table() -> np.ndarray:
    """``E[2 (k ln(k / m) - (k - m))]`` for ``k ~ Poisson(m)`` on ``_TABLE_LOG_MEAN``."""
    from scipy.special import xlogy
    from scipy.stats import poisson

    values = []
    for mean in np.exp(_TABLE_LOG_MEAN):
        if mean > 2000:
            values.append(1.0 + 1.0 / (6.0 * mean) + 1.0 / (6.0 * mean**2))
            continue
        counts = np.arange(0, int(mean + 12 * np.sqrt(mean) + 30))
        terms = 2.0 * (xlogy(counts, counts / mean) - (counts - mean))
        values.append(float(np.sum(poisson.pmf(counts, mean) * terms)))
    return np.asarray(values)


_EXPECTED_DEVIANCE = _expected_deviance_table()


def expected_poisson_deviance(prediction: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of the expected Poisson deviance at the predicted means, ``(B,)``.

    Parameters
    ----------
    prediction : torch.Tensor
        Predicted counts ``(B, H, W)`` (in Poisson events, i.e. already divided by the gain).
    """
    table = torch.as_tensor(_EXPECTED_DEVIANCE, dtype=prediction.dtype, device=prediction.device)
    start, step = float(_TABLE_LOG_MEAN[0]), float(_TABLE_LOG_MEAN[1] - _TABLE_LOG_MEAN[0])
    position = (prediction.clamp(1e-3, 1e4).log() - start) / step
    lower = position.floor().clamp(0, len(table) - 2)
    fraction = position - lower
    index = lower.to(torch.int64)
    values = table[index] * (1 - fraction) + table[index + 1] * fraction
    return values.mean(dim=(-2, -1))


GAIN_KERNELS: tuple[np.ndarray, ...] = (
    np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]),  # Immerkaer's
    np.array([[1.0, -2.0, 1.0]]),  # second difference along a row
    np.array([[1.0], [-2.0], [1.0]]),  # ... along a column
    np.array([[1.0, -1.0], [-1.0, 1.0]]),  # finest diagonal wavelet detail
)
"""High-pass kernels of :func:`estimate_counts_gain`: each cancels a constant map."""

GAIN_WINDOW_PX = 512
""":func:`estimate_counts_gain` reads at most the central ``GAIN_WINDOW_PX`` square of a map
and at most ``GAIN_MAX_MAPS`` maps of a stack: a quarter of a million pixels fix the gain to
about 1 %, in some 50 ms (a 4096 x 4096 map read whole would take seconds)."""

GAIN_MAX_MAPS = 4

_CHI2_MEDIAN = 0.454936423119572
"""Median of the chi-squared distribution with one degree of freedom."""


def _correlate_valid(maps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``maps (B, H, W)`` correlated with a small kernel, valid part only, ``maps``' dtype."""
    rows, cols = kernel.shape
    height, width = maps.shape[-2] - rows + 1, maps.shape[-1] - cols + 1
    out = np.zeros((maps.shape[0], max(height, 0), max(width, 0)), dtype=maps.dtype)
    if out.size:
        for (i, j), weight in np.ndenumerate(kernel):
            out += weight * maps[:, i : i + height, j : j + width]
    return out


def is_integer_counts(data: np.ndarray) -> bool:
    """Whether the finite values of ``data`` are non-negative integers (raw counts), any shape."""
    finite = data[np.isfinite(data)]
    return bool(finite.size and np.all(finite >= 0) and np.all(finite == np.round(finite)))


def estimate_counts_gain(data: np.ndarray) -> float:
    r"""Detector counts per Poisson event: 1 for integer counts, else estimated from the noise.

    For Poisson data scaled by a gain ``g`` (counts divided by an I0 reading, say) the variance
    at a pixel is ``g`` times its mean. Each kernel :math:`k` of :data:`GAIN_KERNELS` cancels
    smooth structure; its response :math:`r = k * y` then has variance
    :math:`g \, \|k\|^2 \bar y` about a local mean :math:`\bar y` (the map averaged with
    weights :math:`|k|`), so :math:`z = r^2 / (\|k\|^2 \bar y)` estimates ``g`` at every
    pixel. Per kernel, two figures: the median of ``z`` over the median of chi-squared with one
    degree of freedom (robust to sparse structure: hotspots, edges) and the pooled ratio
    :math:`\sum r^2 / \sum \|k\|^2 \bar y` (unbiased at low counts, where ``z`` is
    discrete). Structure the kernels do not cancel only adds to a response, so the smallest of
    the eight figures is the one least inflated by it. This matters on small coarse maps (a
    beam narrower than two scan steps), whose hotspots change from one pixel to the next: a
    plain noise estimate (:func:`asirp.metrics.noise_sigma`) read them as noise and returned
    gains ten to a hundred times too large, which stopped the discrepancy rule at once.

    Parameters
    ----------
    data : numpy.ndarray
        Maps ``(B, H, W)`` or one map ``(H, W)``.

    Returns
    -------
    float
        The gain (> 0): 1 for non-negative integer data, and where the noise cannot be measured
        (an empty or all-zero map).

    Notes
    -----
    Only the central :data:`GAIN_WINDOW_PX` square of at most :data:`GAIN_MAX_MAPS` maps
    (evenly spaced in the stack) is read.
    """
    data = np.asarray(data)
    if is_integer_counts(data):
        return 1.0
    maps = data.reshape(-1, *data.shape[-2:])
    if maps.shape[0] > GAIN_MAX_MAPS:
        maps = maps[np.linspace(0, maps.shape[0] - 1, GAIN_MAX_MAPS).round().astype(int)]
    top = max(0, (maps.shape[1] - GAIN_WINDOW_PX) // 2)
    left = max(0, (maps.shape[2] - GAIN_WINDOW_PX) // 2)
    maps = maps[:, top : top + GAIN_WINDOW_PX, left : left + GAIN_WINDOW_PX]
    maps = np.nan_to_num(np.clip(maps.astype(np.float32), 0.0, None), nan=0.0, posinf=0.0)
    figures = []
    for kernel in GAIN_KERNELS:
        response = _correlate_valid(maps, kernel)
        local = _correlate_valid(maps, np.abs(kernel) / np.abs(kernel).sum())
        power = float(np.sum(kernel**2))
        informative = local > 0  # a neighbourhood of zeros says nothing about the scale
        if not informative.any():
            continue
        ratios = response[informative] ** 2 / (power * local[informative])
        figures.append(float(np.median(ratios)) / _CHI2_MEDIAN)
        energy = float(np.sum(response.astype(np.float64) ** 2))  # float64 sums: 1e5 terms
        figures.append(energy / (power * float(np.sum(local, dtype=np.float64))))
    positive = [figure for figure in figures if figure > 0]
    return max(min(positive), 1e-12) if positive else 1.0


class IterationControl:
    """Drives an iterative method's loop: counting, stopping rules, progress and cancellation.

    Parameters
    ----------
    problem : Problem
        The method's problem (for progress, cancellation and the counts gain).
    params : dict
        The method's resolved parameters (``iterations``, ``stop``, ``discrepancy``,
        ``tolerance``).

    Notes
    -----
    A method's loop reads::

        control = IterationControl(problem, params)
        for _ in control:
            prediction = ...            # H x_k + b, shape (B, H, W)
            new = ...                   # x_{k+1}
            x = control.step(x, new, data, prediction)
    """

    def __init__(self, problem: Problem, params: dict[str, Any]):
        self.problem = problem
        self.max_iterations = int(params["iterations"])
        self.rule = params.get("stop", "fixed")
        self.discrepancy = float(params.get("discrepancy", 1.0))
        self.tolerance = float(params.get("tolerance", 1e-3))
        batch = problem.data.shape[0]
        self.active = torch.ones(batch, dtype=torch.bool, device=problem.device)
        self.iterations_run = torch.zeros(batch, dtype=torch.int64, device=problem.device)
        self.last_deviance: torch.Tensor | None = None
        self.accepted = self.active.clone()

    def __iter__(self) -> Iterator[int]:
        for iteration in range(self.max_iterations):
            self.problem.check_cancel()
            if not bool(self.active.any()):
                return
            yield iteration
            self.problem.progress((iteration + 1) / self.max_iterations)

    def step(
        self,
        current: torch.Tensor,
        new: torch.Tensor,
        data: torch.Tensor,
        prediction: torch.Tensor,
    ) -> torch.Tensor:
        """Accept ``new`` for the images still running and apply the stopping rule.

        Parameters
        ----------
        current : torch.Tensor
            The estimate ``x_k`` (``(B, ...)``).
        new : torch.Tensor
            The update ``x_{k+1}``, same shape.
        data : torch.Tensor
            Measured maps ``(B, H, W)``.
        prediction : torch.Tensor
            ``H x_k + b`` (the prediction of ``current``), ``(B, H, W)``.

        Returns
        -------
        torch.Tensor
            The estimate to continue from (``new`` itself when every image accepts it).
        """
        accept = self.active.clone()
        if self.rule == "discrepancy":
            gain = self.problem.counts_gain
            deviance = poisson_deviance(data, prediction) / gain
            self.last_deviance = deviance
            target = self.discrepancy * expected_poisson_deviance(prediction / gain)
            reached = deviance <= target
            accept &= ~reached
            self.active &= ~reached
        elif self.rule == "stagnation":
            change = torch.linalg.vector_norm((new - current).flatten(1), dim=1)
            size = torch.linalg.vector_norm(current.flatten(1), dim=1).clamp_min(1e-30)
            self.active &= ~(change / size < self.tolerance)
        self.accepted = accept
        self.iterations_run += accept.to(torch.int64)
        if bool(accept.all()):
            return new  # no copy: every image takes its update
        shape = (-1,) + (1,) * (new.ndim - 1)
        return torch.where(accept.view(shape), new, current)

    def info(self) -> dict[str, Any]:
        """``iterations_run`` (a list: one count per image) and the stopping rule used."""
        facts: dict[str, Any] = {
            "iterations_run": [int(value) for value in self.iterations_run.tolist()],
            "stopped_by": self.rule,
        }
        if self.rule == "discrepancy":
            facts["counts_gain"] = float(self.problem.counts_gain)
        return facts
