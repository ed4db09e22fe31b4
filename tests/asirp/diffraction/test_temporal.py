"""The shift-tolerant CUSUM detector and the temporal-feedback pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from asirp.diffraction import (
    Alarm,
    DetectorGeometry,
    InstrumentProfile,
    Pattern,
    TemporalAnalyzer,
    TemporalSettings,
    cusum_threshold,
    siegmund_arl0,
)
from tests.asirp.diffraction.conftest import Q_A, SIGMA_Q_A, ramp

GEOMETRY = DetectorGeometry(shape_px=(64, 64), pixel_um=600.0, distance_mm=150.0,
                            poni_px=(32.0, 32.0))  # fmt: skip
PROFILE = InstrumentProfile.constant(SIGMA_Q_A)
N_BINS = Q_A.size


def analyzer(restore: bool, **options) -> TemporalAnalyzer:
    settings = TemporalSettings(n_bins=N_BINS, restore=restore, **options)
    return TemporalAnalyzer(GEOMETRY, settings, profile=PROFILE if restore else None)


def run(an: TemporalAnalyzer, patterns: list[Pattern]):
    results = [
        an.process_pattern(p, time_s=0.5 * i, temperature_K=300.0 + i)
        for i, p in enumerate(patterns)
    ]
    return results, [r.alarm for r in results if r.alarm is not None]


def test_threshold_follows_siegmund():
    for drift in (0.5, 1.0, 2.0):
        h = cusum_threshold(20_000, drift)
        assert siegmund_arl0(h, drift) == pytest.approx(20_000, rel=1e-6)
    assert cusum_threshold(1e6, 1.0) > cusum_threshold(1e4, 1.0)
    with pytest.raises(ValueError, match="arl0"):
        cusum_threshold(5, 1.0)


@pytest.mark.parametrize("restore", [False, True])
def test_expansion_only_ramp_raises_no_alarm(restore):
    patterns = ramp(260, seed=11)
    results, alarms = run(analyzer(restore), patterns)
    assert alarms == []
    armed = [r for r in results if r.armed]
    assert len(armed) >= 240  # warm-up of 10 frames, then scored
    scores = np.array([r.score for r in armed])
    # about N(0, 1) in control
    assert abs(scores.mean()) < 0.5
    assert 0.6 < scores.std() < 1.5
    # the fitted expansion grows with the ramp (1.2e-5 /K, 1 K a frame)
    assert all(math.isfinite(r.expansion) for r in armed)
    if restore:
        assert armed[0].restored is not None
        assert armed[0].restored.shape == (N_BINS,)
    else:
        assert armed[0].restored is None


@pytest.mark.parametrize("restore", [False, True])
@pytest.mark.parametrize("kind", ["splitting", "new_phase"])
def test_change_of_shape_alarms_within_a_few_frames(restore, kind):
    onset = 60
    patterns = ramp(100, seed=5, onset=onset, kind=kind)
    _, alarms = run(analyzer(restore), patterns)
    assert len(alarms) >= 1
    first = alarms[0]
    assert onset <= first.frame_index <= onset + 3
    assert onset - 2 <= first.onset_frame_index <= first.frame_index
    assert 0.5 <= first.confidence <= 1.0
    assert first.score > 0
    assert first.threshold == pytest.approx(cusum_threshold(20_000, 2.0))
    assert first.temperature_K == pytest.approx(300.0 + first.frame_index)
    # where: the new peak at 1.83 1/Å, or a split peak, (100), (110) or (200) (the splitting
    # grows with q), is in a reported range; (111) does not split
    targets = (
        [1.83] if kind == "new_phase" else [2 * math.pi * math.sqrt(n) / 4.0 for n in (1, 2, 4)]
    )
    assert first.q_ranges_A
    for lo, hi in first.q_ranges_A[:1]:
        assert any(lo - 0.02 <= t <= hi + 0.02 for t in targets)
        assert not lo - 0.02 <= 2 * math.pi * math.sqrt(3) / 4.0 <= hi + 0.02
    # no storm: the lasting change gives one alarm (the detector re-baselines)
    assert len(alarms) <= 2
    data = json.loads(json.dumps(first.as_dict()))
    assert Alarm.from_dict(data) == first


def test_no_alarm_during_warm_up():
    an = analyzer(False)
    patterns = ramp(12, seed=3, onset=3)
    results, alarms = run(an, patterns)
    assert alarms == []
    assert not any(r.armed for r in results[: an.settings.min_reference_frames])


def test_settings_round_trip_and_validation():
    settings = TemporalSettings(n_bins=500, q_range_A=(0.5, 3.0), restore=False, cusum_drift=1.5)
    again = TemporalSettings.from_dict(json.loads(json.dumps(settings.as_dict())))
    assert again == settings
    assert TemporalSettings.from_dict(TemporalSettings().as_dict()) == TemporalSettings()
    for bad in ({"n_bins": 4}, {"cusum_drift": -1.0}, {"q_range_A": (3.0, 1.0)},
                {"false_alarm_interval_frames": float("nan")}, {"min_reference_frames": 100},
                {"window_bins": 1}):  # fmt: skip
        with pytest.raises(ValueError, match="must"):
            TemporalSettings(**bad)
    with pytest.raises(TypeError):
        TemporalSettings(restore="yes")
    with pytest.raises(ValueError, match="unknown"):
        TemporalSettings.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="profile"):
        TemporalAnalyzer(GEOMETRY, TemporalSettings(restore=True))


def test_bad_input_leaves_the_state_unchanged():
    an = analyzer(False)
    patterns = ramp(20, seed=7)
    run(an, patterns[:15])
    before = an._index
    other_grid = Pattern.from_intensity(Q_A[:-1], patterns[0].intensity[:-1], 200.0)
    with pytest.raises(ValueError, match="q grid"):
        an.process_pattern(other_grid, time_s=1.0)
    with pytest.raises(TypeError):
        an.process_pattern(patterns[15].intensity, time_s=1.0)
    with pytest.raises(ValueError, match="time_s"):
        an.process_pattern(patterns[15], time_s=float("inf"))
    frame = np.ones(GEOMETRY.shape_px)
    frame[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        an.process(frame, time_s=1.0)
    with pytest.raises(ValueError, match="shape"):
        an.process(np.ones((10, 10)), time_s=1.0)
    assert an._index == before
    result = an.process_pattern(patterns[15], time_s=7.5)
    assert result.frame_index == before
    assert result.armed
    an.reset()
    assert an.alarms == []
    assert an.process_pattern(patterns[0], time_s=0.0).frame_index == 0


def test_frames_go_through_pyfai():
    an = TemporalAnalyzer(GEOMETRY, TemporalSettings(n_bins=200, restore=False))
    rng = np.random.default_rng(0)
    result = an.process(rng.poisson(50.0, GEOMETRY.shape_px), time_s=0.0, temperature_K=None)
    assert result.q_A.shape == (200,)
    assert result.temperature_K is None
    assert np.all(result.intensity[result.intensity > 0] > 30)
