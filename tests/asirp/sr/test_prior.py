"""The learned prior: the shipped denoiser (asirp.sr.denoiser) and rl_sr's plug-and-play stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import asirp
from asirp import threads
from asirp.metrics import psnr
from asirp.phantoms import copper_mesh
from asirp.psf import gaussian_psf
from asirp.sr import train_denoiser
from asirp.sr.data import random_structure
from asirp.sr.degrade import degrade
from asirp.sr.denoiser import (
    PriorDenoiser,
    load_denoiser,
    shipped_path,
)
from asirp.sr.weights import (
    WeightsArchitectureError,
    WeightsTooLargeError,
    save_weights,
    shipped_weights_path,
)


def test_the_shipped_denoiser_is_small_and_removes_poisson_noise_from_fresh_maps():
    assert shipped_path().stat().st_size < 1 << 20  # a few hundred kB
    network = load_denoiser()
    rng = np.random.default_rng(2024_12_04)  # not the training seed (11) or its validation (12)
    generator = torch.Generator().manual_seed(1)
    truth = torch.from_numpy(np.stack([random_structure((64, 64), rng) for _ in range(6)]))
    truth = truth.float()[:, None]
    counts = 100.0
    noisy = torch.poisson(truth * counts, generator=generator) / counts
    with torch.no_grad():
        denoised = network(noisy, (truth / counts).sqrt())
    gain = np.mean(
        [psnr(t[0].numpy(), d[0].numpy()) - psnr(t[0].numpy(), n[0].numpy())
         for t, d, n in zip(truth, denoised, noisy, strict=True)]
    )  # fmt: skip
    assert gain > 3.0, gain
    # the metadata say how the weights were made, with the command that remakes them
    from asirp.sr.weights import load_weights

    training = load_weights(shipped_path()).metadata["training"]
    assert training["command"].startswith("python -m asirp.sr.train_denoiser")
    assert "evalset" not in json.dumps(training)


def test_training_is_reproducible_and_never_overwrites(tmp_path):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    with threads.fixed_threads(1):
        for output in (first, second):
            train_denoiser.train_denoiser(output, steps=2, batch=2, patch=24, log=lambda _: None)
    a, b = load_denoiser(first), load_denoiser(second)
    for (name, left), (_, right) in zip(
        a.state_dict().items(), b.state_dict().items(), strict=True
    ):
        assert torch.equal(left, right), name
    with pytest.raises(SystemExit):
        train_denoiser.main(["-o", str(first), "--steps", "1"])


def test_other_weights_and_absurd_configurations_are_refused(tmp_path):
    with pytest.raises(WeightsArchitectureError, match="prior_denoiser"):
        load_denoiser(shipped_weights_path("fca_sr", 2))
    bad = save_weights(
        PriorDenoiser(4), tmp_path / "big.safetensors", arch="prior_denoiser", scale=1,
        config={"channels": 100_000},
    )  # fmt: skip
    with pytest.raises(WeightsTooLargeError, match="channels"):
        load_denoiser(bad)
    wrong = save_weights(
        PriorDenoiser(4), tmp_path / "wrong.safetensors", arch="prior_denoiser", scale=1,
        config={"channels": 8},
    )  # fmt: skip
    with pytest.raises(WeightsArchitectureError, match="do not fit"):
        load_denoiser(wrong)
    odd = save_weights(
        PriorDenoiser(4), tmp_path / "odd.safetensors", arch="prior_denoiser", scale=1, config=7
    )
    with pytest.raises(WeightsArchitectureError, match="bad configuration"):
        load_denoiser(odd)
    with pytest.raises(FileNotFoundError):
        load_denoiser(tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def mesh_x2():
    """A 64 x 64 measured copper mesh (x2, 2000 counts, anisotropic beam) and its truth."""
    fine = copper_mesh((128, 128), 5.0, hole_um=60.0, bar_um=20.0, angle_deg=11.0)
    truth = torch.from_numpy(2000.0 * (0.1 + fine)).float()[None]
    axes = (0.9, 0.6)
    clean = degrade(truth, axes[0], 2, sigma_cols_px=axes[1])
    measured = torch.poisson(clean, generator=torch.Generator().manual_seed(8))
    return measured[0].numpy(), truth[0].numpy(), axes


def test_the_prior_beats_plain_richardson_lucy_on_sharp_structure(mesh_x2):
    measured, truth, axes = mesh_x2
    psf = gaussian_psf(axes)
    with threads.fixed_threads(2):
        plain = asirp.restore(measured, "rl_sr", psf=psf, device="cpu")
        prior = asirp.restore(measured, "rl_sr", psf=psf, prior_weight=1.0, device="cpu")
        again = asirp.restore(measured, "rl_sr", psf=psf, prior_weight=1.0, device="cpu")
    assert np.array_equal(prior.image, again.image)
    # (total variation does better still on this piecewise-constant mesh: the model card's
    # figures say where each prior pays, and auto's scores choose between them)
    gain = psnr(truth, prior.image) - psnr(truth, plain.image)
    assert gain > 1.0, gain
    assert prior.image.shape == (128, 128)
    assert float(prior.image.min()) >= 0.0
    assert prior.params["stopped_by"] == "prior_schedule"
    assert prior.params["prior"]["prior_weight"] == 1.0
    assert prior.metrics["consistent"]
    # the split-data guard runs with the learned prior (it is a prior: it could invent)
    assert prior.params["split_guard_status"].startswith("ran")
    assert "invented_detail" in prior.metrics
    assert "split_guard_status" not in plain.params


def test_the_prior_is_one_prior_at_a_time_and_bad_weights_are_refused(mesh_x2):
    measured, _, axes = mesh_x2
    with pytest.raises(ValueError, match="one prior"):
        asirp.restore(measured, "rl_sr", psf=gaussian_psf(axes), prior_weight=1, tv_weight=0.01)
    with pytest.raises(ValueError, match="prior_weight"):
        asirp.restore(measured, "rl_sr", psf=gaussian_psf(axes), prior_weight=-1)
