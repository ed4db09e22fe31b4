"""Smoke test of the weights shipped in asirp/models/: they load and beat bicubic by 1 dB."""

from __future__ import annotations

import warnings

import numpy as np

import asirp
from asirp.metrics import psnr
from asirp.sr import ConsistencyWarning
from asirp.sr.data import heldout_set
from asirp.sr.weights import load_weights, shipped_weights_path
from tests.asirp.sr.conftest import bicubic


def test_shipped_weights_load_and_beat_bicubic_on_the_held_out_star():
    for scale in (2, 4):
        star = next(image for image in heldout_set(scale) if image.name == "star")
        measured, truth = star.measured, star.truth  # 128 or 64 px measured, 256 px fine
        baseline = psnr(truth, bicubic(measured, scale))
        for arch in ("fca_sr", "rrdb_sr"):
            path = shipped_weights_path(arch, scale)
            metadata = load_weights(path).metadata
            assert metadata["training"]["command"].startswith(f"asirp train {arch}")
            assert path.stat().st_size < 4 * 2**20  # a few MB at most
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConsistencyWarning)
                result = asirp.restore(
                    measured, arch, psf_sigma_px=star.sigma_px, scale=scale, device="cpu"
                )
            assert np.isfinite(result.image).all()
            gain = psnr(truth, result.image) - baseline
            assert gain > 1.0, f"{arch} x{scale}: {gain:+.2f} dB over bicubic"


def test_the_self_ensemble_of_the_shipped_networks_is_no_worse_on_held_out_maps():
    for image in heldout_set(2):
        baseline = psnr(image.truth, bicubic(image.measured, 2))
        for arch in ("fca_sr", "rrdb_sr"):
            gains = {}
            for self_ensemble in (False, True):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConsistencyWarning)
                    result = asirp.restore(
                        image.measured,
                        arch,
                        psf_sigma_px=image.sigma_px,
                        scale=2,
                        device="cpu",
                        self_ensemble=self_ensemble,
                        split_guard=False,
                    )
                assert result.params["self_ensemble"] is self_ensemble
                gains[self_ensemble] = psnr(image.truth, result.image) - baseline
            assert gains[True] > gains[False] - 0.05, (image.name, arch, gains)
