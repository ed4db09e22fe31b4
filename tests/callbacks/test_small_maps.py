"""Live restoration of small coarse maps (issue 14): an 11 x 11 grid scan of the seed-like
sample at a 70 µm step with a 50 µm beam, normalised by I0, restored by Richardson-Lucy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from bluesky import RunEngine

import sim
from callbacks.live import LiveRestorer
from tests.callbacks.conftest import grid_plan

BEAM_UM = 50.0
STEP_UM = 70.0
POINTS = 11  # 700 µm at 70 µm steps


def coarse_scan(restorer: LiveRestorer, seed: int) -> str:
    """Run an 11 x 11 grid scan of the seed-like sample through ``restorer``; its uid."""
    beamline = sim.make_beamline("seed", beam_fwhm_um=BEAM_UM, seed=seed, field_um=800.0)
    engine = RunEngine({})
    engine.subscribe(restorer)
    (uid,) = engine(grid_plan(beamline, POINTS, step_um=STEP_UM, md={"beam_fwhm_um": BEAM_UM}))
    assert restorer.wait(60)
    return uid


@pytest.mark.parametrize("seed", [0, 1])
def test_the_final_restoration_of_a_coarse_i0_map_is_not_the_raw_map(seed):
    restorer = LiveRestorer(element="Se", normalize="i0", method="richardson_lucy", every_rows=None)
    final = restorer.latest_for(coarse_scan(restorer, seed))
    assert restorer.close(10)
    assert final.ok
    assert final.final
    params = final.restoration.params
    # The counts gain comes from the monitor (mean(i0) / i0 per pixel, about 1), not from the
    # map's noise, which the one-pixel hotspots inflated tenfold or more: the discrepancy rule
    # then stopped before the first iteration and the "restored" map was the input, smoothed.
    assert params["counts_gain_source"] == "given"
    assert params["counts_gain"] == pytest.approx(1.0, abs=0.01)
    assert params["iterations_run"] >= 2
    assert final.restoration.metrics["changed"] is True
    assert not np.allclose(final.restored_map, final.raw_map, rtol=0.01)
    assert final.restoration.cautions() == []


def test_a_restoration_that_changed_nothing_is_cautioned_in_the_derived_run(caplog):
    restorer = LiveRestorer(
        element="Se",
        normalize="i0",
        method="richardson_lucy",
        params={"iterations": 1, "stop": "fixed"},
        psf_sigma_px=0.1,  # a beam far narrower than a step: one iteration moves nothing
        every_rows=None,
    )
    documents = []
    restorer.subscribe_documents(lambda name, doc: documents.append((name, doc)))
    with caplog.at_level(logging.WARNING, logger="callbacks.live"):
        final = restorer.latest_for(coarse_scan(restorer, 0))
    assert restorer.close(10)
    (note,) = final.restoration.cautions()
    assert note.startswith("restoration changed nothing")
    assert "after 1 iteration" in note
    events = [doc for name, doc in documents if name == "event"]
    assert events[-1]["data"]["final"]
    assert events[-1]["data"]["cautions"] == note
    assert any("restoration changed nothing" in record.getMessage() for record in caplog.records)
