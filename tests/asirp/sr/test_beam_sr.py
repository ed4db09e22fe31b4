"""``beam_sr``: the network told the beam, its training family and the shipped weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import asirp
from asirp.metrics import psnr
from asirp.psf import gaussian_psf
from asirp.sr import ConsistencyWarning
from asirp.sr.data import (
    BEAM_FAMILY_MAX_ANISOTROPY,
    BEAM_FAMILY_MAX_BACKGROUND,
    BEAM_FAMILY_SIGMA_RANGE,
    heldout_structures,
    make_pairs,
)
from asirp.sr.evalset import blur_area_sample
from asirp.sr.inference import dihedral, undo_dihedral, upscale
from asirp.sr.models import BeamFCASRNet, beam_planes
from asirp.sr.weights import load_weights, shipped_weights_path
from tests.asirp.sr.conftest import bicubic


def random_beam_network() -> BeamFCASRNet:
    torch.manual_seed(0)  # only for this test's random network
    network = BeamFCASRNet(2, channels=8, groups=1, blocks=1, reduction=2).eval()
    torch.nn.init.normal_(network.tail.weight, std=0.1)
    return network


def test_the_network_reads_the_beam_planes():
    network = random_beam_network()
    maps = torch.rand(1, 1, 12, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        round_beam = network(beam_planes(maps, [(0.5, 0.5)]))
        long_beam = network(beam_planes(maps, [(1.2, 0.5)]))
    assert round_beam.shape == (1, 1, 24, 20)
    assert (round_beam - long_beam).abs().max() > 1e-3


def test_beam_planes_are_constant_per_map():
    maps = torch.zeros(2, 1, 3, 4)
    planes = beam_planes(maps, [(0.5, 1.5), (2.0, 0.25)])
    assert planes.shape == (2, 3, 3, 4)
    assert torch.all(planes[0, 1] == 0.5)
    assert torch.all(planes[0, 2] == 1.5)
    assert torch.all(planes[1, 1] == 2.0)
    assert torch.all(planes[1, 2] == 0.25)


def test_the_self_ensemble_swaps_the_beam_axes_on_transposed_turns():
    network = random_beam_network()
    maps = torch.rand(1, 16, 12, generator=torch.Generator().manual_seed(2)) * 50
    beam = (1.1, 0.4)
    ensemble = upscale(network, maps, 2, tile=1024, overlap=0, self_ensemble=True, beams=[beam])
    by_hand = []
    for index in range(8):
        turned_beam = beam[::-1] if index & 4 else beam
        fine = upscale(network, dihedral(maps, index), 2, tile=1024, overlap=0, beams=[turned_beam])
        by_hand.append(undo_dihedral(fine, index))
    torch.testing.assert_close(ensemble, torch.stack(by_hand).mean(dim=0), rtol=1e-4, atol=1e-3)
    unswapped = upscale(
        network, dihedral(maps, 4), 2, tile=1024, overlap=0, beams=[beam]
    )  # the wrong way round: a different result
    assert (undo_dihedral(unswapped, 4) - by_hand[4]).abs().max() > 1e-3


def test_the_training_family_has_elongated_beams_within_its_ranges():
    structures = torch.rand(64, 16, 16, generator=torch.Generator().manual_seed(3))
    pairs = make_pairs(structures, 2, torch.Generator().manual_seed(4), anisotropic=True)
    rows, cols = pairs.sigma_axes_px[:, 0], pairs.sigma_axes_px[:, 1]
    torch.testing.assert_close(pairs.sigma_px, torch.sqrt(rows * cols))
    low, high = BEAM_FAMILY_SIGMA_RANGE
    assert pairs.sigma_px.min() >= low
    assert pairs.sigma_px.max() <= high
    ratio = rows / cols
    assert ratio.max() <= BEAM_FAMILY_MAX_ANISOTROPY * (1 + 1e-6)
    assert ratio.min() >= 1 / BEAM_FAMILY_MAX_ANISOTROPY * (1 - 1e-6)
    assert (ratio - 1).abs().max() > 0.3  # elongated beams are drawn, both ways
    assert ratio.max() > 1.3
    assert ratio.min() < 1 / 1.3
    assert pairs.measured.shape == (64, 8, 8)
    assert pairs.truth.shape == (64, 16, 16)
    floor = pairs.truth.amin(dim=(1, 2)) / pairs.truth.amax(dim=(1, 2))
    assert floor.max() <= BEAM_FAMILY_MAX_BACKGROUND + 1e-6


def test_the_isotropic_family_is_unchanged_by_the_new_one():
    structures = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(5))
    pairs = make_pairs(structures, 2, torch.Generator().manual_seed(6))
    torch.testing.assert_close(pairs.sigma_axes_px[:, 0], pairs.sigma_px)
    torch.testing.assert_close(pairs.sigma_axes_px[:, 1], pairs.sigma_px)


@pytest.mark.parametrize("scale", [2, 4])
def test_shipped_weights_beat_bicubic_and_use_the_beam_they_are_told(scale):
    path = shipped_weights_path("beam_sr", scale)
    metadata = load_weights(path).metadata
    assert metadata["training"]["command"].startswith(f"asirp train beam_sr --scale {scale}")
    assert path.stat().st_size < 4 * 2**20
    # an elongated beam on a held-out structure (training never drew these maps)
    truth = 300.0 * (0.05 + heldout_structures()["star"])
    beam = (1.0, 0.5)
    measured = np.random.default_rng(8).poisson(blur_area_sample(truth, beam, scale))
    baseline = psnr(truth, bicubic(measured.astype(np.float32), scale))
    gains = {}
    for label, told in (("true", beam), ("swapped", beam[::-1])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConsistencyWarning)
            result = asirp.restore(
                measured,
                "beam_sr",
                psf=gaussian_psf(told),
                scale=scale,
                device="cpu",
                split_guard=False,
            )
        assert result.params["beam_axes_px"] == pytest.approx(told, abs=0.02)  # one map
        gains[label] = psnr(truth, result.image) - baseline
    assert gains["true"] > 1.0, gains
    assert gains["true"] > gains["swapped"] + 0.15, gains


def test_without_a_psf_it_says_it_needs_one():
    counts = np.random.default_rng(9).poisson(80.0, (24, 24)).astype(np.float32)
    with pytest.raises(ValueError, match="needs a PSF"):
        asirp.restore(counts, "beam_sr", scale=2, device="cpu")


def test_the_public_function_gives_what_restore_gives():
    counts = np.random.default_rng(10).poisson(80.0, (24, 24)).astype(np.float32)
    psf = gaussian_psf((0.9, 0.6))
    image = asirp.beam_sr(counts, psf, device="cpu", split_guard=False)
    expected = asirp.restore(counts, "beam_sr", psf=psf, device="cpu", split_guard=False).image
    np.testing.assert_array_equal(image, expected)
