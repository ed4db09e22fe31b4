"""The discrepancy rule's continuation for Richardson-Lucy (issue 21: time to quality).

The plain discrepancy principle stopped Richardson-Lucy too early on sharp objects, below the
quality of scikit-image's RL; the rule now goes on while Mallows' C_p (deviance plus twice the
degrees of freedom of the linearised iteration, :class:`asirp.iteration.LinearisedFit`) falls.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

import asirp
from asirp import iteration
from asirp.iteration import IterationControl, LinearisedFit
from asirp.metrics import psnr
from asirp.psf import gaussian_psf
from asirp.registry import Problem
from tests.conftest import make_noisy_map


def use_plain_discrepancy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the discrepancy rule stop at the discrepancy point, as before the continuation."""
    plain = functools.partialmethod(IterationControl.__init__, continuation=False)
    monkeypatch.setattr(IterationControl, "__init__", plain)


def test_default_rl_reaches_scikit_image_quality_on_a_siemens_star():
    sample = make_noisy_map("star", peak=300.0, shape=(128, 128), sigma_px=2.0, seed=7)
    best = max(
        psnr(sample.truth, skimage_richardson_lucy(sample.measured, sample.psf, n, clip=False))
        for n in (10, 30, 100)
    )
    result = asirp.restore(sample.measured, "richardson_lucy", psf=sample.psf)
    assert result.params["stopped_by"] == "discrepancy"
    assert psnr(sample.truth, result.image) >= best


def test_the_continuation_goes_past_the_discrepancy_point_and_gains(monkeypatch):
    sample = make_noisy_map("star", peak=300.0, shape=(128, 128), sigma_px=2.0, seed=7)
    result = asirp.restore(sample.measured, "richardson_lucy", psf=sample.psf)
    use_plain_discrepancy(monkeypatch)
    plain = asirp.restore(sample.measured, "richardson_lucy", psf=sample.psf)
    assert result.params["iterations_run"] > plain.params["iterations_run"]
    assert psnr(sample.truth, result.image) > psnr(sample.truth, plain.image) + 0.1


@pytest.mark.parametrize("kind", ["mesh", "tissue"])
def test_the_continuation_never_stops_before_the_discrepancy_point(kind, monkeypatch):
    sample = make_noisy_map(kind, peak=200.0, shape=(64, 64), seed=3)
    result = asirp.restore(sample.measured, "richardson_lucy", psf=sample.psf)
    use_plain_discrepancy(monkeypatch)
    plain = asirp.restore(sample.measured, "richardson_lucy", psf=sample.psf)
    assert result.params["iterations_run"] >= plain.params["iterations_run"]
    assert psnr(sample.truth, result.image) >= psnr(sample.truth, plain.image) - 0.05


def test_the_iterate_returned_is_near_the_best_fixed_count():
    sample = make_noisy_map("mesh", peak=300.0, shape=(64, 64), sigma_px=2.0, seed=8)
    result = asirp.restore(sample.measured, "richardson_lucy", psf=sample.psf)
    curve = [
        psnr(
            sample.truth,
            asirp.restore(
                sample.measured, "richardson_lucy", psf=sample.psf, stop="fixed", iterations=n
            ).image,
        )
        for n in range(1, 41)
    ]
    assert psnr(sample.truth, result.image) >= max(curve) - 0.5


def test_each_map_of_a_stack_stops_as_it_would_alone():
    maps = [
        make_noisy_map(kind, peak=300.0, shape=(48, 48), seed=2).measured
        for kind in ("tissue", "star")
    ]
    psf = gaussian_psf(2.0)
    stack = asirp.restore(np.stack(maps), "richardson_lucy", psf=psf)
    for index, image in enumerate(maps):
        alone = asirp.restore(image, "richardson_lucy", psf=psf)
        assert stack.params["iterations_run"][index] == alone.params["iterations_run"]
        np.testing.assert_allclose(stack.image[index], alone.image, rtol=1e-4, atol=1e-3)
    first, second = stack.params["iterations_run"]
    assert first < second  # the smooth tissue stops well before the star


def test_the_degrees_of_freedom_start_at_the_psf_energy_and_grow_faster_when_accelerated():
    psf = torch.from_numpy(gaussian_psf(2.0))
    plain, accelerated = (LinearisedFit(psf, (128, 128), 1) for _ in range(2))
    start = float(plain.degrees(None)[0])
    assert start == pytest.approx(float((psf.double() ** 2).sum()), rel=1e-9)  # Parseval
    counts = []
    for fit, factor in ((plain, None), (accelerated, torch.tensor([0.9]))):
        previous = start
        for _ in range(20):
            fit.advance()
            current = float(fit.degrees(factor)[0])
            assert previous < current < 1.0
            previous = current
        counts.append(previous)
    assert counts[1] > 1.5 * counts[0]


def test_the_control_works_out_the_biggs_andrews_factor_from_the_steps():
    data = torch.full((1, 16, 16), 50.0)
    problem = Problem(data=data, psf=torch.from_numpy(gaussian_psf(1.0)), device=data.device)
    control = IterationControl(
        problem, {"iterations": 5, "stop": "discrepancy", "acceleration": True}
    )
    rng = np.random.default_rng(0)
    first = torch.from_numpy(rng.normal(size=(1, 16, 16)))
    second = 0.5 * first + torch.from_numpy(rng.normal(size=(1, 16, 16)))
    zero = torch.zeros(1, 16, 16, dtype=torch.float64)
    assert float(control._extrapolation_factor(zero, first)[0]) == 0.0
    expected = float((first * second).sum() / (first * first).sum())
    factor = float(control._extrapolation_factor(zero, second)[0])
    assert factor == pytest.approx(min(max(expected, 0.0), iteration.EXTRAPOLATION_LIMIT))


def test_other_iterative_methods_keep_the_plain_discrepancy_rule():
    sample = make_noisy_map("mesh", peak=200.0, shape=(48, 48), seed=1)
    problem = Problem(data=torch.from_numpy(sample.measured)[None], psf=None, device="cpu")
    assert IterationControl(problem, {"iterations": 10, "stop": "discrepancy"}).fit is None
    result = asirp.restore(sample.measured, "landweber", psf=sample.psf)
    assert result.params["stopped_by"] == "discrepancy"
