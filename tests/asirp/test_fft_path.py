"""The fused FFT path of the blur operator: same operator as plain torch FFTs, to float32 rounding.

A non-separable PSF (a measured beam profile) takes the FFT path; on the CPU in float32 the
operator keeps zero-padded FFT grids and does the steps between the FFTs in compiled passes. These
tests hold every public method to the plain formulas (torch operations, float64 where it helps),
for each boundary, a PSF stack, the aliasing the methods allow, and the data residual of
:mod:`asirp.metrics`.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from asirp import metrics
from asirp.blur import BlurOperator, cached_otf, psf_to_otf
from asirp.psf import gaussian_psf

BOUNDARIES = ("extend", "zero", "periodic")
SHAPE = (37, 44)
ODD = (30, 37)  # odd FFT widths: 45 ("extend"), 37 ("periodic")


def _beam(size: int = 9, seed: int = 0) -> np.ndarray:
    """A tilted, two-lobed (so not separable) PSF of odd side ``size``, sum 1, float32."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    shear = y - 0.4 * x
    psf = np.exp(-(x**2 / (2 * 2.0**2) + shear**2 / (2 * 1.2**2)))
    psf += 0.3 * np.exp(-((x - 2) ** 2 + (y + 1) ** 2) / 2.0)
    psf += 0.01 * np.random.default_rng(seed).uniform(size=psf.shape)
    return (psf / psf.sum()).astype(np.float32)


def _random(shape, seed: int, batch: int = 2, low: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(low, 100.0, (batch, *shape)).astype(np.float32))


def _reference_otf(psf: torch.Tensor, fft_shape) -> torch.Tensor:
    """The transfer function by zero-padding and rolling (the former implementation)."""
    rows, cols = psf.shape[-2:]
    padded = F.pad(psf, (0, fft_shape[1] - cols, 0, fft_shape[0] - rows))
    padded = torch.roll(padded, shifts=(-(rows // 2), -(cols // 2)), dims=(-2, -1))
    return torch.fft.rfft2(padded)


def _reference_forward(operator: BlurOperator, obj: torch.Tensor) -> torch.Tensor:
    """``H obj`` in float64 by unfused torch FFTs."""
    otf = _reference_otf(operator.psf.double(), operator.fft_shape)
    blurred = torch.fft.irfft2(
        torch.fft.rfft2(obj.double(), s=operator.fft_shape) * otf, s=operator.fft_shape
    )
    return operator.crop(blurred)


def _reference_adjoint(operator: BlurOperator, data: torch.Tensor) -> torch.Tensor:
    """``H^T data`` in float64 by unfused torch FFTs."""
    top, left = operator.offset
    grid = torch.zeros((data.shape[0], *operator.fft_shape), dtype=torch.float64)
    grid[:, top : top + data.shape[-2], left : left + data.shape[-1]] = data.double()
    otf = _reference_otf(operator.psf.double(), operator.fft_shape)
    back = torch.fft.irfft2(torch.fft.rfft2(grid) * otf.conj(), s=operator.fft_shape)
    return back[..., : operator.object_shape[0], : operator.object_shape[1]]


def _close(actual: torch.Tensor, expected: torch.Tensor, scale: float = 100.0) -> None:
    """Equal to float32 rounding of values of about ``scale``."""
    np.testing.assert_allclose(actual.double(), expected.double(), rtol=1e-5, atol=2e-6 * scale)


def _operator(boundary: str, batch_psf: bool = False, shape=SHAPE) -> BlurOperator:
    psf = torch.from_numpy(_beam())
    if batch_psf:
        psf = torch.stack([psf, torch.from_numpy(_beam(seed=1))])
    operator = BlurOperator(psf, shape, boundary)
    assert operator.path == "fft"
    return operator


def test_psf_to_otf_places_the_quadrants_like_a_roll():
    psf = torch.from_numpy(_beam(7))
    for grid in ((16, 20), (7, 7), (9, 30)):
        assert torch.equal(psf_to_otf(psf, grid), _reference_otf(psf, grid))
    stack = torch.stack([psf, psf.flip(0)])
    assert torch.equal(psf_to_otf(stack, (12, 15)), _reference_otf(stack, (12, 15)))
    one = torch.ones((1, 1))
    assert torch.equal(psf_to_otf(one, (4, 6)), _reference_otf(one, (4, 6)))


def test_psf_to_otf_keeps_gradients():
    psf = torch.from_numpy(_beam(5)).double().requires_grad_(True)
    weights = torch.rand(
        (12, 7), dtype=torch.complex128, generator=torch.Generator().manual_seed(0)
    )
    (psf_to_otf(psf, (12, 12)) * weights).real.sum().backward()
    expected = psf.detach().clone().requires_grad_(True)
    (_reference_otf(expected, (12, 12)) * weights).real.sum().backward()
    np.testing.assert_allclose(psf.grad, expected.grad, rtol=1e-12, atol=1e-12)


def test_cached_otf_is_reused_for_the_same_values_only():
    psf = torch.from_numpy(_beam(7))
    first = cached_otf(psf, (20, 24))
    assert cached_otf(psf.clone(), (20, 24)) is first
    assert cached_otf(psf, (24, 24)) is not first
    other = psf.clone()
    other[0, 0] += 1e-3
    assert not torch.equal(cached_otf(other, (20, 24)), first)
    assert torch.equal(first, _reference_otf(psf, (20, 24)))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("batch_psf", [False, True])
@pytest.mark.parametrize("shape", [SHAPE, ODD])
def test_forward_and_adjoint_match_the_plain_ffts(boundary, batch_psf, shape):
    operator = _operator(boundary, batch_psf, shape)
    obj = _random(operator.object_shape, seed=1)
    data = _random(shape, seed=2)
    for _ in range(2):  # the second call reuses the operator's grids
        _close(operator.forward(obj), _reference_forward(operator, obj))
        _close(operator.adjoint(data), _reference_adjoint(operator, data))
    spectrum = operator.object_spectrum(obj)
    kept = spectrum.clone()
    _close(operator.forward_from_spectrum(spectrum), _reference_forward(operator, obj))
    ratio_spectrum = operator.data_spectrum(data)
    _close(operator.adjoint_from_spectrum(ratio_spectrum), _reference_adjoint(operator, data))
    assert torch.equal(spectrum, kept)  # the *_from_spectrum methods leave their input alone


def test_forward_and_adjoint_return_fresh_tensors():
    operator = _operator("extend")
    first_obj, second_obj = (_random(operator.object_shape, seed=s) for s in (20, 21))
    first = operator.forward(first_obj)
    kept = first.clone()
    operator.forward(second_obj)
    operator.adjoint(first)
    assert torch.equal(first, kept)
    assert first.is_contiguous()
    assert operator.adjoint(first).is_contiguous()


def test_the_torch_ffts_stand_in_without_mkl(monkeypatch):
    from asirp import _fft_kernels

    monkeypatch.setattr(_fft_kernels, "real_fft2_plan", lambda batch, shape: None)
    for boundary in BOUNDARIES:
        operator = _operator(boundary)
        obj = _random(operator.object_shape, seed=22)
        data = _random(SHAPE, seed=23)
        _close(operator.forward(obj), _reference_forward(operator, obj))
        _close(operator.adjoint(data), _reference_adjoint(operator, data))
        _check_update(operator)
    psf = _beam(11)
    truth = np.random.default_rng(24).uniform(10, 100, (30, 26)).astype(np.float32)
    exact = metrics.blur(truth, psf).astype(np.float32)
    assert metrics.data_residual(exact, truth, psf) < 1e-6


def test_mkl_plans_match_torch_fft():
    from asirp import _fft_kernels

    plan = _fft_kernels.real_fft2_plan(3, (24, 30))
    if plan is None:
        pytest.skip("torch has no MKL DFTI here; the operator uses torch.fft")
    real = torch.rand((3, 24, 30), generator=torch.Generator().manual_seed(1))
    buffer = plan.buffer()
    assert buffer.shape == (3, 24, 32)
    buffer[..., :30] = real
    plan.forward(buffer)
    np.testing.assert_allclose(plan.spectrum(buffer), torch.fft.rfft2(real), rtol=1e-5, atol=1e-5)
    plan.backward(buffer)
    np.testing.assert_allclose(buffer[..., :30], real, rtol=1e-5, atol=1e-5)
    assert _fft_kernels.real_fft2_plan(3, (24, 30)) is plan  # kept for the next call
    with pytest.raises(ValueError, match="contiguous"):
        plan.forward(real)


def test_forward_matches_a_float64_linear_convolution():
    operator = _operator("extend")
    obj = _random(operator.object_shape, seed=3, batch=1)
    expected = scipy.signal.fftconvolve(
        obj[0].double().numpy(), _beam().astype(np.float64), "valid"
    )
    _close(operator.forward(obj)[0], torch.from_numpy(expected))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", [SHAPE, ODD])
def test_poisson_ratio_and_multiplicative_adjoint_match_the_plain_formulas(boundary, shape):
    operator = _operator(boundary, shape=shape)
    obj = _random(operator.object_shape, seed=4)
    data = _random(shape, seed=5, low=0.0)
    prediction, ratio = torch.empty_like(data), torch.empty_like(data)
    for _ in range(2):
        operator.poisson_ratio(obj, data, 3.0, out=(prediction, ratio))
        expected_prediction = _reference_forward(operator, obj) + 3.0
        _close(prediction, expected_prediction)
        _close(ratio, data.double() / expected_prediction, scale=1.0)
    normaliser = operator.adjoint_of_ones().clamp_min(1e-6)
    for denominator in (normaliser, normaliser.expand(2, -1, -1) * 1.5):
        # Compared as H^T ratio: the small denominators at the edges amplify rounding alike.
        weight = denominator.double() / obj.double()
        expected = _reference_adjoint(operator, ratio)
        _close(operator.multiplicative_adjoint(ratio, obj, denominator) * weight, expected, 1.0)
        factor = obj.clone()  # out may be factor
        assert operator.multiplicative_adjoint(ratio, factor, denominator, out=factor) is factor
        _close(factor * weight, expected, 1.0)


def test_a_ratio_changed_after_poisson_ratio_is_seen_by_the_adjoint():
    operator = _operator("extend")
    obj = _random(operator.object_shape, seed=6)
    data = _random(SHAPE, seed=7)
    prediction, ratio = operator.poisson_ratio(obj, data)
    ratio.mul_(2.0)  # an in-place torch change bumps the version counter
    _close(operator.adjoint(ratio), _reference_adjoint(operator, ratio), scale=2.0)
    other = ratio.clone()
    _close(operator.adjoint(other), _reference_adjoint(operator, other), scale=2.0)
    operator.poisson_ratio(obj, data, out=(prediction, ratio))
    operator.adjoint(data)  # another adjoint overwrites the grid in between
    _close(operator.adjoint(ratio), _reference_adjoint(operator, ratio), scale=2.0)


def _reference_update(operator, ratio, factor, denominator, previous):
    """The unfused update: multiplicative_adjoint, the step and its inner products (float64)."""
    updated = operator.multiplicative_adjoint(ratio, factor, denominator).double()
    step = updated - factor.double()
    energy = (step * step).sum(dim=(-2, -1))
    overlap = (step * previous.double()).sum(dim=(-2, -1)) if previous is not None else 0 * energy
    return updated, step, torch.stack((energy, overlap), dim=1)


def _check_update(operator, dtype=torch.float32):
    obj = _random(operator.object_shape, seed=8).to(dtype)
    data = _random(operator.data_shape, seed=9).to(dtype)
    _, ratio = operator.poisson_ratio(obj, data)
    denominator = operator.adjoint_of_ones().clamp_min(1e-6).to(dtype)
    previous = _random(operator.object_shape, seed=10).to(dtype) - 50.0
    for earlier in (None, previous):
        expected, expected_step, expected_sums = _reference_update(
            operator, ratio, obj, denominator, earlier
        )
        out = torch.empty_like(obj)
        step = torch.full_like(obj, float("nan"))  # uninitialised memory must not be read
        sums = operator.multiplicative_update(ratio, obj, denominator, out, step, earlier)
        assert sums.dtype == torch.float64
        assert sums.shape == (2, 2)
        assert sums.device.type == "cpu"
        _close(out, expected)
        _close(step, expected_step)
        np.testing.assert_allclose(sums, expected_sums, rtol=1e-4, atol=1e-3)
        if earlier is None:
            assert torch.all(sums[:, 1] == 0)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape", [SHAPE, ODD])
def test_multiplicative_update_on_the_fft_path(boundary, shape):
    _check_update(_operator(boundary, shape=shape))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_multiplicative_update_on_the_direct_path(boundary):
    psf = torch.from_numpy(gaussian_psf(1.5))
    operator = BlurOperator(psf, SHAPE, boundary, path="direct")
    assert operator.path == "direct"
    _check_update(operator)


def test_multiplicative_update_in_float64_takes_plain_torch():
    _check_update(_operator("extend"), dtype=torch.float64)


def test_multiplicative_update_with_out_as_factor_on_plain_torch():
    operator = _operator("extend")
    obj = _random(operator.object_shape, seed=11, batch=1).double()
    ratio = _random(SHAPE, seed=12, batch=1).double() / 50.0
    denominator = operator.adjoint_of_ones().double().clamp_min(1e-6)
    expected, expected_step, _ = _reference_update(operator, ratio, obj, denominator, None)
    step = torch.empty_like(obj)
    operator.multiplicative_update(ratio, obj, denominator, obj, step, None)
    _close(obj, expected)
    _close(step, expected_step)


def test_gradients_still_flow_through_the_fft_path():
    operator = _operator("extend")
    obj = _random(operator.object_shape, seed=13, batch=1).requires_grad_(True)
    operator.forward(obj).sum().backward()
    expected = _reference_adjoint(operator, torch.ones((1, *SHAPE)))
    _close(obj.grad, expected, scale=1.0)


def test_non_contiguous_inputs():
    operator = _operator("extend")
    obj = _random(operator.object_shape[::-1], seed=14).transpose(-2, -1)
    data = _random(SHAPE[::-1], seed=15).transpose(-2, -1)
    assert not obj.is_contiguous()
    _close(operator.forward(obj), _reference_forward(operator, obj))
    _close(operator.adjoint(data), _reference_adjoint(operator, data))


@pytest.mark.parametrize("shape", [(64, 80), (5, 4), (3, 3)])
def test_data_residual_with_a_measured_psf_matches_the_float64_blur(shape):
    rng = np.random.default_rng(16)
    truth = rng.uniform(10, 100, shape).astype(np.float32)
    psf = _beam(11)  # wider than the smallest maps: the mirror repeats
    data = rng.poisson(metrics.blur(truth, psf)).astype(np.float32)
    predicted = metrics.blur(truth, psf)
    expected = np.sqrt(((data - predicted - 2.0) ** 2).sum() / (data.astype(np.float64) ** 2).sum())
    assert metrics.data_residual(data, truth, psf, background=2.0) == pytest.approx(
        expected, rel=1e-5
    )
    exact = metrics.blur(truth, psf).astype(np.float32)
    assert metrics.data_residual(exact, truth, psf) < 1e-6


def test_richardson_lucy_with_a_measured_psf_matches_a_float64_reference():
    import asirp

    rng = np.random.default_rng(17)
    truth = rng.uniform(10, 100, (40, 52))
    psf = _beam(9)
    image = rng.poisson(metrics.blur(truth, psf)).astype(np.float32)
    result = asirp.restore(
        image,
        "richardson_lucy",
        psf=psf,
        iterations=4,
        stop="fixed",
        acceleration=False,
        device="cpu",
    )
    operator = BlurOperator(torch.from_numpy(psf), image.shape, "extend")
    data = torch.from_numpy(image)[None].double()
    normaliser = operator.adjoint_of_ones().double().clamp_min(1e-6)
    estimate = (_reference_adjoint(operator, data) / normaliser).clamp_min(1e-3 * data.mean())
    for _ in range(4):
        ratio = data / _reference_forward(operator, estimate).clamp_min(1e-12)
        estimate = estimate * _reference_adjoint(operator, ratio) / normaliser
    np.testing.assert_allclose(result.image, operator.crop(estimate)[0], rtol=1e-4, atol=1e-3)
    assert result.metrics["residual"] == pytest.approx(
        metrics.data_residual(image, result.image.astype(np.float64), psf), rel=1e-6
    )
