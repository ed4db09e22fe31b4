r"""The beam from a knife-edge scan: edge-spread fits, FWHM per axis, a focus series.

A knife edge (a sharp, opaque or fluorescent edge) is scanned through the beam and a signal that
follows the part of the beam on one side of the edge is recorded (transmitted flux, or the edge
material's fluorescence). For a Gaussian beam of standard deviation :math:`\sigma` the signal is
the edge spread function

.. math:: s(x) = a + b \, \tfrac{1}{2} \operatorname{erfc}\!\left(
          \frac{x - x_0}{\sqrt{2}\,\sigma} \right),
          \qquad \mathrm{FWHM} = 2 \sqrt{2 \ln 2} \, \sigma ,

with the background :math:`a`, the step :math:`b` (positive for a signal that falls along the
scan, negative for one that rises) and the edge position :math:`x_0`, in µm like the positions.
This is the method beamlines use to measure the beam that ASIRP's PSF stands for
(:mod:`asirp.psf`: ``beam_fwhm_um``).

Fit
---
:func:`fit_edge` fits the four parameters with :func:`scipy.optimize.least_squares`. Signals
that are counts (non-negative integers) are weighted by their Poisson variance: a first pass with
the measured counts, a second with the model's (the Pearson form of the Poisson likelihood, free
of the bias that weighting by the data gives at low counts). Other signals (normalised by a
monitor) get uniform weights with the noise estimated from their second differences. The start
comes from the derivative of the lightly smoothed signal (its peak gives :math:`x_0`, its area
over its peak height :math:`\sigma`), and three start widths are tried. The FWHM's uncertainty
is one standard deviation from the fit covariance :math:`(J^T J)^{-1}` scaled by the reduced
chi-square (as :func:`scipy.optimize.curve_fit` does with ``absolute_sigma=False``).

A scan that cannot give the beam raises one :class:`ValueError` naming the problem: NaN or Inf,
fewer than :data:`MIN_POINTS` distinct positions, no edge (a step less than
:data:`MIN_STEP_SIGNIFICANCE` times its own uncertainty or :data:`MIN_STEP_NOISE` times the
point-to-point noise), an edge whose transition (:math:`x_0 \pm 2\sigma`) is not inside the
scan, or one sharper than the scan step resolves.

Focus series
------------
Edge scans at several focus positions :math:`z` (µm) give the FWHM per :math:`z`
(:func:`fit_focus_series`); the Gaussian-beam caustic

.. math:: \mathrm{FWHM}(z) = F_0 \sqrt{1 + \left(\frac{z - z_0}{z_R}\right)^2}

is fitted to them (weighted by their uncertainties; started from the parabola that
:math:`\mathrm{FWHM}^2` is in :math:`z`), and the best focus :math:`z_0` with its FWHM
:math:`F_0` is reported. The minimum must lie inside the :math:`z` range scanned.

The beam file and the scan files are :mod:`asirp.beam_file`'s.

References
----------
.. [1] ISO 11146-1:2021, "Lasers and laser-related equipment - Test methods for laser beam
   widths, divergence angles and beam propagation ratios" (beam caustic).
.. [2] J. M. Khosrofian and B. A. Garetz, "Measurement of a Gaussian laser beam diameter through
   the direct inversion of knife-edge data", Appl. Opt. 22, 3406-3410 (1983).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.optimize import least_squares
from scipy.special import erfc

from asirp.psf import FWHM_PER_SIGMA

AXES = ("vertical", "horizontal")
"""Axis names, in the order of ASIRP's ``beam_fwhm_um`` pairs (rows, columns)."""

METHOD = "knife-edge"
"""The ``method`` of a beam file."""

MIN_POINTS = 8
"""Fewest distinct positions of one edge scan."""

MIN_STEP_SIGNIFICANCE = 10.0
"""The fitted step must be at least this many times its own standard error to count as an edge
(a flat scan's best "edge" splits the noise in two: a few standard errors at most)."""

MIN_STEP_NOISE = 3.0
"""The fitted step must also be at least this many times the signal's point-to-point noise
(robust, from second differences): a guard that does not rest on the noise model."""

EDGE_MARGIN_SIGMA = 2.0
"""The transition ``x0 +- EDGE_MARGIN_SIGMA * sigma`` (95 % of the step) must lie in the scan."""

MIN_SIGMA_STEPS = 0.25
"""A fitted sigma below this fraction of the median step is not resolved by the scan."""

MIN_FOCUS_POSITIONS = 3
"""Fewest focus positions of a focus series (the caustic has three parameters)."""


@dataclass(frozen=True)
class EdgeScan:
    """One knife-edge scan as read from a file.

    Attributes
    ----------
    position_um : numpy.ndarray
        ``(n,)`` edge (or beam) positions, µm.
    signal : numpy.ndarray
        ``(n,)`` signal (counts, or normalised).
    z_um : numpy.ndarray or None
        ``(n,)`` focus position of each point, µm (a focus series), or ``None``.
    source : str
        Where it came from (the path as given).
    """

    position_um: np.ndarray
    signal: np.ndarray
    z_um: np.ndarray | None
    source: str


@dataclass(frozen=True)
class EdgeFit:
    """The fit of one knife-edge scan (model in the module notes).

    Attributes
    ----------
    fwhm_um : float
        Beam FWHM, µm.
    fwhm_uncertainty_um : float
        One standard deviation of the FWHM, µm (fit covariance scaled by the reduced chi-square).
    sigma_um : float
        Beam standard deviation, µm.
    x0_um : float
        Edge position, µm.
    amplitude : float
        The step ``b`` (signal units; > 0 when the signal falls along the scan).
    background : float
        The level ``a`` on the side the signal falls to (signal units).
    reduced_chi2 : float
        Chi-square per degree of freedom (about 1 when the model and the noise model hold).
    n_points : int
        Points fitted.
    axis : str or None
        ``"vertical"``, ``"horizontal"`` or ``None`` (not said).
    source : str
        The file, or ``"array"``.
    z_um : float or None
        Focus position of this scan, µm (member of a focus series).
    weights : str
        ``"poisson"`` (counts) or ``"uniform"`` (noise estimated from the signal).
    """

    fwhm_um: float
    fwhm_uncertainty_um: float
    sigma_um: float
    x0_um: float
    amplitude: float
    background: float
    reduced_chi2: float
    n_points: int
    axis: str | None = None
    source: str = "array"
    z_um: float | None = None
    weights: str = "poisson"

    def model(self, position_um: Any) -> np.ndarray:
        """The fitted edge spread function at ``position_um`` (µm), signal units."""
        return _edge_model(
            np.asarray(position_um, dtype=np.float64),
            self.background,
            self.amplitude,
            self.x0_um,
            self.sigma_um,
        )

    def provenance(self) -> dict[str, Any]:
        """The fit as a JSON-serialisable dict (units in the key names)."""
        return {
            "kind": "edge",
            "model": "a + b * erfc((x - x0) / (sqrt(2) * sigma)) / 2",
            "fwhm_um": self.fwhm_um,
            "fwhm_uncertainty_um": self.fwhm_uncertainty_um,
            "sigma_um": self.sigma_um,
            "x0_um": self.x0_um,
            "amplitude": self.amplitude,
            "background": self.background,
            "reduced_chi2": self.reduced_chi2,
            "n_points": self.n_points,
            "axis": self.axis,
            "source": self.source,
            "z_um": self.z_um,
            "weights": self.weights,
        }


@dataclass(frozen=True)
class FocusSeries:
    """Edge fits at several focus positions and the caustic through them.

    Attributes
    ----------
    fits : tuple of EdgeFit
        One per focus position, by increasing ``z_um``.
    best_z_um : float
        Best focus ``z0``, µm.
    best_z_uncertainty_um : float
        One standard deviation of ``z0``, µm.
    fwhm_um : float
        FWHM at the best focus ``F0``, µm.
    fwhm_uncertainty_um : float
        One standard deviation of ``F0``, µm.
    rayleigh_um : float
        ``z_R``: the distance from the focus at which the FWHM grows by ``sqrt(2)``, µm.
    reduced_chi2 : float
        Of the caustic fit (``nan`` with exactly three focus positions: no degree of freedom).
    axis : str or None
        ``"vertical"``, ``"horizontal"`` or ``None``.
    source : str
        The file, or ``"array"``.
    """

    fits: tuple[EdgeFit, ...]
    best_z_um: float
    best_z_uncertainty_um: float
    fwhm_um: float
    fwhm_uncertainty_um: float
    rayleigh_um: float
    reduced_chi2: float
    axis: str | None = None
    source: str = "array"

    def caustic(self, z_um: Any) -> np.ndarray:
        """The fitted FWHM (µm) at focus positions ``z_um`` (µm)."""
        z = np.asarray(z_um, dtype=np.float64)
        return self.fwhm_um * np.sqrt(1.0 + ((z - self.best_z_um) / self.rayleigh_um) ** 2)

    def provenance(self) -> dict[str, Any]:
        """The series as a JSON-serialisable dict, every edge fit included."""
        return {
            "kind": "focus_series",
            "model": "FWHM(z) = F0 * sqrt(1 + ((z - z0) / zR)**2)",
            "fwhm_um": self.fwhm_um,
            "fwhm_uncertainty_um": self.fwhm_uncertainty_um,
            "best_z_um": self.best_z_um,
            "best_z_uncertainty_um": self.best_z_uncertainty_um,
            "rayleigh_um": self.rayleigh_um,
            "reduced_chi2": None if math.isnan(self.reduced_chi2) else self.reduced_chi2,
            "axis": self.axis,
            "source": self.source,
            "fits": [fit.provenance() for fit in self.fits],
        }


Measurement = EdgeFit | FocusSeries
"""What one axis of a beam file holds."""


# ------------------------------------------------------------------------------ the edge fit
def _edge_model(
    x: np.ndarray, background: float, amplitude: float, x0: float, sigma: float
) -> np.ndarray:
    return background + amplitude * 0.5 * erfc((x - x0) / (math.sqrt(2.0) * sigma))


def _check_axis(axis: str | None) -> str | None:
    if axis is not None and axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)} (or None), got {axis!r}")
    return axis


def _as_profile(position_um: Any, signal: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions and signal as float64 ``(n,)`` sorted by position, checked."""
    try:
        x = np.asarray(position_um, dtype=np.float64)
        y = np.asarray(signal, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: positions and signal must be real numbers") from None
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"{where}: positions and signal must be 1-D and of the same length, got shapes "
            f"{x.shape} and {y.shape}"
        )
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise ValueError(
            f"{where}: {int(bad.sum())} of {x.size} points hold NaN or Inf (first at index "
            f"{int(np.argmax(bad))}); remove them before fitting"
        )
    distinct = np.unique(x).size
    if distinct < MIN_POINTS:
        raise ValueError(
            f"{where}: {distinct} distinct positions, fewer than the {MIN_POINTS} an edge fit "
            "needs (background, step, position and width)"
        )
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _is_counts(signal: np.ndarray) -> bool:
    return bool(np.all(signal >= 0) and np.all(signal == np.round(signal)))


def _noise_from_second_differences(signal: np.ndarray) -> float:
    """Noise standard deviation of a smooth profile: MAD of second differences / sqrt(6)."""
    second = np.diff(signal, n=2)
    mad = float(np.median(np.abs(second - np.median(second))))
    noise = 1.4826 * mad / math.sqrt(6.0)
    if noise > 0:
        return noise
    spread = float(np.ptp(signal))
    return max(1e-6 * spread, 1e-12)


def _start_values(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Starting parameters ``(a, b, x0, sigma)`` from the plateaus and the derivative."""
    n = x.size
    tail = max(2, n // 8)
    left, right = float(np.median(y[:tail])), float(np.median(y[-tail:]))
    background, amplitude = right, left - right
    smoothed = uniform_filter1d(y, size=3 if n < 40 else 5, mode="nearest")
    slope = np.gradient(smoothed, x)
    # the edge falls (b > 0) or rises (b < 0): its derivative peaks at -sign(b) * slope
    direction = 1.0 if amplitude >= 0 else -1.0
    towards = -direction * slope
    peak_index = int(np.argmax(towards))
    peak = float(towards[peak_index])
    step = float(np.median(np.diff(x)))
    span = float(x[-1] - x[0])
    if peak > 0 and amplitude != 0:
        # a Gaussian line spread function of area |b| peaks at |b| / (sqrt(2 pi) sigma)
        sigma = abs(amplitude) / (math.sqrt(2.0 * math.pi) * peak)
    else:
        sigma = span / 10.0
    sigma = float(np.clip(sigma, max(step, 1e-12), span / 4.0))
    x0 = float(x[peak_index])
    return [np.array([background, amplitude, x0, sigma * factor]) for factor in (1.0, 0.5, 2.0)]


def _solve(
    x: np.ndarray, y: np.ndarray, noise: np.ndarray, start: np.ndarray, bounds: tuple
) -> Any:
    def residuals(p: np.ndarray) -> np.ndarray:
        return (y - _edge_model(x, p[0], p[1], p[2], p[3])) / noise

    start = np.clip(start, bounds[0] + 1e-12 * np.abs(bounds[0]), bounds[1])
    return least_squares(residuals, start, bounds=bounds, x_scale="jac", method="trf")


def fit_edge(
    position_um: Any,
    signal: Any,
    *,
    counts: bool | None = None,
    axis: str | None = None,
    source: str = "array",
    z_um: float | None = None,
) -> EdgeFit:
    """Fit the edge spread function of one knife-edge scan (module notes).

    Parameters
    ----------
    position_um : array_like
        ``(n,)`` positions, µm (any order; at least :data:`MIN_POINTS` distinct).
    signal : array_like
        ``(n,)`` signal at each position: counts, or a normalised signal.
    counts : bool, optional
        Whether the signal is Poisson counts (Poisson weights). Default: when every value is a
        non-negative integer.
    axis : {"vertical", "horizontal"}, optional
        The axis the scan measured.
    source : str
        Where the data came from (recorded).
    z_um : float, optional
        Focus position of the scan, µm (recorded).

    Returns
    -------
    EdgeFit
        FWHM and its uncertainty in µm, the other parameters and the fit's figures.

    Raises
    ------
    ValueError
        NaN/Inf, too few points, no edge, an edge not inside the scan, an edge sharper than the
        step resolves, counts=True with negative values.
    TypeError
        Values that are not real numbers.
    """
    axis = _check_axis(axis)
    x, y = _as_profile(position_um, signal, source)
    if counts is None:
        counts = _is_counts(y)
    elif counts and np.any(y < 0):
        raise ValueError(f"{source}: counts=True but the signal has negative values")
    step = float(np.median(np.diff(np.unique(x))))
    span = float(x[-1] - x[0])
    level = max(float(np.ptp(y)), float(np.max(np.abs(y))), 1e-12)
    lower = np.array([-10.0 * level, -10.0 * level, x[0] - span, 1e-3 * step])
    upper = np.array([10.0 * level, 10.0 * level, x[-1] + span, 2.0 * span])
    bounds = (lower, upper)
    if counts:
        noise = np.sqrt(np.maximum(y, 1.0))  # first pass: the measured counts' variance
    else:
        noise = np.full_like(y, _noise_from_second_differences(y))
    best = min(
        (_solve(x, y, noise, start, bounds) for start in _start_values(x, y)),
        key=lambda solution: solution.cost,
    )
    if counts:  # second pass: the model's variance (Pearson's chi-square)
        expected = _edge_model(x, *best.x)
        noise = np.sqrt(np.maximum(expected, 1.0))
        best = _solve(x, y, noise, best.x, bounds)
    background, amplitude, x0, sigma = (float(v) for v in best.x)
    dof = x.size - 4
    chi2 = float(np.sum(best.fun**2))
    reduced = chi2 / dof if dof > 0 else float("nan")
    covariance = np.linalg.pinv(best.jac.T @ best.jac) * (reduced if dof > 0 else 1.0)
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    significance = abs(amplitude) / errors[1] if errors[1] > 0 else math.inf
    scatter = _noise_from_second_differences(y)
    if significance < MIN_STEP_SIGNIFICANCE or abs(amplitude) < MIN_STEP_NOISE * scatter:
        raise ValueError(
            f"{source}: no edge in the scan (the best step, {amplitude:.4g}, is "
            f"{significance:.1f} times its uncertainty and {abs(amplitude) / scatter:.1f} times "
            f"the point-to-point noise; at least {MIN_STEP_SIGNIFICANCE:g} and "
            f"{MIN_STEP_NOISE:g} are needed): check that the edge crosses the beam"
        )
    low_end, high_end = x0 - EDGE_MARGIN_SIGMA * sigma, x0 + EDGE_MARGIN_SIGMA * sigma
    if low_end < x[0] or high_end > x[-1]:
        raise ValueError(
            f"{source}: the edge is not inside the scan: its transition spans {low_end:.4g} to "
            f"{high_end:.4g} µm (x0 +- {EDGE_MARGIN_SIGMA:g} sigma) but the scan covers "
            f"{x[0]:.4g} to {x[-1]:.4g} µm; scan across the whole edge"
        )
    if sigma < MIN_SIGMA_STEPS * step:
        raise ValueError(
            f"{source}: the edge is sharper than the scan step resolves (sigma {sigma:.3g} µm "
            f"for a step of {step:.3g} µm): the beam FWHM is below about {step:.3g} µm; "
            "scan with a finer step"
        )
    return EdgeFit(
        fwhm_um=FWHM_PER_SIGMA * sigma,
        fwhm_uncertainty_um=FWHM_PER_SIGMA * float(errors[3]),
        sigma_um=sigma,
        x0_um=x0,
        amplitude=amplitude,
        background=background,
        reduced_chi2=reduced,
        n_points=int(x.size),
        axis=axis,
        source=source,
        z_um=None if z_um is None else float(z_um),
        weights="poisson" if counts else "uniform",
    )


# ------------------------------------------------------------------------------ focus series
def fit_focus_series(
    position_um: Any,
    signal: Any,
    z_um: Any,
    *,
    counts: bool | None = None,
    axis: str | None = None,
    source: str = "array",
) -> FocusSeries:
    """Fit every edge scan of a focus series and the caustic through their FWHMs.

    Parameters
    ----------
    position_um, signal, z_um : array_like
        ``(n,)`` each: position (µm), signal and focus position (µm) of every point; the points
        of one scan share their ``z_um``.
    counts : bool, optional
        As :func:`fit_edge`.
    axis : {"vertical", "horizontal"}, optional
        The axis measured.
    source : str
        Where the data came from.

    Returns
    -------
    FocusSeries
        Every edge fit, the best focus and its FWHM, with uncertainties.

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_FOCUS_POSITIONS` focus positions, a scan that cannot be fitted
        (:func:`fit_edge`, the message names its ``z``), a series whose FWHM has no minimum, or
        one whose minimum lies outside the ``z`` range.
    """
    axis = _check_axis(axis)
    z = np.asarray(z_um, dtype=np.float64)
    x = np.asarray(position_um, dtype=np.float64)
    y = np.asarray(signal, dtype=np.float64)
    if z.shape != x.shape or z.ndim != 1:
        raise ValueError(
            f"{source}: z must be 1-D like the positions, got shapes {z.shape} and {x.shape}"
        )
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{source}: the focus positions z hold NaN or Inf")
    planes = np.unique(z)
    if planes.size < MIN_FOCUS_POSITIONS:
        raise ValueError(
            f"{source}: {planes.size} focus position(s); a focus series needs at least "
            f"{MIN_FOCUS_POSITIONS} to locate the best focus"
        )
    fits = []
    for plane in planes:
        chosen = z == plane
        try:
            fits.append(
                fit_edge(
                    x[chosen],
                    y[chosen],
                    counts=counts,
                    axis=axis,
                    source=source,
                    z_um=float(plane),
                )
            )
        except ValueError as error:
            raise ValueError(f"at z = {plane:g} µm: {error}") from None
    fwhm = np.array([fit.fwhm_um for fit in fits])
    error = np.array([max(fit.fwhm_uncertainty_um, 1e-6 * fit.fwhm_um) for fit in fits])
    return _fit_caustic(tuple(fits), planes, fwhm, error, axis, source)


def _fit_caustic(
    fits: tuple[EdgeFit, ...],
    z: np.ndarray,
    fwhm: np.ndarray,
    error: np.ndarray,
    axis: str | None,
    source: str,
) -> FocusSeries:
    """The hyperbolic caustic through ``fwhm`` ``(m,)`` at ``z`` ``(m,)``, weighted by ``error``."""
    # FWHM^2 is a parabola in z: a weighted linear fit gives the start (error of FWHM^2 = 2 F dF)
    c2, c1, c0 = np.polyfit(z, fwhm**2, 2, w=1.0 / (2.0 * fwhm * error))
    if not c2 > 0:
        raise ValueError(
            f"{source}: the FWHM does not pass through a minimum over z = {z[0]:g} to "
            f"{z[-1]:g} µm (FWHM {', '.join(f'{f:.3g}' for f in fwhm)} µm): the focus is not "
            "inside the series"
        )
    z0 = -c1 / (2.0 * c2)
    f0 = math.sqrt(max(c0 - c1**2 / (4.0 * c2), (0.5 * fwhm.min()) ** 2))
    rayleigh = f0 / math.sqrt(c2)
    span = float(z[-1] - z[0])

    def residuals(p: np.ndarray) -> np.ndarray:
        return (fwhm - p[0] * np.sqrt(1.0 + ((z - p[1]) / p[2]) ** 2)) / error

    lower = np.array([1e-6 * fwhm.min(), z[0] - span, 1e-6 * span])
    upper = np.array([2.0 * fwhm.max(), z[-1] + span, 1e6 * span])
    start = np.clip(np.array([f0, z0, rayleigh]), lower * (1 + 1e-9), upper * (1 - 1e-9))
    solution = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
    f0, z0, rayleigh = (float(v) for v in solution.x)
    dof = z.size - 3
    reduced = float(np.sum(solution.fun**2)) / dof if dof > 0 else float("nan")
    covariance = np.linalg.pinv(solution.jac.T @ solution.jac) * (reduced if dof > 0 else 1.0)
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    if not z[0] <= z0 <= z[-1]:
        raise ValueError(
            f"{source}: the best focus of the fitted caustic, z = {z0:.4g} µm, lies outside the "
            f"series (z = {z[0]:g} to {z[-1]:g} µm); extend the series past the focus"
        )
    return FocusSeries(
        fits=fits,
        best_z_um=z0,
        best_z_uncertainty_um=float(errors[1]),
        fwhm_um=f0,
        fwhm_uncertainty_um=float(errors[0]),
        rayleigh_um=rayleigh,
        reduced_chi2=reduced,
        axis=axis,
        source=source,
    )
