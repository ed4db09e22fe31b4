"""The detector's trend follows temperature: holds and changes of step size are no change."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from asirp.diffraction import (
    PatternIntegrator,
    TemporalAnalyzer,
    TemporalSettings,
    fit_instrument_profile,
)
from asirp.diffraction.change import ShapeChangeDetector
from asirp.diffraction.profile import CEO2_D_SPACINGS_A
from sim.diffraction import PowderFrameModel, calibrant_frame, random_sequence, small_geometry
from tests.asirp.diffraction.conftest import Q_A, counted, expected

GEOMETRY = small_geometry(factor=4)  # 256², the q range of the 1024² detector
N_BINS = 500


def plan_schedule(start: float = 300.0, n_reactions: int = 4) -> np.ndarray:
    """Temperatures as the reacting ramp plan takes them: 1 K steps; after each (pretended)
    alarm, two repeats of one temperature, 0.25 K steps for 4 K, then 1 K steps again."""
    temperatures = [start + i for i in range(14)]
    for _ in range(n_reactions):
        temperatures += [temperatures[-1]] * 2
        temperatures += [temperatures[-1] + 0.25 * (i + 1) for i in range(16)]
        temperatures += [temperatures[-1] + i + 1 for i in range(9)]
    return np.array(temperatures)


@functools.cache
def integrator() -> PatternIntegrator:
    return PatternIntegrator(GEOMETRY, n_bins=N_BINS, method=("no", "csr", "cython"))


@functools.cache
def profile():
    calibrant = integrator()(calibrant_frame(GEOMETRY, rng=np.random.default_rng(12345)))
    return fit_instrument_profile(calibrant, CEO2_D_SPACINGS_A)


@functools.cache
def rendered(seed: int, kind: str):
    """Integrated patterns of ``random_sequence(seed, kind)`` on :func:`plan_schedule`, and the
    first frame at or past the onset (None without an event)."""
    sequence = random_sequence(seed, kind)
    model = PowderFrameModel(GEOMETRY, sequence)
    start = sequence.ramp_K[0]
    if sequence.onset_K is not None:
        # the schedule covers 65 K: start it so that the event comes past its middle
        start = max(start, float(np.floor(sequence.onset_K)) - 40.0)
    temperatures = plan_schedule(start)
    rng = np.random.default_rng([seed, 3])
    patterns = [integrator()(model.frame(float(t), rng=rng)) for t in temperatures]
    onset = None
    if sequence.onset_K is not None:
        past = (temperatures - sequence.onset_K) * sequence.direction >= 0
        onset = int(np.argmax(past)) if past.any() else None
    return patterns, temperatures, onset


def alarms_of(seed: int, kind: str, restore: bool, *, with_temperature: bool = True):
    patterns, temperatures, onset = rendered(seed, kind)
    settings = TemporalSettings(n_bins=N_BINS, restore=restore)
    analyzer = TemporalAnalyzer(GEOMETRY, settings, profile=profile())
    for i, (pattern, t) in enumerate(zip(patterns, temperatures, strict=True)):
        temperature = float(t) if with_temperature else None
        analyzer.process_pattern(pattern, time_s=float(i), temperature_K=temperature)
    return analyzer.alarms, onset


@pytest.mark.parametrize("restore", [False, True])
@pytest.mark.parametrize("seed", [0, 7, 21])
def test_holds_and_step_changes_raise_no_alarm(seed, restore):
    alarms, _ = alarms_of(seed, "none", restore)
    assert alarms == []


@pytest.mark.parametrize("restore", [False, True])
def test_a_splitting_still_alarms_on_an_irregular_schedule(restore):
    alarms, onset = alarms_of(3, "splitting", restore)
    assert onset is not None
    assert alarms
    assert onset <= alarms[0].frame_index <= onset + 6


def synthetic(temperature: float, rng: np.random.Generator):
    """A synthetic pattern (conftest's cubic phase) at ``temperature``, alpha 1.2e-5 /K."""
    return counted(expected(4.0 * (1 + 1.2e-5 * (temperature - 300.0))), rng)


def test_a_reference_within_a_hold_drops_the_trend_and_steps_on():
    rng = np.random.default_rng(0)
    detector = ShapeChangeDetector(Q_A, min_reference_frames=6, reference_frames=30)
    # the whole warm-up at one temperature: no trend can be fitted
    temperatures = [300.0] * 8 + [300.0 + 0.25 * (i + 1) for i in range(8)] + [303.0, 304.0]
    for i, t in enumerate(temperatures):
        pattern = synthetic(t, rng)
        step = detector.update(pattern.intensity, pattern.sigma, i, t)
        assert step.alarm is None
        if i == 7:
            assert detector._columns.shape[1] == 1  # only the mean: a hold has one level
            assert np.all(np.isfinite(detector._time_axis[3]))
    assert detector.armed
    assert detector._columns.shape[1] == 3  # the levels of the steps restore the quadratic


def test_a_missing_temperature_falls_back_to_time():
    rng = np.random.default_rng(1)
    detector = ShapeChangeDetector(Q_A, min_reference_frames=6)
    for i in range(12):
        pattern = synthetic(300.0 + i, rng)
        # one frame without a temperature: the window's trend is then in the frame index
        temperature = None if i == 4 else 300.0 + i
        assert detector.update(pattern.intensity, pattern.sigma, i, temperature).alarm is None
    assert detector._time_axis[0] is False
    pattern = synthetic(312.0, rng)
    assert detector.update(pattern.intensity, pattern.sigma, 12, None).alarm is None
    with pytest.raises(ValueError, match="temperature"):
        detector.update(pattern.intensity, pattern.sigma, 13, float("nan"))
