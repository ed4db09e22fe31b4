"""The ``peaks`` ROI strategy, the ``cheaper`` merge rule and ranking by value per second."""

import math

import numpy as np
import pytest

from bluesky_plans.budget import StageTiming
from bluesky_plans.peaks import object_size_um, peak_objects
from bluesky_plans.recommender import RoiRecommender
from bluesky_plans.roi import RegionOfInterest, detect_rois, merge_overlapping


def _gaussian(shape, centre, sigma, height):
    rows, cols = np.indices(shape, dtype=float)
    return height * np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))


def _noisy(image, seed=0):
    return np.random.default_rng(seed).poisson(image + 5.0).astype(float)


def test_two_objects_are_two_boxes_that_hold_their_amounts():
    truth = _gaussian((40, 40), (10, 10), 1.5, 800) + _gaussian((40, 40), (28, 30), 1.0, 400)
    objects = peak_objects(_noisy(truth), sigma=5.0)
    assert len(objects) == 2
    (box_a, amount_a, centre_a, _), (box_b, amount_b, centre_b, _) = objects
    assert amount_a > amount_b  # strongest amount first
    assert math.hypot(centre_a[0] - 10, centre_a[1] - 10) < 0.5
    assert math.hypot(centre_b[0] - 28, centre_b[1] - 30) < 0.5
    # amounts within 25 % of 2 pi sigma^2 height
    assert amount_a == pytest.approx(2 * math.pi * 1.5**2 * 800, rel=0.25)
    assert box_a[0] <= 10 < box_a[1]
    assert box_a[2] <= 10 < box_a[3]
    assert (box_b[1] - box_b[0]) <= 3  # tight: the object, not a window


def test_deflation_finds_a_weak_object_on_a_strong_ones_shoulder():
    strong = _gaussian((40, 40), (20, 20), 1.0, 3000)
    weak = _gaussian((40, 40), (20, 22.6), 0.6, 700)  # no maximum of its own
    image = _noisy(strong + weak, seed=3)
    assert len(peak_objects(image, sigma=5.0)) == 1
    found = peak_objects(image, sigma=5.0, deflate=1)
    assert len(found) == 2
    centres = sorted(centre[1] for _, _, centre, _ in found)
    assert centres[1] == pytest.approx(22.6, abs=0.8)


def test_noise_alone_gives_no_object():
    flat = np.random.default_rng(1).poisson(50.0, size=(32, 32)).astype(float)
    assert peak_objects(flat, sigma=5.0, deflate=1) == []


def test_object_size_removes_the_beam_and_the_pixel():
    pixel = 10.0
    sigma_px = 2.0  # a 20 µm sigma blob seen through nothing
    amount, height = 2 * math.pi * sigma_px**2 * 100.0, 100.0
    radius = object_size_um(amount, height, pixel_um=pixel)
    assert radius == pytest.approx(
        math.sqrt((sigma_px * pixel) ** 2 - pixel**2 / 12) * math.sqrt(2 * math.log(2)), rel=1e-6
    )
    beam_fwhm = 2 * math.sqrt(2 * math.log(2)) * 20.0  # the whole blob is beam
    assert object_size_um(amount, height, pixel_um=pixel, beam_fwhm_um=beam_fwhm) == 0.0


def test_peaks_strategy_through_detect_rois_and_its_checks():
    truth = _gaussian((30, 30), (8, 8), 1.2, 600) + _gaussian((30, 30), (20, 22), 1.2, 600)
    axis = np.arange(30) * 10.0
    regions = detect_rois(_noisy(truth), axis, axis, "peaks", sigma=5.0)
    assert len(regions) == 2
    assert all(region.width_um <= 40.0 for region in regions)
    assert any(region.contains(80.0, 80.0) for region in regions)
    with pytest.raises(ValueError, match="sigma"):
        detect_rois(truth, axis, axis, "peaks", sigma=0.0)
    with pytest.raises(ValueError, match="half_fraction"):
        detect_rois(truth, axis, axis, "peaks", half_fraction=1.5)
    with pytest.raises(ValueError, match="merge"):
        detect_rois(truth, axis, axis, "peaks", merge="sometimes")


def test_cheaper_merge_keeps_diagonal_neighbours_apart():
    a = RegionOfInterest(0, 40, 0, 40, 1.0, "peaks")
    b = RegionOfInterest(35, 75, 35, 75, 1.0, "peaks")  # corner overlap: the union would be 75 x 75
    c = RegionOfInterest(10, 50, 0, 40, 1.0, "peaks")  # mostly the same as a
    assert len(merge_overlapping([a, b], "union")) == 1
    assert len(merge_overlapping([a, b], "cheaper")) == 2
    merged = merge_overlapping([a, c], "cheaper")
    assert len(merged) == 1
    assert merged[0].x_max_um == 50
    with pytest.raises(ValueError, match="merge rule"):
        merge_overlapping([a], "never")


def test_value_per_second_ranks_small_rich_regions_first():
    timing = StageTiming(dwell_s=0.1, velocity_um_s=1000.0)
    big = RegionOfInterest(0, 200, 0, 200, 10.0, "peaks")
    small = RegionOfInterest(300, 340, 300, 340, 4.0, "peaks")
    by_score = RoiRecommender("peaks", fine_step_um=10.0, timing=timing)
    by_value = RoiRecommender("peaks", fine_step_um=10.0, timing=timing, rank="value_per_second")
    for recommender in (by_score, by_value):
        recommender.tell_regions([big, small])
    assert by_score.ask(1)[0] == big
    assert by_value.ask(1)[0] == small
    with pytest.raises(ValueError, match="rank"):
        RoiRecommender("peaks", fine_step_um=10.0, timing=timing, rank="alphabetical")
