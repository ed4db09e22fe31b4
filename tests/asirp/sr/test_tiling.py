"""Overlap tiling and the reversible normalisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from asirp.sr.inference import (
    dihedral,
    robust_normalisation,
    tile_layout,
    tiled_apply,
    undo_dihedral,
    upscale,
)
from asirp.sr.models import build_network


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "multiple"),
    [(1024, 256, 16, 1), (1000, 256, 32, 2), (300, 128, 16, 1), (64, 256, 16, 1), (130, 64, 8, 2)],
)
def test_tiles_cover_the_axis_with_the_overlap(length, tile, overlap, multiple):
    starts, size = tile_layout(length, tile, overlap, multiple)
    if length <= tile:
        assert (starts, size) == ([0], length)
    else:
        assert size <= tile
    assert starts[0] == 0
    assert starts[-1] + size == length
    assert size % multiple == 0
    assert all(start % multiple == 0 for start in starts)
    for before, after in itertools.pairwise(starts):
        assert before + size - after >= overlap  # neighbours overlap enough
        assert after > before


def test_tiled_equals_whole_for_a_pointwise_upsampler():
    images = torch.rand(2, 1, 70, 90, generator=torch.Generator().manual_seed(0))

    def nearest(tiles):
        return torch.nn.functional.interpolate(tiles, scale_factor=2, mode="nearest")

    tiled = tiled_apply(nearest, images, 2, tile=32, overlap=8, batch=3)
    torch.testing.assert_close(tiled, nearest(images))


def test_tiled_network_matches_the_untiled_result_away_from_seams():
    torch.manual_seed(0)  # only for this test's random network
    network = build_network("zssr", 2, {"channels": 8, "depth": 4}).eval()
    torch.nn.init.normal_(network.layers[-1].weight, std=0.1)
    maps = torch.rand(1, 80, 72, generator=torch.Generator().manual_seed(1)) * 100
    whole = upscale(network, maps, 2, tile=1024, overlap=0)
    tiled = upscale(network, maps, 2, tile=40, overlap=16, batch=2)
    assert tiled.shape == whole.shape == (1, 160, 144)
    # receptive field 4 px <= overlap / 4: the blend only mixes values that saw no tile edge
    torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-3)


def test_normalisation_is_reversible_and_maps_to_about_unit_range():
    maps = torch.stack(
        [torch.linspace(1000.0, 5000.0, 400).view(20, 20), torch.full((20, 20), 3.0)]
    )
    normalisation = robust_normalisation(maps)
    normalised = normalisation.apply(maps)
    assert float(normalised[0].min()) == pytest.approx(0.0, abs=0.01)
    assert float(normalised[0].max()) == pytest.approx(1.0, abs=0.01)
    assert np.isfinite(normalised[1].numpy()).all()  # a flat map keeps a finite scale
    torch.testing.assert_close(normalisation.invert(normalised), maps)


@pytest.mark.parametrize("index", range(8))
def test_every_dihedral_turn_is_undone(index):
    maps = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 1, 3, 5)
    turned = dihedral(maps, index)
    assert turned.shape[-2:] == ((5, 3) if index & 4 else (3, 5))
    torch.testing.assert_close(undo_dihedral(turned, index), maps)


def test_the_eight_turns_are_distinct():
    maps = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    seen = {tuple(dihedral(maps, index).flatten().tolist()) for index in range(8)}
    assert len(seen) == 8


def test_self_ensemble_averages_the_network_over_the_eight_turns():
    torch.manual_seed(0)  # only for this test's random network
    network = build_network("zssr", 2, {"channels": 8, "depth": 4}).eval()
    torch.nn.init.normal_(network.layers[-1].weight, std=0.1)
    maps = torch.rand(1, 24, 20, generator=torch.Generator().manual_seed(1)) * 100
    single = upscale(network, maps, 2, tile=1024, overlap=0)
    ensemble = upscale(network, maps, 2, tile=1024, overlap=0, self_ensemble=True)
    by_hand = torch.stack(
        [
            undo_dihedral(upscale(network, dihedral(maps, index), 2, tile=1024, overlap=0), index)
            for index in range(8)
        ]
    ).mean(dim=0)
    assert ensemble.shape == single.shape == (1, 48, 40)
    torch.testing.assert_close(ensemble, by_hand, rtol=1e-4, atol=1e-3)
    assert (ensemble - single).abs().max() > 1e-2  # a random network is not turn-invariant
    # every turn of the input gives the same ensemble (turned): it is turn-invariant
    turned = upscale(network, dihedral(maps, 5), 2, tile=1024, overlap=0, self_ensemble=True)
    torch.testing.assert_close(undo_dihedral(turned, 5), ensemble, rtol=1e-4, atol=1e-3)
