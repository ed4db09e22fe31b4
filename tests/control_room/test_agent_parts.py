"""The agent's parts in-process: the queue plans it relies on, what it reads from tiled, its
optimizer (bluesky-adaptive 1.0's protocols), its records and the operator's reviews.

The system test with real processes is ``test_agent_campaign.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky_adaptive.protocols import (
    CanRegisterSuggestions,
    EvaluationFunction,
    Optimizer,
    TrialFaultAware,
)

import sim
from callbacks import EmbeddedTiledServer
from callbacks.publish import TiledSink
from control_room import worker_tiled
from control_room.agent import (
    Limits,
    ReviewError,
    RoiOptimizer,
    TiledEvaluation,
    proposals_table,
    records,
    review,
    stopped_by_person,
)
from control_room.queue_plans import coarse_map, roi_rescans

CAMPAIGN = "parts"


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> Iterator[EmbeddedTiledServer]:
    with EmbeddedTiledServer(tmp_path_factory.mktemp("tiled")) as server:
        yield server


@pytest.fixture
def worker_env(tiled, monkeypatch):
    """This process as the RE Manager's worker: ``ASIRP_TILED_URI`` names the server."""
    monkeypatch.setenv(worker_tiled.TILED_URI_ENV, tiled.uri)
    worker_tiled.close_worker_catalog()
    yield worker_tiled.worker_catalog()
    worker_tiled.close_worker_catalog()


@pytest.fixture
def beamline():
    return sim.make_beamline(sample="tissue", beam_fwhm_um=50.0, seed=0)


@pytest.fixture(scope="module")
def coarse(tiled):
    """A coarse map run (and its restoration) in tiled, as the profile's worker makes it."""
    mp = pytest.MonkeyPatch()
    mp.setenv(worker_tiled.TILED_URI_ENV, tiled.uri)
    worker_tiled.close_worker_catalog()
    catalog = worker_tiled.worker_catalog()
    beamline = sim.make_beamline(sample="tissue", beam_fwhm_um=50.0, seed=0)
    engine = RunEngine({})
    engine.subscribe(TiledSink(catalog, batch_size=100))
    (uid,) = engine(
        coarse_map(
            beamline.detectors, beamline.x, beamline.y, [-250.0, 250.0], [-250.0, 250.0], 50.0,
            element="Se", beam_fwhm_um=50.0, sample="tissue", campaign=CAMPAIGN,
        )
    )  # fmt: skip
    worker_tiled.close_worker_catalog()
    mp.undo()
    return tiled.client(), uid  # closed with the server


def test_coarse_map_stores_its_restoration_beside_the_raw_run(coarse):
    catalog, uid = coarse
    start = catalog[uid].metadata["start"]
    assert start["asirp_role"] == "coarse_map"
    assert start["campaign"] == CAMPAIGN
    assert start["dwell_s"] == pytest.approx(0.1)
    (seen,) = TiledEvaluation(catalog)(uid, [])
    assert seen["kind"] == "coarse_map"
    assert seen["derived_uid"] is not None
    assert seen["raw"].shape == seen["restored"].shape == (11, 11)
    assert seen["x_um"][0] == -250.0
    assert seen["y_um"][-1] == 250.0
    assert np.isfinite(seen["restored"]).all()


def test_coarse_map_refuses_to_start_without_a_catalog(beamline, monkeypatch):
    monkeypatch.delenv(worker_tiled.TILED_URI_ENV, raising=False)
    worker_tiled.close_worker_catalog()
    starts = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    with pytest.raises(ValueError, match="ASIRP_TILED_URI"):
        engine(
            coarse_map(
                beamline.detectors, beamline.x, beamline.y, [0, 100], [0, 100], 50.0,
                element="Se", beam_fwhm_um=50.0,
            )
        )  # fmt: skip
    assert starts == []


def test_an_unreachable_catalog_is_one_error_without_the_key(monkeypatch):
    monkeypatch.setenv(worker_tiled.TILED_URI_ENV, "http://127.0.0.1:9/api/v1?api_key=s3cret")
    monkeypatch.setenv(worker_tiled.TILED_API_KEY_ENV, "s3cret")
    worker_tiled.close_worker_catalog()
    with pytest.raises(ConnectionError, match="cannot connect") as caught:
        worker_tiled.worker_catalog()
    assert "s3cret" not in str(caught.value)
    worker_tiled.close_worker_catalog()


def test_the_raw_map_decides_when_there_is_no_restoration(worker_env, beamline):
    # the same run without the plan's restorer: the map is rebuilt from the run's events
    from bluesky.plans import grid_scan

    engine = RunEngine({})
    engine.subscribe(TiledSink(worker_env, batch_size=100))
    md = {
        "asirp_role": "coarse_map", "campaign": "raw-only", "element": "Se",
        "beam_fwhm_um": 50.0, "step_um": 50.0, "x_range_um": [-100.0, 100.0],
        "y_range_um": [-50.0, 50.0], "normalize": "i0",
    }  # fmt: skip
    (uid,) = engine(
        grid_scan(beamline.detectors, beamline.y, -50, 50, 3, beamline.x, -100, 100, 5, md=md)
    )
    (seen,) = TiledEvaluation(worker_env)(uid, [])
    assert seen["restored"] is None
    assert seen["reason"] == "no restoration in tiled"
    assert seen["raw"].shape == (3, 5)
    assert np.isfinite(seen["raw"]).all()
    np.testing.assert_allclose(seen["x_um"], [-100, -50, 0, 50, 100])


def test_the_optimizer_speaks_bluesky_adaptive_and_finds_the_hotspots(coarse):
    catalog, uid = coarse
    optimizer = RoiOptimizer(target_resolution_um=25.0)
    assert isinstance(optimizer, Optimizer)
    assert isinstance(optimizer, CanRegisterSuggestions)
    assert isinstance(optimizer, TrialFaultAware)
    evaluation = TiledEvaluation(catalog)
    assert isinstance(evaluation, EvaluationFunction)
    optimizer.ingest(evaluation(uid, []))
    proposals = optimizer.suggest()
    assert len(proposals) >= 3
    assert optimizer.suggest() == []  # each region is proposed once
    assert [p["_id"] for p in proposals] == [f"p-{uid[:8]}-{k}" for k in range(len(proposals))]
    for proposal in proposals:
        (x0, x1), (y0, y1) = proposal["x_range_um"], proposal["y_range_um"]
        assert -250.0 <= x0 < x1 <= 250.0
        assert -250.0 <= y0 < y1 <= 250.0
        assert proposal["step_um"] == 12.5  # half the 25 µm target
        assert proposal["estimated_s"] > 0
    # the proposals hold the brightest Se of the truth, the strongest coarse pixel among them
    seen = evaluation(uid, [])[0]
    row, column = np.unravel_index(np.nanargmax(seen["raw"]), seen["raw"].shape)
    x, y = seen["x_um"][column], seen["y_um"][row]
    assert any(
        p["x_range_um"][0] - 25 <= x <= p["x_range_um"][1] + 25
        and p["y_range_um"][0] - 25 <= y <= p["y_range_um"][1] + 25
        for p in proposals
    )
    first, second = proposals[:2]
    optimizer.ingest(
        [{"_id": first["_id"], "kind": "rescan", "exit_status": "success", "counts": 5.0}]
    )
    optimizer.ingest([{"_id": second["_id"], "kind": "rescan", "exit_status": "fail"}])
    optimizer.register_failures([second])
    assert [entry[0] for entry in optimizer.get_best_points()] == [first["_id"]]
    assert optimizer.failed == {second["_id"]}
    (manual,) = optimizer.register_suggestions([{"_id": "mine", "x_range_um": [0, 50]}])
    assert manual["_id"] == "manual-1"


def test_roi_rescans_checks_every_suggestion_before_moving(beamline):
    good = {"_id": "a", "x_range_um": [0, 20], "y_range_um": [0, 20], "step_um": 10.0}
    cases = [
        ([], "1-100 suggestions"),
        ([{**good, "_id": ""}], "'_id' string"),
        ([{**good, "step_um": -1}], "step_um"),
        ([{**good, "x_range_um": [20, 0]}], "x_range_um is empty"),
        ([{**good, "y_range_um": [0, float("nan")]}], "finite"),
        ([good, good], "unique"),
        (["not a dict"], "must be a dict"),
    ]
    starts = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    for suggestions, message in cases:
        position = beamline.x.position
        with pytest.raises(ValueError, match=message):
            engine(roi_rescans(suggestions, [beamline.x, beamline.y], beamline.detectors))
        assert starts == []
        assert beamline.x.position == position


def test_a_failed_rescan_stays_local_and_each_run_names_its_proposal(beamline):
    suggestions = [
        {"_id": f"p{k}", "x_range_um": [x, x + 20], "y_range_um": [0, 20], "step_um": 10.0}
        for k, x in enumerate((0.0, 100.0, 200.0))
    ]
    beamline.x.fault_zone_um = (99.9, 100.1)  # the second one's first column stalls
    ends, starts = [], []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    engine.subscribe(lambda name, doc: ends.append(doc) if name == "stop" else None)
    uids = engine(
        roi_rescans(suggestions, [beamline.x, beamline.y], beamline.detectors, md={"k": 1})
    )
    assert [doc["asirp_proposal_id"] for doc in starts] == ["p0", "p1", "p2"]
    assert all(doc["k"] == 1 and doc["asirp_role"] == "rescan" for doc in starts)
    assert [doc["exit_status"] for doc in ends] == ["success", "fail", "success"]
    assert len(uids) == 3 and uids[0] == starts[0]["uid"]  # noqa: PT018


def test_reviews_are_records_and_refuse_what_is_not_pending(tiled):
    catalog = tiled.client()  # closed with the server
    proposal = {
        "_id": "p-review-0", "x_range_um": [0.0, 50.0], "y_range_um": [0.0, 50.0],
        "step_um": 10.0, "coarse_uid": "review-coarse", "sample": "s", "score": 1.0,
        "estimated_s": 3.0, "why": "test",
    }  # fmt: skip
    second = {**proposal, "_id": "p-review-1"}
    records.write_record(
        catalog, records.DECISION, "reviews",
        {"coarse_uid": "review-coarse", "proposals": [proposal, second], "auto_accepted": []},
    )  # fmt: skip
    assert [row["state"] for row in proposals_table(catalog, "reviews")] == ["pending"] * 2
    with pytest.raises(ReviewError, match="no proposal"):
        review(catalog, "reviews", "p-nope", "accept", operator="me")
    with pytest.raises(ReviewError, match="action must be"):
        review(catalog, "reviews", "p-review-0", "run it", operator="me")
    with pytest.raises(ReviewError, match="operator"):
        review(catalog, "reviews", "p-review-0", "accept", operator=" ")
    with pytest.raises(ReviewError, match="needs a new"):
        review(catalog, "reviews", "p-review-0", "edit", operator="me")
    with pytest.raises(ReviewError, match="x_range_um is empty"):
        review(catalog, "reviews", "p-review-0", "edit", operator="me", x_range_um=[5, 5])
    with pytest.raises(ReviewError, match="step_um"):
        review(catalog, "reviews", "p-review-0", "edit", operator="me", step_um=0)
    with pytest.raises(ReviewError, match="points"):
        review(catalog, "reviews", "p-review-0", "edit", operator="me", step_um=0.01)
    review(catalog, "reviews", "p-review-0", "edit", operator="me", x_range_um=[10, 40])
    review(catalog, "reviews", "p-review-1", "reject", operator="me", reason="known feature")
    with pytest.raises(ReviewError, match="accepted, not pending"):
        review(catalog, "reviews", "p-review-0", "reject", operator="me")
    table = {row["id"]: row for row in proposals_table(catalog, "reviews")}
    assert table["p-review-0"]["state"] == "accepted"
    assert table["p-review-0"]["x_range_um"] == [10.0, 40.0]
    assert table["p-review-1"]["state"] == "rejected"
    with pytest.raises(ValueError, match="unknown record role"):
        records.write_record(catalog, "whatever", "reviews", {})
    with pytest.raises(ValueError, match="may not set"):
        records.write_record(catalog, records.HALT, "reviews", {"campaign": "other"})


def test_the_agent_halts_only_when_a_person_stopped_the_queue():
    idle = {"manager_state": "idle", "queue_stop_pending": False, "queue_autostart_enabled": True}
    assert stopped_by_person(idle, autostart=True) == ""
    assert "paused" in stopped_by_person({**idle, "manager_state": "paused"}, autostart=True)
    assert "stop" in stopped_by_person({**idle, "queue_stop_pending": True}, autostart=True)
    off = {**idle, "queue_autostart_enabled": False}
    assert "autostart" in stopped_by_person(off, autostart=True)
    assert stopped_by_person(off, autostart=False) == ""  # the agent was told to leave it


def test_limits_refuse_absurd_values():
    for bad in ({"budget_s_per_sample": -1.0}, {"budget_s_per_sample": float("inf")},
                {"max_items": -1}, {"max_items": True}, {"max_items": 10**6}):  # fmt: skip
        with pytest.raises(ValueError, match="must be"):
            Limits(**bad)


def test_records_are_documents_event_model_validates():
    from event_model import DocumentNames, schema_validators

    start, stop = records.record_documents(
        records.DECISION, "valid", {"coarse_uid": "c", "proposals": [{"_id": "p", "score": 1}]}
    )
    schema_validators[DocumentNames.start].validate(start)
    schema_validators[DocumentNames.stop].validate(stop)
    assert stop["run_start"] == start["uid"]
    assert start["asirp_role"] == "agent_decision"
    assert start["campaign"] == "valid"
