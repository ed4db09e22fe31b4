import pytest

from bluesky_plans.budget import (
    StageTiming,
    fine_step_um,
    grid_points,
    grid_scan_time_s,
    region_scan_time_s,
    select_within_budget,
)
from bluesky_plans.roi import RegionOfInterest


def test_grid_points_include_both_ends():
    assert grid_points(100.0, 10.0) == 11
    assert grid_points(0.0, 10.0) == 1
    assert grid_points(99.0, 10.0) == 10


def test_scan_time_counts_dwell_moves_settling_and_returns():
    snake = StageTiming(dwell_s=0.1, velocity_um_s=100.0, settle_s=0.01, snake=True)
    # 11 x 6 points, each 0.1 s + 10/100 s + 0.01 s
    assert grid_scan_time_s(100.0, 50.0, 10.0, snake) == pytest.approx(66 * 0.21)
    raster = StageTiming(dwell_s=0.1, velocity_um_s=100.0, settle_s=0.01, snake=False)
    returns = 5 * 100.0 / 100.0
    assert grid_scan_time_s(100.0, 50.0, 10.0, raster) == pytest.approx(66 * 0.21 + returns)
    assert grid_scan_time_s(100.0, 50.0, 10.0, snake, approach_um=200.0) == pytest.approx(
        66 * 0.21 + 2.0
    )


def test_fine_step_follows_target_then_beam_limit():
    assert fine_step_um(50.0, 20.0) == pytest.approx(10.0)
    assert fine_step_um(50.0, 2.0) == pytest.approx(5.0)  # beam / 10 floor
    with pytest.raises(ValueError, match="not finer than the coarse step"):
        fine_step_um(50.0, 60.0, coarse_step_um=25.0)
    with pytest.raises(ValueError, match="beam_fwhm_um"):
        fine_step_um(-50.0, 20.0)


def test_budget_keeps_best_regions_that_fit():
    timing = StageTiming(dwell_s=0.1, velocity_um_s=1000.0)
    big = RegionOfInterest(0, 200, 0, 200, 10.0, "t")  # 21 x 21 points
    medium = RegionOfInterest(0, 100, 0, 100, 5.0, "t")  # 11 x 11
    small = RegionOfInterest(0, 50, 0, 50, 1.0, "t")  # 6 x 6

    def cost(region):
        return region_scan_time_s(region, 10.0, timing)

    everything = select_within_budget([small, medium, big], cost, None)
    assert everything.selected == (big, medium, small)
    budget = cost(big) + cost(small) + 0.01
    chosen = select_within_budget([small, medium, big], cost, budget)
    assert chosen.selected == (big, small)
    assert chosen.skipped == (medium,)
    assert chosen.total_s <= budget
    assert select_within_budget([big], cost, 0.0).selected == ()
    with pytest.raises(ValueError, match="budget_s"):
        select_within_budget([big], cost, -1.0)


def test_bad_timing():
    with pytest.raises(ValueError, match="dwell_s"):
        StageTiming(dwell_s=0.0, velocity_um_s=1.0)
    with pytest.raises(ValueError, match="velocity_um_s"):
        StageTiming(dwell_s=1.0, velocity_um_s=float("nan"))
