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

    For Richardson-Lucy (whose iteration :class:`LinearisedFit` describes) that point is only
    the earliest stop. The discrepancy principle oversmooths: on sharp objects (edges, a
    Siemens star) the misfit left at that point is signal that the next iterations still
    recover, and the default call ended 0.2-0.5 dB below scikit-image's best RL iterate there
    (issue 21). So the rule goes on while the predicted error still falls, by Mallows'
    :math:`C_p` (Akaike's criterion for the deviance): each iterate's
    :math:`D / E + 2\,\mathrm{df}/N`, with ``df`` the degrees of freedom of the iteration
    linearised about a flat object, which knows the PSF and the Biggs-Andrews factors (the
    share of the noise the iterate has fitted: :class:`LinearisedFit`). It stops at the first
    iterate that lowers this figure by less than :data:`RISK_TOLERANCE` and returns the one
    before (``iterations_run`` counts the iterations of the iterate returned; the loop ran two
    more). Iterating past it fits the noise. On the tuning images of
    ``bench/time_to_quality.py`` (82 cases of image, PSF width, counts and acceleration) the
    iterate returned is 0.13 dB below the best one on average (the plain rule's: 0.22 dB) and
    reaches the best of scikit-image's 10, 30 and 100 iterations in 77 cases, missing it by
    0.11 dB at most (the plain rule's: 74 cases, missing by up to 0.69 dB).
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
.. [3] C. L. Mallows, "Some comments on C_p", Technometrics 15, 661-675 (1973).
.. [4] D. S. C. Biggs and M. Andrews, "Acceleration of iterative image restoration
   algorithms", Applied Optics 36, 1766-1775 (1997).
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


EXPECTED_SAMPLE_PIXELS = 1 << 12
"""The stopping rules evaluate :func:`expected_poisson_deviance` on a regular subsample of about
this many pixels of each map (every ``s``-th row and column): the expected deviance is a mean of
a smooth, bounded function of the predicted counts, which a blurred prediction varies slowly.
4 K pixels fix it to 1e-4 from a few hundred counts a pixel up, 1e-3 at ten counts and 7e-3 at
two (measured on the images of ``bench/time_to_quality.py``), with the same pixels, so the
same error, at every iteration; reading the table at every pixel cost more than a
Richardson-Lucy iteration."""


def _sample_stride(shape: tuple[int, ...]) -> int:
    """Stride of the regular subsample of :data:`EXPECTED_SAMPLE_PIXELS` pixels of a map."""
    pixels = shape[-2] * shape[-1]
    return max(1, int(np.ceil(np.sqrt(pixels / EXPECTED_SAMPLE_PIXELS))))


def sampled_expected_deviance(prediction: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """:func:`expected_poisson_deviance` on a regular subsample of each map, ``(B,)`` float64.

    The same table, read with :func:`numpy.interp` on the CPU (a tenth of the time of torch's
    dozen small operations).

    Parameters
    ----------
    prediction : torch.Tensor
        Predicted counts ``(B, H, W)`` (detector counts).
    gain : float
        Detector counts per Poisson event (the prediction is divided by it).

    Returns
    -------
    torch.Tensor
        ``(B,)`` on the CPU: the mean over every ``s``-th row and column, ``s`` the smallest
        stride that keeps at most about :data:`EXPECTED_SAMPLE_PIXELS` pixels (1 up to
        128 x 128).
    """
    stride = _sample_stride(tuple(prediction.shape))
    sample = prediction[..., ::stride, ::stride].detach().cpu().numpy().astype(np.float64)
    if gain != 1.0:
        sample /= gain
    log_mean = np.log(np.clip(sample, 1e-3, 1e4))
    values = np.interp(log_mean, _TABLE_LOG_MEAN, _EXPECTED_DEVIANCE)
    return torch.from_numpy(values.mean(axis=(-2, -1)))


def _mean_deviance(
    data: torch.Tensor, positive_data: torch.Tensor, prediction: torch.Tensor, scratch: torch.Tensor
) -> torch.Tensor:
    """:func:`poisson_deviance` in fewer, lighter passes (no ``xlogy``), ``(B,)`` float64, CPU.

    Each pixel's term ``mu + y ln(y' / mu) - y`` (``y'``: ``positive_data``, ``y`` with its
    zeros set to 1, which their factor ``y = 0`` cancels) is of order one, so a float32 sum is
    exact enough: relative error below 1e-6 up to 3000 counts a pixel, 4e-6 at 30 000.
    ``scratch`` is work space of ``data``'s shape. About a quarter of the cost of
    :func:`poisson_deviance`.
    """
    torch.clamp_min(prediction, 1e-12, out=scratch)
    torch.div(positive_data, scratch, out=scratch).log_()
    torch.addcmul(prediction, data, scratch, out=scratch).sub_(data)
    total = scratch.sum(dim=(-2, -1)).to("cpu", torch.float64)
    return total * (2.0 / (data.shape[-2] * data.shape[-1]))


RISK_PENALTY = 2.0
"""Weight of the degrees of freedom per pixel in the predicted error of the discrepancy rule's
continuation: 2, Mallows' :math:`C_p` and Akaike's criterion (on tuning images, 1.5 and 3 gave
iterates further from the best one than 2 and 2.5; see ``bench/time_to_quality.py``)."""

RISK_TOLERANCE = 1e-3
"""The continuation stops when an iteration lowers the predicted error by less than this (in
units of the noise variance per pixel): the figure is flat about its minimum, where further
iterations cost time for nothing, and tiny steps there (Biggs-Andrews steps oscillate a little)
would otherwise decide. On the tuning images 0 to 2e-3 leave the chosen iterates as good and
1e-3 saves an iteration in nine; it also makes the count robust to a 2 % error in the counts
gain."""

FIT_GRID_MIN = 64
""":class:`LinearisedFit` samples the PSF's transfer function on at least this many frequencies
per axis (fewer only for smaller maps: then on the map's own frequencies), and on four times the
PSF's size for wider PSFs."""

EXTRAPOLATION_LIMIT = 0.99
"""Largest Biggs-Andrews factor (that of :mod:`asirp.methods.richardson_lucy`), for the factors
:class:`IterationControl` works out from the method's steps when the method does not give them."""


class LinearisedFit:
    r"""Degrees of freedom of Richardson-Lucy iterates, from the iteration linearised.

    About a flat object (:math:`x \approx Hx \approx m`) the Richardson-Lucy step
    :math:`x + x\,H^T((y - Hx)/Hx) / H^T 1` is the Landweber step :math:`x + H^T(y - Hx)` with
    unit step (the PSF sums to 1). The prediction :math:`Hx_k` then responds to the data,
    frequency by frequency, with a filter :math:`u_k` (1: reproduced, 0: ignored)::

        q_k = u_k + alpha_k (u_k - u_{k-1})      # the Biggs-Andrews point (alpha = 0 without)
        u_{k+1} = q_k + g (1 - q_k)              # one step

    with :math:`g = |\hat h|^2` the PSF's power transfer function; the smooth start
    :math:`H^T y / H^T 1` has :math:`u_0 = g`, the flat start (the data's mean)
    :math:`u_0 = 0` but at zero frequency. The mean of :math:`u` over the frequencies is the
    trace of the linear smoother per pixel, the degrees of freedom the iterate has used: the
    share of the noise it reproduces, which lowers its mean Poisson deviance by as much.

    The model leaves out the multiplicative weights (:math:`x / Hx`, about 1 where the object
    varies slowly) and the clipping of negative extrapolations. Without the Biggs-Andrews
    factors (a plain Landweber count) it undercounts the degrees of freedom of the accelerated
    iteration badly and the rule ran three times too long.

    Parameters
    ----------
    psf : torch.Tensor
        ``(h, w)``, sum 1.
    data_shape : (int, int)
        ``(H, W)`` of a map.
    batch : int
        Number of maps ``B`` (each has its own extrapolation factors).
    flat_start : bool
        The iteration starts from a flat object instead of the smoothed data.
    """

    def __init__(
        self,
        psf: torch.Tensor,
        data_shape: tuple[int, int],
        batch: int,
        *,
        flat_start: bool = False,
    ):
        height, width = psf.shape[-2:]
        rows = max(height, min(data_shape[0], max(FIT_GRID_MIN, 4 * height)))
        cols = max(width, min(data_shape[1], max(FIT_GRID_MIN, 4 * width)))
        kernel = psf.detach().to("cpu", torch.float64).reshape(height, width)
        self.gain = torch.fft.rfft2(kernel, s=(rows, cols)).abs().square()
        weights = torch.full((cols // 2 + 1,), 2.0, dtype=torch.float64)
        weights[0] = 1.0
        if cols % 2 == 0:
            weights[-1] = 1.0
        self.weights = (weights / (rows * cols)).expand_as(self.gain)
        start = self.gain.clone()
        if flat_start:
            start.zero_()[0, 0] = 1.0
        self.response = start.expand(batch, -1, -1).clone()
        self.previous: torch.Tensor | None = None
        self.point = self.response

    def degrees(self, extrapolation: torch.Tensor | None) -> torch.Tensor:
        """Degrees of freedom per pixel of the next point, ``(B,)`` float64 (CPU).

        Parameters
        ----------
        extrapolation : torch.Tensor or None
            The Biggs-Andrews factor per map that made the point from the last two iterates
            (any shape with ``B`` elements); None: the point is the last iterate.
        """
        point = self.response
        if extrapolation is not None and self.previous is not None:
            factor = extrapolation.detach().reshape(-1, 1, 1).to("cpu", torch.float64)
            point = torch.lerp(self.previous, self.response, 1.0 + factor)
        self.point = point
        return (point * self.weights).sum(dim=(-2, -1))

    def advance(self) -> None:
        """One step from the last point given to :meth:`degrees`."""
        updated = self.point + self.gain * (1.0 - self.point)
        self.previous, self.response = self.response, updated


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


def check_counts_gain(counts_gain: Any) -> float | None:
    """``counts_gain`` as a float, or None; raise on a value that is not a finite number > 0."""
    if counts_gain is None:
        return None
    if isinstance(counts_gain, bool) or not isinstance(counts_gain, int | float | np.number):
        raise TypeError(f"counts_gain must be a number (counts per event), got {counts_gain!r}")
    value = float(counts_gain)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"counts_gain must be finite and > 0 (counts per event), got {value!r}")
    return value


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
        The method's problem (for progress, cancellation, the counts gain and the PSF).
    params : dict
        The method's resolved parameters (``iterations``, ``stop``, ``discrepancy``,
        ``tolerance``; ``acceleration`` and ``initial`` for Richardson-Lucy).
    continuation : bool, optional
        Whether ``stop="discrepancy"`` goes on past the discrepancy point while the predicted
        error falls (:class:`LinearisedFit` must describe the iteration). Default: for
        Richardson-Lucy, recognised by its ``acceleration`` parameter, with a PSF.

    Notes
    -----
    A method's loop reads::

        control = IterationControl(problem, params)
        for _ in control:
            prediction = ...            # H x_k + b, shape (B, H, W)
            new = ...                   # x_{k+1}
            x = control.step(x, new, data, prediction)
    """

    def __init__(
        self, problem: Problem, params: dict[str, Any], *, continuation: bool | None = None
    ):
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
        if continuation is None:
            continuation = "acceleration" in params
        psf = problem.psf
        self.fit: LinearisedFit | None = None
        if continuation and self.rule == "discrepancy" and psf is not None and psf.ndim == 2:
            self.fit = LinearisedFit(
                psf,
                tuple(problem.data.shape[-2:]),
                batch,
                flat_start=params.get("initial") == "flat",
            )
        self.accelerated = bool(params.get("acceleration", False))
        self.passed = torch.zeros(batch, dtype=torch.bool)  # reached the discrepancy (CPU)
        self.last_risk = torch.full((batch,), torch.inf, dtype=torch.float64)
        self._scratch: torch.Tensor | None = None
        self._positive_data: torch.Tensor | None = None
        self._saved: torch.Tensor | None = None  # the last point, once one met the discrepancy
        self._previous_step: torch.Tensor | None = None
        self._step_energy: torch.Tensor | None = None
        self._next_factor: torch.Tensor | None = None

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
        *,
        extrapolation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Accept ``new`` for the images still running and apply the stopping rule.

        Parameters
        ----------
        current : torch.Tensor
            The estimate ``x_k`` (``(B, ...)``): for an accelerated method, the extrapolated
            point the update started from.
        new : torch.Tensor
            The update ``x_{k+1}``, same shape.
        data : torch.Tensor
            Measured maps ``(B, H, W)``.
        prediction : torch.Tensor
            ``H x_k + b`` (the prediction of ``current``), ``(B, H, W)``.
        extrapolation : torch.Tensor, optional
            For an accelerated method: the Biggs-Andrews factor per map (``B`` elements) that
            made ``current`` from the last two estimates. When it is not given, the control
            works it out from the steps ``new - current`` as the method does (one more pass).

        Returns
        -------
        torch.Tensor
            The estimate to continue from (``new`` itself when every image accepts it); an
            image that the discrepancy rule stops past its best iterate gets that iterate back.
        """
        accept = self.active.clone()
        rising: torch.Tensor | None = None
        if self.rule == "discrepancy":
            ratio = self._deviance_ratio(data, prediction)
            reached = ratio <= self.discrepancy
            if self.fit is None:
                reached = reached.to(accept.device)
                accept &= ~reached
                self.active &= ~reached
            else:
                rising = self._continue(ratio, reached, current, new, extrapolation)
                accept &= ~rising
        elif self.rule == "stagnation":
            change = torch.linalg.vector_norm((new - current).flatten(1), dim=1)
            size = torch.linalg.vector_norm(current.flatten(1), dim=1).clamp_min(1e-30)
            self.active &= ~(change / size < self.tolerance)
        self.accepted = accept
        self.iterations_run += accept.to(torch.int64)
        shape = (-1,) + (1,) * (new.ndim - 1)
        if rising is not None and bool(rising.any()):
            assert self._saved is not None  # rising needs a point that met the discrepancy
            self.iterations_run -= rising.to(torch.int64)  # the previous point: one step less
            if not bool(self.active.any()):  # the last images stop: no more saving, no copy
                result, self._saved = self._saved, None
                return result
            result = torch.where(
                rising.view(shape), self._saved, torch.where(accept.view(shape), new, current)
            )
        elif bool(accept.all()):
            result = new  # no copy: every image takes its update
        else:
            result = torch.where(accept.view(shape), new, current)
        if self.fit is not None:
            self._save(current)
        return result

    def _deviance_ratio(self, data: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """Mean Poisson deviance over its expected value, per image ``(B,)`` float64 (CPU)."""
        gain = self.problem.counts_gain
        if self._scratch is None or self._scratch.shape != data.shape:
            self._scratch = torch.empty_like(data)
            self._positive_data = torch.where(data > 0, data, 1.0)
        assert self._positive_data is not None
        deviance = _mean_deviance(data, self._positive_data, prediction, self._scratch) / gain
        self.last_deviance = deviance
        return deviance / sampled_expected_deviance(prediction, gain)

    def _continue(
        self,
        ratio: torch.Tensor,
        reached: torch.Tensor,
        current: torch.Tensor,
        new: torch.Tensor,
        extrapolation: torch.Tensor | None,
    ) -> torch.Tensor:
        """The discrepancy rule's continuation; returns the images that stop here, ``(B,)``.

        Each point's predicted error is ``ratio + RISK_PENALTY * df``; an image stops at the
        first point whose figure is not :data:`RISK_TOLERANCE` below the last one's, once a point
        has met the discrepancy, and takes back that last point.
        """
        assert self.fit is not None
        if self.accelerated and extrapolation is None:
            extrapolation = self._next_factor
            self._next_factor = self._extrapolation_factor(current, new)
        degrees = self.fit.degrees(extrapolation if self.accelerated else None)
        risk = ratio + RISK_PENALTY * degrees
        running = self.active.cpu()
        rising = self.passed & running & (risk > self.last_risk - RISK_TOLERANCE)
        self.passed |= reached
        self.last_risk = risk
        self.fit.advance()
        rising = rising.to(self.active.device)
        self.active &= ~rising
        return rising

    def _extrapolation_factor(self, current: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """The method's next Biggs-Andrews factor, ``<s_k, s_k-1> / <s_k-1, s_k-1>``, ``(B,)``.

        ``s_k = new - current`` is this iteration's step, read on the regular subsample of
        :func:`sampled_expected_deviance` (a step is smooth: the PSF's adjoint spread it), and
        clipped to ``[0, 0.99]`` as the method does.
        """
        stride = _sample_stride(tuple(new.shape))
        step = (new[..., ::stride, ::stride] - current[..., ::stride, ::stride]).flatten(1)
        step = step.detach().to("cpu", torch.float64)
        energy = torch.linalg.vecdot(step, step)
        factor = torch.zeros_like(energy)
        if self._previous_step is not None and self._step_energy is not None:
            overlap = torch.linalg.vecdot(step, self._previous_step)
            factor = overlap / self._step_energy.clamp_min(1e-300)
        self._previous_step, self._step_energy = step, energy
        return factor.clamp(0.0, EXTRAPOLATION_LIMIT)

    def _save(self, current: torch.Tensor) -> None:
        """Keep ``current`` for the images that may come back to it (they met the discrepancy)."""
        keep = self.passed.to(self.active.device) & self.active
        if not bool(keep.any()):
            return
        if self._saved is None:
            self._saved = current.clone()
        else:
            self._saved.copy_(current)

    def info(self) -> dict[str, Any]:
        """``iterations_run`` (a list: one count per image) and the stopping rule used."""
        facts: dict[str, Any] = {
            "iterations_run": [int(value) for value in self.iterations_run.tolist()],
            "stopped_by": self.rule,
        }
        if self.rule == "discrepancy":
            facts["counts_gain"] = float(self.problem.counts_gain)
        return facts
