import json

import numpy as np
import pytest

from bluesky_plans.budget import StageTiming
from bluesky_plans.recommender import NoRecommendation, RoiRecommender, as_plan_items
from bluesky_plans.roi import RegionOfInterest

STEP_UM = 20.0


def _map_with_spots(centres, shape=(50, 50)):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape)
    for row, col, amplitude in centres:
        image[(rows - row) ** 2 + (cols - col) ** 2 <= 4] += amplitude
    axes = (np.arange(shape[1]) * STEP_UM, np.arange(shape[0]) * STEP_UM)
    return axes, image


def _recommender(**kwargs):
    timing = StageTiming(dwell_s=0.05, velocity_um_s=1000.0)
    return RoiRecommender("threshold", fine_step_um=5.0, timing=timing, level=0.5, **kwargs)


def test_tell_then_ask_returns_regions_best_first_and_never_twice():
    axes, image = _map_with_spots([(10, 10, 3.0), (40, 35, 1.0)])
    recommender = _recommender()
    recommender.tell(axes, image)
    first = recommender.ask(1)
    assert len(first) == 1
    assert first[0].contains(200.0, 200.0)
    second = recommender.ask(5)
    assert len(second) == 1
    assert second[0].contains(35 * STEP_UM, 40 * STEP_UM)
    with pytest.raises(NoRecommendation):
        recommender.ask(1)
    # telling the same map again does not resurrect regions already rescanned
    recommender.tell(axes, image)
    with pytest.raises(NoRecommendation):
        recommender.ask(1)


def test_budget_limits_what_is_asked():
    axes, image = _map_with_spots([(10, 10, 3.0), (40, 35, 1.0)])
    probe = _recommender()
    probe.tell(axes, image)
    one_region_s = probe.time_of(probe.ask(1)[0])
    recommender = _recommender(budget_s=one_region_s * 1.5)
    recommender.tell(axes, image)
    assert len(recommender.ask(5)) == 1
    assert recommender.spent_s <= recommender.budget_s
    with pytest.raises(NoRecommendation, match="budget"):
        recommender.ask(1)


def test_ask_without_telling_pending_repeats():
    axes, image = _map_with_spots([(10, 10, 3.0)])
    recommender = _recommender()
    recommender.tell(axes, image)
    assert recommender.ask(1, tell_pending=False) == recommender.ask(1, tell_pending=False)
    assert recommender.spent_s == 0.0


def test_plan_items_are_grid_scans_covering_the_region():
    axes, image = _map_with_spots([(10, 10, 3.0)])
    recommender = _recommender()
    recommender.tell(axes, image)
    (region,) = recommender.ask(1)
    (item,) = as_plan_items(
        [region],
        detectors=["xrf"],
        x_motor="x",
        y_motor="y",
        step_um=5.0,
        md={"coarse_uid": "abc"},
    )
    assert item["item_type"] == "plan"
    assert item["name"] == "grid_scan"
    dets, y_motor, y0, y1, ny, x_motor, x0, x1, nx = item["args"]
    assert (dets, y_motor, x_motor) == (["xrf"], "y", "x")
    assert y0 == pytest.approx(region.y_min_um)
    assert x1 <= region.x_max_um + 1e-9
    assert x1 > region.x_max_um - 5.0
    assert nx == round((x1 - x0) / 5.0) + 1
    assert ny == round((y1 - y0) / 5.0) + 1
    assert item["kwargs"]["md"]["coarse_uid"] == "abc"
    assert item["kwargs"]["md"]["roi"]["strategy"] == "threshold"
    json.dumps(item)  # queue-server items must be JSON-serialisable


def test_bad_arguments():
    timing = StageTiming(dwell_s=0.05, velocity_um_s=1000.0)
    with pytest.raises(ValueError, match="fine_step_um"):
        RoiRecommender(fine_step_um=0.0, timing=timing)
    with pytest.raises(ValueError, match="budget_s"):
        RoiRecommender(fine_step_um=1.0, timing=timing, budget_s=-1.0)
    with pytest.raises(ValueError, match="n >= 1"):
        RoiRecommender(fine_step_um=1.0, timing=timing).ask(0)
    with pytest.raises(ValueError, match="detector"):
        as_plan_items([], detectors=[], x_motor="x", y_motor="y", step_um=1.0)


def test_told_regions_join_without_merging_tiles():
    timing = StageTiming(dwell_s=0.05, velocity_um_s=1000.0)
    recommender = RoiRecommender(
        "threshold", fine_step_um=5.0, timing=timing, level=0.5, max_size_um=100.0
    )
    image = np.zeros((30, 30))
    image[5:25, 5:25] = 1.0  # 400 µm square -> split into 100 µm tiles
    axes = (np.arange(30) * STEP_UM, np.arange(30) * STEP_UM)
    recommender.tell(axes, image)
    tiles = recommender.pending
    assert len(tiles) > 1
    inside = RegionOfInterest(150.0, 160.0, 150.0, 160.0, 9.0, "live")
    elsewhere = RegionOfInterest(560.0, 580.0, 560.0, 580.0, 9.0, "live")
    recommender.tell_regions([inside, elsewhere])
    pending = recommender.pending
    assert len(pending) == len(tiles) + 1
    assert elsewhere in pending
    assert inside not in pending
