"""Online detection of a change of shape in a time series of powder patterns.

Model
-----
Every new pattern ``y(q)`` (raw I(q), or I(q) restored by a transform such as Richardson-Lucy)
is predicted from the last in-control patterns (the reference window, each divided by its mean
intensity). Every bin's course over the window is fitted by a polynomial (degree 2 by default)
in the sample temperature, centred and scaled over the window (thermal expansion is a function
of temperature, so holds and changes of step size are followed exactly), or in the frame index
when a frame of the window has no temperature. Temperatures closer than 0.05 K count as one
level, and a polynomial of degree ``d`` needs ``d + 1`` levels: a window within a hold keeps
only the mean. The new pattern is fitted, by weighted least squares, with::

    y(q) ~ sum_j c_j P_j(q) + P_0(q) (a1 L1(q) + a2 L2(q)) + sum_k b_k L_k(q)

where ``P_j`` are the polynomial's coefficient patterns (``P_0`` the reference at the window's
centre, ``P_1``, ``P_2`` the in-control trend and its curvature), ``L`` Legendre polynomials of
q. All coefficients are free: ``c_0`` is the amplitude (ring current), ``c_1, c_2`` follow the
ramp's continuous peak shifts exactly as the detector and its binning render them (a derivative
of the binned pattern is not accurate enough: strong peaks hold ~1e6 counts a bin, so a misfit
of 1e-3 of a peak is several sigma), ``a`` smooth intensity changes (Debye-Waller), ``b`` the
background. What the model cannot follow is a change of *shape*: a peak that splits, a new
phase's peaks.

Noise model and score
---------------------
When the reference first holds ``min_reference_frames`` patterns, a parametric bootstrap
propagates the Poisson errors of a raw pattern through the transform: ``n_bootstrap`` replicas
``y + sigma N(0, 1)`` are transformed in one batched call, which gives the per-bin variance of
the signal (correlated and amplified by a restoration) and a first null law of the local
statistic below; every in-control frame then adds ``bootstrap_per_frame`` replicas (a rolling
estimate that follows the peaks). The residual variance is that noise, scaled by the amplitude
(Poisson), times ``1 + leverage`` (the reference's own noise: the leverage of the polynomial
prediction at this temperature), plus ``(kappa y)^2`` (relative model error, learnt from
in-control residuals). Over half-overlapping q windows of a few peak widths, each window's sum
of squares ``sum z^2`` of ``n`` bins is taken as a scaled chi-square with the window's own mean
and variance (first from the bootstrap, then learnt from the in-control frames; the variance
never below the uncorrelated ``2 n``) and mapped to a normal quantile by the Wilson-Hilferty
cube root: a restoration correlates the bins of a window (fewer effective degrees of freedom,
a wider and more skewed law, most at the sharp strong peaks, where the model error also sits),
and without this per-window calibration those few windows' tails ruled the maximum and the
restored false alarms. The local statistic is the largest window quantile. Its law (a maximum:
Gumbel) is fitted by moments, first to the bootstrap, then updated by the in-control frames
themselves (the bootstrap prior weighs 20 frames), and its Gumbel tail probability is mapped to
a normal quantile, so that the per-frame score is approximately N(0, 1) in control.

Decision
--------
A one-sided CUSUM ``C_t = max(0, C_{t-1} + x_t - k)`` alarms when ``C_t > h``. ``h`` is set
from the stated in-control average run length ``ARL0`` (frames between false alarms) with
Siegmund's approximation for N(0, 1) increments,
``ARL0 = (exp(2 k h') - 2 k h' - 1) / (2 k^2)``, ``h' = h + 1.166``. With the default
``k = 2`` and ``ARL0 = 20000``, ``h = 1.83``: one frame scoring above ``k + h = 3.83`` alarms,
and so do two consecutive frames above about 2.9. The change point is estimated as the first
frame after the last ``C = 0``. Frames enter the reference (and teach the learnt quantities)
only once the CUSUM has come back to 0 after them (they wait in a pending list while it is
positive), so a growing change is never absorbed into its own reference. After an alarm the
detector skips ``settle_frames`` frames and starts again from an empty reference (warm-up), so
that later events can be caught and a lasting change gives one alarm, not a storm.

The real scores are not exactly N(0, 1) (slightly heavy and autocorrelated tails: the model
error is not white), so the stated ``ARL0`` is a design value: measure the actual false-alarm
rate (``bench/tune_temporal.py``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import legendre
from scipy.optimize import brentq
from scipy.special import ndtri

_EULER_GAMMA = 0.5772156649015329
_SCORE_CLIP = (-6.0, 40.0)
_EDGE_BINS = 5
_PRIOR_FRAMES = 20
_MEMORY_FRAMES = 200
_MIN_WINDOW_M2 = 1.0
_TEMPERATURE_RESOLUTION_K = 0.05  # K: below the plans' smallest step, above sensor jitter


def siegmund_arl0(threshold: float, drift: float) -> float:
    """In-control average run length of a CUSUM on N(0, 1) scores (Siegmund), frames.

    Parameters
    ----------
    threshold : float
        Decision threshold ``h`` (> 0).
    drift : float
        Reference value ``k`` (> 0) subtracted from each score.

    Returns
    -------
    float
        ``(exp(2 k h') - 2 k h' - 1) / (2 k^2)`` with ``h' = h + 1.166``.
    """
    a = 2.0 * drift * (threshold + 1.166)
    return (math.expm1(a) - a) / (2.0 * drift * drift)


def cusum_threshold(arl0_frames: float, drift: float) -> float:
    """The CUSUM threshold ``h`` whose in-control run length is ``arl0_frames`` (Siegmund).

    Parameters
    ----------
    arl0_frames : float
        Wanted mean number of in-control frames between false alarms (> 10).
    drift : float
        Reference value ``k`` in (0, 5].

    Returns
    -------
    float
        ``h``, in units of the per-frame score's standard deviation.
    """
    if not (math.isfinite(arl0_frames) and arl0_frames > 10):
        raise ValueError(f"arl0_frames must be > 10, got {arl0_frames!r}")
    if not (math.isfinite(drift) and 0 < drift <= 5):
        raise ValueError(f"drift must be within (0, 5], got {drift!r}")
    target = math.log(arl0_frames)
    # ARL0 ~ exp(2 k h') / (2 k^2) for large h: an upper bracket that cannot overflow
    upper = math.log(2.0 * drift * drift * arl0_frames + 10.0) / (2.0 * drift) + 10.0
    return float(brentq(lambda h: math.log(siegmund_arl0(h, drift)) - target, 0.0, upper))


@dataclass(frozen=True)
class Alarm:
    """A change of shape detected in the pattern series.

    Attributes
    ----------
    frame_index : int
        Frame on which the CUSUM crossed the threshold.
    time_s : float
        Its time stamp, s.
    temperature_K : float or None
        Its sample temperature, K.
    onset_frame_index : int
        Estimated first changed frame (the frame after the CUSUM's last zero).
    q_ranges_A : tuple of (float, float)
        q intervals where the pattern changed most since the onset, 1/Å, strongest first.
    confidence : float
        ``1 - exp(-2 k (C - h)) / 2`` in [0.5, 1]: 0.5 at the threshold, growing with the
        evidence beyond it (Siegmund's exponential tail: each ``1 / (2 k)`` of excess halves
        again the in-control probability).
    score : float
        Per-frame score of the alarm frame (standardised).
    threshold : float
        CUSUM threshold ``h`` the statistic crossed.
    cusum : float
        CUSUM value at the alarm.
    """

    frame_index: int
    time_s: float
    temperature_K: float | None
    onset_frame_index: int
    q_ranges_A: tuple[tuple[float, float], ...]
    confidence: float
    score: float
    threshold: float
    cusum: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable description."""
        return {
            "frame_index": int(self.frame_index),
            "time_s": float(self.time_s),
            "temperature_K": None if self.temperature_K is None else float(self.temperature_K),
            "onset_frame_index": int(self.onset_frame_index),
            "q_ranges_A": [[float(lo), float(hi)] for lo, hi in self.q_ranges_A],
            "confidence": float(self.confidence),
            "score": float(self.score),
            "threshold": float(self.threshold),
            "cusum": None if not math.isfinite(self.cusum) else float(self.cusum),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alarm:
        """Inverse of :meth:`as_dict`."""
        values = dict(data)
        values["q_ranges_A"] = tuple(tuple(map(float, r)) for r in values["q_ranges_A"])
        if values.get("cusum") is None:
            values["cusum"] = float("nan")
        return cls(**values)


@dataclass(frozen=True)
class DetectorStep:
    """What :meth:`ShapeChangeDetector.update` found on one pattern.

    ``signal`` is the transformed pattern ``(n_bins,)``; ``score`` and ``cusum`` are 0 while
    not armed; ``expansion`` is the fitted q scaling ``eps`` relative to the reference and
    ``amplitude`` its scale; ``alarm`` holds ``(onset_frame_index, q_ranges_A, confidence)`` on
    the frame that raises an alarm, else None.
    """

    signal: np.ndarray
    score: float
    cusum: float
    armed: bool
    expansion: float
    amplitude: float
    alarm: tuple[int, tuple[tuple[float, float], ...], float] | None = None


Transform = Callable[[np.ndarray], np.ndarray]


class ShapeChangeDetector:
    """Shift-tolerant CUSUM detector of shape changes in 1-D patterns on a fixed q grid.

    Parameters
    ----------
    q_A : numpy.ndarray
        ``(n_bins,)`` increasing bin centres, 1/Å.
    valid : numpy.ndarray, optional
        ``(n_bins,)`` bool, bins to use (e.g. bins that hold pixels); all by default.
    transform : callable, optional
        Maps raw intensities ``(n_bins,)`` or ``(m, n_bins)`` to the detected signal of the
        same shape (e.g. a restoration); identity when omitted.
    reference_frames : int
        Most in-control patterns averaged into the reference.
    min_reference_frames : int
        Patterns in the reference before the noise is calibrated and alarms are allowed.
    drift : float
        CUSUM reference value ``k``, in score units.
    false_alarm_interval_frames : float
        Stated in-control average run length, frames; sets ``h`` (:func:`cusum_threshold`).
    window_bins : int
        Width of the q windows of the local statistic, bins (half-overlapping).
    background_degree : int
        Degree of the Legendre background.
    amplitude_degree : int
        Degree of the smooth (Legendre) intensity modulation of the reference (0: a scale).
    n_bootstrap : int
        Replicas of the first noise calibration; also the memory (in replicas) of the rolling
        one.
    bootstrap_per_frame : int
        Replicas added to the noise calibration by each frame that enters the reference (keeps
        the noise model following the peaks along the ramp).
    settle_frames : int
        Frames skipped after an alarm before a new reference is started.
    max_pending_frames : int
        Most frames held out of the reference while the CUSUM is positive.
    model_error : float
        Prior relative model error ``kappa``: the variance gets ``(kappa y)^2`` on top of the
        noise (strong peaks, counted to 1e-3, are fitted to about that). ``kappa^2`` is then
        learnt from the in-control residuals (regression of ``e^2 - noise`` on ``y^2``).
    trend_degree : int
        Degree of the polynomial in temperature (frame index when a temperature is missing)
        fitted to every bin over the reference window (2: thermal expansion to second order).
    seed : int
        Seed of the bootstrap's generator (the detector is deterministic).
    """

    def __init__(
        self,
        q_A: np.ndarray,
        *,
        valid: np.ndarray | None = None,
        transform: Transform | None = None,
        reference_frames: int = 30,
        min_reference_frames: int = 10,
        drift: float = 2.0,
        false_alarm_interval_frames: float = 20_000.0,
        window_bins: int = 12,
        background_degree: int = 3,
        amplitude_degree: int = 2,
        n_bootstrap: int = 256,
        bootstrap_per_frame: int = 4,
        settle_frames: int = 4,
        max_pending_frames: int = 40,
        model_error: float = 5e-4,
        trend_degree: int = 2,
        seed: int = 0,
    ) -> None:
        q = np.asarray(q_A, dtype=np.float64)
        if q.ndim != 1 or q.size < 4 * _EDGE_BINS or np.any(np.diff(q) <= 0):
            raise ValueError("q_A must be 1-D, strictly increasing, with at least 20 bins")
        self.q_A = q
        mask = np.ones(q.size, bool) if valid is None else np.asarray(valid, bool).copy()
        if mask.shape != q.shape:
            raise ValueError(f"valid must have shape {q.shape}, got {mask.shape}")
        self.fit_mask = mask.copy()
        mask[:_EDGE_BINS] = False
        mask[-_EDGE_BINS:] = False
        self.score_mask = mask
        if int(window_bins) < 2 or np.count_nonzero(mask) < 2 * int(window_bins):
            raise ValueError("too few valid bins for the detector's windows")
        if not 2 <= int(min_reference_frames) <= int(reference_frames):
            raise ValueError("need 2 <= min_reference_frames <= reference_frames")
        if int(n_bootstrap) < 16 or not 0 <= int(bootstrap_per_frame) <= int(n_bootstrap):
            raise ValueError("need n_bootstrap >= 16 and 0 <= bootstrap_per_frame <= n_bootstrap")
        self.transform = transform
        self.reference_frames = int(reference_frames)
        self.min_reference_frames = int(min_reference_frames)
        self.drift = float(drift)
        self.threshold = cusum_threshold(float(false_alarm_interval_frames), self.drift)
        self.window_bins = int(window_bins)
        self.n_bootstrap = int(n_bootstrap)
        self.bootstrap_per_frame = int(bootstrap_per_frame)
        self.settle_frames = int(settle_frames)
        self.max_pending_frames = int(max_pending_frames)
        self.seed = int(seed)
        self.model_error = float(model_error)
        self.trend_degree = int(trend_degree)
        if not 0 <= self.trend_degree <= 3:
            raise ValueError(f"trend_degree must be within [0, 3], got {trend_degree!r}")
        if not (math.isfinite(self.model_error) and 0 <= self.model_error < 1):
            raise ValueError(f"model_error must be within [0, 1), got {model_error!r}")
        x = 2.0 * (q - q[0]) / (q[-1] - q[0]) - 1.0
        self._background = legendre.legvander(x, int(background_degree))  # (n, deg + 1)
        self._modulation = legendre.legvander(x, int(amplitude_degree))[:, 1:]
        # windows over the scored bins: one starts every half window
        step = max(self.window_bins // 2, 1)
        starts = np.arange(0, q.size - self.window_bins + 1, step)
        self._win_start = starts
        self._win_stop = starts + self.window_bins
        csum = np.concatenate(([0], np.cumsum(mask)))
        self._win_n = (csum[self._win_stop] - csum[self._win_start]).astype(np.float64)
        self._win_ok = self._win_n >= max(self.window_bins // 2, 2)
        self._skip = 0
        self.reset()

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: empty reference, noise model and CUSUM (warm-up again)."""
        self._rng = np.random.default_rng(self.seed)
        # (frame index, temperature or None, normalised pattern)
        self._ref: deque[tuple[int, float | None, np.ndarray]] = deque(maxlen=self.reference_frames)
        # the trend's regressor: (by temperature?, centre, span, gram inverse, last value)
        self._time_axis: tuple[bool, float, float, np.ndarray, float] = (
            False, 0.0, 1.0, np.ones((1, 1)), 0.0,
        )  # fmt: skip
        self._columns: np.ndarray | None = None  # (n, degree + 1): the course in T (or time)
        self._amplitude = 1.0
        self._var: np.ndarray | None = None  # signal variance per unit amplitude, (n,)
        self._m_moments = (0.0, 0.0)  # mean and mean square of the statistic's null law
        self._kappa2 = self.model_error**2  # relative model error squared (learnt)
        self._win_offset = np.zeros(self._win_start.size)  # in-control mean of each window
        # each window's null second moment (bootstrap, then learnt): a restoration correlates
        # the bins of a window, so its chi-square excess spreads wider than N(0, 1), and most
        # at the peaks
        self._win_m2 = np.ones(self._win_start.size)
        self._n_scored = 0
        self._cusum = 0.0
        self._run_start: int | None = None
        self._run_excess = np.zeros(self._win_start.size)
        self._pending: list[tuple[np.ndarray, ...]] = []

    @property
    def armed(self) -> bool:
        """Whether the CUSUM can raise alarms (warm-up over)."""
        return self._var is not None

    @property
    def n_reference(self) -> int:
        """Patterns in the reference now."""
        return len(self._ref)

    def state(self) -> dict[str, Any]:
        """A copy of the mutable state (for a caller that must restore it on error)."""
        return {
            "rng": self._rng.bit_generator.state,
            "ref": deque(self._ref, maxlen=self.reference_frames),
            "time": self._time_axis,
            "columns": self._columns,
            "amplitude": self._amplitude,
            "var": self._var,
            "win_m2": self._win_m2,
            "m_moments": self._m_moments,
            "learnt": (self._kappa2, self._win_offset.copy(), self._n_scored),
            "cusum": self._cusum,
            "run_start": self._run_start,
            "run_excess": self._run_excess.copy(),
            "pending": list(self._pending),
            "skip": self._skip,
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Put back a state taken with :meth:`state`."""
        self._rng = np.random.default_rng(self.seed)
        self._rng.bit_generator.state = state["rng"]
        self._ref = state["ref"]
        self._time_axis = state["time"]
        self._columns = state["columns"]
        self._amplitude = state["amplitude"]
        self._var, self._m_moments = state["var"], state["m_moments"]
        self._win_m2 = state["win_m2"]
        self._kappa2, self._win_offset, self._n_scored = state["learnt"]
        self._cusum = state["cusum"]
        self._run_start = state["run_start"]
        self._run_excess = state["run_excess"]
        self._pending = state["pending"]
        self._skip = state["skip"]

    # -- pieces ----------------------------------------------------------------------------
    def _apply(self, raw: np.ndarray) -> np.ndarray:
        if self.transform is None:
            return raw
        out = np.asarray(self.transform(raw), dtype=np.float64)
        if out.shape != raw.shape or not np.all(np.isfinite(out)):
            raise ValueError("the transform must return finite values of its input's shape")
        return out

    def _commit(
        self, normalised: np.ndarray, raw: np.ndarray, sigma: np.ndarray, signal: np.ndarray,
        amplitude: float, frame_index: int, temperature: float | None,
        scored: tuple | None = None,
    ) -> None:  # fmt: skip
        if scored is not None:
            # an in-control scored frame: it teaches the model error, the windows' offsets
            # and the statistic's law (the bootstrap is their prior, worth _PRIOR_FRAMES)
            kappa2, stats, peak = scored
            self._n_scored += 1
            rate = max(1.0 / (self._n_scored + _PRIOR_FRAMES), 1.0 / _MEMORY_FRAMES)
            self._kappa2 += rate * (kappa2 - self._kappa2)
            finite = np.isfinite(stats)
            self._win_offset[finite] += rate * (stats[finite] - self._win_offset[finite])
            # the spread as the in-control frames show it: the model error, not only the noise
            # (strongest at the sharpest restored peaks); new arrays, as state() holds the old
            deviation = np.where(finite, stats - self._win_offset, 0.0)
            m2 = self._win_m2
            self._win_m2 = np.where(finite, m2 + rate * (deviation * deviation - m2), m2)
            mean, square = self._m_moments
            self._m_moments = (mean + rate * (peak - mean), square + rate * (peak**2 - square))
        self._ref.append((frame_index, temperature, normalised))
        stack = np.stack([p for *_, p in self._ref])
        # every bin's in-control course, a polynomial fitted over the window: the ramp's peak
        # shifts exactly as the detector and the binning see them, to second order. Thermal
        # expansion is a function of temperature, not of time: by temperature, a hold (repeated
        # frames at one temperature) or a change of step size is no misfit; by frame index (when
        # a temperature is missing) it is.
        by_temperature = all(t is not None for _, t, _ in self._ref)
        if by_temperature:
            values = np.array([t for _, t, _ in self._ref], dtype=np.float64)
            # temperatures closer than this are one level (a hold read with sensor jitter)
            resolution = _TEMPERATURE_RESOLUTION_K
        else:
            values = np.array([i for i, _, _ in self._ref], dtype=np.float64)
            resolution = 0.5
        centre = float(values.mean())
        span = float(np.max(np.abs(values - centre)))
        # a polynomial of degree d needs d + 1 distinct levels (a window within a hold has one:
        # the trend terms are then degenerate and dropped) and a spare frame for the noise
        levels = np.unique(np.round(values / resolution)).size if span > resolution else 1
        degree = min(self.trend_degree, levels - 1, max(len(self._ref) - 2, 0))
        span = max(span, resolution)
        basis = np.vander((values - centre) / span, degree + 1, increasing=True)
        # pseudo-inverse of the small (frames, degree + 1) basis: lstsq with a right-hand side
        # per bin is ~100x slower
        gram_inverse = np.linalg.pinv(basis.T @ basis)
        coefficients = gram_inverse @ (basis.T @ stack)
        self._time_axis = (by_temperature, centre, span, gram_inverse, float(values[-1]))
        self._columns = np.ascontiguousarray(coefficients.T)  # (n, degree + 1)
        if self._var is None:
            if len(self._ref) >= self.min_reference_frames:
                self._bootstrap(raw, sigma, None, amplitude, self.n_bootstrap)
        elif self.bootstrap_per_frame:
            self._bootstrap(raw, sigma, signal, amplitude, self.bootstrap_per_frame)

    def _bootstrap(
        self,
        raw: np.ndarray,
        sigma: np.ndarray,
        signal: np.ndarray | None,
        amplitude: float,
        n: int,
    ) -> None:
        """Parametric bootstrap of the noise: per-bin variance and the statistic's null law.

        The first call (``signal`` None) centres ``n`` replicas on their mean and sets the
        model; later calls add ``n`` replicas centred on the frame's own signal with weight
        ``n / n_bootstrap`` (a rolling estimate that follows the peaks along the ramp).
        """
        sigma = np.where(self.fit_mask, sigma, 0.0)
        noise = self._rng.standard_normal((n, raw.size)) * sigma
        # replicas stay non-negative (counts), as a restoration requires
        replicas = self._apply(np.maximum(raw + noise, 0.0))
        centre = replicas.mean(axis=0) if signal is None else signal
        squares = (replicas - centre) ** 2
        sample = squares.sum(axis=0) / ((n - 1 if signal is None else n) * amplitude)
        rate = 1.0 if self._var is None else n / self.n_bootstrap
        variance = sample if self._var is None else self._var + rate * (sample - self._var)
        positive = variance[self.fit_mask]
        floor = 1e-6 * float(np.median(positive)) if positive.size else 0.0
        self._var = np.maximum(variance, max(floor, 1e-300))
        if signal is None:
            stats = self._windows(squares / (self._var * amplitude))
            finite = np.where(np.isfinite(stats), stats, 0.0)
            # the prior of each window's spread; the in-control frames refine it
            self._win_m2 = np.mean(finite * finite, axis=0)
            peaks = np.max(self._normalised(stats), axis=-1)
            self._m_moments = (float(np.mean(peaks)), float(np.mean(peaks * peaks)))

    def _normalised(self, stats: np.ndarray) -> np.ndarray:
        """Each window's statistic as a normal quantile under its own null law.

        A window's sum of squares is taken as a scaled chi-square with the window's learnt
        mean and variance (``nu = 2 mean^2 / var`` effective degrees of freedom: fewer than
        its bins where a restoration correlates them), mapped to N(0, 1) by the Wilson-Hilferty
        cube root. A plain standardisation would leave the skewness of the few-dof windows (the
        sharp restored peaks), whose tails then ruled the maximum and its false alarms. The
        variance is floored at the uncorrelated chi-square's, so that no window is magnified.
        """
        n = np.maximum(self._win_n, 1.0)
        root = np.sqrt(2.0 * n)
        mean = np.maximum(n + root * self._win_offset, 0.5 * n)
        variance = 2.0 * n * np.maximum(self._win_m2, _MIN_WINDOW_M2)
        nu = 2.0 * mean * mean / variance
        ratio = np.maximum(n + root * np.where(self._win_ok, stats, 0.0), 0.0) / mean
        a = 2.0 / (9.0 * nu)
        z = (np.cbrt(ratio) - (1.0 - a)) / np.sqrt(a)
        return np.where(self._win_ok, z, -np.inf)

    def _fit(self, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Weighted linear fit of the reference model; returns residual, eps, amplitude."""
        fit = self.fit_mask
        r = self._columns[:, :1]
        design = np.hstack((self._columns, r * self._modulation, self._background))
        w = weight[fit]
        beta, *_ = np.linalg.lstsq(design[fit] * w[:, None], y[fit] * w, rcond=None)
        amplitude = float(beta[0])
        residual = y - design @ beta
        # the expansion since the window's centre, for the record: y / a - r ~ eps q r'
        shape = self.q_A * np.gradient(r[:, 0], self.q_A)
        change = (y - residual) / amplitude - r[:, 0] if amplitude > 0 else shape * np.nan
        eps = float(np.dot(change[fit], shape[fit]) / max(np.dot(shape[fit], shape[fit]), 1e-300))
        return residual, eps, amplitude

    def _windows(self, z2: np.ndarray) -> np.ndarray:
        """``(..., n_windows)`` standardised chi-square excess of ``z2`` ``(..., n_bins)``."""
        masked = np.where(self.score_mask, z2, 0.0)
        csum = np.concatenate((np.zeros((*masked.shape[:-1], 1)), np.cumsum(masked, -1)), -1)
        sums = csum[..., self._win_stop] - csum[..., self._win_start]
        n = np.maximum(self._win_n, 1.0)
        stats = (sums - n) / np.sqrt(2.0 * n)
        return np.where(self._win_ok, stats, -np.inf)

    def _normal_score(self, peak: float) -> float:
        mean, square = self._m_moments
        beta = max(math.sqrt(6.0 * max(square - mean * mean, 0.0)) / math.pi, 1e-9)
        mu = mean - _EULER_GAMMA * beta
        u = (peak - mu) / beta
        if u < -5.0:
            return _SCORE_CLIP[0]
        upper = -math.expm1(-math.exp(-u))  # P(M > peak) under the fitted Gumbel law
        if upper <= 0.0:
            return _SCORE_CLIP[1]
        return float(np.clip(-ndtri(upper), *_SCORE_CLIP))

    def _ranges(self) -> tuple[tuple[float, float], ...]:
        excess = self._run_excess
        if not np.any(excess > 0):
            return ()
        strong = excess >= 0.5 * float(excess.max())
        ranges: list[tuple[float, float, float]] = []
        q = self.q_A
        for j in np.flatnonzero(strong):
            lo, hi = float(q[self._win_start[j]]), float(q[self._win_stop[j] - 1])
            if ranges and lo <= ranges[-1][1]:
                last = ranges[-1]
                ranges[-1] = (last[0], max(hi, last[1]), max(last[2], float(excess[j])))
            else:
                ranges.append((float(lo), float(hi), float(excess[j])))
        ranges.sort(key=lambda r: -r[2])
        return tuple((lo, hi) for lo, hi, _ in ranges[:8])

    # -- the step --------------------------------------------------------------------------
    def update(
        self,
        raw: np.ndarray,
        sigma: np.ndarray,
        frame_index: int,
        temperature_K: float | None = None,
    ) -> DetectorStep:
        """Transform, score one pattern and update the state.

        Parameters
        ----------
        raw : numpy.ndarray
            ``(n_bins,)`` finite, non-negative raw intensities on the detector's q grid.
        sigma : numpy.ndarray
            ``(n_bins,)`` their Poisson standard errors (same units).
        frame_index : int
            Index of the frame (for the change-point estimate, and the trend's regressor when
            a temperature is missing).
        temperature_K : float, optional
            Sample temperature, K: the trend's regressor while every reference frame has one.

        Returns
        -------
        DetectorStep

        Raises
        ------
        ValueError
            For arrays of the wrong shape, NaN/Inf, or a pattern the reference cannot fit.
            The state is then unchanged.
        """
        raw = np.asarray(raw, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        if raw.shape != self.q_A.shape or sigma.shape != self.q_A.shape:
            raise ValueError(f"raw and sigma must have shape {self.q_A.shape}")
        if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(sigma))):
            raise ValueError("raw and sigma must be finite")
        if np.any(raw < 0) or np.any(sigma < 0):
            raise ValueError("raw and sigma must be non-negative")
        if temperature_K is not None:
            temperature_K = float(temperature_K)
            if not math.isfinite(temperature_K):
                raise ValueError("temperature_K must be finite")
        saved = self.state()
        try:
            return self._update(raw, sigma, int(frame_index), temperature_K)
        except Exception:
            self.restore_state(saved)
            raise

    def _update(
        self, raw: np.ndarray, sigma: np.ndarray, frame_index: int, temperature: float | None
    ) -> DetectorStep:
        y = self._apply(raw)
        if self._skip > 0:
            self._skip -= 1
            return DetectorStep(y, 0.0, 0.0, False, 0.0, 1.0)
        if self._columns is None:
            scale = float(np.mean(y[self.fit_mask]))
            if not scale > 0:
                raise ValueError("the first pattern of a reference holds no signal")
            self._commit(y / scale, raw, sigma, y, 1.0, frame_index, temperature)
            return DetectorStep(y, 0.0, 0.0, False, 0.0, 1.0)
        if self._var is None:
            # before the noise model exists: Poisson-like weights from the reference itself
            r = self._columns[:, 0]
            scale = max(float(np.mean(np.abs(r[self.fit_mask]))), 1e-300)
            variance = np.maximum(np.abs(r), 1e-3 * scale) * self._amplitude
        else:
            # the previous frame's amplitude is close enough for weights
            variance = self._var * self._amplitude
        residual, eps, amplitude = self._fit(y, 1.0 / np.sqrt(variance))
        if not (amplitude > 0 and math.isfinite(eps)):
            raise ValueError("the pattern cannot be fitted by the reference (no common signal)")
        self._amplitude = amplitude
        # the reference is kept per unit of total intensity (a flux measure that the fit's own
        # amplitude, shared with the trend and background terms, is not)
        total = float(np.mean(y[self.fit_mask]))
        if not total > 0:
            raise ValueError("the pattern holds no signal")
        item = (y / total, raw, sigma, y, amplitude, frame_index, temperature)
        if self._var is None:
            self._commit(*item)
            return DetectorStep(y, 0.0, 0.0, False, eps, amplitude)
        # Poisson scaling with the amplitude; the reference's own noise adds the leverage of
        # the polynomial prediction at this temperature (1 / n for a plain mean)
        by_temperature, centre, span, inverse, last = self._time_axis
        if by_temperature:
            # a frame without a temperature is taken at the last reference one's
            value = last if temperature is None else temperature
        else:
            value = float(frame_index)
        x = ((value - centre) / span) ** np.arange(inverse.shape[0])
        leverage = float(x @ inverse @ x)
        variance = self._var * amplitude * (1.0 + leverage)
        squares = residual * residual
        y2 = np.where(self.score_mask, y * y, 0.0)
        kappa2 = float(np.sum((squares - variance) * y2) / max(float(np.sum(y2 * y2)), 1e-300))
        variance = variance + max(self._kappa2, 0.0) * y * y
        stats = self._windows(squares / variance)
        # each window standardised by its own null spread, so that the maximum is not ruled by
        # the windows a restoration makes noisiest (their alarms were the restored false ones)
        peak = float(np.max(self._normalised(stats)))
        score = self._normal_score(peak)
        item = (*item, (kappa2, stats, peak))
        cusum = max(0.0, self._cusum + score - self.drift)
        if cusum == 0.0:
            for pending in self._pending:
                self._commit(*pending)
            self._pending = []
            self._commit(*item)
            self._cusum = 0.0
            self._run_start = None
            self._run_excess[:] = 0.0
            return DetectorStep(y, score, 0.0, True, eps, amplitude)
        if self._run_start is None:
            self._run_start = frame_index
        self._run_excess += np.maximum(np.where(np.isfinite(stats), stats, 0.0), 0.0)
        self._cusum = cusum
        self._pending.append(item)
        if len(self._pending) > self.max_pending_frames:
            self._commit(*self._pending.pop(0))
        if cusum <= self.threshold:
            return DetectorStep(y, score, cusum, True, eps, amplitude)
        confidence = 1.0 - 0.5 * math.exp(-2.0 * self.drift * (cusum - self.threshold))
        found = (self._run_start, self._ranges(), float(confidence))
        self.reset()
        self._skip = self.settle_frames
        return DetectorStep(y, score, cusum, True, eps, amplitude, alarm=found)
