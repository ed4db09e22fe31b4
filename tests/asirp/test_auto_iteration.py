"""``method="auto"`` (the measured selector and its rule prior) and the iteration control."""

from __future__ import annotations

import numpy as np
import pytest

import asirp
from tests.conftest import make_noisy_map


@pytest.mark.parametrize("kind", ["mesh", "tissue", "star"])
@pytest.mark.parametrize("peak", [5.0, 50.0, 1000.0])
def test_auto_never_makes_documented_data_worse(kind, peak):
    sample = make_noisy_map(kind, peak=peak, seed=11)
    result = asirp.restore(sample.measured, psf_sigma_px=2.0, reference=sample.truth, mode="cheap")
    assert result.metrics["psnr"] > result.metrics["psnr_input"]
    assert result.metrics["ssim"] > result.metrics["ssim_input"]
    assert result.params["selection"]["source"] == "scored"
    assert result.params["auto_reason"]


def test_auto_does_not_thin_data_with_negative_values_as_counts():
    sample = make_noisy_map("mesh", peak=100.0)
    shifted = sample.measured - 40.0  # an over-subtracted dark
    result = asirp.restore(shifted, psf_sigma_px=2.0, reference=sample.truth - 40.0, mode="cheap")
    assert result.params["selection"]["context"]["split"] == "fission"
    assert "negative" in result.params["auto_reason"]
    assert result.metrics["psnr"] > result.metrics["psnr_input"]


def test_maps_too_small_to_score_get_the_rule_prior():
    image = make_noisy_map("mesh", peak=2.0, shape=(24, 24)).measured
    result = asirp.restore(image, psf_sigma_px=2.0)
    assert result.params["selection"]["source"] == "rule"
    assert result.params["auto_reason"].startswith("very low counts")
    assert result.params["iterations_run"] == 10
    assert "too small" in result.params["auto_reason"]


def test_discrepancy_stops_earlier_for_noisier_data():
    noisy = make_noisy_map("mesh", peak=20.0, seed=2)
    clean = make_noisy_map("mesh", peak=5000.0, seed=2)
    runs = [
        asirp.restore(s.measured, "richardson_lucy", psf_sigma_px=2.0, iterations=300)
        for s in (noisy, clean)
    ]
    assert runs[0].params["stopped_by"] == "discrepancy"
    assert 1 <= runs[0].params["iterations_run"] < runs[1].params["iterations_run"]


def test_stagnation_and_fixed_counts():
    sample = make_noisy_map("mesh", peak=200.0)
    fixed = asirp.restore(
        sample.measured, "landweber", psf_sigma_px=2.0, iterations=12, stop="fixed"
    )
    assert fixed.params["iterations_run"] == 12
    stagnant = asirp.restore(
        sample.measured,
        "landweber",
        psf_sigma_px=2.0,
        iterations=5000,
        stop="stagnation",
        tolerance=1e-3,
    )
    assert 1 < stagnant.params["iterations_run"] < 5000


def test_each_image_of_a_stack_stops_on_its_own():
    stack = np.stack([make_noisy_map("mesh", peak=p, seed=3).measured for p in (20.0, 5000.0)])
    result = asirp.restore(stack, "richardson_lucy", psf_sigma_px=2.0, iterations=300)
    first, second = result.params["iterations_run"]
    assert first < second


def test_normalised_maps_get_an_estimated_counts_gain():
    sample = make_noisy_map("mesh", peak=400.0)
    normalised = sample.measured / 37.0  # counts divided by an I0 reading
    result = asirp.restore(normalised, "richardson_lucy", psf_sigma_px=2.0)
    counts = asirp.restore(sample.measured, "richardson_lucy", psf_sigma_px=2.0)
    assert result.params["counts_gain"] == pytest.approx(1 / 37.0, rel=0.3)
    assert abs(result.params["iterations_run"] - counts.params["iterations_run"]) <= 3
