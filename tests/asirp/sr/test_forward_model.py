"""The forward model, the beam from a PSF or the data, and the consistency check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from asirp.phantoms import copper_mesh, siemens_star
from asirp.psf import gaussian_psf
from asirp.sr.consistency import ConsistencyWarning, consistency_figures, warn_if_inconsistent
from asirp.sr.degrade import (
    area_downsample,
    degrade,
    estimate_blur_sigma,
    gaussian_blur,
    sigma_from_psf,
)


@pytest.mark.parametrize("sigma", [0.3, 0.75, 2.0])
def test_sigma_from_psf_recovers_the_gaussian_of_the_psf_helper(sigma):
    assert sigma_from_psf(gaussian_psf(sigma)) == pytest.approx(sigma, rel=1e-3)
    assert sigma_from_psf(torch.from_numpy(gaussian_psf((sigma, sigma)))) == pytest.approx(
        sigma, rel=1e-3
    )


def test_area_sampling_averages_blocks_and_blur_keeps_the_mean():
    fine = torch.arange(16.0).view(1, 4, 4)
    np.testing.assert_allclose(area_downsample(fine, 2)[0], [[2.5, 4.5], [10.5, 12.5]])
    image = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(image, [0.5, 2.0])
    assert blurred.shape == image.shape
    # per-map sigmas give what each sigma gives alone
    torch.testing.assert_close(blurred[1:], gaussian_blur(image[1:], 2.0))
    large = torch.rand(2, 520, 530, generator=torch.Generator().manual_seed(1))
    small_way = torch.cat([gaussian_blur(large[:, :256, :256], 1.3)])  # convolution path
    torch.testing.assert_close(
        gaussian_blur(large, 1.3)[:, 8:248, 8:248], small_way[:, 8:248, 8:248]
    )
    flat = torch.full((1, 40, 40), 7.0)
    torch.testing.assert_close(degrade(flat, 0.8, 2), torch.full((1, 20, 20), 7.0))


def test_a_wider_beam_blurs_more():
    star = torch.from_numpy(siemens_star((64, 64))).float()[None]
    narrow, wide = degrade(star, 0.3, 2), degrade(star, 1.5, 2)
    assert float(narrow.std()) > float(wide.std()) * 1.1


@pytest.mark.parametrize("sigma", [0.4, 0.75, 1.2])
def test_blind_beam_estimate_is_within_forty_percent_on_edges(sigma):
    fine = torch.from_numpy(200.0 * siemens_star((256, 256)) + 10.0).float()[None]
    measured = torch.poisson(degrade(fine, sigma, 2), generator=torch.Generator().manual_seed(1))
    assert estimate_blur_sigma(measured[0].numpy()) == pytest.approx(sigma, rel=0.4)


def test_consistency_accepts_the_truth_and_flags_invented_detail():
    generator = torch.Generator().manual_seed(3)
    truth = torch.from_numpy(300.0 * copper_mesh((96, 96), 5.0) + 20.0).float()[None]
    measured = torch.poisson(degrade(truth, 0.7, 2), generator=generator)
    honest = consistency_figures(measured, truth, 0.7, 2)[0]
    assert 0.7 < honest["consistency_residual"] < 1.5
    assert honest["consistent"] is True
    invented = truth.clone()
    invented[0, 40:52, 40:52] += 400.0  # a bright feature the data do not show
    flagged = consistency_figures(measured, invented, 0.7, 2)[0]
    assert flagged["consistency_residual"] > 2.0
    assert flagged["consistent"] is False
    assert flagged["consistency_relative"] > honest["consistency_relative"]
    with pytest.warns(ConsistencyWarning, match="1 super-resolved map"):
        warn_if_inconsistent("test", [honest, flagged], 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_inconsistent("test", [honest], 2.0)  # nothing to say
