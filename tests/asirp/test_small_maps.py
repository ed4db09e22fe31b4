"""Small coarse maps (issue 14): the discrepancy rule's counts gain, and the cautions of a
restoration that changed nothing or stopped at once.

The maps are what a coarse µ-XRF scan gives: bright hotspots narrower than the 50 µm beam on a
low background, 11 x 11 to 29 x 29 pixels at 25-70 µm steps, Poisson counts normalised to the
mean flux of a monitor (``counts * mean(i0) / i0``: not integers, counts gain about 1).
"""

from __future__ import annotations

import numpy as np
import pytest

import asirp
from asirp.iteration import estimate_counts_gain
from asirp.restore import UNCHANGED_FRACTION
from tests.conftest import make_noisy_map

BEAM_UM = 50.0
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def coarse_map(
    seed: int, step_um: float, *, level: float = 1.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """A coarse map of sub-beam hotspots over a 700 µm field, normalised to the mean flux.

    Eight Gaussian hotspots (radius at half maximum 8-30 µm, peaks 50-500 counts times
    ``level``) on a background of 8 counts times ``level``; the beam blurs them analytically
    (Gaussians add their variances) and the map samples the pixel centres, as the simulator
    does.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, float)
        The measured map ``(n, n)`` float32 (counts at the mean flux), the unblurred truth
        ``(n, n)`` (counts) and the map's true counts gain (mean of ``mean(i0) / i0``).
    """
    rng = np.random.default_rng(seed)
    axis = np.arange(-350.0, 350.0 + step_um / 2, step_um)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    truth = np.full(y.shape, 8.0 * level)
    blurred = truth.copy()
    beam = BEAM_UM / FWHM_PER_SIGMA
    for _ in range(8):
        centre_y, centre_x = rng.uniform(-300.0, 300.0, 2)
        spot = rng.uniform(8.0, 30.0) / np.sqrt(2.0 * np.log(2.0))  # sigma, µm
        peak = level * rng.uniform(50.0, 500.0)
        distance2 = (y - centre_y) ** 2 + (x - centre_x) ** 2
        truth += peak * np.exp(-distance2 / (2.0 * spot**2))
        wide = spot**2 + beam**2
        blurred += peak * spot**2 / wide * np.exp(-distance2 / (2.0 * wide))
    counts = rng.poisson(blurred)
    # an I0 monitor: 0.3 % noise on a 4 % decay of the ring current over the scan
    i0 = rng.normal(1.0, 0.003, counts.shape) * np.linspace(1.02, 0.98, counts.size).reshape(
        counts.shape
    )
    factor = i0.mean() / i0
    return (counts * factor).astype(np.float32), truth, float(factor.mean())


def relative_error(image: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(image - truth) / np.linalg.norm(truth))


def test_the_counts_gain_of_a_coarse_normalised_map_is_not_read_from_its_hotspots():
    # At a 70 µm step the 50 µm beam leaves hotspots one pixel wide: a plain noise estimate took
    # them for noise (gains of 5 to 25 on these maps, median 11), so the discrepancy rule
    # stopped Richardson-Lucy before its first iteration.
    estimates = []
    for seed in range(6):
        image, _, gain = coarse_map(seed, 70.0)
        assert image.shape == (11, 11)
        estimates.append(estimate_counts_gain(image) / gain)
    assert np.median(estimates) < 3.0
    assert min(estimates) > 0.5


@pytest.mark.parametrize(
    ("kind", "divisor"), [("mesh", 37.0), ("tissue", 37.0), ("star", 5.0), ("tissue", 0.13)]
)
def test_the_counts_gain_of_large_normalised_maps_stays_accurate(kind, divisor):
    sample = make_noisy_map(kind, peak=200.0, shape=(128, 128), seed=4)
    assert estimate_counts_gain(sample.measured / divisor) == pytest.approx(1 / divisor, rel=0.1)


def test_integer_maps_are_counts_and_noiseless_maps_give_one():
    counts = np.random.default_rng(0).poisson(3.0, (2, 16, 16)).astype(np.float32)
    assert estimate_counts_gain(counts) == 1.0
    assert estimate_counts_gain(np.full((16, 16), 0.5)) == 1.0  # no noise to measure


@pytest.mark.parametrize("step_um", [25.0, 35.0])
def test_richardson_lucy_restores_small_normalised_maps(step_um):
    # the monitor's gain (what the live restorer gives), then the one estimated from the map,
    # rougher on such maps: fewest iterations run and largest error left, over raw error
    for given, iterations, error in ((True, 4, 0.6), (False, 3, 0.7)):
        for seed in range(3):
            image, truth, gain = coarse_map(seed, step_um, level=10.0)
            result = asirp.restore(
                image,
                "richardson_lucy",
                beam_fwhm_um=BEAM_UM,
                pixel_um=step_um,
                counts_gain=gain if given else None,
            )
            assert result.params["stopped_by"] == "discrepancy"
            assert result.params["iterations_run"] >= iterations
            assert relative_error(result.image, truth) < error * relative_error(image, truth)
            assert result.metrics["changed"] is True
            assert result.cautions() == []


def test_the_given_counts_gain_is_used_and_recorded():
    image, _, gain = coarse_map(0, 35.0)
    given = asirp.restore(
        image, "richardson_lucy", beam_fwhm_um=BEAM_UM, pixel_um=35.0, counts_gain=gain
    )
    assert given.params["counts_gain"] == gain
    assert given.params["counts_gain_source"] == "given"
    estimated = asirp.restore(image, "richardson_lucy", beam_fwhm_um=BEAM_UM, pixel_um=35.0)
    assert estimated.params["counts_gain_source"] == "estimated"
    counts = asirp.restore(np.round(image), "richardson_lucy", beam_fwhm_um=BEAM_UM, pixel_um=35.0)
    assert counts.params["counts_gain"] == 1.0
    assert counts.params["counts_gain_source"] == "integer counts"
    fixed = asirp.restore(image, "richardson_lucy", psf_sigma_px=1.0, stop="fixed", iterations=3)
    assert "counts_gain_source" not in fixed.params  # no discrepancy rule, no gain


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_counts_gain_that_is_not_a_positive_number_is_refused(bad):
    image = np.ones((8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="counts_gain must be finite and > 0"):
        asirp.restore(image, "richardson_lucy", psf_sigma_px=1.0, counts_gain=bad)
    with pytest.raises(TypeError, match="counts_gain must be a number"):
        asirp.restore(image, "richardson_lucy", psf_sigma_px=1.0, counts_gain="1")


def test_a_flat_map_comes_back_unchanged_with_a_caution():
    flat = np.full((12, 12), 40.0, dtype=np.float32)
    result = asirp.restore(flat, "richardson_lucy", psf_sigma_px=1.0)
    assert result.params["iterations_run"] == 0
    assert result.metrics["changed"] is False
    (note,) = result.cautions()
    assert note.startswith("restoration changed nothing")
    assert "after 0 iterations (stop rule: discrepancy)" in note


def test_one_iteration_with_a_tiny_psf_changes_nothing_and_says_so():
    image, _, _ = coarse_map(1, 35.0)
    result = asirp.restore(image, "richardson_lucy", psf_sigma_px=0.1, iterations=1, stop="fixed")
    assert result.metrics["relative_change"] < UNCHANGED_FRACTION
    (note,) = result.cautions()
    assert "restoration changed nothing" in note
    assert "after 1 iteration (stop rule: fixed)" in note


def test_a_stack_with_one_unchanged_map_is_cautioned():
    image, _, gain = coarse_map(2, 35.0, level=10.0)
    stack = np.stack([image, np.full_like(image, 40.0)])
    result = asirp.restore(
        stack, "richardson_lucy", beam_fwhm_um=BEAM_UM, pixel_um=35.0, counts_gain=gain
    )
    assert result.params["iterations_run"][1] == 0
    assert result.metrics["changed"] is False
    assert any("changed nothing on at least one map" in note for note in result.cautions())


def test_a_discrepancy_stop_at_once_on_an_estimated_gain_is_cautioned():
    sample = make_noisy_map("tissue", peak=5.0, shape=(48, 48), seed=1)  # smooth, few counts
    counts = asirp.restore(sample.measured, "richardson_lucy", psf_sigma_px=2.0)
    assert counts.params["iterations_run"] <= 1
    assert counts.metrics["changed"] is True  # the smooth start is not the input
    assert counts.cautions() == []  # integer counts: the rule's own verdict, nothing to doubt

    normalised = sample.measured * np.float32(0.37)
    result = asirp.restore(normalised, "richardson_lucy", psf_sigma_px=2.0)
    assert result.params["iterations_run"] <= 1
    (note,) = result.cautions()
    assert note.startswith("the discrepancy rule stopped the restoration after")
    assert "estimated from the map's noise" in note
    assert "give counts_gain" in note
    given = asirp.restore(normalised, "richardson_lucy", psf_sigma_px=2.0, counts_gain=0.37)
    assert given.params["iterations_run"] == counts.params["iterations_run"]
    assert given.cautions() == []


def test_non_iterative_methods_report_the_change_too():
    sample = make_noisy_map("mesh", peak=200.0, shape=(32, 32))
    result = asirp.restore(sample.measured, "wiener", psf_sigma_px=2.0)
    assert result.metrics["relative_change"] > 0.05
    assert result.cautions() == []


def test_auto_keeping_the_input_says_so():
    sample = make_noisy_map("mesh", peak=50.0, shape=(48, 48), sigma_px=1.5)
    result = asirp.restore(sample.measured, psf_sigma_px=1.5, candidates=[])
    assert result.method == "identity"
    (note,) = result.cautions()
    assert note.startswith("restoration changed nothing: auto kept the input")
