"""The direct separable blur: same operator as the FFT path, adjoint identity, path choice."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import torch

import asirp
from asirp import metrics
from asirp.blur import BlurOperator
from asirp.psf import gaussian_psf
from asirp.registry import Problem
from asirp.separable import direct_is_faster, separable_factors
from tests.conftest import make_noisy_map

BOUNDARIES = ("extend", "zero", "periodic")
SIGMAS = (0.6, 2.0, (1.2, 3.5))  # narrow, round, elliptical (fly scan)
SHAPES = ((33, 47), (48, 48))


def _operators(sigma, shape, boundary):
    psf = torch.from_numpy(gaussian_psf(sigma, max_shape=shape))
    fft = BlurOperator(psf, shape, boundary, path="fft")
    direct = BlurOperator(psf, shape, boundary, path="direct")
    assert (fft.path, direct.path) == ("fft", "direct")
    return fft, direct


def _random(shape, seed, batch=2):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(0.0, 100.0, (batch, *shape)).astype(np.float32))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape", SHAPES)
def test_direct_path_is_the_fft_operator(boundary, sigma, shape):
    fft, direct = _operators(sigma, shape, boundary)
    assert direct.object_shape == fft.object_shape
    obj = _random(fft.object_shape, seed=1)
    data = _random(shape, seed=2)
    forward = direct.forward(obj)
    adjoint = direct.adjoint(data)
    assert forward.shape == (2, *shape)
    assert adjoint.shape == (2, *fft.object_shape)
    np.testing.assert_allclose(forward, fft.forward(obj), rtol=0, atol=1e-5 * 100)
    np.testing.assert_allclose(adjoint, fft.adjoint(data), rtol=0, atol=1e-5 * 100)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_direct_path_with_a_one_pixel_and_a_map_wide_psf(boundary):
    shape = (9, 14)
    for kernel in (np.ones((1, 1), np.float32), gaussian_psf((1.0, 30.0), max_shape=shape)):
        assert kernel.shape[1] in (1, shape[1] - 1)
        psf = torch.from_numpy(kernel)
        fft = BlurOperator(psf, shape, boundary, path="fft")
        direct = BlurOperator(psf, shape, boundary, path="direct")
        obj = _random(fft.object_shape, seed=10, batch=3)
        data = _random(shape, seed=11, batch=3)
        np.testing.assert_allclose(direct.forward(obj), fft.forward(obj), atol=1e-3)
        np.testing.assert_allclose(direct.adjoint(data), fft.adjoint(data), atol=1e-3)


def test_gradients_take_the_fft_path():
    psf = torch.from_numpy(gaussian_psf(1.5))
    operator = BlurOperator(psf, (20, 24))
    assert operator.path == "direct"
    obj = _random(operator.object_shape, seed=15, batch=1).requires_grad_(True)
    operator.forward(obj).sum().backward()
    expected = operator.adjoint(torch.ones((1, 20, 24)))  # d sum(Hx) / dx = H^T 1
    np.testing.assert_allclose(obj.grad, expected, atol=1e-5)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("path", ["direct", "fft"])
def test_adjoint_identity(boundary, path):
    psf = torch.from_numpy(gaussian_psf((1.5, 2.5)))
    operator = BlurOperator(psf, (40, 52), boundary, path=path)
    x = _random(operator.object_shape, seed=3, batch=1).double()
    y = _random((40, 52), seed=4, batch=1).double()
    hx_y = float((operator.forward(x.float()).double() * y).sum())
    x_hty = float((x * operator.adjoint(y.float()).double()).sum())
    assert hx_y == pytest.approx(x_hty, rel=1e-6)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_fused_updates_match_the_plain_operator(boundary):
    fft, direct = _operators((1.0, 2.0), (30, 41), boundary)
    obj = _random(fft.object_shape, seed=5)
    data = _random((30, 41), seed=6)
    prediction, ratio = direct.poisson_ratio(obj, data, background=3.0)
    expected_prediction = fft.forward(obj) + 3.0
    np.testing.assert_allclose(prediction, expected_prediction, rtol=1e-5)
    np.testing.assert_allclose(ratio, data / expected_prediction, rtol=1e-5)
    for denominator in (obj[:1] + 1.0, obj + 1.0):  # shared by the stack, or per image
        update = direct.multiplicative_adjoint(ratio, obj, denominator)
        np.testing.assert_allclose(
            update, obj * fft.adjoint(ratio) / denominator, rtol=1e-5, atol=1e-4
        )


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_adjoint_of_ones_from_partial_sums(boundary):
    rng = np.random.default_rng(7)
    shape = (21, 26)
    lopsided = rng.uniform(0.1, 1.0, (5, 9)).astype(np.float32)  # not separable
    for kernel in (gaussian_psf((1.0, 2.0)), lopsided / lopsided.sum()):
        psf = torch.from_numpy(kernel)
        operator = BlurOperator(psf, shape, boundary, path="fft")
        by_fft = operator.adjoint(torch.ones((1, *shape)))
        assert operator.adjoint_of_ones().shape == (1, *operator.object_shape)
        np.testing.assert_allclose(operator.adjoint_of_ones(), by_fft, atol=1e-6)
        stacked = BlurOperator(torch.stack([psf, psf.flip(0)]), shape, boundary)
        expected = stacked.adjoint(torch.ones((2, *shape)))
        np.testing.assert_allclose(stacked.adjoint_of_ones(), expected, atol=1e-6)


def test_separable_factors():
    for sigma in SIGMAS:
        kernel = gaussian_psf(sigma)
        column, row = separable_factors(kernel)
        assert column.shape == (kernel.shape[0],)
        assert row.shape == (kernel.shape[1],)
        np.testing.assert_allclose(np.outer(column, row), kernel, atol=1e-8)
    ring = np.ones((5, 5), np.float32)
    ring[2, 2] = 0.0
    assert separable_factors(ring / ring.sum()) is None
    assert separable_factors(np.stack([gaussian_psf(1.0)] * 2)) is None
    assert separable_factors(np.zeros((3, 3))) is None


def test_path_choice():
    psf = torch.from_numpy(gaussian_psf(3.0))
    assert BlurOperator(psf, (64, 64)).path == "direct"
    ring = torch.ones((5, 5))
    ring[2, 2] = 0.0
    assert BlurOperator(ring / ring.sum(), (64, 64)).path == "fft"
    assert BlurOperator(torch.stack([psf, psf]), (64, 64)).path == "fft"  # per-image PSFs
    with pytest.raises(ValueError, match="separable 2-D PSF"):
        BlurOperator(ring / ring.sum(), (64, 64), path="direct")
    with pytest.raises(ValueError, match="unknown path"):
        BlurOperator(psf, (64, 64), path="spatial")
    assert direct_is_faster((25, 25), (1050, 1050))
    assert not direct_is_faster((301, 301), (1350, 1350))
    operator = BlurOperator(psf, (64, 64))
    operator.set_psf(torch.stack([psf, psf]))  # as blind deconvolution does
    assert operator.path == "fft"


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize(
    ("params", "tolerance"),
    [
        ({"acceleration": False}, 1e-5),
        ({}, 1e-5),  # Biggs-Andrews acceleration
        ({"tv_weight": 0.01}, 2e-3),  # TV is sensitive to rounding near edges
    ],
)
def test_richardson_lucy_on_the_direct_path_matches_a_float64_reference(
    boundary, params, tolerance
):
    # The reference runs the method in float64, where the operator takes the FFT path (the
    # direct kernels are float32 only); restore() runs in float32 on the direct path.
    maps = [make_noisy_map("mesh", seed=seed, shape=(40, 36)) for seed in (1, 2)]
    measured = np.stack([m.measured for m in maps])
    psf = gaussian_psf((1.5, 2.0))
    assert BlurOperator(torch.from_numpy(psf), (40, 36), boundary).path == "direct"
    settings = {"iterations": 15, "stop": "fixed", "boundary": boundary, **params}
    result = asirp.restore(measured, "richardson_lucy", psf=psf, device="cpu", **settings)
    spec = asirp.get_method("richardson_lucy")
    problem = Problem(
        data=torch.from_numpy(measured).double(),
        psf=torch.from_numpy(psf).double(),
        device=torch.device("cpu"),
    )
    reference = spec.run(problem, spec.resolve_params(settings)).image.numpy()
    error = result.image - reference
    scale = np.abs(reference).max()
    assert np.sqrt(np.mean(error**2)) < tolerance * scale
    assert np.abs(error).max() < 10 * tolerance * scale
    assert np.abs(result.image - measured).max() > 0.05 * scale  # it did deconvolve


def test_fast_metrics_keep_their_definitions():
    rng = np.random.default_rng(9)
    image = rng.poisson(40.0, (37, 52)).astype(np.float32) + np.linspace(0, 20, 52)[None]
    data = (image * rng.uniform(0.9, 1.1, image.shape)).astype(np.float32)
    array = image.astype(np.float64)
    grad_y = scipy.ndimage.sobel(array, axis=0, mode="reflect") / 8.0
    grad_x = scipy.ndimage.sobel(array, axis=1, mode="reflect") / 8.0
    sharpness = np.sqrt(np.mean(grad_y**2 + grad_x**2)) / np.mean(np.abs(array))
    immerkaer = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    response = scipy.signal.convolve2d(array, immerkaer, mode="valid")
    assert metrics.contrast_std(image) == pytest.approx(np.std(array), rel=1e-6)
    assert metrics.sharpness(image) == pytest.approx(sharpness, rel=1e-6)
    assert metrics.noise_sigma(image) == pytest.approx(
        np.sqrt(np.pi / 2) * np.mean(np.abs(response)) / 6, rel=1e-6
    )
    for kernel in (gaussian_psf((0.8, 2.2)), np.full((3, 5), 1 / 15) + np.eye(3, 5) / 10):
        expected = np.linalg.norm(data - metrics.blur(image, kernel) - 2.0) / np.linalg.norm(data)
        residual = metrics.data_residual(data, image, kernel, background=2.0)
        assert residual == pytest.approx(expected, rel=1e-5)


def test_extrapolation_compiled_and_torch_agree():
    from asirp.methods.richardson_lucy import extrapolate

    estimate, previous = (_random((13, 17), seed=s, batch=3) for s in (12, 13))
    alpha = torch.tensor([0.0, 0.5, 0.99]).view(-1, 1, 1)
    fast = extrapolate(estimate, previous, alpha)  # float32 CPU: compiled kernel
    slow = extrapolate(estimate.double(), previous.double(), alpha.double())  # torch
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-4)
    assert float(fast.min()) >= 0.0
    np.testing.assert_allclose(fast[0], estimate[0])  # alpha 0: no extrapolation
