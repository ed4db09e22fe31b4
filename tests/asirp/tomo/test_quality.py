"""Reconstruction quality figures: PSNR, even/odd FRC, the invented-detail check, air noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from asirp.tomo.normalise import flat_dark_correct, minus_log
from asirp.tomo.quality import (
    air_mask,
    air_noise,
    disc_mask,
    even_odd_frc,
    frc_figures,
    invented_detail_check,
    psnr_db,
)
from sim.tomo import simulate_tomo

SIDE = 96


def _object(side: int = SIDE) -> np.ndarray:
    """A blurred disc with a few smaller discs: structure at all frequencies, air around."""
    y, x = np.mgrid[:side, :side] - side / 2
    image = (np.hypot(y, x) < side / 4).astype(np.float64)
    for cy, cx, radius in ((-6, 5, 4), (8, -7, 3), (2, 10, 2)):
        image[np.hypot(y - cy, x - cx) < radius] += 1.0
    return gaussian_filter(image, 1.0)


def _halves(noise: float = 0.05, seed: int = 21) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = _object()
    return (
        truth + noise * rng.standard_normal(truth.shape),
        truth + noise * rng.standard_normal(truth.shape),
    )


def test_psnr_of_truth_is_inf_and_noise_lowers_it():
    truth = _object()
    noisy = truth + 0.05 * np.random.default_rng(22).standard_normal(truth.shape)
    noisier = truth + 0.2 * np.random.default_rng(22).standard_normal(truth.shape)
    assert psnr_db(truth, truth) == math.inf
    assert math.isfinite(psnr_db(noisy, truth))
    assert psnr_db(noisier, truth) < psnr_db(noisy, truth) - 10.0  # 4x noise: -12 dB
    # outside the mask nothing counts
    spoiled = noisy.copy()
    spoiled[~disc_mask(SIDE)] = 1e3
    assert psnr_db(spoiled, truth) == pytest.approx(psnr_db(noisy, truth))


def test_frc_of_identical_maps_is_one_and_of_independent_noise_near_zero():
    image = _object() + 0.05 * np.random.default_rng(23).standard_normal((SIDE, SIDE))
    same = frc_figures(image, image)
    np.testing.assert_allclose(same.correlation[1:], 1.0, atol=1e-9)
    assert same.limited_by_sampling
    assert same.fraction_nyquist == pytest.approx(1.0, abs=0.03)
    rng = np.random.default_rng(24)
    independent = frc_figures(rng.standard_normal((SIDE, SIDE)), rng.standard_normal((SIDE, SIDE)))
    high = independent.frequency > 0.25
    assert abs(float(independent.correlation[high].mean())) < 0.05
    assert not independent.limited_by_sampling


def test_even_odd_on_small_phantom_gives_finite_resolution():
    data = simulate_tomo(shape=(2, 64), n_angles=90, psf_fwhm_um=25.0, rng=11)
    transmission = flat_dark_correct(data.data, data.data_white, data.data_dark).values
    pair = even_odd_frc(minus_log(transmission), np.deg2rad(data.theta_deg), 31.5)
    assert pair.even.shape == pair.odd.shape == (2, 64, 64)
    assert not pair.frc.limited_by_sampling
    assert 2.0 < pair.frc.resolution_px < 32.0
    assert 0.0 < pair.frc.fraction_nyquist < 1.0
    assert pair.frc.fraction_nyquist == pytest.approx(2.0 / pair.frc.resolution_px)


def test_invented_texture_fools_plain_frc_but_not_the_cross_check():
    even, odd = _halves()
    # the same "learned" texture in both restored halves: fine-grained, not in the data
    texture = 0.1 * np.random.default_rng(25).standard_normal((SIDE, SIDE))
    check = invented_detail_check(even, odd, even + texture, odd + texture)
    assert check.plain.resolution_px < 0.7 * check.raw.resolution_px  # plain FRC is fooled
    assert check.cross.resolution_px >= 0.95 * check.raw.resolution_px  # data don't support it
    assert check.invented


def test_a_linear_filter_is_not_flagged():
    even, odd = _halves()
    # a sharpening filter applied to both halves re-weights rings but adds no information
    sharpen = [image + 0.5 * (image - gaussian_filter(image, 1.0)) for image in (even, odd)]
    check = invented_detail_check(even, odd, *sharpen)
    assert not check.invented
    assert check.cross.resolution_px == pytest.approx(check.raw.resolution_px, rel=0.1)


def test_air_noise_on_a_fixed_mask():
    truth = _object()
    mask = air_mask(truth + 0.01 * np.random.default_rng(26).standard_normal(truth.shape))
    assert not (mask & (truth > 0.05)).any()  # away from the object
    assert mask.sum() > 1000
    noisy = truth + 0.03 * np.random.default_rng(27).standard_normal(truth.shape)
    assert air_noise(noisy, mask) == pytest.approx(0.03, rel=0.1)
    assert air_noise(truth + 0.5, mask) == pytest.approx(0.0, abs=1e-6)  # offset is not noise


def test_air_mask_refuses_a_field_without_air():
    with pytest.raises(ValueError, match="no air"):
        air_mask(np.ones((SIDE, SIDE)))
