"""Live tomography: a RunEngine scan in, a Data Exchange file and a reconstruction out.

Runs use a 4 x 64 px detector and 40 angles (about 1 s of reconstruction each). Malformed runs
are the documents of one real run, recorded once and altered.
"""

from __future__ import annotations

import copy
import logging
import re

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count

from asirp.tomo.exchange import read_scan
from bluesky_plans.tomo import tomo_scan
from callbacks.tomo import LiveTomoReconstruction
from sim.tomo_devices import make_tomo_beamline

SHAPE = (4, 64)
NUM = 40


def _scan(beamline):
    return tomo_scan(
        beamline.detector, beamline.rotation, beamline.shutter, sample=beamline.sample,
        num=NUM, n_flats=3, n_darks=3,
    )  # fmt: skip


@pytest.fixture(scope="module")
def recorded():
    """The documents of one scan (no callback subscribed)."""
    beamline = make_tomo_beamline(shape=SHAPE, seed=2, psf_fwhm_um=25.0)
    docs: list[tuple[str, dict]] = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: docs.append((name, doc)))
    engine(_scan(beamline))
    return docs


def _feed(callback, docs):
    for name, doc in docs:
        assert callback(name, doc) is None  # never raises, whatever the document


def _radii(size):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    return np.hypot(yy, xx)


def test_a_scan_is_written_and_reconstructed_in_the_background(tmp_path):
    beamline = make_tomo_beamline(shape=SHAPE, seed=0, psf_fwhm_um=25.0)
    live = LiveTomoReconstruction(tmp_path, method="richardson_lucy")
    engine = RunEngine({})
    engine.subscribe(live)
    images: list[np.ndarray] = []
    engine.subscribe(
        lambda name, doc: (
            images.append(doc["data"]["tomo_det_image"])
            if name == "event" and "rotation" in doc["data"]
            else None
        )
    )
    (uid,) = engine(_scan(beamline))
    outcome = live.wait(60)
    live.close(10)
    assert outcome.run_uid == uid
    assert outcome.exit_status == "success"
    assert outcome.failure is None
    assert outcome.ok
    assert live.failures == []
    raw, recon = live.paths(uid)
    assert (outcome.raw_path, outcome.recon_path) == (raw, recon)
    assert raw.name == f"{uid[:8]}_raw.h5"
    assert recon.name == f"{uid[:8]}_recon.nxs"
    # the raw file holds what the detector recorded, angles in degrees from the readback
    scan = read_scan(raw)
    assert scan.projections.shape == (NUM, *SHAPE)
    assert (scan.flats.shape[0], scan.darks.shape[0]) == (3, 3)
    np.testing.assert_array_equal(scan.projections, np.stack(images))
    np.testing.assert_allclose(np.rad2deg(scan.angles_rad), np.arange(NUM) * 180.0 / NUM)
    assert scan.pixel_um == 10.0
    # the reconstruction restored with the detector's PSF and shows the object
    result = outcome.result
    assert result.plan.method == "richardson_lucy"
    assert result.restored is not None
    assert result.raw.shape == (SHAPE[0], SHAPE[1], SHAPE[1])
    radii = _radii(SHAPE[1])
    inside, air = radii < 0.15 * SHAPE[1], (radii > 0.4 * SHAPE[1]) & (radii < 0.48 * SHAPE[1])
    for volume in (result.raw, result.restored):
        assert volume[:, inside].mean() > 0.008  # about 1.2 /mm x 10 µm per pixel
        assert abs(volume[:, air].mean()) < 0.002
    with h5py.File(recon, "r") as handle:
        assert handle.attrs.get("default")  # a NeXus file with a default entry


def test_a_failed_reconstruction_is_recorded_and_the_scan_succeeds(tmp_path, caplog):
    beamline = make_tomo_beamline(shape=SHAPE, seed=0)
    live = LiveTomoReconstruction(tmp_path, method="no_such_method")
    engine = RunEngine({})
    engine.subscribe(live)
    stops: list[dict] = []
    engine.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
    with caplog.at_level(logging.ERROR, logger="callbacks.tomo"):
        (uid,) = engine(_scan(beamline))
        outcome = live.wait(60)
    live.close(10)
    assert stops[0]["exit_status"] == "success"
    assert not outcome.ok
    assert outcome.failure.stage == "reconstruction"
    assert "no_such_method" in outcome.failure.message
    assert live.failures == [outcome.failure]
    assert outcome.raw_path is not None
    assert outcome.raw_path.exists()
    assert not live.paths(uid)[1].exists()
    assert any("no_such_method" in record.getMessage() for record in caplog.records)


def test_existing_files_are_never_replaced(tmp_path, recorded):
    uid = recorded[0][1]["uid"]
    raw = tmp_path / f"{uid[:8]}_raw.h5"
    raw.write_bytes(b"an earlier run")
    live = LiveTomoReconstruction(tmp_path, method="none")
    _feed(live, recorded)
    outcome = live.wait(60)
    live.close(10)
    assert outcome.failure.stage == "raw file"
    assert "already exists" in outcome.failure.message
    assert raw.read_bytes() == b"an earlier run"
    assert not (tmp_path / f"{uid[:8]}_recon.nxs").exists()


def _altered(recorded, change):
    docs = copy.deepcopy(recorded)
    change(docs)
    return docs


def _projection_events(docs):
    primary = next(d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "primary")
    return [d for n, d in docs if n == "event" and d["descriptor"] == primary]


def _wrong_shape(docs):
    _projection_events(docs)[5]["data"]["tomo_det_image"] = np.zeros((4, 63), np.float32)


def _no_angle(docs):
    del _projection_events(docs)[2]["data"]["rotation"]


def _nan_frame(docs):
    _projection_events(docs)[0]["data"]["tomo_det_image"][0, 0] = np.nan


def _no_image_field(docs):
    del docs[0][1]["tomo"]["image_field"]


def _no_flats(docs):
    flats = next(d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "flats")
    docs[:] = [(n, d) for n, d in docs if d.get("descriptor") != flats]


def _aborted(docs):
    docs[-1][1]["exit_status"] = "abort"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_wrong_shape, r"is \(4, 63\), the descriptor said \(4, 64\)"),
        (_no_angle, "no numeric angle 'rotation'"),
        (_nan_frame, "NaN"),
        (_no_image_field, r'md\["tomo"\]\["image_field"\]'),
        (_no_flats, "no flats"),
        (_aborted, "exit status 'abort'"),
    ],
)
def test_malformed_runs_are_one_clear_recorded_error(tmp_path, recorded, change, message):
    live = LiveTomoReconstruction(tmp_path, method="none")
    _feed(live, _altered(recorded, change))
    outcome = live.wait(10)
    live.close(10)
    assert [failure.stage for failure in live.failures] == ["documents"]
    assert outcome.failure is live.failures[0]
    assert re.search(message, outcome.failure.message), outcome.failure.message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_frames_over_the_size_limit_are_refused_before_they_are_kept(tmp_path, recorded):
    frame_bytes = SHAPE[0] * SHAPE[1] * 4
    live = LiveTomoReconstruction(tmp_path, method="none", max_stack_bytes=10 * frame_bytes)
    _feed(live, recorded)
    outcome = live.wait(10)
    assert "over the limit" in outcome.failure.message  # announced 46 frames: refused at once
    # a start document that announces nothing is caught by the running count
    quiet = _altered(recorded, lambda docs: docs[0][1]["tomo"].pop("num_projections"))
    live = LiveTomoReconstruction(tmp_path, method="none", max_stack_bytes=10 * frame_bytes)
    _feed(live, quiet)
    assert "exceed the limit" in live.wait(10).failure.message
    live.close(10)
    assert list(tmp_path.iterdir()) == []


def test_other_runs_are_ignored(tmp_path):
    beamline = make_tomo_beamline(shape=SHAPE, seed=0)
    live = LiveTomoReconstruction(tmp_path)
    engine = RunEngine({})
    engine.subscribe(live)
    engine(count([beamline.detector], 2))
    with pytest.raises(LookupError):
        live.wait(0.1)
    live.close(10)
    assert live.failures == []
    assert list(tmp_path.iterdir()) == []


def test_bad_metadata_under_a_run_engine_is_recorded_and_the_scan_succeeds(tmp_path):
    beamline = make_tomo_beamline(shape=SHAPE, seed=0)
    live = LiveTomoReconstruction(tmp_path, method="none")
    engine = RunEngine({})
    engine.subscribe(live)
    stops: list[dict] = []
    engine.subscribe(lambda name, doc: stops.append(doc) if name == "stop" else None)
    plan = tomo_scan(
        beamline.detector, beamline.rotation, beamline.shutter, sample=beamline.sample,
        num=3, n_flats=1, n_darks=1, md={"tomo": {"image_field": "not_an_image"}},
    )  # fmt: skip
    engine(plan)
    outcome = live.wait(10)
    live.close(10)
    assert stops[0]["exit_status"] == "success"
    assert outcome.failure.stage == "documents"
    assert "no image field 'not_an_image'" in outcome.failure.message
    assert len(live.failures) == 1
    assert list(tmp_path.iterdir()) == []


def test_junk_documents_never_raise(tmp_path):
    live = LiveTomoReconstruction(tmp_path)
    junk = [
        ("event", {"descriptor": ["unhashable"]}),
        ("stop", {"run_start": ["unhashable"]}),
        ("descriptor", {}),
        ("start", {"tomo": {}}),  # no uid
        ("event_page", None),
        ("not_a_document", {}),
    ]
    _feed(live, junk)
    live.close(10)
    assert live.failures == []
    assert list(tmp_path.iterdir()) == []
