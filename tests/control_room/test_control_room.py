"""System test: the control-room loop with real processes (Tango database and device server),
the embedded tiled server, the simulated beamline and the adaptive plan against the device."""

import json

import psutil
import pytest

from bluesky_plans.roi import RegionOfInterest
from control_room.evaluation import score_regions
from control_room.loop import run_control_room
from sim import Hotspot


@pytest.mark.timeout(420)  # two child processes, a tiled server and ~300 simulated points
def test_the_loop_runs_against_the_tango_device_and_stops_everything(tmp_path):
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    messages = []
    summary = run_control_room(
        tmp_path / "out", seed=6, field_um=600.0, coarse_step_um=50.0, log=messages.append
    )
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert after <= before, "a child process was left running"
    assert any("device asirp/restoration/1 running" in message for message in messages)
    restoration = summary["restoration"]
    assert restoration["where"] == "Tango device"
    assert restoration["map_used"] == "restored"
    assert restoration["method"] == "richardson_lucy"
    assert summary["regions"]
    assert summary["derived_runs_in_tiled_for_coarse_run"] >= 1
    beam = summary["beam_time_s"]
    assert beam["adaptive_estimate"] <= beam["full_fine_scan_estimate"] / 3 + 1e-6
    restored = summary["hotspots"]["restored map (rescanned)"]
    raw = summary["hotspots"]["raw map (what it would have rescanned)"]
    assert restored["found"] >= 1
    assert restored["recall"] >= 0.8
    assert restored["regions"] == len(summary["regions"])
    assert raw["regions"] == len(summary["raw_map_regions"]) >= 1
    for figures in (restored, raw):
        assert 0 < figures["beam_time_fraction"] <= 1 / 3 + 1e-6
    assert restoration["restoration_change"] > 0.1
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["run_uids"] == summary["run_uids"]
    assert (tmp_path / "out" / "control_room.png").stat().st_size > 10_000
    report = (tmp_path / "out" / "summary.md").read_text()
    assert "| restored map (rescanned) |" in report
    assert "| raw map (what it would" in report


def test_hotspot_scores():
    spots = [
        Hotspot((0.0, 0.0), 30.0, "Se", 10.0),  # relevant
        Hotspot((0.0, 200.0), 30.0, "Se", 10.0),  # relevant, missed
        Hotspot((100.0, 100.0), 5.0, "Se", 10.0),  # too small to be required
        Hotspot((-100.0, -100.0), 30.0, "Zn", 10.0),  # other element
        Hotspot((900.0, 0.0), 30.0, "Se", 10.0),  # outside the area
    ]
    regions = [
        RegionOfInterest(-20, 20, -20, 20, 1.0, "t"),  # finds the first
        RegionOfInterest(90, 110, 90, 110, 1.0, "t"),  # a small real hotspot: not false
        RegionOfInterest(-110, -90, -110, -90, 1.0, "t"),  # only a Zn hotspot: false for Se
    ]
    score = score_regions(
        regions,
        spots,
        element="Se",
        area_um=(-500.0, 500.0, -500.0, 500.0),
        min_radius_um=20.0,
        min_concentration=3.0,
    )
    assert (score.found, score.relevant) == (1, 2)
    assert score.recall == pytest.approx(0.5)
    assert (score.false_regions, score.regions) == (1, 3)
