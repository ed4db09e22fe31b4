"""Instrumental broadening of I(q), fitted from a calibrant pattern.

Each calibrant peak is fitted with a Gaussian on a linear background; the variance of the
Gaussians is then modelled as a low-order polynomial of q, ``sigma_q^2 = c0 + c1 q + c2 q^2``
(the q-space counterpart of Caglioti's ``U tan^2 + V tan + W``: pixel size, beam size and sample
thickness each add a smooth term). The result is plain data, JSON-serialisable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from asirp.diffraction.integrate import Pattern

CEO2_LATTICE_A = 5.4111
"""Cubic lattice parameter of the NIST SRM 674b CeO2 calibrant, Å."""

_CEO2_HKL = (
    (1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2), (4, 0, 0), (3, 3, 1), (4, 2, 0),
    (4, 2, 2), (5, 1, 1), (4, 4, 0), (5, 3, 1), (6, 0, 0), (6, 2, 0), (5, 3, 3), (6, 2, 2),
)  # fmt: skip
CEO2_D_SPACINGS_A: tuple[float, ...] = tuple(
    CEO2_LATTICE_A / math.sqrt(h * h + k * k + m * m) for h, k, m in _CEO2_HKL
)
"""d-spacings of the first CeO2 (fluorite, Fm-3m) reflections, Å, largest first."""

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class InstrumentProfile:
    """Gaussian instrumental width as a smooth function of q.

    Attributes
    ----------
    variance_coefficients : tuple of float
        ``(c0, c1, c2)`` of ``sigma_q(q)^2 = c0 + c1 q + c2 q^2``, in 1/Å^2, 1/Å and 1.
    q_range_A : tuple of float
        Range of the calibrant peaks the fit saw, 1/Å; outside it the width is held at its
        value at the nearest end (no extrapolation of the polynomial).
    min_sigma_A : float
        Floor of the width, 1/Å (keeps the model positive).
    """

    variance_coefficients: tuple[float, float, float]
    q_range_A: tuple[float, float]
    min_sigma_A: float = 1e-5

    def __post_init__(self) -> None:
        coefficients = tuple(float(c) for c in self.variance_coefficients)
        if len(coefficients) != 3 or not all(math.isfinite(c) for c in coefficients):
            raise ValueError("variance_coefficients must be three finite numbers")
        low, high = (float(v) for v in self.q_range_A)
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
            raise ValueError(f"q_range_A must satisfy 0 <= low <= high, got {self.q_range_A!r}")
        floor = float(self.min_sigma_A)
        if not (math.isfinite(floor) and floor > 0):
            raise ValueError("min_sigma_A must be positive")
        object.__setattr__(self, "variance_coefficients", coefficients)
        object.__setattr__(self, "q_range_A", (low, high))
        object.__setattr__(self, "min_sigma_A", floor)

    @classmethod
    def constant(cls, sigma_q_A: float) -> InstrumentProfile:
        """A width that does not depend on q, 1/Å."""
        sigma = float(sigma_q_A)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma_q_A must be positive, got {sigma_q_A!r}")
        return cls((sigma * sigma, 0.0, 0.0), (0.0, 0.0), min_sigma_A=min(1e-5, sigma))

    def sigma_q_A(self, q_A: np.ndarray | float) -> np.ndarray:
        """Gaussian standard deviation of a peak at ``q_A``, 1/Å (same shape as ``q_A``)."""
        q = np.clip(np.asarray(q_A, dtype=np.float64), *self.q_range_A)
        c0, c1, c2 = self.variance_coefficients
        variance = c0 + q * (c1 + q * c2)
        return np.sqrt(np.maximum(variance, self.min_sigma_A**2))

    def fwhm_q_A(self, q_A: np.ndarray | float) -> np.ndarray:
        """Full width at half maximum of a peak at ``q_A``, 1/Å."""
        return _FWHM_PER_SIGMA * self.sigma_q_A(q_A)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable description."""
        return {
            "kind": "gaussian",
            "variance_coefficients": list(self.variance_coefficients),
            "q_range_A": list(self.q_range_A),
            "min_sigma_A": self.min_sigma_A,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstrumentProfile:
        """Inverse of :meth:`as_dict`; unknown keys are refused."""
        if not isinstance(data, dict):
            raise TypeError(f"a profile must be a dict, got {type(data).__name__}")
        values = dict(data)
        kind = values.pop("kind", "gaussian")
        if kind != "gaussian":
            raise ValueError(f"unknown profile kind {kind!r}")
        unknown = set(values) - {"variance_coefficients", "q_range_A", "min_sigma_A"}
        if unknown:
            raise ValueError(f"unknown profile keys: {sorted(unknown)}")
        return cls(
            tuple(values["variance_coefficients"]),
            tuple(values["q_range_A"]),
            values.get("min_sigma_A", 1e-5),
        )


@dataclass(frozen=True)
class PeakFit:
    """One fitted calibrant peak.

    Expected and fitted centre, 1/Å; Gaussian width sigma, 1/Å; height over the background,
    counts; standard error of sigma, 1/Å.
    """

    q_expected_A: float
    q_A: float
    sigma_A: float
    height: float
    sigma_error_A: float


def _rough_width(q: np.ndarray, y: np.ndarray, centre: int) -> float:
    """Half-maximum half-width around ``centre`` over a local minimum baseline, 1/Å."""
    base = float(np.min(y))
    half = base + 0.5 * (y[centre] - base)
    left = centre
    while left > 0 and y[left] > half:
        left -= 1
    right = centre
    while right < y.size - 1 and y[right] > half:
        right += 1
    return max(0.5 * (q[right] - q[left]) / math.sqrt(2 * math.log(2)), q[1] - q[0])


def fit_peaks(
    pattern: Pattern,
    d_spacings_A: Sequence[float],
    *,
    search_A: float = 0.02,
    min_snr: float = 10.0,
) -> list[PeakFit]:
    """Fit a Gaussian on a linear background to each calibrant peak inside the pattern.

    Parameters
    ----------
    pattern : Pattern
        Integrated calibrant frame.
    d_spacings_A : sequence of float
        Calibrant d-spacings, Å; peaks are expected at ``q = 2 pi / d``.
    search_A : float
        How far from the expected position the peak may lie, 1/Å (geometry errors).
    min_snr : float
        Least fitted height over its standard error for a peak to count.

    Returns
    -------
    list of PeakFit
        The peaks that were found and isolated enough to fit, by increasing q.
    """
    q = pattern.q_A
    y = pattern.intensity
    valid = pattern.valid
    sigma_y = np.where(valid, pattern.sigma, np.inf)
    dq = float(np.median(np.diff(q)))
    expected = sorted(2 * math.pi / float(d) for d in d_spacings_A if float(d) > 0)
    fits: list[PeakFit] = []
    for index, q0 in enumerate(expected):
        if not q[0] + search_A < q0 < q[-1] - search_A:
            continue
        near = np.flatnonzero((np.abs(q - q0) <= search_A) & valid)
        if near.size < 3:
            continue
        centre = int(near[np.argmax(y[near])])
        lo = max(centre - int(4 * search_A / dq), 0)
        hi = min(centre + int(4 * search_A / dq) + 1, q.size)
        width = _rough_width(q[lo:hi], y[lo:hi], centre - lo)
        half_window = max(5.0 * width, 6 * dq)
        neighbours = [e for j, e in enumerate(expected) if j != index]
        # a neighbour inside the window would bias the width: skip the pair
        if any(abs(e - q[centre]) < half_window + 2 * width for e in neighbours):
            continue
        inside = (np.abs(q - q[centre]) <= half_window) & valid
        if np.count_nonzero(inside) < 8:
            continue
        qs, ys, ss = q[inside], y[inside], sigma_y[inside]
        background0 = float(np.min(ys))
        start = np.array([ys.max() - background0, q[centre], width, background0, 0.0])

        def residual(p: np.ndarray, qs=qs, ys=ys, ss=ss, qc=q[centre]) -> np.ndarray:
            height, mu, sig, b0, b1 = p
            model = height * np.exp(-0.5 * ((qs - mu) / sig) ** 2) + b0 + b1 * (qs - qc)
            return (ys - model) / ss

        lower = [0.0, q[centre] - 3 * width, 0.1 * dq, -np.inf, -np.inf]
        upper = [np.inf, q[centre] + 3 * width, half_window, np.inf, np.inf]
        try:
            result = least_squares(residual, start, bounds=(lower, upper), x_scale="jac")
        except (ValueError, np.linalg.LinAlgError):
            continue
        if not result.success:
            continue
        dof = max(qs.size - 5, 1)
        chi2 = float(np.sum(result.fun**2)) / dof
        try:
            covariance = np.linalg.inv(result.jac.T @ result.jac) * max(chi2, 1.0)
        except np.linalg.LinAlgError:
            continue
        errors = np.sqrt(np.maximum(np.diag(covariance), 0.0))
        height, mu, sig = result.x[:3]
        if not (errors[0] > 0 and height / errors[0] >= min_snr and errors[2] > 0):
            continue
        fits.append(PeakFit(q0, float(mu), float(sig), float(height), float(errors[2])))
    return fits


def fit_instrument_profile(
    pattern: Pattern,
    d_spacings_A: Sequence[float] = CEO2_D_SPACINGS_A,
    *,
    min_peaks: int = 2,
    search_A: float = 0.02,
) -> InstrumentProfile:
    """Fit the instrumental width from an integrated calibrant pattern.

    Parameters
    ----------
    pattern : Pattern
        Integrated calibrant frame (e.g. CeO2), ideally with many counts.
    d_spacings_A : sequence of float
        The calibrant's d-spacings, Å (default: CeO2, :data:`CEO2_D_SPACINGS_A`).
    min_peaks : int
        Fewest isolated, significant peaks the fit accepts (at least 1).
    search_A : float
        How far a peak may lie from ``2 pi / d``, 1/Å.

    Returns
    -------
    InstrumentProfile
        ``sigma_q^2`` as a polynomial of q of degree ``min(2, n_peaks - 1)`` fitted to the
        peaks' widths (weighted by their errors), held constant outside the peaks' range.

    Raises
    ------
    TypeError
        When ``pattern`` is not a :class:`Pattern`.
    ValueError
        When fewer than ``min_peaks`` peaks are found, or the d-spacings are unusable.
    """
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a Pattern, got {type(pattern).__name__}")
    spacings = [float(d) for d in d_spacings_A]
    if not spacings or not all(math.isfinite(d) and d > 0 for d in spacings):
        raise ValueError("d_spacings_A must be positive finite numbers, Å")
    if isinstance(min_peaks, bool) or not isinstance(min_peaks, int) or min_peaks < 1:
        raise ValueError(f"min_peaks must be a positive integer, got {min_peaks!r}")
    fits = fit_peaks(pattern, spacings, search_A=search_A)
    if len(fits) < min_peaks:
        raise ValueError(
            f"found {len(fits)} isolated calibrant peak(s) in q = [{pattern.q_A[0]:.3f}, "
            f"{pattern.q_A[-1]:.3f}] 1/Å, need at least {min_peaks}"
        )
    qs = np.array([f.q_A for f in fits])
    variances = np.array([f.sigma_A**2 for f in fits])
    # error of sigma^2 is 2 sigma err(sigma); weights keep a poorly fitted peak from dominating
    errors = np.array([2 * f.sigma_A * f.sigma_error_A for f in fits])
    errors = np.maximum(errors, 1e-3 * variances)
    degree = min(2, len(fits) - 1)
    design = np.vander(qs, degree + 1, increasing=True) / errors[:, None]
    solution, *_ = np.linalg.lstsq(design, variances / errors, rcond=None)
    coefficients = np.zeros(3)
    coefficients[: degree + 1] = solution
    floor = 0.25 * float(np.min([f.sigma_A for f in fits]))
    return InstrumentProfile(
        tuple(coefficients), (float(qs.min()), float(qs.max())), min_sigma_A=floor
    )
