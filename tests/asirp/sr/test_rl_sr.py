"""``rl_sr``: Richardson-Lucy super-resolution with the known beam (asirp.sr.physics_sr)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import asirp
from asirp import threads
from asirp.methods.richardson_lucy import total_variation_divergence
from asirp.metrics import psnr
from asirp.psf import gaussian_psf
from asirp.sr.degrade import degrade
from asirp.sr.physics_sr import SuperResolutionOperator, equivalent_psf
from tests.asirp.sr.conftest import bicubic


@pytest.mark.parametrize(
    ("sigma", "scale", "shape"),
    [(0.8, 2, (12, 10)), (0.75, 4, (6, 7)), (2.0, 2, (4, 5)), (0.3, 2, (9, 9))],
)
def test_the_operator_is_degrade_and_its_adjoint_is_exact(sigma, scale, shape):
    generator = torch.Generator().manual_seed(0)
    operator = SuperResolutionOperator(sigma, scale, shape, "cpu")
    fine = torch.rand(2, shape[0] * scale, shape[1] * scale, generator=generator)
    data = torch.rand(2, *shape, generator=generator)
    # the same A as the forward model every SR result is judged by (compiled CPU path) ...
    torch.testing.assert_close(operator.forward(fine), degrade(fine, sigma, scale))
    # ... and the torch path (float64 here) agrees with it
    torch.testing.assert_close(
        operator.forward(fine.double()).float(), operator.forward(fine), rtol=0, atol=1e-6
    )
    # <A x, y> = <x, A^T y> in float64 (the torch path) and float32 (the compiled one)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        x, y = fine.to(dtype), data.to(dtype)
        left = float((operator.forward(x).double() * y.double()).sum())
        right = float((x.double() * operator.adjoint(y).double()).sum())
        assert right == pytest.approx(left, rel=tolerance)
    # mirror padding without the edge pixel is not symmetric: the edges must be folded right
    ones = operator.backproject_ones()
    assert float(ones[0, 0, 0]) != pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(("axes", "scale"), [((1.2, 0.6), 2), ((0.4, 0.9), 4)])
def test_an_anisotropic_beam_is_degrade_with_two_sigmas_and_its_adjoint_is_exact(axes, scale):
    generator = torch.Generator().manual_seed(4)
    shape = (9, 11)
    operator = SuperResolutionOperator(axes, scale, shape, "cpu")
    assert operator.sigma_px == axes
    fine = torch.rand(2, shape[0] * scale, shape[1] * scale, generator=generator)
    data = torch.rand(2, *shape, generator=generator)
    expected = degrade(fine, axes[0], scale, sigma_cols_px=axes[1])
    torch.testing.assert_close(operator.forward(fine), expected)
    torch.testing.assert_close(operator.forward(fine.double()).float(), expected, rtol=0, atol=1e-6)
    # the axes are not interchangeable: rows get the first sigma
    swapped = degrade(fine, axes[1], scale, sigma_cols_px=axes[0])
    assert float((operator.forward(fine) - swapped).abs().max()) > 1e-3
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        x, y = fine.to(dtype), data.to(dtype)
        left = float((operator.forward(x).double() * y.double()).sum())
        right = float((x.double() * operator.adjoint(y).double()).sum())
        assert right == pytest.approx(left, rel=tolerance)
    # an isotropic pair is the one-sigma operator, bit for bit
    same = SuperResolutionOperator((0.8, 0.8), 2, shape, "cpu")
    assert same.sigma_px == 0.8
    single = SuperResolutionOperator(0.8, 2, shape, "cpu")
    small = fine[:, : 2 * shape[0], : 2 * shape[1]]
    assert torch.equal(same.forward(small), single.forward(small))


def test_an_anisotropic_beam_is_modelled_as_given_not_as_its_geometric_mean():
    # a KB-focused beam: twice as wide vertically; 1000 counts, sharp structure
    from asirp.phantoms import siemens_star

    axes = (1.2, 0.6)
    truth = torch.from_numpy(1000.0 * (0.05 + siemens_star((96, 96)))).float()[None]
    clean = degrade(truth, axes[0], 2, sigma_cols_px=axes[1])
    measured = torch.poisson(clean, generator=torch.Generator().manual_seed(5))[0].numpy()
    given = asirp.restore(measured, "rl_sr", psf=gaussian_psf(axes), scale=2, device="cpu")
    mean_sigma = float(np.sqrt(axes[0] * axes[1]))
    isotropic = asirp.restore(
        measured, "rl_sr", psf=gaussian_psf(mean_sigma), scale=2, device="cpu"
    )
    # one map: the per-map facts are unwrapped
    assert given.params["beam_axes_px"] == pytest.approx([1.2, 0.6], rel=1e-3)
    assert given.params["beam_sigma_px"] == pytest.approx(mean_sigma, rel=1e-3)
    assert "beam_axes_px" not in isotropic.params
    assert given.metrics["consistent"]
    gain = psnr(truth[0].numpy(), given.image) - psnr(truth[0].numpy(), isotropic.image)
    assert gain > 0.5, gain
    # the result's PSF is the anisotropic fine-grid beam (taller than wide)
    assert given.psf.shape[0] > given.psf.shape[1]


def test_the_torch_path_of_an_iteration_gives_what_the_compiled_one_gives():
    # CUDA runs the torch path; on the CPU float64 takes it too
    generator = torch.Generator().manual_seed(1)
    operator = SuperResolutionOperator(0.8, 2, (20, 18), "cpu")
    estimate = torch.rand(2, 40, 36, generator=generator) + 0.5
    data = torch.poisson(20.0 * torch.rand(2, 20, 18, generator=generator))
    previous = torch.rand(2, 40, 36, generator=generator) - 0.5
    denominator = operator.backproject_ones()
    compiled = operator.prediction_and_ratio(estimate, data, 1.5)
    compiled = [t.clone() for t in compiled]  # work arrays: the next call overwrites them
    compiled += operator.multiplicative_update(compiled[1], estimate, denominator, previous)
    plain = operator.prediction_and_ratio(estimate.double(), data.double(), 1.5)
    plain += operator.multiplicative_update(
        plain[1], estimate.double(), denominator.double(), previous.double()
    )
    for fast, slow in zip(compiled, plain, strict=True):
        torch.testing.assert_close(fast.double(), slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled[0], operator.forward(estimate) + 1.5)
    # the total-variation denominator: one compiled pass for RL's curvature (torch elsewhere)
    ones = denominator.double()
    curvature = total_variation_divergence(estimate.double(), 0.01)
    expected = (ones - 0.05 * curvature).clamp_min(0.1 * ones)
    fast = operator.tv_denominator(estimate, 0.05, 0.01).double()
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="float32"):
        operator.tv_denominator(estimate.double(), 0.05, 0.01)


def test_the_equivalent_psf_has_the_power_transfer_of_s2_a_at():
    operator = SuperResolutionOperator(0.75, 2, (16, 16), "cpu")
    psf = equivalent_psf(operator).double()
    assert psf.shape[0] % 2 == 1
    assert float(psf.sum()) == pytest.approx(1.0, abs=1e-6)
    size = 32  # a point deep inside a map: s^2 A A^T delta is the PSF's autocorrelation
    probe = SuperResolutionOperator(0.75, 2, (size, size), "cpu")
    delta = torch.zeros((1, size, size), dtype=torch.float64)
    delta[0, size // 2, size // 2] = 1.0
    response = probe.forward(probe.backproject(delta))[0]
    padded = torch.zeros((size, size), dtype=torch.float64)
    radius = psf.shape[0] // 2
    padded[
        size // 2 - radius : size // 2 + radius + 1, size // 2 - radius : size // 2 + radius + 1
    ] = psf
    spectrum = torch.fft.fft2(torch.fft.ifftshift(padded))
    autocorrelation = torch.fft.fftshift(torch.fft.ifft2(spectrum.abs() ** 2).real)
    torch.testing.assert_close(autocorrelation, response, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def star_x2():
    """A 48 x 48 measured Siemens star (x2, the true beam, Poisson counts) and its truth."""
    from asirp.phantoms import siemens_star

    truth = torch.from_numpy(200.0 * (0.05 + siemens_star((96, 96)))).float()[None]
    clean = degrade(truth, 0.75, 2)
    measured = torch.poisson(clean, generator=torch.Generator().manual_seed(3))
    return measured[0].numpy(), truth[0].numpy(), 0.75


def test_it_beats_bicubic_by_more_than_a_db_with_the_true_beam(star_x2):
    measured, truth, sigma = star_x2
    result = asirp.restore(measured, "rl_sr", psf_sigma_px=sigma, scale=2, device="cpu")
    assert result.image.shape == (96, 96)
    assert result.image.dtype == np.float32
    assert float(result.image.min()) >= 0.0
    gain = psnr(truth, result.image) - psnr(truth, bicubic(measured, 2))
    assert gain > 1.0, gain
    # the discrepancy rule stopped it, well before the cap, and the result fits the data
    assert 1 <= result.params["iterations_run"] < 50
    assert result.params["stopped_by"] == "discrepancy"
    assert result.params["beam_sigma_px"] == pytest.approx(sigma, rel=1e-3)
    assert result.metrics["consistent"]
    # iterating on to the cap fits the noise: the stop rule earns its keep
    overfit = asirp.restore(
        measured, "rl_sr", psf_sigma_px=sigma, stop="fixed", iterations=60, device="cpu"
    )
    assert psnr(truth, overfit.image) < psnr(truth, result.image) - 1.0


def test_x4_and_the_options_run_and_stay_positive(star_x2):
    measured, _, sigma = star_x2
    small = measured[:24, :20]
    for params in (
        {"scale": 4},
        {"tv_weight": 0.01},
        {"initial": "bicubic", "acceleration": False},
        {"stop": "stagnation", "tolerance": 0.01, "background": 5.0},
    ):
        result = asirp.restore(small, "rl_sr", psf_sigma_px=sigma, device="cpu", **params)
        scale = params.get("scale", 2)
        assert result.image.shape == (24 * scale, 20 * scale)
        assert np.isfinite(result.image).all()
        assert float(result.image.min()) >= 0.0


def test_it_is_deterministic_and_a_stack_gives_each_map_its_own_result(star_x2):
    measured, _, sigma = star_x2
    other = measured[::-1, :].copy() * 3.0  # another map with another stopping point
    with threads.fixed_threads(2):  # the engine adapts threads to the load: pin them
        first = asirp.restore(measured, "rl_sr", psf_sigma_px=sigma, device="cpu")
        again = asirp.restore(measured, "rl_sr", psf_sigma_px=sigma, device="cpu")
    np.testing.assert_array_equal(first.image, again.image)
    alone = asirp.restore(other, "rl_sr", psf_sigma_px=sigma, device="cpu")
    stack = asirp.restore(np.stack([measured, other]), "rl_sr", psf_sigma_px=sigma, device="cpu")
    assert stack.image.shape == (2, 96, 96)
    assert stack.params["iterations_run"] == [
        first.params["iterations_run"],
        alone.params["iterations_run"],
    ]
    np.testing.assert_allclose(stack.image[0], first.image, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stack.image[1], alone.image, rtol=1e-5, atol=1e-4)


def test_the_public_function_is_restore(star_x2):
    measured, _, sigma = star_x2
    image = asirp.rl_sr(measured[:16, :16], gaussian_psf(sigma), tv_weight=0.005, device="cpu")
    expected = asirp.restore(
        measured[:16, :16], "rl_sr", psf=gaussian_psf(sigma), tv_weight=0.005, device="cpu"
    ).image
    np.testing.assert_array_equal(image, expected)
    assert "rl_sr" in asirp.available_methods("super-resolution")


@pytest.mark.parametrize(
    ("image", "params", "error", "words"),
    [
        (np.ones((16, 16)), {"scale": 3}, ValueError, "allowed: 2 or 4"),
        (np.ones((16, 16)), {"scale": 8}, ValueError, "scale"),
        (np.ones((16, 16)), {"tv_weight": -1.0}, ValueError, "tv_weight"),
        (np.ones((16, 16)), {"initial": "flat"}, ValueError, "initial"),
        (np.where(np.eye(16) > 0, np.nan, 1.0), {}, ValueError, "NaN"),
    ],
)
def test_bad_input_gives_one_clear_error(image, params, error, words):
    with pytest.raises(error, match=words):
        asirp.restore(image, "rl_sr", psf_sigma_px=0.8, device="cpu", **params)


def test_it_needs_the_beam():
    with pytest.raises(ValueError, match="needs a PSF"):
        asirp.restore(np.ones((16, 16)), "rl_sr", device="cpu")
