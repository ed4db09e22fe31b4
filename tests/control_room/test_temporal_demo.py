"""The temporal control-room demo, in-process (the Tango path is the device's system test)."""

import json

import psutil
import pytest

from control_room.temporal import run_temporal_demo


@pytest.mark.timeout(300)
def test_the_temporal_demo_reacts_to_the_hidden_transition_and_reports(tmp_path):
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    messages = []
    summary = run_temporal_demo(
        tmp_path / "out",
        seed=3,
        ramp_K=(300.0, 360.0),
        side_px=256,
        use_tango=False,
        log=messages.append,
    )
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert after <= before, "a child process was left running"
    out = tmp_path / "out"
    assert (out / "temporal.png").stat().st_size > 10_000
    assert json.loads((out / "temporal_summary.json").read_text())["raw_uid"] == summary["raw_uid"]
    assert "- alarm: frame" in (out / "temporal_summary.md").read_text()
    # the hidden onset was found after it happened, and the plan reacted
    assert summary["true_onset_frame"] is not None
    assert summary["delay_frames"] is not None
    assert 0 <= summary["delay_frames"] <= 3
    actions = [d["action"] for d in summary["decisions"]]
    assert actions[:2] == ["hold", "slow"]
    assert 0.0 in summary["temperature_steps_K"]  # the hold
    assert 0.25 in summary["temperature_steps_K"]  # the slow span
    assert summary["frames_analysed"] == summary["frames"]
