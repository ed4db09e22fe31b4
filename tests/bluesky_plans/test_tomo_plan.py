"""The tomography plan: one run, three streams, its metadata, a safe state at the end."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from bluesky import RunEngine
from event_model import DocumentNames, schema_validators

from bluesky_plans.tomo import tomo_scan
from sim.tomo_devices import make_tomo_beamline


def _run(plan):
    engine = RunEngine({})
    docs: list[tuple[str, dict]] = []
    engine.subscribe(lambda name, doc: docs.append((name, doc)))
    engine(plan)
    return docs


def _streams(docs):
    names = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    events: dict[str, list[dict]] = {}
    for name, doc in docs:
        if name == "event":
            events.setdefault(names[doc["descriptor"]], []).append(doc)
    return events


def test_one_run_three_streams_valid_documents_and_metadata():
    assert inspect.isgeneratorfunction(tomo_scan)
    bl = make_tomo_beamline(shape=(2, 16), seed=1)
    docs = _run(
        tomo_scan(
            bl.detector, bl.rotation, bl.shutter, sample=bl.sample, start_deg=10.0,
            stop_deg=190.0, num=6, n_flats=2, n_darks=3, md={"sample_name": "tooth",
            "tomo": {"energy_keV": 20.0}},
        )
    )  # fmt: skip
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)
    assert [n for n, _ in docs].count("start") == 1
    start, stop = docs[0][1], docs[-1][1]
    assert stop["exit_status"] == "success"
    assert stop["num_events"] == {"darks": 3, "flats": 2, "primary": 6}
    # md round trip: serialisable, the plan's description plus the caller's
    assert json.loads(json.dumps(start))["sample_name"] == "tooth"
    tomo = start["tomo"]
    assert tomo["projections_stream"] == "primary"
    assert (tomo["flats_stream"], tomo["darks_stream"]) == ("flats", "darks")
    assert tomo["image_field"] == "tomo_det_image"
    assert (tomo["angle_field"], tomo["angle_units"]) == ("rotation", "deg")
    assert (tomo["num_projections"], tomo["n_flats"], tomo["n_darks"]) == (6, 2, 3)
    assert (tomo["pixel_um"], tomo["psf_fwhm_um"]) == (10.0, 25.0)  # read from the detector
    assert tomo["energy_keV"] == 20.0
    assert start["plan_args"]["sample"] == "sample"
    events = _streams(docs)
    angles = [e["data"]["rotation"] for e in events["primary"]]
    np.testing.assert_allclose(angles, 10.0 + 30.0 * np.arange(6))
    assert all(e["data"]["shutter"] == "closed" for e in events["darks"])
    assert all(e["data"]["sample"] == "out" for e in events["flats"])
    flats = np.mean([e["data"]["tomo_det_image"] for e in events["flats"]])
    darks = np.mean([e["data"]["tomo_det_image"] for e in events["darks"]])
    projections = np.mean([e["data"]["tomo_det_image"] for e in events["primary"]])
    assert flats > projections > darks
    assert bl.detector.kinds == ["dark"] * 3 + ["flat"] * 2 + ["projection"] * 6
    assert (bl.shutter.position, bl.sample.position) == ("closed", "in")


def test_given_sizes_win_and_a_failed_run_still_closes_the_shutter():
    bl = make_tomo_beamline(shape=(2, 16), seed=1)
    docs = _run(
        tomo_scan(bl.detector, bl.rotation, bl.shutter, sample=bl.sample, num=2, n_flats=1,
                  n_darks=1, pixel_um=6.5)
    )  # fmt: skip
    assert docs[0][1]["tomo"]["pixel_um"] == 6.5
    assert docs[0][1]["tomo"]["psf_fwhm_um"] == 25.0  # not given: the detector's
    # an angle past the stage's limits fails the run mid-way; the beam is shut all the same
    bl = make_tomo_beamline(shape=(2, 16), seed=1)
    engine = RunEngine({})
    stops = []
    engine.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
    with pytest.raises(Exception, match="limits"):
        engine(tomo_scan(bl.detector, bl.rotation, bl.shutter, sample=bl.sample,
                         start_deg=0.0, stop_deg=1500.0, num=2))  # fmt: skip
    assert stops[0]["exit_status"] == "fail"
    assert (bl.shutter.position, bl.sample.position) == ("closed", "in")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num": 1}, "num"),
        ({"n_flats": 0}, "n_flats"),
        ({"n_darks": 2.5}, "n_darks"),
        ({"start_deg": 5.0, "stop_deg": 5.0}, "nothing to rotate"),
        ({"stop_deg": float("nan")}, "stop_deg"),
        ({"psf_fwhm_um": 0.0}, "psf_fwhm_um"),
    ],
)
def test_bad_arguments_move_nothing(kwargs, message):
    bl = make_tomo_beamline(shape=(2, 16), seed=1)
    docs: list = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: docs.append(name))
    with pytest.raises(ValueError, match=message):
        engine(tomo_scan(bl.detector, bl.rotation, bl.shutter, sample=bl.sample, **kwargs))
    assert docs == []
    assert bl.clock.now == 0.0
