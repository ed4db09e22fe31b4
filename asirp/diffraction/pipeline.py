"""Temporal feedback: integrate, restore and watch every frame of a temperature ramp.

:class:`TemporalAnalyzer` chains :class:`~asirp.diffraction.integrate.PatternIntegrator`
(pyFAI), optionally :func:`~asirp.diffraction.deconvolve.richardson_lucy_1d` (removes the
instrumental broadening so that a splitting or a weak new peak stands out) and
:class:`~asirp.diffraction.change.ShapeChangeDetector` (a shift-tolerant CUSUM; see its module
for the model, the score and how the threshold follows from the stated false-alarm interval).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from asirp.diffraction.change import Alarm, ShapeChangeDetector
from asirp.diffraction.deconvolve import richardson_lucy_1d
from asirp.diffraction.geometry import DetectorGeometry
from asirp.diffraction.integrate import Pattern, PatternIntegrator, check_q_range
from asirp.diffraction.profile import InstrumentProfile

_INT_LIMITS = {
    "n_bins": (16, 100_000),
    "n_iter": (1, 1000),
    "reference_frames": (2, 10_000),
    "min_reference_frames": (2, 10_000),
    "background_degree": (0, 12),
    "amplitude_degree": (0, 6),
    "n_bootstrap": (16, 100_000),
    "bootstrap_per_frame": (0, 100_000),
    "trend_degree": (0, 3),
    "settle_frames": (0, 10_000),
    "max_pending_frames": (1, 10_000),
}


@dataclass(frozen=True)
class TemporalSettings:
    """Settings of :class:`TemporalAnalyzer` (JSON-serialisable, validated).

    Attributes
    ----------
    n_bins : int
        q bins of the integration.
    q_range_A : tuple of float or None
        ``(q_min, q_max)`` of the integration, 1/Å; the whole detector when None.
    restore : bool
        Deconvolve the instrumental profile before detection (needs a profile); False runs
        the same detector on the raw integrated I(q).
    n_iter : int
        Richardson-Lucy iterations.
    integration_method : tuple of str
        pyFAI method ``(splitting, algorithm, implementation)``; without pixel splitting
        (``"no"``, the default) bins are statistically independent, as the noise model assumes,
        and integration is ~1.5x faster.
    reference_frames : int
        Most in-control patterns averaged into the reference.
    min_reference_frames : int
        Warm-up: patterns in the reference before the noise is calibrated (bootstrap) and
        alarms are allowed. No alarm is possible in the first ``min_reference_frames`` frames,
        nor in the ``settle_frames + min_reference_frames`` after each alarm.
    false_alarm_interval_frames : float
        Stated in-control average run length between false alarms, frames (sets the CUSUM
        threshold by Siegmund's approximation).
    cusum_drift : float
        CUSUM reference value ``k`` (score units): small for small sustained changes, large
        for abrupt ones. The default 2 suits transitions that complete within a few frames and
        tolerates the slightly heavy, autocorrelated tail of the real scores (with ``k = 1`` the
        measured false-alarm rate on simulated ramps was ~30x the stated one).
    window_bins : int or None
        Width of the local q windows, bins; None: about 3 FWHM of the instrumental profile at
        mid range (12 without a profile).
    background_degree, amplitude_degree : int
        Legendre degrees of the background and of the smooth intensity modulation.
    trend_degree : int
        Degree of the polynomial in temperature fitted to every bin over the reference window
        (2: thermal expansion to second order, as the detector and its binning see it); in the
        frame index while a reference frame lacks a temperature.
    n_bootstrap : int
        Replicas of the noise calibration (parametric bootstrap through the restoration).
    bootstrap_per_frame : int
        Replicas each in-control frame adds to the rolling noise calibration (follows the
        peaks along the ramp; each costs one restoration).
    model_error : float
        Prior relative model error (learnt from the in-control residuals afterwards).
    settle_frames : int
        Frames skipped after an alarm before a new reference is started.
    max_pending_frames : int
        Most frames held out of the reference while the CUSUM is positive.
    """

    n_bins: int = 500
    q_range_A: tuple[float, float] | None = None
    restore: bool = True
    n_iter: int = 20
    integration_method: tuple[str, str, str] = ("no", "csr", "cython")
    reference_frames: int = 30
    min_reference_frames: int = 10
    false_alarm_interval_frames: float = 20_000.0
    cusum_drift: float = 2.0
    window_bins: int | None = None
    background_degree: int = 3
    amplitude_degree: int = 2
    trend_degree: int = 2
    n_bootstrap: int = 256
    bootstrap_per_frame: int = 4
    model_error: float = 5e-4
    settle_frames: int = 4
    max_pending_frames: int = 40

    def __post_init__(self) -> None:
        for name, (low, high) in _INT_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if not low <= int(value) <= high:
                raise ValueError(f"{name} must be within [{low}, {high}], got {value}")
            object.__setattr__(self, name, int(value))
        if self.min_reference_frames > self.reference_frames:
            raise ValueError("min_reference_frames must not exceed reference_frames")
        if self.window_bins is not None:
            if isinstance(self.window_bins, bool) or not isinstance(
                self.window_bins, int | np.integer
            ):
                raise TypeError(f"window_bins must be an integer or None, got {self.window_bins!r}")
            if not 2 <= int(self.window_bins) <= self.n_bins // 4:
                raise ValueError(
                    f"window_bins must be within [2, n_bins / 4], got {self.window_bins}"
                )
            object.__setattr__(self, "window_bins", int(self.window_bins))
        if not isinstance(self.restore, bool):
            raise TypeError(f"restore must be True or False, got {self.restore!r}")
        object.__setattr__(self, "q_range_A", check_q_range(self.q_range_A))
        method = tuple(self.integration_method)
        if len(method) != 3 or not all(isinstance(m, str) for m in method):
            raise ValueError(f"integration_method must be three strings, got {method!r}")
        object.__setattr__(self, "integration_method", method)
        if self.bootstrap_per_frame > self.n_bootstrap:
            raise ValueError("bootstrap_per_frame must not exceed n_bootstrap")
        for name, low, high in (
            ("false_alarm_interval_frames", 20.0, 1e12),
            ("cusum_drift", 1e-3, 5.0),
            ("model_error", 0.0, 0.5),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(float(value)) and low <= float(value) <= high):
                raise ValueError(f"{name} must be within [{low}, {high}], got {value!r}")
            object.__setattr__(self, name, float(value))

    @property
    def warmup_frames(self) -> int:
        """Frames before the first alarm is possible (and after each alarm)."""
        return self.min_reference_frames

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable description."""
        data = asdict(self)
        data["q_range_A"] = None if self.q_range_A is None else list(self.q_range_A)
        data["integration_method"] = list(self.integration_method)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemporalSettings:
        """Inverse of :meth:`as_dict`; unknown keys are refused."""
        if not isinstance(data, dict):
            raise TypeError(f"settings must be a dict, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown temporal settings: {sorted(unknown)}")
        values = dict(data)
        if values.get("q_range_A") is not None:
            values["q_range_A"] = tuple(values["q_range_A"])
        if "integration_method" in values:
            values["integration_method"] = tuple(values["integration_method"])
        return cls(**values)


@dataclass(frozen=True, eq=False)
class FrameScore:
    """What the analyzer found on one frame.

    Attributes
    ----------
    frame_index : int
        Index of the frame since the last :meth:`TemporalAnalyzer.reset` (from 0).
    time_s : float
        Time stamp, s.
    temperature_K : float or None
        Sample temperature, K.
    q_A : numpy.ndarray
        ``(n_bins,)`` bin centres, 1/Å.
    intensity : numpy.ndarray
        ``(n_bins,)`` integrated I(q), counts per pixel.
    restored : numpy.ndarray or None
        ``(n_bins,)`` restored I(q), counts per pixel; None with ``restore=False``.
    score : float
        Per-frame change score (about N(0, 1) in control); 0 during warm-up.
    cusum : float
        CUSUM statistic compared with ``threshold``.
    alarm : Alarm or None
        Set on the frame that raises an alarm.
    armed : bool
        Whether alarms were possible on this frame (warm-up over).
    expansion : float
        Fitted uniform q scaling relative to the reference, ``q_ref = q (1 + expansion)``.
    threshold : float
        CUSUM threshold.
    """

    frame_index: int
    time_s: float
    temperature_K: float | None
    q_A: np.ndarray
    intensity: np.ndarray
    restored: np.ndarray | None
    score: float
    cusum: float
    alarm: Alarm | None
    armed: bool = False
    expansion: float = 0.0
    threshold: float = float("nan")


def _check_number(name: str, value: Any, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


class TemporalAnalyzer:
    """Online change-of-shape detection on the frames of a temperature ramp.

    Parameters
    ----------
    geometry : DetectorGeometry
        Detector geometry (the pyFAI engine is built once, here).
    settings : TemporalSettings, optional
        Defaults when omitted.
    profile : InstrumentProfile, optional
        Instrumental broadening; required with ``settings.restore``.
    mask : numpy.ndarray, optional
        ``geometry.shape_px`` bool, true on pixels to ignore.

    Attributes
    ----------
    alarms : list of Alarm
        Every alarm since the last :meth:`reset`.

    Examples
    --------
    >>> analyzer = TemporalAnalyzer(geometry, TemporalSettings(restore=False))  # doctest: +SKIP
    >>> for i, frame in enumerate(frames):  # doctest: +SKIP
    ...     result = analyzer.process(frame, time_s=i * 0.1, temperature_K=300 + i)
    ...     if result.alarm is not None:
    ...         print(result.alarm.as_dict())
    """

    def __init__(
        self,
        geometry: DetectorGeometry,
        settings: TemporalSettings | None = None,
        *,
        profile: InstrumentProfile | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        settings = TemporalSettings() if settings is None else settings
        if not isinstance(settings, TemporalSettings):
            raise TypeError(f"settings must be TemporalSettings, got {type(settings).__name__}")
        if profile is not None and not isinstance(profile, InstrumentProfile):
            raise TypeError(f"profile must be an InstrumentProfile, got {type(profile).__name__}")
        if settings.restore and profile is None:
            raise ValueError("restore=True needs the instrument profile (fit it on a calibrant)")
        self.geometry = geometry
        self.settings = settings
        self.profile = profile
        self.integrator = PatternIntegrator(
            geometry,
            n_bins=settings.n_bins,
            q_range_A=settings.q_range_A,
            mask=mask,
            method=settings.integration_method,
        )
        self.alarms: list[Alarm] = []
        self._detector: ShapeChangeDetector | None = None
        self._q: np.ndarray | None = None
        self._valid: np.ndarray | None = None
        self._index = 0

    @property
    def threshold(self) -> float | None:
        """CUSUM threshold (known once the first pattern fixed the q grid)."""
        return None if self._detector is None else self._detector.threshold

    def reset(self) -> None:
        """Forget the series: empty reference, no alarms, frame index 0."""
        self.alarms = []
        self._detector = None
        self._q = None
        self._valid = None
        self._index = 0

    def _window_bins(self, q: np.ndarray) -> int:
        if self.settings.window_bins is not None:
            return self.settings.window_bins
        if self.profile is None:
            return 12
        dq = float(np.median(np.diff(q)))
        fwhm = float(self.profile.fwhm_q_A(0.5 * (q[0] + q[-1])))
        return int(np.clip(round(3.0 * fwhm / dq), 4, max(4, q.size // 8)))

    def _make_detector(self, pattern: Pattern) -> ShapeChangeDetector:
        s = self.settings
        return ShapeChangeDetector(
            pattern.q_A,
            valid=pattern.valid,
            reference_frames=s.reference_frames,
            transform=self._transform(pattern.q_A),
            min_reference_frames=s.min_reference_frames,
            drift=s.cusum_drift,
            false_alarm_interval_frames=s.false_alarm_interval_frames,
            window_bins=self._window_bins(pattern.q_A),
            background_degree=s.background_degree,
            amplitude_degree=s.amplitude_degree,
            trend_degree=s.trend_degree,
            n_bootstrap=s.n_bootstrap,
            bootstrap_per_frame=s.bootstrap_per_frame,
            model_error=s.model_error,
            settle_frames=s.settle_frames,
            max_pending_frames=s.max_pending_frames,
        )

    def _transform(self, q_A: np.ndarray):
        if not self.settings.restore:
            return None
        profile, n_iter = self.profile, self.settings.n_iter

        def restore(raw: np.ndarray) -> np.ndarray:
            return richardson_lucy_1d(raw, q_A, profile, n_iter=n_iter)

        return restore

    def process(
        self, frame: np.ndarray, *, time_s: float, temperature_K: float | None = None
    ) -> FrameScore:
        """Integrate, restore and score one detector frame.

        Parameters
        ----------
        frame : numpy.ndarray
            ``geometry.shape_px`` counts per pixel.
        time_s : float
            Time stamp, s.
        temperature_K : float, optional
            Sample temperature, K.

        Returns
        -------
        FrameScore

        Raises
        ------
        ValueError, TypeError
            For a bad frame or time stamp; the analyzer's state is then unchanged.
        """
        _check_number("time_s", time_s, optional=False)
        _check_number("temperature_K", temperature_K, optional=True)
        pattern = self.integrator(frame)
        return self.process_pattern(pattern, time_s=time_s, temperature_K=temperature_K)

    def process_pattern(
        self, pattern: Pattern, *, time_s: float, temperature_K: float | None = None
    ) -> FrameScore:
        """Restore and score one integrated pattern (same q grid for the whole series).

        Parameters
        ----------
        pattern : Pattern
            Integrated frame.
        time_s : float
            Time stamp, s.
        temperature_K : float, optional
            Sample temperature, K.

        Returns
        -------
        FrameScore

        Raises
        ------
        ValueError, TypeError
            For a pattern on another q grid, with fewer valid bins than the first one, or a bad
            time stamp; the analyzer's state is then unchanged.
        """
        time_s = _check_number("time_s", time_s, optional=False)
        temperature_K = _check_number("temperature_K", temperature_K, optional=True)
        if not isinstance(pattern, Pattern):
            raise TypeError(f"pattern must be a Pattern, got {type(pattern).__name__}")
        if self._q is not None:
            if pattern.q_A.shape != self._q.shape or not np.allclose(
                pattern.q_A, self._q, rtol=1e-9, atol=0.0
            ):
                raise ValueError(
                    "the pattern's q grid differs from the series' (same n_bins and range)"
                )
            if np.any(self._valid & ~pattern.valid):
                raise ValueError("the pattern lacks bins that the series' patterns hold")
        if np.any(pattern.intensity < 0):
            raise ValueError("pattern intensities must be non-negative")
        detector = self._detector if self._detector is not None else self._make_detector(pattern)
        # the detector puts its own state back when it refuses a pattern
        step = detector.update(pattern.intensity, pattern.sigma, self._index, temperature_K)
        restored = step.signal if self.settings.restore else None
        if self._detector is None:
            self._detector, self._q, self._valid = detector, pattern.q_A, pattern.valid
        alarm = None
        if step.alarm is not None:
            onset, ranges, confidence = step.alarm
            alarm = Alarm(
                frame_index=self._index,
                time_s=time_s,
                temperature_K=temperature_K,
                onset_frame_index=int(onset),
                q_ranges_A=ranges,
                confidence=confidence,
                score=step.score,
                threshold=detector.threshold,
                cusum=step.cusum,
            )
            self.alarms.append(alarm)
        result = FrameScore(
            frame_index=self._index,
            time_s=time_s,
            temperature_K=temperature_K,
            q_A=pattern.q_A,
            intensity=pattern.intensity,
            restored=restored,
            score=step.score,
            cusum=step.cusum,
            alarm=alarm,
            armed=step.armed,
            expansion=step.expansion,
            threshold=detector.threshold,
        )
        self._index += 1
        return result
