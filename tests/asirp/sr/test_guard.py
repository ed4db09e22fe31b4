"""The split-data hallucination guard of super-resolution (asirp.sr.guard, issue 20 item 4)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import asirp
import asirp.sr.runner as runner
import asirp.sr.zssr as zssr_module
from asirp.cli import main
from asirp.sr.consistency import ConsistencyWarning
from asirp.sr.guard import guard_figures, significant_rings, split_halves
from asirp.tomo.exchange import read_scan
from asirp.tomo.normalise import flat_dark_correct
from tests.conftest import TOOTH_H5

GUARD_METRICS = (
    "split_agreement_resolution_px",
    "data_resolution_px",
    "invented_detail",
    "noise_dominated",
)


def restore(image, method, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)  # flagged or not, it is reported
        return asirp.restore(image, method, scale=2, device="cpu", **params)


def notes_with(result, words):
    return [note for note in result.cautions() if words in note]


@pytest.fixture(scope="module")
def tooth_crop():
    """128 x 128 of a flat/dark-corrected sinogram of TomoPy's tooth (transmission, not counts)."""
    scan = read_scan(TOOTH_H5)
    transmission = flat_dark_correct(scan.projections, scan.flats, scan.darks).values
    sinogram = transmission[:, 0, :]  # (181 angles, 640 px)
    return np.ascontiguousarray(sinogram[20:148, 200:328])


@pytest.fixture(scope="module")
def smooth_phantom():
    """A smooth, well-sampled 64 x 64 map at high counts (Poisson, about 2000 to 6000)."""
    rows, cols = np.mgrid[:64, :64]
    blob = np.exp(-((rows - 30.0) ** 2 + (cols - 34.0) ** 2) / (2 * 12.0**2))
    spot = np.exp(-((rows - 15.0) ** 2 + (cols - 45.0) ** 2) / (2 * 6.0**2))
    mean = 2000.0 * (1.0 + blob + 0.8 * spot + 0.5 * np.sin(cols / 9.0))
    return np.random.default_rng(3).poisson(mean).astype(np.float32)


@pytest.mark.parametrize("side", [11, 32])
@pytest.mark.parametrize("method", ["fca_sr", "rrdb_sr"])
def test_pure_noise_is_called_noise_dominated(side, method):
    noise = np.random.default_rng(side).poisson(20.0, (side, side)).astype(np.float32)
    result = restore(noise, method)
    assert result.image.shape == (2 * side, 2 * side)
    assert result.params["split_guard_status"] == "ran (binomial split)"
    assert result.metrics["noise_dominated"] is True
    (note,) = notes_with(result, "noise-dominated")
    assert note.startswith("the input is noise-dominated: two independent halves of the data")
    assert method in note


def test_tooth_sinogram_detail_from_fca_sr_is_flagged_as_invented(tooth_crop):
    result = restore(tooth_crop, "fca_sr")
    figures = result.metrics
    assert result.params["split_guard_status"] == "ran (fission split)"  # not counts: data fission
    assert figures["invented_detail"] is True
    assert figures["noise_dominated"] is False
    # the networks' halves agree to the fine grid's Nyquist, the data's halves at about 2 px
    assert figures["split_agreement_resolution_px"] * 1.25 < figures["data_resolution_px"]
    (note,) = notes_with(result, "invented detail")
    assert note.startswith("fca_sr invented detail: its super-resolutions of two independent")


@pytest.mark.parametrize("method", ["fca_sr", "rrdb_sr"])
def test_a_smooth_well_sampled_map_is_not_flagged(smooth_phantom, method):
    result = restore(smooth_phantom, method)
    assert result.params["split_guard_status"] == "ran (binomial split)"
    assert result.metrics["invented_detail"] is False
    assert result.metrics["noise_dominated"] is False
    assert not notes_with(result, "split-data guard")


def test_the_guard_can_be_disabled_and_skips_large_maps(smooth_phantom, monkeypatch):
    off = restore(smooth_phantom, "fca_sr", split_guard=False)
    assert off.params["split_guard_status"] == "disabled (split_guard=False)"
    assert not set(GUARD_METRICS) & set(off.metrics)
    monkeypatch.setattr(runner, "MAX_GUARD_PIXELS", 32 * 32)
    large = restore(smooth_phantom, "rrdb_sr")
    assert large.params["split_guard_status"].startswith(
        "skipped: 64x64 px maps exceed the guard's"
    )
    assert not set(GUARD_METRICS) & set(large.metrics)


def test_zssr_guards_with_the_network_trained_once_per_map(tooth_crop, monkeypatch):
    trained = []
    original = zssr_module.train_zssr

    def counting(*args, **kwargs):
        trained.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(zssr_module, "train_zssr", counting)
    stack = np.stack([tooth_crop[:48, :48], tooth_crop[64:112, 64:112]])
    result = restore(stack, "zssr", iterations=10, crop=32, eval_every=5)
    assert trained == [(48, 48), (48, 48)]  # one training per map, none for the halves
    assert result.params["split_guard_status"] == "ran (fission split)"
    assert isinstance(result.metrics["invented_detail"], bool)
    assert 0.0 < result.metrics["split_agreement_resolution_px"] < 48.0


def test_stack_cautions_count_the_flagged_maps(tooth_crop):
    stack = np.stack([tooth_crop[:64, :64], tooth_crop[64:, 64:]])
    result = restore(stack, "fca_sr")
    (note,) = notes_with(result, "invented detail")
    assert note.startswith("fca_sr invented detail on 2 of 2 maps:")


def test_figures_of_identical_processing_agree_with_the_data():
    # bicubic interpolation as the "method": it adds nothing, so nothing can be flagged
    import torch
    import torch.nn.functional as F

    rows, cols = np.mgrid[:48, :48]
    image = np.random.default_rng(0).poisson(500.0 * (2 + np.sin(cols / 4.0) * np.cos(rows / 5.0)))
    first, second, kind = split_halves(image.astype(np.float32), seed=1)
    assert kind == "binomial"
    pair = torch.from_numpy(np.stack([first, second]))[:, None]
    fine = F.interpolate(pair, scale_factor=2, mode="bicubic", align_corners=False)[:, 0].numpy()
    verdict = guard_figures(fine[0], fine[1], first, second, 2, kind)
    assert verdict.split_agreement_resolution_px == verdict.data_resolution_px
    assert verdict.invented_detail is False
    assert verdict.noise_dominated is False
    assert significant_rings(first, second) >= 1
    noise = np.random.default_rng(2).poisson(500.0, (2, 48, 48)).astype(np.float32)
    assert significant_rings(noise[0], noise[1]) == 0  # chance agreement is not counted


def test_the_cli_prints_the_guards_caution(tmp_path, tooth_crop, capsys):
    np.save(tmp_path / "tooth.npy", tooth_crop)
    arguments = ["restore", str(tmp_path / "tooth.npy"), "-o", str(tmp_path / "sr.h5")]
    assert main([*arguments, "-m", "fca_sr"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("asirp: caution: fca_sr invented detail") for line in lines)


def test_a_stack_is_flagged_when_any_of_its_maps_is(smooth_phantom):
    noise = np.random.default_rng(5).poisson(2000.0, smooth_phantom.shape).astype(np.float32)
    stack = np.stack([smooth_phantom, noise])
    result = restore(stack, "fca_sr")
    alone = restore(smooth_phantom, "fca_sr")
    assert alone.metrics["noise_dominated"] is False
    # the noise map flags the stack (a warning holds if one map warrants it) ...
    assert result.metrics["noise_dominated"] is True
    (note,) = notes_with(result, "noise-dominated")
    assert "1 of 2 maps" in note
    # ... while "consistent", a good sign, needs every map
    assert result.metrics["consistent"] is (
        restore(noise, "fca_sr").metrics["consistent"] and alone.metrics["consistent"]
    )
