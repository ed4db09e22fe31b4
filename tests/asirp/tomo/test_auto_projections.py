"""``auto`` on tomography projections: scored as FBP sees them, and never near a tie with none.

The phantom here is seed 9 of :func:`sim.tomo.simulate_tomo` at 1000 open-beam counts (the
ramp weighting, band floor and margin were fixed on seeds 0-8; the bench evaluates 200-204).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import asirp
import asirp.selection.context as selection_context
from asirp.selection.context import TOMO_ALPHA_FLOOR, alpha_floor, emphasis_for, make_context
from asirp.selection.score import ALPHA_RANGE, band_weights, ramp_emphasis
from asirp.tomo.normalise import flat_dark_correct, minus_log
from asirp.tomo.quality import psnr_db
from asirp.tomo.reconstruct import reconstruct
from asirp.tomo.restore_projections import row_psf
from sim.tomo import simulate_tomo

SHAPE = (4, 96)
FWHM_PX = 2.5
ROW = 2


@pytest.fixture(scope="module")
def phantom():
    data = simulate_tomo(
        shape=SHAPE, n_angles=120, pixel_um=10.0, psf_fwhm_um=25.0, flat_counts=1000.0, rng=9
    )
    transmission = flat_dark_correct(data.data, data.data_white, data.data_dark).values
    angles = np.deg2rad(data.theta_deg)
    centre = (SHAPE[1] - 1) / 2.0
    truth = reconstruct(
        data.line_integrals.astype(np.float32), angles, centre, rows=np.array([ROW])
    )
    return np.ascontiguousarray(transmission[:, ROW, :]), angles, centre, truth


def _slice(sinogram: np.ndarray, angles: np.ndarray, centre: float) -> np.ndarray:
    return reconstruct(minus_log(sinogram[:, None, :]), angles, centre)


def test_ramp_emphasis_weights_the_detector_axis_like_fbp():
    ramp = ramp_emphasis((8, 64))
    assert ramp.shape == (1, 33)
    assert ramp[0, 0] == 0.0  # a constant offset along a row does not reach the slice
    assert np.all(np.diff(ramp[0]) > 0)
    full = np.abs(np.fft.fftfreq(64)) / np.mean(np.abs(np.fft.fftfreq(64)))
    assert full.mean() == pytest.approx(1.0)  # white noise keeps its energy
    assert ramp[0, 32] == pytest.approx(full[32])


def test_ramp_weights_only_tomography():
    psf = row_psf(FWHM_PX)
    flat = band_weights(psf, (40, 40), 1, torch.device("cpu"), 1e-2)
    ramp = band_weights(psf, (40, 40), 1, torch.device("cpu"), 1e-2, "ramp")
    assert torch.all(ramp.residual[:, 0] == 0)
    assert torch.all(flat.residual[:, 0] > 0)
    with pytest.raises(ValueError, match="emphasis"):
        band_weights(psf, (40, 40), 1, torch.device("cpu"), 1e-2, "quadratic")
    stack = np.ones((1, 40, 40), dtype=np.float32)
    tomo = make_context(stack, None, modality="tomo_projection")
    xrf = make_context(stack, None, modality="xrf_map")
    assert (emphasis_for(tomo), emphasis_for(xrf)) == ("ramp", "flat")
    assert (alpha_floor(tomo), alpha_floor(xrf)) == (TOMO_ALPHA_FLOOR, ALPHA_RANGE[0])


def test_auto_improves_the_reconstruction_of_a_phantom(phantom):
    sinogram, angles, centre, truth = phantom
    result = asirp.restore(sinogram, "auto", psf=row_psf(FWHM_PX), modality="tomo_projection")
    context = result.params["selection"]["context"]
    assert context["band_alpha"] >= TOMO_ALPHA_FLOOR
    assert result.method != "identity", result.params["auto_reason"]
    gain = psnr_db(_slice(result.image, angles, centre), truth) - psnr_db(
        _slice(sinogram, angles, centre), truth
    )
    assert gain > 0.5, (result.method, gain)


def test_a_restoration_below_the_margin_leaves_the_projections_as_measured(phantom, monkeypatch):
    sinogram = phantom[0]
    monkeypatch.setattr(selection_context, "TOMO_MARGIN_DB", 60.0)
    selection = asirp.select(sinogram, psf=row_psf(FWHM_PX), modality="tomo_projection")
    assert selection.method == "identity"
    assert "below the 60 dB margin this modality requires" in selection.reason
    assert selection.reason.endswith("The data are left as they are.")
    best = selection.candidates[0]
    assert best.method != "identity"
    assert 0 < best.gain_db < 60.0


def test_wiener_with_an_estimated_nsr_is_left_out_for_projections(phantom):
    sinogram = phantom[0]
    selection = asirp.select(
        sinogram, psf=row_psf(FWHM_PX), modality="tomo_projection", candidates=["wiener"]
    )
    assert selection.method == "identity"
    assert "left out for tomo_projection" in selection.context["excluded"]["wiener"]
    fixed = asirp.select(
        sinogram, psf=row_psf(FWHM_PX), modality="tomo_projection", candidates=["wiener"], nsr=0.01
    )
    assert any(c.method == "wiener" and c.score is not None for c in fixed.candidates)
