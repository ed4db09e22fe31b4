"""LiveRestorer with a real RunEngine, without tiled: maps, coalescing, bad documents, fly
scans (event pages), interleaved runs, map sources, the Python API."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from bluesky.plans import count, grid_scan
from ophyd.sim import SynAxis, SynSignal

import asirp
import sim
from callbacks.live import LiveRestorer
from tests.callbacks.conftest import (
    BEAM_FWHM_UM,
    STEP_UM,
    assemble,
    assert_same_restoration,
    grid_plan,
)


class Stage:
    """Two ophyd.sim axes and a detector whose reading depends on their positions."""

    def __init__(self, bad: set[tuple[int, int]] = frozenset()) -> None:
        self.y = SynAxis(name="sy")
        self.x = SynAxis(name="sx")
        self.bad = bad

        def reading() -> float:
            y, x = round(self.y.readback.get()), round(self.x.readback.get())
            if (y, x) in self.bad:
                return math.nan
            return 50.0 + 40.0 * (((y // 3) + (x // 3)) % 2) + 0.5 * x

        self.det = SynSignal(func=reading, name="det")

    def scan(self, rows: int, cols: int, **md):
        return grid_scan(
            [self.det], self.y, 0, rows - 1, rows, self.x, 0, cols - 1, cols, snake_axes=True, md=md
        )


def _documents(run_engine, plan):
    documents = []
    token = run_engine.subscribe(lambda name, doc: documents.append((name, doc)))
    run_engine(plan)
    run_engine.unsubscribe(token)
    return documents


def test_final_map_equals_offline_restoration_and_properties_follow_the_scan(beamline, run_engine):
    restorer = LiveRestorer(
        "xrf_Cu", "wiener", normalize="i0", beam_fwhm_um=BEAM_FWHM_UM, every_rows=4, min_rows=6
    )
    results = []
    token = restorer.subscribe(results.append)
    seen = []

    def watch(name, doc):
        if name == "event" and doc["seq_num"] == 60:
            seen.append((restorer.active_run, restorer.progress, restorer.raw_map))

    run_engine.subscribe(restorer)
    run_engine.subscribe(watch)
    documents = _documents(run_engine, grid_plan(beamline, 12))
    assert restorer.wait(60)

    uid = documents[0][1]["uid"]
    active, progress, raw_during = seen[0]
    assert active == uid
    assert progress == pytest.approx(60 / 144)
    assert np.isfinite(raw_during).sum() == 60

    events = [doc for name, doc in documents if name == "event"]
    data = {k: [e["data"][k] for e in events] for k in ("y", "x", "xrf_Cu", "i0")}
    start = documents[0][1]
    image = assemble(data["y"], data["x"], data["xrf_Cu"], data["i0"], start["extents"], (12, 12))
    offline = asirp.restore(image, "wiener", beam_fwhm_um=BEAM_FWHM_UM, pixel_um=STEP_UM)
    final = restorer.latest
    assert final.final
    assert final.ok
    assert final.exit_status == "success"
    np.testing.assert_allclose(final.raw_map, image, rtol=1e-6)
    assert_same_restoration(restorer.restored_map, offline.image)
    assert restorer.latest_for(uid) is final
    assert restorer.active_run is None
    assert restorer.progress == 1.0
    assert final.method == "wiener"
    assert restorer.method_used == "wiener"
    assert restorer.metrics == final.metrics
    assert "contrast_std" in final.metrics
    assert [r.sequence for r in results] == list(range(1, len(results) + 1))
    partial = [r for r in results if not r.final]
    assert partial
    assert partial[0].rows_restored >= 6
    restorer.unsubscribe(token)
    assert restorer.close(10)


def test_the_run_engine_never_waits_and_requests_coalesce_latest_wins(run_engine, gated_method):
    stage = Stage()
    restorer = LiveRestorer("det", "test_gated", psf_sigma_px=1.0, every_rows=1, min_rows=4)
    run_engine.subscribe(restorer)
    (uid,) = run_engine(stage.scan(12, 8))
    # The scan is over while the worker is still held inside the first restoration.
    assert restorer.latest is None
    assert gated_method.entered.is_set()
    assert not restorer.wait(0.2)
    gated_method.release.set()
    assert restorer.wait(30)
    calls = gated_method.calls
    assert calls[-1] == 12  # the final request always runs, on the full map
    assert len(calls) == 2  # the one that was running, then the final: the rest coalesced
    stats = restorer.stats
    assert stats["submitted"] == 8 + 1  # rows 4..11 done, then the final
    assert stats["coalesced"] == stats["submitted"] - len(calls)
    assert stats["completed"] == 2
    assert restorer.latest.final
    assert restorer.latest.run_uid == uid
    restorer.close(10)


def test_bad_documents_are_logged_and_skipped_and_never_crash_the_run_engine(run_engine, caplog):
    restorer = LiveRestorer("det", "wiener", psf_sigma_px=1.0, every_rows=None)
    run_engine.subscribe(restorer)
    with caplog.at_level(logging.WARNING, logger="callbacks.live"):
        # No shape in the start document: not a map.
        run_engine(count([Stage().det], num=3))
        assert "no 'shape'" in caplog.text
        # NaN readings: skipped, the holes filled for the restoration.
        stage = Stage(bad={(2, 3), (5, 5)})
        (nan_uid,) = run_engine(stage.scan(8, 8))
        # Positions outside the map: columns 8 and 9 fall beyond the declared extents.
        wide = Stage()
        (wide_uid,) = run_engine(
            wide.scan(8, 10, shape=(8, 8), extents=([0, 7], [0, 7]), snaking=(False, True))
        )
        # Documents of unknown runs and descriptors, and malformed ones.
        restorer("event", {"descriptor": "no-such-descriptor", "data": {}, "seq_num": 1})
        restorer("event_page", {"descriptor": "no-such-descriptor", "data": {}, "seq_num": [1]})
        restorer("descriptor", {"uid": "d", "run_start": "no-such-run", "name": "primary"})
        restorer("stop", {"uid": "s", "run_start": "no-such-run", "exit_status": "success"})
        restorer("event", {"no": "descriptor key"})
        assert restorer.wait(60)
    text = caplog.text
    assert "NaN or unreadable reading" in text
    assert "outside the map" in text
    assert "unknown descriptor" in text
    assert "unknown run" in text
    assert "skipped a bad event document" in text

    nan_result = restorer.latest_for(nan_uid)
    assert nan_result.ok
    assert nan_result.final
    assert nan_result.points_measured == 62
    assert np.isnan(nan_result.raw_map[2, 3])
    assert np.isnan(nan_result.raw_map[5, 5])
    assert np.isfinite(nan_result.restored_map).all()
    wide_result = restorer.latest_for(wide_uid)
    assert wide_result.ok
    assert wide_result.points_measured == 64
    assert wide_result.raw_map.shape == (8, 8)
    assert np.isfinite(wide_result.raw_map).all()
    # A later good scan is still restored.
    (good_uid,) = run_engine(Stage().scan(6, 6))
    assert restorer.wait(30)
    assert restorer.latest_for(good_uid).ok
    restorer.close(10)


def test_fly_scan_event_pages_fill_whole_lines(run_engine):
    beamline = sim.make_beamline(sample="ag300", beam_fwhm_um=BEAM_FWHM_UM, seed=1)
    restorer = LiveRestorer(
        element="Cu",
        method="wiener",
        normalize="i0",
        beam_fwhm_um=BEAM_FWHM_UM,
        every_rows=4,
        min_rows=6,
    )
    results = []
    restorer.subscribe(results.append)
    run_engine.subscribe(restorer)
    plan = sim.fly_map(beamline, -80.0, 80.0, -75.0, 75.0, 16, speed_um_s=1000.0, snake=True)
    documents = _documents(run_engine, plan)
    assert restorer.wait(60)
    pages = [doc for name, doc in documents if name == "event_page"]
    assert len(pages) == 16
    start = documents[0][1]
    columns = {k: np.concatenate([p["data"][k] for p in pages]) for k in ("y", "x", "xrf_Cu", "i0")}
    image = assemble(
        columns["y"], columns["x"], columns["xrf_Cu"], columns["i0"], start["extents"], (16, 16)
    )
    assert np.isfinite(image).all()
    final = restorer.latest
    np.testing.assert_allclose(final.raw_map, image, rtol=1e-6)
    pixel = (10.0, 10.0)  # lines 10 µm apart, bins of 1000 µm/s x 10 ms
    offline = asirp.restore(image, "wiener", beam_fwhm_um=BEAM_FWHM_UM, pixel_um=pixel)
    assert_same_restoration(final.restored_map, offline.image)
    assert any(not r.final for r in results)  # partial maps while flying
    restorer.close(10)


def test_auto_selects_cheaply_on_partial_maps_and_thoroughly_on_the_final_one(run_engine):
    restorer = LiveRestorer("det", "auto", psf_sigma_px=1.0, every_rows=4, min_rows=8)
    results = []
    restorer.subscribe(results.append)
    run_engine.subscribe(restorer)
    run_engine(Stage().scan(16, 16))
    assert restorer.wait(60)
    modes = {r.final: r.restoration.params["selection"]["mode"] for r in results if r.ok}
    assert modes == {False: "cheap", True: "thorough"}
    restorer.close(10)


def test_interleaved_runs_are_routed_separately(run_engine):
    first = _documents(run_engine, Stage().scan(8, 8))
    second = _documents(run_engine, Stage().scan(10, 6))
    # Interleave the two runs document by document, as two RunEngines publishing to one
    # proxy would.
    interleaved = []
    for pair in zip(first, second, strict=False):
        interleaved.extend(pair)
    interleaved.extend(first[len(second) :] + second[len(first) :])
    restorer = LiveRestorer("det", "wiener", psf_sigma_px=1.0, every_rows=None)
    for name, doc in interleaved:
        restorer(name, doc)
    assert restorer.wait(30)
    for documents, shape in ((first, (8, 8)), (second, (10, 6))):
        result = restorer.latest_for(documents[0][1]["uid"])
        assert result.final
        assert result.ok
        assert result.raw_map.shape == shape
        assert np.isfinite(result.raw_map).all()
        expected = asirp.restore(result.raw_map, "wiener", psf_sigma_px=1.0)
        assert_same_restoration(result.restored_map, expected.image)
    restorer.close(10)


def test_channel_adding_a_spectrum_equals_the_element_roi(run_engine):
    beamline = sim.make_beamline(sample="ag300", beam_fwhm_um=BEAM_FWHM_UM, seed=2)
    beamline.xrf.record_spectra = True
    roi = beamline.xrf.rois["Cu"].slice
    by_element = LiveRestorer(element="Cu", method="wiener", beam_fwhm_um=BEAM_FWHM_UM)
    by_spectrum = LiveRestorer(
        spectrum="xrf_spectrum",
        channels=(roi.start, roi.stop),
        method="wiener",
        beam_fwhm_um=BEAM_FWHM_UM,
    )
    summed = LiveRestorer(["xrf_Cu", "xrf_Ar"], "wiener", beam_fwhm_um=BEAM_FWHM_UM)
    for restorer in (by_element, by_spectrum, summed):
        run_engine.subscribe(restorer)
    documents = _documents(run_engine, grid_plan(beamline, 6))
    events = [doc for name, doc in documents if name == "event"]
    for restorer in (by_element, by_spectrum, summed):
        assert restorer.wait(30)
        restorer.close(10)
    np.testing.assert_array_equal(by_element.raw_map, by_spectrum.raw_map)
    ar = np.array([e["data"]["xrf_Ar"] for e in events], dtype=np.float64)
    assert np.nansum(summed.raw_map) == pytest.approx(np.nansum(by_element.raw_map) + ar.sum())


def test_bad_configuration_is_refused_at_construction():
    with pytest.raises(ValueError, match="exactly one map source"):
        LiveRestorer(method="wiener")
    with pytest.raises(ValueError, match="unknown method"):
        LiveRestorer("det", "no_such_method")
    with pytest.raises(ValueError, match="no parameter"):
        LiveRestorer("det", "wiener", {"no_such_parameter": 1})
    with pytest.raises(ValueError, match="one PSF description"):
        LiveRestorer("det", "wiener", beam_fwhm_um=50.0, psf_sigma_px=2.0)
    with pytest.raises(ValueError, match="publish"):
        LiveRestorer("det", "wiener", publish="sometimes")
    with pytest.raises(ValueError, match="every_rows"):
        LiveRestorer("det", "wiener", every_rows=0)
