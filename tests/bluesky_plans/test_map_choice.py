"""The raw map decides where restoration changed nothing; the restored one elsewhere."""

import numpy as np
import pytest
from bluesky import RunEngine

import sim
from bluesky_plans.adaptive import AdaptiveReport, adaptive_roi_scan
from bluesky_plans.budget import StageTiming
from bluesky_plans.map_choice import MIN_CHANGE, choose_map, restoration_change
from bluesky_plans.maps import LiveMaps
from callbacks import LiveRestorer


def test_change_is_relative_to_the_maps_contrast_and_ignores_unmeasured_pixels():
    raw = np.array([[0.0, 10.0], [0.0, np.nan]])
    assert restoration_change(raw, raw.copy()) == 0.0
    restored = np.array([[0.0, 12.0], [0.0, 99.0]])  # the NaN pixel does not count
    assert restoration_change(raw, restored) == pytest.approx(2.0 / 10.0)
    with pytest.raises(ValueError, match="shape"):
        restoration_change(raw, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        restoration_change(np.full((2, 2), np.nan), np.zeros((2, 2)))


def test_choose_map_names_the_map_and_says_why():
    raw = np.arange(16.0).reshape(4, 4)
    assert choose_map(raw, None).map_used == "raw"
    same = choose_map(raw, raw + 0.01)
    assert same.map_used == "raw"
    assert "changed the map by 0%" in same.reason
    sharper = choose_map(raw, raw * 2.0)
    assert sharper.map_used == "restored"
    assert sharper.reason == ""
    assert sharper.change > MIN_CHANGE
    assert choose_map(raw, raw + 0.01, min_change=0.0).map_used == "restored"
    with pytest.raises(ValueError, match="min_change"):
        choose_map(raw, raw, min_change=float("nan"))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"radius_range_um": (110.0, 150.0), "n_hotspots": 3}, "raw"),  # far wider than the beam
        ({"n_hotspots": 12, "radius_range_um": (6.0, 20.0)}, "restored"),
    ],
)
def test_the_loop_uses_the_raw_map_where_restoration_cannot_help(options, expected):
    beamline = sim.make_beamline(
        "seed", beam_fwhm_um=50.0, seed=4, field_um=500.0, sample_options=options
    )
    engine = RunEngine({})
    starts = []
    engine.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    restorer = LiveRestorer(element="Se", normalize="i0", method="richardson_lucy")
    engine.subscribe(restorer)
    report = AdaptiveReport()
    engine(
        adaptive_roi_scan(
            beamline.detectors,
            beamline.x,
            beamline.y,
            (-200.0, 200.0),
            (-200.0, 200.0),
            25.0,
            maps=LiveMaps(restorer),
            beam_fwhm_um=50.0,
            target_resolution_um=20.0,
            timing=StageTiming(dwell_s=0.1, velocity_um_s=1000.0),
            strategy="peaks",
            max_rois=1,
            report=report,
        )
    )
    restorer.close(10)
    assert report.coarse_outcome.ok  # restoration worked; the choice is about what it gave
    assert report.map_choice.map_used == expected
    if expected == "raw":
        assert report.map_choice.change < MIN_CHANGE
        assert "beam hides nothing" in report.map_choice.reason
    for doc in starts[1:]:
        assert doc["map_used"] == expected
        assert doc["restoration_change"] == pytest.approx(report.map_choice.change)
