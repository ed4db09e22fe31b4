"""The shipped RE Manager profile on a real redis and a real RE Manager (child processes).

One manager serves the module: its worker environment imports
:mod:`control_room.qserver_profile`, and the panel's rescan items run there.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest
import yaml
from bluesky_queueserver_api import BPlan
from bluesky_queueserver_api.zmq import REManagerAPI

import sim
from asirp_gui.rescan import RESCAN_NAMES, rescan_item
from control_room import queue_plans
from control_room.qserver import STARTUP_MODULE, TOMO_NAMES, permissions_path
from control_room.queue_plans import QUEUEABLE_PLANS
from tests.qserver_support import manager_api, open_environment, re_manager, redis_server

SCAN_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def manager(tmp_path_factory) -> Iterator[REManagerAPI]:
    """A client of an RE Manager whose environment (the shipped profile) is open."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    folder = tmp_path_factory.mktemp("qserver")
    with (
        redis_server(folder) as redis_addr,
        re_manager(redis_addr, folder) as control,
        manager_api(control) as api,
    ):
        open_environment(api)
        yield api
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert after <= before, "redis or the RE Manager was left running"


def test_the_shipped_permissions_allow_the_rescan_plan_and_names_to_primary():
    assert STARTUP_MODULE == "control_room.qserver_profile"
    groups = yaml.safe_load(permissions_path().read_text())["user_groups"]
    primary = groups["primary"]
    assert set(primary["allowed_devices"]) == {*RESCAN_NAMES.devices, *TOMO_NAMES}
    assert {"grid_scan", "count"} <= set(primary["allowed_plans"])
    assert primary["allowed_functions"] == []  # none: null would allow every function
    printed = subprocess.run(
        [sys.executable, "-m", "control_room.qserver"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert printed == str(permissions_path())


def test_the_environment_offers_grid_scan_and_the_beamline_devices(manager):
    plans = manager.plans_allowed()["plans_allowed"]
    assert {"grid_scan", "count", *QUEUEABLE_PLANS} <= set(plans)
    devices = manager.devices_allowed()["devices_allowed"]
    assert set(devices) == {*RESCAN_NAMES.devices, *TOMO_NAMES}
    for motor in (RESCAN_NAMES.x_motor, RESCAN_NAMES.y_motor):
        assert devices[motor]["is_movable"]
        assert devices[motor]["module"] == "sim.devices"
    for detector in RESCAN_NAMES.detectors:
        assert devices[detector]["is_readable"]
        assert not devices[detector]["is_movable"]


def test_a_plan_outside_the_permissions_is_refused(manager):
    item = rescan_item((0, 40), (0, 40), beam_fwhm_um=50.0, target_resolution_um=40.0)
    item["name"] = "rel_grid_scan"  # a bluesky plan, but not in the profile nor permitted
    with pytest.raises(manager.RequestFailedError, match="rel_grid_scan"):
        manager.item_add(item)
    assert manager.queue_get()["items"] == []


def test_a_rescan_item_from_the_panel_runs_to_completion(manager):
    # a 40 µm ROI at a 20 µm step (50 µm beam, 40 µm target): 3 x 3 points
    item = rescan_item(
        (0.0, 40.0), (-40.0, 0.0), beam_fwhm_um=50.0, target_resolution_um=40.0, md={"test": 1}
    )
    assert item["args"] == [["xrf", "i0"], "sample_y", -40.0, 0.0, 3, "sample_x", 0.0, 40.0, 3]
    added = manager.item_add(item)["item"]
    manager.queue_start()
    manager.wait_for_condition(
        lambda status: (
            status["items_in_queue"] == 0
            and status["manager_state"] == "idle"
            and status["items_in_history"] >= 1
        ),
        timeout=SCAN_TIMEOUT_S,
    )
    done = manager.history_get()["items"][-1]
    assert done["item_uid"] == added["item_uid"]
    assert done["name"] == "grid_scan"
    assert done["result"]["exit_status"] == "completed", done["result"]["msg"]
    assert len(done["result"]["run_uids"]) == 1


def test_every_queueable_asirp_plan_is_a_permitted_generator_function():
    primary = yaml.safe_load(permissions_path().read_text())["user_groups"]["primary"]
    for name in QUEUEABLE_PLANS:
        assert inspect.isgeneratorfunction(getattr(queue_plans, name)), name
        assert name in primary["allowed_plans"], name


def test_the_adaptive_rescan_is_offered_with_its_plain_parameters(manager):
    plans = manager.plans_allowed()["plans_allowed"]
    parameters = {p["name"] for p in plans["adaptive_rescan"]["parameters"]}
    assert {"detectors", "x_motor", "y_motor", "element", "beam_fwhm_um", "md"} <= parameters
    assert {"maps", "timing", "report"}.isdisjoint(parameters)  # no objects a client cannot send


def _run_queue(manager) -> dict:
    """Start the queue and wait until it stops (done, or a failed item); the last history item."""
    before = manager.status()["items_in_history"]
    manager.queue_start()
    manager.wait_for_condition(
        lambda status: status["items_in_history"] > before and status["manager_state"] == "idle",
        timeout=SCAN_TIMEOUT_S,
    )
    return manager.history_get()["items"][-1]


def _small_adaptive_item(**kwargs) -> BPlan:
    """An adaptive_rescan of 9 x 9 coarse points at 25 µm around a Se hotspot (tissue, seed 0)."""
    ranges = ([-330.0, -130.0], [-340.0, -140.0])
    return BPlan(
        "adaptive_rescan",
        ["xrf", "i0"],
        "sample_x",
        "sample_y",
        *ranges,
        25.0,
        element="Se",
        beam_fwhm_um=50.0,
        target_resolution_um=40.0,
        **kwargs,
    )


def test_an_adaptive_rescan_item_runs_the_coarse_scan_then_rescans(manager):
    item = _small_adaptive_item(max_rois=2, md={"test": "adaptive"})
    added = manager.item_add(item)["item"]
    done = _run_queue(manager)
    assert done["item_uid"] == added["item_uid"]
    assert done["result"]["exit_status"] == "completed", done["result"]["msg"]
    # the coarse run, then at least one rescan, at most max_rois
    assert 2 <= len(done["result"]["run_uids"]) <= 3


def test_a_bad_adaptive_rescan_fails_alone_before_any_scan(manager):
    item = _small_adaptive_item(budget_fraction=5.0)
    manager.item_add(item)
    done = _run_queue(manager)
    assert done["result"]["exit_status"] == "failed"
    assert "budget_fraction must be at most 1" in done["result"]["msg"]
    assert done["result"]["run_uids"] == []  # nothing was scanned
    status = manager.status()
    assert status["worker_environment_exists"]  # the environment stays usable
    assert status["items_in_queue"] == 1  # the queue server keeps a failed item for a retry
    manager.queue_clear()


ADAPTIVE_ARGS = (["xrf", "i0"], "sample_x", "sample_y", [-330.0, -30.0], [-340.0, -40.0], 25.0)
ADAPTIVE_KWARGS = {"element": "Se", "beam_fwhm_um": 50.0, "target_resolution_um": 40.0}


def _first_rescan_column() -> float:
    """Where the profile's adaptive item first moves x for its first rescan, µm (in-process)."""
    from bluesky import RunEngine

    from control_room.queue_plans import adaptive_rescan

    beamline = sim.make_beamline(sample="tissue", beam_fwhm_um=50.0, seed=0)
    devices = {"xrf": beamline.xrf, "i0": beamline.i0}
    starts = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    detectors = [devices[name] for name in ADAPTIVE_ARGS[0]]
    engine(
        adaptive_rescan(detectors, beamline.x, beamline.y, *ADAPTIVE_ARGS[3:], **ADAPTIVE_KWARGS)
    )
    fine = [doc for doc in starts if doc.get("adaptive_stage") == "fine"]
    assert len(fine) >= 2, "the item must have a rescan after the faulty one"
    return float(fine[0]["plan_args"]["args"][5])  # grid_scan(dets, y, y0, y1, ny, x, x0, ...)


def test_a_rescan_that_fails_is_recorded_and_the_queue_goes_on(tmp_path):
    stall = _first_rescan_column()
    startup = tmp_path / "startup"
    startup.mkdir()
    # the shipped profile, with the x stage stalling on a move to the first rescan's column
    stops = tmp_path / "stops.jsonl"
    (startup / "00-profile.py").write_text(
        "import json\n"
        "from control_room.qserver_profile import *  # noqa: F403\n"
        f"beamline.x.fault_zone_um = ({stall!r} - 1e-6, {stall!r} + 1e-6)  # noqa: F405\n"
        "def _keep_stop(name, doc):\n"
        "    if name == 'stop':\n"
        f"        with open({str(stops)!r}, 'a') as file:\n"
        "            file.write(json.dumps(doc) + '\\n')\n"
        "RE.subscribe(_keep_stop)  # noqa: F405\n"
    )
    with (
        redis_server(tmp_path) as redis_addr,
        re_manager(redis_addr, tmp_path, startup_dir=startup) as control,
        manager_api(control) as api,
    ):
        open_environment(api)
        adaptive = api.item_add(BPlan("adaptive_rescan", *ADAPTIVE_ARGS, **ADAPTIVE_KWARGS))
        after = api.item_add(BPlan("count", ["xrf", "i0"], num=2))
        api.queue_start()
        api.wait_for_condition(
            lambda status: status["items_in_history"] == 2 and status["manager_state"] == "idle",
            timeout=SCAN_TIMEOUT_S,
        )
        history = {item["item_uid"]: item for item in api.history_get()["items"]}
        assert api.status()["items_in_queue"] == 0
    done = history[adaptive["item"]["item_uid"]]["result"]
    assert done["exit_status"] == "completed", done["msg"]
    assert len(done["run_uids"]) >= 3  # the coarse run, the failed rescan, the rescans after it
    ends = [json.loads(line) for line in stops.read_text().splitlines()]
    (failed,) = [doc for doc in ends if doc["exit_status"] == "fail"]
    assert "device=x, done=True, success=False" in failed["reason"]  # the stalled stage
    assert failed["run_start"] == done["run_uids"][1]  # the first rescan, recorded as failed
    assert [doc["exit_status"] for doc in ends].count("success") == len(ends) - 1
    assert history[after["item"]["item_uid"]]["result"]["exit_status"] == "completed"


def test_a_tomography_item_runs_to_completion(manager):
    item = BPlan(
        "tomo_scan", "tomo_det", "rotation", "shutter", sample="tomo_sample", num=4, n_flats=1,
        n_darks=1, md={"test": "tomo"},
    )  # fmt: skip
    added = manager.item_add(item)["item"]
    done = _run_queue(manager)
    assert done["item_uid"] == added["item_uid"]
    assert done["result"]["exit_status"] == "completed", done["result"]["msg"]
    assert len(done["result"]["run_uids"]) == 1  # darks, flats and projections in one run


def test_a_bad_range_leaves_no_restoration_thread_behind():
    import threading

    from bluesky import RunEngine

    from control_room.queue_plans import adaptive_rescan

    beamline = sim.make_beamline(sample="tissue", beam_fwhm_um=50.0, seed=0)
    engine = RunEngine({})
    plan = adaptive_rescan(
        [beamline.xrf, beamline.i0], beamline.x, beamline.y, [10.0, -10.0], [0.0, 100.0], 25.0,
        **ADAPTIVE_KWARGS,
    )  # fmt: skip
    with pytest.raises(ValueError, match="x_range_um is empty"):
        engine(plan)
    # the live restorer's worker thread ended with the plan
    assert "asirp-live-restore" not in {thread.name for thread in threading.enumerate()}
    assert beamline.x.position == 0.0  # nothing moved
