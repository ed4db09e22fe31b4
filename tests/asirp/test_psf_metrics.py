"""PSF construction in physical units, and the quality figures."""

from __future__ import annotations

import numpy as np
import pytest

from asirp import metrics
from asirp.psf import beam_sigma_px, gaussian_psf, psf_sigma_px, resolve_psf


def test_beam_psf_in_physical_units_is_anisotropic_when_steps_differ():
    sigma = beam_sigma_px(50.0, (10.0, 5.0))  # 10 µm between lines, 5 µm along a line
    assert sigma == pytest.approx((50 / 2.35482 / 10, 50 / 2.35482 / 5), rel=1e-4)
    kernel = gaussian_psf(sigma)
    assert kernel.shape[0] % 2 == 1
    assert kernel.shape[1] % 2 == 1
    assert kernel.shape[1] > kernel.shape[0]
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    measured = psf_sigma_px(kernel)
    assert measured[0] == pytest.approx(sigma[0], rel=0.05)
    assert measured[1] == pytest.approx(sigma[1], rel=0.05)


def test_psf_is_cropped_to_the_image_and_described():
    resolved = resolve_psf((1, 9, 9), beam_fwhm_um=50.0, pixel_um=5.0)
    assert resolved.array.shape == (9, 9)
    assert resolved.description["source"] == "beam"
    assert resolved.description["pixel_um"] == [5.0, 5.0]


def test_psf_from_file(tmp_path):
    path = tmp_path / "psf.npy"
    np.save(path, 3.0 * gaussian_psf(1.5))
    resolved = resolve_psf((1, 32, 32), psf=str(path))
    assert resolved.array.sum() == pytest.approx(1.0, abs=1e-6)
    assert resolved.description == {"source": "file", "path": str(path), "shape": [13, 13]}


def test_noise_estimate_finds_white_noise():
    rng = np.random.default_rng(1)
    smooth = np.add.outer(np.linspace(0, 50, 128), np.linspace(0, 30, 128))
    noisy = smooth + rng.normal(0, 4.0, smooth.shape)
    assert metrics.noise_sigma(noisy) == pytest.approx(4.0, rel=0.08)


def test_residual_is_small_for_the_truth_and_large_for_a_wrong_answer():
    rng = np.random.default_rng(2)
    truth = rng.uniform(10, 100, (48, 48))
    psf = gaussian_psf(2.0)
    data = metrics.blur(truth, psf)
    assert metrics.data_residual(data, truth, psf) < 1e-6
    assert metrics.data_residual(data, np.zeros_like(truth), psf) == pytest.approx(1.0)


def test_sharpness_and_contrast_rank_blurred_below_sharp():
    rng = np.random.default_rng(3)
    sharp = (rng.uniform(size=(64, 64)) > 0.5) * 100.0
    blurred = metrics.blur(sharp, gaussian_psf(2.0))
    assert metrics.sharpness(sharp) > metrics.sharpness(blurred)
    assert metrics.contrast_std(sharp) > metrics.contrast_std(blurred)


def test_fourier_ring_correlation_resolution_follows_the_blur():
    rng = np.random.default_rng(4)
    scene = rng.uniform(0, 1, (128, 128)) * 200
    resolutions = []
    for sigma in (1.0, 3.0):
        expected = metrics.blur(scene, gaussian_psf(sigma))
        first, second = rng.poisson(expected), rng.poisson(expected)
        frc = metrics.fourier_ring_correlation(first, second, pixel_um=10.0)
        assert frc.correlation[1] > 0.9  # low frequencies agree
        assert frc.resolution_um == pytest.approx(frc.resolution_px * 10.0)
        resolutions.append(frc.resolution_px)
    assert resolutions[1] > 1.5 * resolutions[0]


def test_psnr_and_ssim_order_good_and_bad_estimates():
    rng = np.random.default_rng(5)
    truth = rng.uniform(0, 100, (32, 32))
    close = truth + rng.normal(0, 1, truth.shape)
    far = truth + rng.normal(0, 20, truth.shape)
    assert metrics.psnr(truth, close) > metrics.psnr(truth, far)
    assert metrics.ssim(truth, close) > metrics.ssim(truth, far)
