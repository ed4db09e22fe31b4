"""pyFAI integration to I(q) and the instrumental profile fitted from a calibrant."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from asirp.diffraction import (
    CEO2_D_SPACINGS_A,
    DetectorGeometry,
    InstrumentProfile,
    Pattern,
    PatternIntegrator,
    fit_instrument_profile,
)

GEOMETRY = DetectorGeometry(shape_px=(128, 128), pixel_um=300.0, distance_mm=150.0,
                            poni_px=(64.0, 64.0), wavelength_A=0.5)  # fmt: skip


def pixel_q(geometry: DetectorGeometry) -> np.ndarray:
    """q at every pixel centre (no tilt), 1/Å."""
    rows, cols = np.indices(geometry.shape_px) + 0.5
    radius_mm = np.hypot(rows - geometry.poni_px[0], cols - geometry.poni_px[1]) * (
        geometry.pixel_um * 1e-3
    )
    two_theta = np.arctan2(radius_mm, geometry.distance_mm)
    return 4 * np.pi / geometry.wavelength_A * np.sin(two_theta / 2)


def ring_frame(rings_A: list[float], sigma_A: float, *, counts: float = 5000.0, seed: int = 0):
    q = pixel_q(GEOMETRY)
    mean = np.full(q.shape, 20.0)
    for q0 in rings_A:
        mean += counts * np.exp(-0.5 * ((q - q0) / sigma_A) ** 2)
    return np.random.default_rng(seed).poisson(mean).astype(np.uint32)


@pytest.fixture(scope="module")
def integrator() -> PatternIntegrator:
    return PatternIntegrator(GEOMETRY, n_bins=300, q_range_A=(0.5, 3.0))


def test_integration_puts_rings_at_their_q(integrator):
    rings = [1.2, 1.9, 2.6]
    pattern = integrator(ring_frame(rings, 0.012))
    assert isinstance(pattern, Pattern)
    assert pattern.q_A.shape == (300,)
    assert pattern.q_A[0] > 0.5
    assert pattern.q_A[-1] < 3.0
    bin_width = pattern.q_A[1] - pattern.q_A[0]
    for q0 in rings:
        near = np.abs(pattern.q_A - q0) < 0.05
        centroid = np.sum(pattern.q_A[near] * (pattern.intensity[near] - 20)) / np.sum(
            pattern.intensity[near] - 20
        )
        assert abs(centroid - q0) < 0.5 * bin_width
    # counts per pixel: the background level, and Poisson errors of the bins
    far = np.abs(pattern.q_A - 1.55) < 0.05
    assert np.allclose(pattern.intensity[far], 20, rtol=0.1)
    # without pixel splitting a bin is a plain sum of pixels: sigma = sqrt(counts) / pixels
    plain = PatternIntegrator(GEOMETRY, n_bins=300, q_range_A=(0.5, 3.0),
                              method=("no", "csr", "cython"))(ring_frame(rings, 0.012))  # fmt: skip
    filled = plain.n_pixels > 0
    np.testing.assert_allclose(
        plain.sigma[filled], np.sqrt(plain.counts[filled]) / plain.n_pixels[filled], rtol=1e-3
    )
    np.testing.assert_allclose(plain.intensity[filled] * plain.n_pixels[filled],
                               plain.counts[filled], rtol=1e-6)  # fmt: skip


def test_integration_reuses_the_engine_and_refuses_bad_frames(integrator):
    frame = ring_frame([1.5], 0.01)
    first = integrator(frame)
    again = integrator(frame.astype(np.float64))
    np.testing.assert_allclose(first.intensity, again.intensity, rtol=1e-5)
    bad_nan = frame.astype(np.float32)
    bad_nan[3, 4] = np.nan
    bad_neg = frame.astype(np.float32)
    bad_neg[0, 0] = -1
    for bad, message in ((frame[:-1], "shape"), (bad_nan, "NaN"), (bad_neg, "negative"),
                         (np.zeros((0, 0)), "empty")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            integrator(bad)
    with pytest.raises(TypeError):
        integrator(frame.astype(bool))
    with pytest.raises(ValueError, match="mask"):
        PatternIntegrator(GEOMETRY, mask=np.ones(GEOMETRY.shape_px, bool))


def synthetic_calibrant(sigma_of_q, *, seed: int = 1) -> Pattern:
    q = np.linspace(1.0, 5.0, 2000)
    y = 30.0 + 0.0 * q
    for d in CEO2_D_SPACINGS_A:
        q0 = 2 * math.pi / d
        y = y + 4000.0 * np.exp(-0.5 * ((q - q0) / sigma_of_q(q0)) ** 2)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(y * 50.0).astype(float)
    return Pattern(
        q, counts / 50.0, np.sqrt(np.maximum(counts, 1)) / 50.0, counts, np.full(q.size, 50.0)
    )


def test_profile_fit_recovers_a_known_width():
    def width(q):
        return 0.004 + 0.0015 * q

    profile = fit_instrument_profile(synthetic_calibrant(width))
    for q in (2.0, 3.0, 4.0):
        assert profile.sigma_q_A(q) == pytest.approx(width(q), rel=0.1)
    assert profile.fwhm_q_A(3.0) == pytest.approx(2.3548 * width(3.0), rel=0.1)
    # plain data: JSON round trip
    again = InstrumentProfile.from_dict(json.loads(json.dumps(profile.as_dict())))
    assert again == profile
    np.testing.assert_allclose(again.sigma_q_A(np.array([1.5, 2.5])),
                               profile.sigma_q_A(np.array([1.5, 2.5])))  # fmt: skip


def test_profile_fit_refuses_too_few_peaks():
    flat = Pattern.from_intensity(np.linspace(1, 5, 500), np.full(500, 100.0), 50.0)
    with pytest.raises(ValueError, match="calibrant peak"):
        fit_instrument_profile(flat)
    with pytest.raises(TypeError):
        fit_instrument_profile(np.ones(10))
    with pytest.raises(ValueError, match="unknown"):
        InstrumentProfile.from_dict({"variance_coefficients": [1, 2, 3], "q_range_A": [0, 1],
                                     "bogus": 1})  # fmt: skip


def test_profile_fit_on_the_simulated_calibrant():
    sim = pytest.importorskip("sim.diffraction")
    geometry = sim.small_geometry(factor=4)
    integrator = PatternIntegrator(geometry, n_bins=500, method=("no", "csr", "cython"))
    pattern = integrator(sim.calibrant_frame(geometry, rng=np.random.default_rng(0)))
    profile = fit_instrument_profile(pattern)
    # the rings as the frame renders them: instrument, pixel and PSF (pseudo-Voigt, so the
    # Gaussian fit is only close), plus the bin width
    model = sim.calibrant_model(geometry)
    q = 2.2
    truth = float(model.fwhm_q_A(q, sample=False, detector=True))
    bin_width = pattern.q_A[1] - pattern.q_A[0]
    truth = math.hypot(truth, 2.3548 * bin_width / math.sqrt(12))
    assert float(profile.fwhm_q_A(q)) == pytest.approx(truth, rel=0.25)
