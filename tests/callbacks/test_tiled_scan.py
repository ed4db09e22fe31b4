"""Bluesky µ-XRF runs read back from tiled as the core's scan model (``scan_from_run``).

Each run is made by the real RunEngine on the simulated beamline, written to the session's
embedded tiled server by the project's ``raw_run_writer`` and read back; the element map that
``asirp.xrf.maps.build_map`` makes of it is checked against the run's own fields and, for
spectra, against the map made from the file the simulated beamline writes of the same points.
"""

from __future__ import annotations

import numpy as np
import pytest
from bluesky.plans import count, grid_scan

import sim
from asirp.io import InputTooLargeError
from asirp.xrf.maps import build_map
from asirp.xrf.raw_model import RawXRFScan, ROISums
from callbacks.publish import raw_run_writer
from callbacks.tiled_scan import recorded_roi, scan_from_run
from tests.callbacks.conftest import assemble

STEP_UM = 10.0
ROWS, COLS = 5, 6  # not square: a swapped axis cannot pass


def _grid(beamline, *, snake=True, md=None):
    """ROWS x COLS points at STEP_UM (y slow from -20 µm, x fast from -25 µm)."""
    y0, x0 = -20.0, -25.0
    return grid_scan(
        beamline.detectors,
        beamline.y,
        y0,
        y0 + STEP_UM * (ROWS - 1),
        ROWS,
        beamline.x,
        x0,
        x0 + STEP_UM * (COLS - 1),
        COLS,
        snake_axes=snake,
        md={"beam_fwhm_um": 50.0, "sample": "ag300", **(md or {})},
    )


@pytest.fixture
def record(run_engine, tiled_client):
    """Run a plan with the raw runs written to tiled; return the run read back."""
    run_engine.subscribe(raw_run_writer(tiled_client))

    def run(plan):
        (uid,) = run_engine(plan)
        return tiled_client[uid]

    return run


def _fields(run, *keys):
    return [np.asarray(run["primary"][key].read()) for key in keys]


def test_a_step_scan_becomes_roi_sums_per_element_and_maps_with_the_scan_step(beamline, record):
    run = record(_grid(beamline))
    scan = scan_from_run(run)

    assert isinstance(scan, ROISums)
    n = ROWS * COLS
    assert scan.counts.shape == (n, 4, 2)  # 4 detector elements, the Cu and Ar ROIs
    assert scan.counts.dtype == np.int64
    y, x, i0, cu, per_element, live = _fields(
        run, "y", "x", "i0", "xrf_Cu", "xrf_det_roi_counts", "xrf_live_time"
    )
    np.testing.assert_array_equal(scan.y_um, y)
    np.testing.assert_array_equal(scan.x_um, x)
    np.testing.assert_array_equal(scan.i0, i0)
    np.testing.assert_array_equal(scan.counts, per_element)
    np.testing.assert_array_equal(scan.counts.sum(axis=1)[:, 0], cu)
    np.testing.assert_array_equal(scan.live_time_s, live)
    np.testing.assert_allclose(scan.real_time_s, beamline.xrf.dwell_time.get())
    assert np.all(scan.live_time_s < scan.real_time_s)  # the detector had dead time
    np.testing.assert_array_equal(scan.line_index, np.rint((y + 20.0) / STEP_UM).astype(int))
    assert scan.calibration == beamline.model.detector.calibration
    assert scan.rois == tuple(beamline.xrf.rois.values())
    assert scan.n_channels == beamline.model.detector.n_channels
    assert scan.metadata["scan_kind"] == "snake"
    assert scan.metadata["step_um"] == [STEP_UM, STEP_UM]
    assert scan.metadata["sample"] == "ag300"
    assert scan.metadata["source"]["uid"] == run.metadata["start"]["uid"]
    assert scan.metadata["source"]["exit_status"] == "success"

    xrf_map = build_map(scan, roi=recorded_roi(scan, "Cu"), normalize_by="i0")
    assert xrf_map.shape == (ROWS, COLS)
    assert xrf_map.pixel_um == pytest.approx((STEP_UM, STEP_UM))
    np.testing.assert_allclose(xrf_map.y_um, -20.0 + STEP_UM * np.arange(ROWS))
    np.testing.assert_allclose(xrf_map.x_um, -25.0 + STEP_UM * np.arange(COLS))
    start = run.metadata["start"]
    expected = assemble(y, x, cu, i0, start["extents"], (ROWS, COLS))
    np.testing.assert_allclose(xrf_map.data, expected, rtol=1e-6)

    # A motor in other units: positions scale; too large a field is refused before reading.
    in_mm = scan_from_run(run, position_scale_um=1000.0)
    np.testing.assert_allclose(in_mm.x_um, 1000.0 * x)
    with pytest.raises(InputTooLargeError, match=r"field 'y' of run"):
        scan_from_run(run, max_bytes=8 * n - 1)


def test_a_step_scan_with_spectra_is_the_raw_scan_the_file_reader_gives(record, tmp_path):
    beamline = sim.make_beamline(sample="ag300", beam_fwhm_um=50.0, seed=1, record_spectra=True)
    run = record(_grid(beamline, snake=False))
    scan = scan_from_run(run)

    assert isinstance(scan, RawXRFScan)
    n = ROWS * COLS
    assert scan.spectra.shape == (n, 1, beamline.model.detector.n_channels)
    from_file = beamline.raw_scan(beam_fwhm_um=[50.0, 50.0])  # the same points, per element
    np.testing.assert_array_equal(scan.spectra[:, 0], from_file.spectra.sum(axis=1))
    np.testing.assert_array_equal(scan.x_um, from_file.x_um)
    np.testing.assert_array_equal(scan.y_um, from_file.y_um)
    np.testing.assert_array_equal(scan.i0, from_file.i0)
    np.testing.assert_array_equal(scan.line_index, from_file.line_index)
    np.testing.assert_allclose(scan.live_time_s[:, 0], from_file.live_time_s.mean(axis=1))
    assert scan.calibration == from_file.calibration
    assert scan.metadata["scan_kind"] == from_file.metadata["scan_kind"] == "raster"
    (cu,) = _fields(run, "xrf_Cu")
    np.testing.assert_array_equal(scan.roi_counts(recorded_roi(scan, "Cu"))[:, 0], cu)

    # The element map of the run equals the one made from the raw-scan file of the same points.
    path = beamline.save_raw_scan(tmp_path / "scan.h5")
    tiled_map = build_map(scan, "Cu", normalize_by="i0")
    file_map = build_map(path, "Cu", normalize_by="i0")
    assert tiled_map.pixel_um == file_map.pixel_um == pytest.approx((STEP_UM, STEP_UM))
    np.testing.assert_allclose(tiled_map.data, file_map.data, rtol=1e-6)


def test_a_fly_scan_becomes_element_summed_roi_sums_with_dead_time_from_the_fraction(
    beamline, record
):
    plan = sim.fly_map(beamline, -40.0, 40.0, -15.0, 15.0, 4, speed_um_s=1000.0, period_s=0.01)
    run = record(plan)
    scan = scan_from_run(run)

    assert isinstance(scan, ROISums)
    assert scan.counts.shape == (4 * 8, 1, 2)  # 8 bins of 10 µm per line, elements summed
    x, cu, dead = _fields(run, "x", "xrf_Cu", "xrf_dead_time")
    np.testing.assert_array_equal(scan.counts[:, 0, 0], cu)
    np.testing.assert_array_equal(scan.x_um, x)
    np.testing.assert_allclose(scan.real_time_s, 0.01)
    np.testing.assert_allclose(scan.live_time_s[:, 0], 0.01 * (1.0 - dead))
    assert scan.metadata["scan_kind"] == "fly"
    assert scan.metadata["calibration_from"] == "detector data keys"  # no detector configuration
    assert scan.calibration == beamline.model.detector.calibration

    xrf_map = build_map(scan, roi=recorded_roi(scan, "Cu"), dead_time=True)
    assert xrf_map.shape == (4, 8)
    assert xrf_map.pixel_um == pytest.approx((10.0, 10.0))
    np.testing.assert_allclose(xrf_map.x_um, -35.0 + 10.0 * np.arange(8))
    assert xrf_map.dead_time_corrected


def test_runs_that_are_not_xrf_maps_get_one_clear_error(beamline, record):
    counted = record(count(beamline.detectors, 3))
    with pytest.raises(ValueError, match=r"is not a µ-XRF map: .*no 'shape'"):
        scan_from_run(counted)

    only_i0 = record(_grid_of([beamline.i0], beamline))
    with pytest.raises(ValueError, match="is not a µ-XRF map: no XRF detector"):
        scan_from_run(only_i0)
    with pytest.raises(ValueError, match="has no field 'flux'"):
        scan_from_run(only_i0, monitor="flux")
    with pytest.raises(TypeError, match="Bluesky run read from tiled"):
        scan_from_run({"uid": "not a run"})


def _grid_of(detectors, beamline):
    return grid_scan(detectors, beamline.y, -10.0, 10.0, 3, beamline.x, -10.0, 10.0, 3)
