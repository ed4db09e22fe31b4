"""Every method: quality gain, shapes and dtypes, stacks, boundaries, cancellation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import asirp
import asirp.psf
from tests.conftest import make_noisy_map

# Deconvolution methods (same-size output); super-resolution is tested in tests/asirp/sr/.
DECONVOLUTION = [*asirp.available_methods("non-blind"), *asirp.available_methods("blind")]


# blind RL's width search may flag this 64 x 64 mesh (its estimate is then ~18 % narrow); the
# warning is tested in test_blind.py, the quality gain here
@pytest.mark.filterwarnings("ignore::asirp.methods.blind_richardson_lucy.BlindWidthWarning")
@pytest.mark.parametrize("method", [*DECONVOLUTION, "auto"])
def test_every_method_beats_the_blurred_input(method, mesh_map):
    result = asirp.restore(
        mesh_map.measured, method, psf_sigma_px=2.0, reference=mesh_map.truth, device="cpu"
    )
    assert result.image.dtype == np.float32
    assert result.image.shape == mesh_map.measured.shape
    assert result.metrics["psnr"] > result.metrics["psnr_input"] + 0.5
    assert result.metrics["ssim"] > result.metrics["ssim_input"] + 0.05
    assert result.method != "auto"
    assert result.psf is not None
    assert result.elapsed_s > 0


@pytest.mark.parametrize("method", DECONVOLUTION)
def test_stack_matches_images_restored_one_by_one(method):
    maps = [make_noisy_map("mesh", seed=seed, shape=(32, 40)) for seed in (1, 2, 3)]
    stack = np.stack([m.measured for m in maps])
    params = {"max_samples": 20} if method == "unsupervised_wiener" else {}
    together = asirp.restore(stack, method, psf_sigma_px=2.0, seed=5, **params)
    assert together.image.shape == stack.shape
    for index in range(len(maps)):
        alone = asirp.restore(stack[index], method, psf_sigma_px=2.0, seed=5, **params)
        np.testing.assert_allclose(together.image[index], alone.image, rtol=2e-3, atol=1e-2)
    if method == "blind_richardson_lucy":
        assert together.psf.shape[0] == 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_integer_and_float_inputs_give_float32(dtype, mesh_map):
    image = np.clip(mesh_map.measured, 0, 255).astype(dtype)
    before = image.copy()
    result = asirp.restore(image, "richardson_lucy", psf_sigma_px=2.0)
    assert result.image.dtype == np.float32
    np.testing.assert_array_equal(image, before)  # the input is never modified


def test_richardson_lucy_agrees_with_scikit_image_for_the_same_boundary():
    from skimage.restoration import richardson_lucy

    # Zero boundary (scipy.signal.convolve mode="same"), flat start, no acceleration; a
    # phantom whose border is empty so the normalisation H^T 1 plays no role.
    sample = make_noisy_map("mesh", peak=1.0, shape=(64, 64))
    image = np.zeros_like(sample.measured)
    image[12:-12, 12:-12] = sample.truth[12:-12, 12:-12]
    from asirp.metrics import blur

    blurred = blur(image, sample.psf).astype(np.float32)
    blurred[:6], blurred[-6:], blurred[:, :6], blurred[:, -6:] = 0, 0, 0, 0
    ours = asirp.restore(
        blurred,
        "richardson_lucy",
        psf=sample.psf,
        iterations=10,
        stop="fixed",
        acceleration=False,
        boundary="zero",
        initial="flat",
        device="cpu",
    )
    theirs = richardson_lucy(blurred, sample.psf, num_iter=10, clip=False)
    np.testing.assert_allclose(ours.image, theirs, rtol=1e-3, atol=1e-4 * theirs.max())


def test_blind_richardson_lucy_keeps_the_psf_valid_and_returns_it():
    sample = make_noisy_map("mesh", peak=500.0, shape=(96, 96), sigma_px=2.5, seed=3)
    result = asirp.restore(
        sample.measured,
        "blind_richardson_lucy",
        psf_sigma_px=1.8,
        psf_support_px=21,
        iterations=30,
        stop="fixed",
    )
    assert result.psf.shape == (21, 21)
    assert result.psf.min() >= 0
    assert result.psf.sum() == pytest.approx(1.0, abs=1e-4)
    assert result.params["iterations_run"] == 30
    initial = asirp.psf.gaussian_psf(1.8)
    assert not np.allclose(result.psf[2:-2, 2:-2], initial, atol=1e-4)  # it was estimated


@pytest.mark.parametrize("method", ["richardson_lucy", "landweber", "wiener", "tikhonov"])
def test_edges_do_not_ring(method):
    # A smooth ramp whose opposite edges differ strongly: periodic filtering would ring there.
    rows, cols = np.mgrid[0:64, 0:64]
    truth = 20.0 + 3.0 * cols + 1.0 * rows
    from asirp.metrics import blur
    from asirp.psf import gaussian_psf

    measured = blur(truth, gaussian_psf(2.0)).astype(np.float32)
    result = asirp.restore(measured, method, psf_sigma_px=2.0, device="cpu")
    edge_error = np.abs(result.image - truth)[:, -4:].max() / truth.max()
    assert edge_error < 0.05


def test_progress_is_reported_and_cancel_stops():
    sample = make_noisy_map("mesh")
    fractions = []
    asirp.restore(
        sample.measured,
        "richardson_lucy",
        psf_sigma_px=2.0,
        iterations=5,
        stop="fixed",
        progress=fractions.append,
    )
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(asirp.RestorationCancelled):
        asirp.restore(sample.measured, "landweber", psf_sigma_px=2.0, cancel=cancel)


def test_background_is_part_of_the_model():
    sample = make_noisy_map("mesh", peak=100.0)
    offset = 50.0
    rng = np.random.default_rng(7)
    from asirp.metrics import blur

    measured = rng.poisson(blur(sample.truth, sample.psf) + offset).astype(np.float32)
    with_background = asirp.restore(
        measured, "richardson_lucy", psf_sigma_px=2.0, background=offset, reference=sample.truth
    )
    ignored = asirp.restore(measured, "richardson_lucy", psf_sigma_px=2.0)
    from asirp.metrics import psnr

    assert with_background.metrics["psnr"] > psnr(sample.truth, ignored.image - offset) - 0.5
    assert with_background.params["background"] == offset


def test_restoration_params_are_json_and_complete(mesh_map):
    import json

    result = asirp.restore(mesh_map.measured, "richardson_lucy", beam_fwhm_um=50, pixel_um=10)
    text = json.dumps(result.provenance())
    assert "iterations_run" in text
    assert result.params["iterations"] == 100  # the default applied
    assert 1 <= result.params["iterations_run"] <= 100
    # The default device is "auto": CUDA when present, else the CPU; params name the one used.
    assert result.params["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert result.psf_description["beam_fwhm_um"] == [50.0, 50.0]
    assert result.psf_description["sigma_px"][0] == pytest.approx(50 / 2.3548 / 10, rel=1e-3)
