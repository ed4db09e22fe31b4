"""Runs in tiled carry named dims, coordinates in µm and units.

A grid scan on the simulated beamline is restored live by a ``LiveRestorer``; its raw run
(``raw_run_writer``) and derived run (``TiledSink``) go to the session's embedded tiled server
and are read back: the derived maps have dims ``y``/``x`` (``y_input``/``x_input`` for the map
that went in), coordinates in µm equal to the scan's positions (the finer grid for a
super-resolved map), and units; the raw run's positions and detector fields carry units.
"""

from __future__ import annotations

import numpy as np
import pytest
from bluesky.plans import grid_scan

from asirp.registry import MethodOutput, MethodSpec, register_method
from callbacks.live import LiveRestorer
from callbacks.publish import derived_runs, map_axes_um, raw_run_writer
from callbacks.tiled_scan import scan_from_run
from tests.callbacks.conftest import _unregister

STEP_UM = 10.0
ROWS, COLS = 6, 8  # not square: a swapped axis cannot pass
Y0, X0 = -30.0, -45.0


def _grid(beamline):
    return grid_scan(
        beamline.detectors,
        beamline.y,
        Y0,
        Y0 + STEP_UM * (ROWS - 1),
        ROWS,
        beamline.x,
        X0,
        X0 + STEP_UM * (COLS - 1),
        COLS,
        snake_axes=True,
    )


@pytest.fixture
def doubling_method():
    """A registered super-resolution method of scale 2 that repeats each pixel 2 x 2.

    It stands for any SR method: what is tested is where the finer grid's cells lie.
    """

    def run(problem, params):
        image = problem.data.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return MethodOutput(image=image, psf=problem.psf)

    spec = register_method(
        MethodSpec(
            name="test_doubling",
            family="super-resolution",
            needs_psf=True,
            scale=2,
            parameters=(),
            run=run,
            summary="repeats each pixel 2 x 2",
        )
    )
    yield spec.name
    _unregister(spec.name)


def _restore_live(beamline, run_engine, tiled_client, method):
    """Run the grid with a live restorer; return the raw run and its derived run from tiled."""
    restorer = LiveRestorer(
        "xrf_Cu",
        method,
        normalize="i0",
        psf_sigma_px=1.0,
        every_rows=None,
        tiled=tiled_client,
    )
    run_engine.subscribe(raw_run_writer(tiled_client))
    run_engine.subscribe(restorer)
    (uid,) = run_engine(_grid(beamline))
    assert restorer.wait(60)
    assert restorer.close(10)
    assert restorer.tiled.errors == 0
    (derived,) = derived_runs(tiled_client, uid).values()
    return tiled_client[uid], derived


def test_a_derived_run_has_named_dims_coordinates_in_um_and_units(
    beamline, run_engine, tiled_client
):
    raw, derived = _restore_live(beamline, run_engine, tiled_client, "wiener")
    stream = derived["restored"]

    assert stream["restored_map"].structure().dims == ("time", "y", "x")
    assert stream["input_map"].structure().dims == ("time", "y_input", "x_input")
    assert stream["x_um"].structure().dims == ("time", "x")
    assert stream["y_um"].structure().dims == ("time", "y")
    # The map's coordinates are the scan's positions (pixel (0, 0) at the first extents).
    x_scan = np.unique(np.asarray(raw["primary"]["x"].read()))
    y_scan = np.unique(np.asarray(raw["primary"]["y"].read()))
    np.testing.assert_allclose(stream["x_um"].read()[-1], x_scan)
    np.testing.assert_allclose(stream["y_um"].read()[-1], y_scan)
    np.testing.assert_allclose(stream["x_input_um"].read()[-1], x_scan)
    np.testing.assert_allclose(stream["y_input_um"].read()[-1], y_scan)

    data_keys = stream.metadata["data_keys"]
    assert data_keys["x_um"]["units"] == data_keys["y_um"]["units"] == "um"
    assert data_keys["restored_map"]["units"] == data_keys["input_map"]["units"] == "counts"
    assert data_keys["restored_map"]["dims"] == ["y", "x"]
    assert stream["restored_map"].metadata["units"] == "counts"  # on the array node too

    # xarray gets named, sized axes: the map lines up with its coordinates.
    dataset = stream.read()
    assert dataset["restored_map"].dims == ("time", "y", "x")
    assert dict(dataset.sizes)["y"] == ROWS
    assert dict(dataset.sizes)["x"] == COLS


def test_a_super_resolved_map_has_the_coordinates_of_its_finer_grid(
    beamline, run_engine, tiled_client, doubling_method
):
    _, derived = _restore_live(beamline, run_engine, tiled_client, doubling_method)
    stream = derived["restored"]

    restored = stream["restored_map"].read()
    assert restored.shape == (1, 2 * ROWS, 2 * COLS)
    np.testing.assert_array_equal(restored[-1, ::2, ::2], stream["input_map"].read()[-1])
    assert stream["restored_map"].structure().dims == ("time", "y", "x")
    assert stream["input_map"].structure().dims == ("time", "y_input", "x_input")
    x_fine = stream["x_um"].read()[-1]
    y_fine = stream["y_um"].read()[-1]
    assert x_fine.shape == (2 * COLS,)
    assert y_fine.shape == (2 * ROWS,)
    # Each scan pixel splits into two cells of half its size, centred on the scan position.
    np.testing.assert_allclose(np.diff(x_fine), STEP_UM / 2)
    np.testing.assert_allclose(np.diff(y_fine), STEP_UM / 2)
    np.testing.assert_allclose(x_fine.reshape(COLS, 2).mean(axis=1), X0 + STEP_UM * np.arange(COLS))
    np.testing.assert_allclose(y_fine.reshape(ROWS, 2).mean(axis=1), Y0 + STEP_UM * np.arange(ROWS))
    np.testing.assert_allclose(stream["x_input_um"].read()[-1], X0 + STEP_UM * np.arange(COLS))
    dataset = stream.read()
    assert dict(dataset.sizes)["x"] == 2 * COLS
    assert dict(dataset.sizes)["x_input"] == COLS


def test_a_raw_run_carries_units_and_named_dims(beamline, run_engine, tiled_client):
    run_engine.subscribe(raw_run_writer(tiled_client))
    (uid,) = run_engine(_grid(beamline))
    primary = tiled_client[uid]["primary"]

    (descriptor,) = primary.descriptors
    units = {key: info.get("units") for key, info in descriptor["data_keys"].items()}
    assert units["x"] == units["y"] == "um"
    assert units["xrf_Cu"] == units["xrf_det_roi_counts"] == units["i0"] == "counts"
    assert units["xrf_live_time"] == "s"
    assert units["i0_ring_current"] == "mA"
    configuration = descriptor["configuration"]
    assert configuration["x"]["data_keys"]["x_velocity"]["units"] == "um/s"
    assert configuration["xrf"]["data_keys"]["xrf_dwell_time"]["units"] == "s"
    assert configuration["xrf"]["data_keys"]["xrf_calibration_gain_kev"]["units"] == "keV/channel"
    counts = primary["xrf_det_roi_counts"]
    assert counts.structure().dims == ("time", "detector_element", "roi")
    assert counts.dtype == np.int64  # counts stay integers (dtype_numpy of the data key)
    assert primary["xrf_live_time"].structure().dims == ("time", "detector_element")
    assert [roi["name"] for roi in descriptor["data_keys"]["xrf_det_roi_counts"]["rois"]] == [
        "Cu Ka",
        "Ar Ka",
    ]


@pytest.fixture
def v3_runs_afterwards():
    """Give tiled clients v3 runs again after the test.

    databroker's v1 API calls ``run.v2``, which in bluesky-tiled-plugins 2.0.12 re-points the
    process-wide "BlueskyRun" structure client at its v2 class (a shallow copy of the shared
    registry is changed): every client made later would hand out v2 runs.
    """
    yield
    from bluesky_tiled_plugins.clients.bluesky_run import BlueskyRun
    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH

    for dispatch in DEFAULT_STRUCTURE_CLIENT_DISPATCH.values():
        dispatch.set("BlueskyRun", lambda: BlueskyRun)


def test_a_raw_run_reads_back_through_databroker_v1(
    beamline, run_engine, tiled_client, v3_runs_afterwards
):
    from databroker.v1 import Broker

    run_engine.subscribe(raw_run_writer(tiled_client))
    (uid,) = run_engine(_grid(beamline))
    primary = tiled_client[uid]["primary"]
    x, cu = (np.asarray(primary[key].read()) for key in ("x", "xrf_Cu"))

    # databroker's v1 API over the catalog, as CatalogOfBlueskyRuns.v1 builds it (Broker
    # switches this client to its v2 run views). run.v1.table() itself fails in
    # bluesky-tiled-plugins 2.0.12: its run.v1 wraps the run, not the catalog, in the Broker.
    header = Broker(tiled_client)[uid]
    assert header.start["uid"] == uid
    assert header.stop["exit_status"] == "success"
    table = header.table(fields=["x", "y", "xrf_Cu", "i0"])
    assert len(table) == ROWS * COLS
    np.testing.assert_array_equal(table["x"].to_numpy(), x)
    np.testing.assert_array_equal(table["xrf_Cu"].to_numpy(), cu)

    # The client now hands out v2 runs; the scan reader still finds the stored fields.
    v2_run = tiled_client[uid]
    assert "data" in v2_run["primary"]
    np.testing.assert_array_equal(scan_from_run(v2_run).x_um, x)


def test_map_axes_follow_the_scan_direction_motor_units_and_single_lines():
    geometry = {"shape": [3, 1], "extents": [[0.2, 0.0], [0.05, 0.05]]}  # mm; y runs down
    y_um, x_um = map_axes_um(geometry, (6, 2), pixel_um=(100.0, 25.0), position_scale_um=1000.0)
    np.testing.assert_allclose(y_um, [225.0, 175.0, 125.0, 75.0, 25.0, -25.0])
    np.testing.assert_allclose(x_um, [43.75, 56.25])  # one column: cells split its 25 µm pixel
