"""Acceptance in tiled: a grid scan on the simulated beamline gives a derived run equal to the
offline restoration of the raw run read back; a failing method fails the derived run, not the
scan. The raw runs are written by bluesky-tiled-plugins' TiledWriter, the derived runs by the
LiveRestorer, both into the session's embedded tiled server."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import asirp
from callbacks.live import LiveRestorer
from callbacks.publish import DERIVED_PLAN_NAME, derived_runs, raw_run_writer, read_final_map
from tests.callbacks.conftest import (
    BEAM_FWHM_UM,
    STEP_UM,
    assemble,
    assert_same_restoration,
    grid_plan,
)
from tests.callbacks.test_live import Stage


def _raw_map_from_tiled(raw):
    start = raw.metadata["start"]
    primary = raw["primary"]
    y, x, cu, i0 = (primary[key].read() for key in ("y", "x", "xrf_Cu", "i0"))
    return assemble(y, x, cu, i0, start["extents"], tuple(start["shape"])), len(cu)


def test_grid_scan_derived_run_equals_offline_restoration_with_full_provenance(
    beamline, run_engine, tiled_client
):
    restorer = LiveRestorer(
        "xrf_Cu",
        "richardson_lucy",
        normalize="i0",
        beam_fwhm_um=BEAM_FWHM_UM,
        every_rows=5,
        tiled=tiled_client,
    )
    results = []
    restorer.subscribe(results.append)
    run_engine.subscribe(raw_run_writer(tiled_client))
    run_engine.subscribe(restorer)
    (uid,) = run_engine(grid_plan(beamline, 20))
    assert restorer.wait(90)
    assert restorer.close(10)
    assert restorer.tiled.errors == 0

    raw = tiled_client[uid]
    image, n_points = _raw_map_from_tiled(raw)
    assert n_points == 400
    assert np.isfinite(image).all()
    i0 = np.asarray(raw["primary"]["i0"].read(), dtype=np.float64)
    offline = asirp.restore(
        image,
        "richardson_lucy",
        beam_fwhm_um=BEAM_FWHM_UM,
        pixel_um=(STEP_UM, STEP_UM),
        counts_gain=float(np.mean(i0.mean() / i0)),  # the live restorer's: from the monitor
    )

    found = derived_runs(tiled_client, uid)
    assert len(found) == 1
    derived = next(iter(found.values()))
    restored = read_final_map(derived)
    assert_same_restoration(restored, offline.image)
    stream = derived["restored"]
    np.testing.assert_allclose(stream["input_map"].read()[-1], image, rtol=1e-6)
    assert list(stream["final"].read()) == [True]

    start = derived.metadata["start"]
    raw_start = raw.metadata["start"]
    assert start["parent_uid"] == uid
    assert start["parent_scan_id"] == raw_start["scan_id"]
    assert start["parent_plan_name"] == "grid_scan"
    assert start["plan_name"] == DERIVED_PLAN_NAME
    assert start["software"] == "asirp"
    assert start["software_version"] == asirp.__version__
    assert start["method"] == start["method_requested"] == "richardson_lucy"
    assert start["parameters"]["iterations_run"] == offline.params["iterations_run"]
    assert start["psf"]["model"] == "gaussian"
    assert start["psf"]["beam_fwhm_um"] == [BEAM_FWHM_UM, BEAM_FWHM_UM]
    assert start["psf"]["pixel_um"] == pytest.approx([STEP_UM, STEP_UM])
    assert start["map"]["source"] == {"kind": "field", "fields": ["xrf_Cu"], "normalize": "i0"}
    assert start["map"]["geometry"]["shape"] == [20, 20]
    stop = derived.metadata["stop"]
    assert stop["exit_status"] == "success"
    assert stop["restorations"] == 1
    metrics = json.loads(stream["metrics"].read()[-1])
    assert metrics["contrast_std"] == pytest.approx(offline.metrics["contrast_std"], rel=1e-4)
    assert list(stream["cautions"].read()) == [""]  # RL with the true beam: nothing to distrust

    # A partial restoration ran during the scan (not published: publish="final").
    partial = [r for r in results if not r.final]
    assert partial
    assert all(r.ok for r in partial)
    assert np.isnan(partial[0].restored_map[partial[0].rows_restored :]).all()
    assert results[-1].final
    assert results[-1].derived_uid == start["uid"]


def test_a_method_that_raises_mid_scan_fails_the_derived_run_not_the_scan(
    beamline, run_engine, tiled_client, exploding_method, caplog
):
    restorer = LiveRestorer(
        "xrf_Cu",
        exploding_method,
        normalize="i0",
        beam_fwhm_um=BEAM_FWHM_UM,
        every_rows=4,
        min_rows=4,
        tiled=tiled_client,
    )
    results = []
    restorer.subscribe(results.append)
    run_engine.subscribe(raw_run_writer(tiled_client))
    run_engine.subscribe(restorer)
    with caplog.at_level(logging.ERROR, logger="callbacks.live"):
        (uid,) = run_engine(grid_plan(beamline, 12))
        assert restorer.wait(60)
    restorer.close(10)

    raw = tiled_client[uid]
    assert raw.metadata["stop"]["exit_status"] == "success"
    image, n_points = _raw_map_from_tiled(raw)
    assert n_points == 144
    assert np.isfinite(image).all()

    (derived,) = derived_runs(tiled_client, uid).values()
    assert derived.metadata["start"]["parent_uid"] == uid
    assert derived.metadata["start"]["method"] == exploding_method
    stop = derived.metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert "simulated failure inside the method" in stop["reason"]
    assert stop["restorations"] == 0
    assert stop["failed_restorations"] >= 2  # at least one partial (mid-scan) and the final
    assert any(not r.final and not r.ok for r in results)
    assert results[-1].final
    assert results[-1].exit_status == "fail"
    with pytest.raises(LookupError):
        read_final_map(derived)
    assert any("restoration" in rec.message and "failed" in rec.message for rec in caplog.records)


def test_tiled_failures_are_counted_and_never_reach_the_run_engine(
    tiled_server, run_engine, tiled_client
):
    from tiled.client import from_uri

    client = from_uri(tiled_server.uri)
    restorer = LiveRestorer("det", "wiener", psf_sigma_px=1.0, tiled=client)
    client.context.close()  # tiled goes away for this client: every write now fails
    run_engine.subscribe(restorer)
    (uid,) = run_engine(Stage().scan(6, 6))
    assert restorer.wait(30)
    restorer.close(10)
    result = restorer.latest
    assert result.run_uid == uid
    assert result.ok
    assert result.exit_status == "success"
    # The start document was refused; TiledWriter then drops the rest of that run.
    assert restorer.tiled.errors == 1
    assert "closed" in restorer.tiled.last_error
    assert result.derived_uid not in tiled_client
