"""Blind Richardson-Lucy: the beam width from a wrong guess, a valid PSF, stacks and seeds."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import asirp
from asirp.heldout import make_folds, standard_error, structured_window, thin_counts
from asirp.methods._gaussian import gaussian_kernels
from asirp.methods.blind_richardson_lucy import BlindWidthWarning
from asirp.metrics import blur
from asirp.phantoms import copper_mesh
from asirp.psf import gaussian_psf, psf_sigma_px
from tests.conftest import make_noisy_map

TRUE_SIGMA = 2.5


@pytest.fixture(scope="module")
def mesh():
    """96 x 96 copper mesh (AG300 at 10 µm steps), 200 counts, beam sigma 2.5 px."""
    return make_noisy_map("mesh", peak=200.0, shape=(96, 96), sigma_px=TRUE_SIGMA, seed=11)


def check_valid_psf(psf: np.ndarray, sigma: tuple[float, float]) -> None:
    """Non-negative, sum 1, odd sizes within +-4 sigma (+1 px) of the estimate."""
    assert psf.min() >= 0.0
    assert psf.sum() == pytest.approx(1.0, abs=1e-4)
    for axis in (0, 1):
        assert psf.shape[axis] % 2 == 1
        assert psf.shape[axis] <= 2 * np.ceil(4.0 * sigma[axis] + 1.0) + 1


@pytest.mark.parametrize("guess", [1.6, 3.6])
def test_blind_rl_recovers_the_beam_width_from_a_wrong_guess(mesh, guess):
    fractions: list[float] = []
    result = asirp.restore(
        mesh.measured,
        "blind_richardson_lucy",
        psf_sigma_px=guess,
        reference=mesh.truth,
        device="cpu",
        progress=fractions.append,
    )
    sigma = psf_sigma_px(result.psf)
    np.testing.assert_allclose(sigma, TRUE_SIGMA, rtol=0.15)
    np.testing.assert_allclose(result.params["searched_sigma_px"], TRUE_SIGMA, rtol=0.15)
    assert result.params["estimated_sigma_px"] == pytest.approx(list(sigma), abs=1e-3)
    check_valid_psf(result.psf, sigma)
    assert result.metrics["psnr"] > result.metrics["psnr_input"] + 1.0
    assert result.metrics["ssim"] > result.metrics["ssim_input"] + 0.05
    report = result.params["sigma_search_report"]
    assert not report["at_bound"]
    assert len(report["tried"]) >= 10
    assert min(score for *_, score in report["tried"]) == 0.0  # relative to the best
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)


def test_without_the_width_search_the_alternation_keeps_a_narrow_guess(mesh):
    # The degeneracy the search resolves: plain alternating RL from 1.6 px stays far below 2.5.
    result = asirp.restore(
        mesh.measured,
        "blind_richardson_lucy",
        psf_sigma_px=1.6,
        sigma_search="none",
        psf_prior_weight=0.0,
        psf_support_px=21,
        iterations=30,
        stop="fixed",
        device="cpu",
    )
    assert result.psf.shape == (21, 21)
    assert max(psf_sigma_px(result.psf)) < 2.0
    assert result.params["sigma_search"] == "none"
    assert "sigma_search_report" not in result.params


def test_the_prior_keeps_the_free_psf_from_gathering_noise():
    sample = make_noisy_map("mesh", peak=50.0, shape=(64, 64), sigma_px=TRUE_SIGMA, seed=2)
    common = {"psf_sigma_px": TRUE_SIGMA, "sigma_search": "none", "iterations": 150}
    kept = asirp.restore(sample.measured, "blind_richardson_lucy", stop="fixed", **common)
    loose = asirp.restore(
        sample.measured, "blind_richardson_lucy", stop="fixed", psf_prior_weight=0.0, **common
    )
    np.testing.assert_allclose(psf_sigma_px(kept.psf), TRUE_SIGMA, rtol=0.05)
    assert max(psf_sigma_px(loose.psf)) > 1.2 * TRUE_SIGMA
    check_valid_psf(kept.psf, psf_sigma_px(kept.psf))


def test_gaussian_model_returns_the_searched_gaussian(mesh):
    result = asirp.restore(
        mesh.measured,
        "blind_richardson_lucy",
        psf_sigma_px=1.6,
        psf_model="gaussian",
        psf_support_px=25,
        device="cpu",
    )
    searched = result.params["searched_sigma_px"]
    np.testing.assert_allclose(searched, TRUE_SIGMA, rtol=0.15)
    expected = gaussian_psf(searched)  # +-4 sigma, about 21 x 21: pad it to the 25 x 25 window
    pad = [((25 - n) // 2, (25 - n) // 2) for n in expected.shape]
    assert result.psf.shape == (25, 25)
    np.testing.assert_allclose(result.psf, np.pad(expected, pad), atol=2e-5)


def test_anisotropic_beam_per_axis():
    # AG175 mesh (108 µm holes, 37 µm bars) at 10 µm steps, a beam of 2 x 3 px (rows, columns).
    truth = 200.0 * copper_mesh((96, 96), 10.0, hole_um=108.0, bar_um=37.0) + 10.0
    rng = np.random.default_rng(4)
    measured = rng.poisson(blur(truth, gaussian_psf((2.0, 3.0)))).astype(np.float32)
    result = asirp.restore(
        measured,
        "blind_richardson_lucy",
        psf_sigma_px=2.5,
        sigma_axes="per_axis",
        psf_model="gaussian",
        device="cpu",
    )
    np.testing.assert_allclose(psf_sigma_px(result.psf), (2.0, 3.0), rtol=0.15)


def test_stack_gets_one_psf_per_map_and_the_seed_fixes_the_result():
    maps = [
        make_noisy_map("mesh", peak=200.0, shape=(64, 64), sigma_px=1.5, seed=21),
        make_noisy_map("mesh", peak=200.0, shape=(64, 64), sigma_px=2.5, seed=22),
    ]
    stack = np.stack([m.measured for m in maps])
    options = {"psf_sigma_px": 2.0, "psf_model": "gaussian", "seed": 3, "device": "cpu"}
    first = asirp.restore(stack, "blind_richardson_lucy", **options)
    again = asirp.restore(stack, "blind_richardson_lucy", **options)
    assert first.psf.ndim == 3
    assert first.psf.shape[0] == 2
    np.testing.assert_array_equal(first.psf, again.psf)
    np.testing.assert_array_equal(first.image, again.image)
    narrow, wide = (psf_sigma_px(psf) for psf in first.psf)
    np.testing.assert_allclose(narrow, 1.5, rtol=0.15)
    np.testing.assert_allclose(wide, 2.5, rtol=0.15)
    assert len(first.params["sigma_search_report"]) == 2
    assert len(first.params["estimated_sigma_px"]) == 2


def test_cancel_during_the_width_search():
    sample = make_noisy_map("mesh", peak=200.0, shape=(64, 64), sigma_px=TRUE_SIGMA, seed=5)
    cancel = threading.Event()
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction > 0.05:
            cancel.set()

    with pytest.raises(asirp.RestorationCancelled):
        asirp.restore(
            sample.measured,
            "blind_richardson_lucy",
            psf_sigma_px=2.0,
            progress=progress,
            cancel=cancel,
            device="cpu",
        )
    assert max(seen) < 0.5  # it stopped in the search, long before the refinement


def test_gaussian_kernels_match_gaussian_psf():
    sigma = (1.3, 2.7)
    reference = gaussian_psf(sigma)
    radius = (reference.shape[0] // 2, reference.shape[1] // 2)
    kernels = gaussian_kernels(torch.tensor([sigma, (2.0, 2.0)], dtype=torch.float64), radius)
    np.testing.assert_allclose(kernels[0].numpy(), reference, atol=1e-7)
    assert kernels.shape == (2, *reference.shape)
    assert float(kernels[1].sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("fraction", [0.5, 0.2])
def test_thinning_splits_the_events(fraction):
    rng = np.random.default_rng(0)
    events = rng.poisson(400.0, size=(64, 64))
    first, second = thin_counts(events, fraction, np.random.default_rng(1))
    assert min(first.min(), second.min()) >= 0
    assert np.all(first + second <= events)
    if fraction == 0.5:
        np.testing.assert_array_equal(first + second, events)
    for subset in (first, second):
        assert subset.mean() == pytest.approx(fraction * events.mean(), rel=0.01)
    # Independent Poisson subsets: variance equals the mean (it would be smaller otherwise).
    assert first.var() == pytest.approx(first.mean(), rel=0.1)


def test_folds_depend_on_the_seed_and_the_map_only():
    rng = np.random.default_rng(3)
    maps = rng.poisson(50.0, size=(3, 32, 32))
    cpu = torch.device("cpu")
    stack = make_folds(maps, 100.0, 0.0, 7, cpu)
    alone = make_folds(maps[2:], 100.0, 0.0, 7, cpu)
    other = make_folds(maps, 100.0, 0.0, 8, cpu)
    assert torch.equal(stack.fit[2], alone.fit[0])  # same split wherever the map is
    assert not torch.equal(stack.fit, other.fit)
    assert torch.equal(
        stack.fit + stack.held, torch.from_numpy(maps).float()[:, None].expand(-1, 2, -1, -1)
    )
    bright = make_folds(maps * 20, 100.0, 0.0, 7, cpu)
    assert np.all(bright.fraction < 0.5)  # bright maps: about 100 events per fitted subset


def test_structured_window_finds_the_edges():
    rng = np.random.default_rng(0)
    image = rng.poisson(20.0, size=(200, 160)).astype(float)
    image[120:180, 90:150] += 200.0 * (np.indices((60, 60)).sum(axis=0) // 6 % 2)
    rows, cols = structured_window(image, 64)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (64, 64)
    assert rows.start >= 100
    assert cols.start >= 80
    whole = structured_window(image[:50, :60], 64)
    assert whole == (slice(0, 50), slice(0, 60))


def test_standard_error_of_a_difference():
    rng = np.random.default_rng(0)
    reference = torch.from_numpy(rng.normal(size=(50, 40)))
    shifted = reference + torch.from_numpy(rng.normal(scale=2.0, size=(50, 40)))
    error = float(standard_error(shifted, reference))
    assert error == pytest.approx(2.0 * np.sqrt(2000), rel=0.1)
    assert float(standard_error(reference + 1.0, reference)) == pytest.approx(0.0, abs=1e-9)


def test_a_map_without_structure_warns_that_the_width_is_not_bounded():
    # A flat Poisson map: every width explains it as well, the search ends at its upper bound.
    flat = np.random.default_rng(1).poisson(100.0, (64, 64)).astype(np.float32)
    with pytest.warns(BlindWidthWarning, match=r"width of map\(s\) \[0\] \(at the upper end"):
        result = asirp.restore(flat, "blind_richardson_lucy", psf_sigma_px=1.5, device="cpu")
    report = result.params["sigma_search_report"]
    assert report["at_bound"]
    assert not report["identified"]
    assert any("did not determine the beam width" in note for note in result.cautions())


def test_a_one_axis_psf_gets_a_clear_error_from_the_width_search():
    from asirp.tomo.restore_projections import row_psf as detector_row_psf

    row_psf = detector_row_psf(2.0)  # blur along the columns only, shape (1, w)
    image = make_noisy_map(shape=(32, 32), seed=3).measured
    with pytest.raises(ValueError, match="needs a blur along both axes"):
        asirp.restore(image, "blind_richardson_lucy", psf=row_psf)
    # without the search the method runs on such a PSF
    kept = asirp.restore(image, "blind_richardson_lucy", psf=row_psf, sigma_search="none")
    assert kept.image.shape == image.shape
    assert np.isfinite(kept.image).all()
