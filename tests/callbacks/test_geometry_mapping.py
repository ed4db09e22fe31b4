"""Scan geometry from start documents, map sources, the live map accumulator."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky.plans import grid_scan
from ophyd.sim import SynAxis, SynGauss

from asirp.xrf.maps import normalize
from callbacks.geometry import GeometryError, ScanGeometry
from callbacks.mapping import LiveMap, MapSource, SourceError, fill_unmeasured


def _grid_start(run_engine, snake: bool):
    y, x = SynAxis(name="gy"), SynAxis(name="gx")
    det = SynGauss("gdet", x, "gx", center=0, Imax=1, sigma=1)
    starts = []
    run_engine.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    run_engine(grid_scan([det], y, 1.0, 3.0, 3, x, -2.0, 2.0, 5, snake_axes=snake))
    return starts[0]


def test_geometry_of_a_real_grid_scan_start_document(run_engine):
    geometry = ScanGeometry.from_start(_grid_start(run_engine, snake=True))
    assert geometry.shape == (3, 5)
    assert geometry.extents == ((1.0, 3.0), (-2.0, 2.0))
    assert geometry.snaking == (False, True)
    assert geometry.position_fields == ("gy", "gx")
    assert geometry.stream == "primary"
    assert geometry.step == (1.0, 1.0)
    assert geometry.pixel_um(1000.0) == (1000.0, 1000.0)


def test_positions_map_to_pixels_and_outside_points_are_flagged():
    geometry = ScanGeometry(shape=(3, 5), extents=((1.0, 3.0), (2.0, -2.0)))  # x runs backwards
    rows, cols, valid = geometry.indices_from_positions(
        np.array([1.0, 2.04, 3.0, 3.6, 2.0, np.nan]), np.array([2.0, 0.96, -2.0, 0.0, -2.7, 0.0])
    )
    assert valid.tolist() == [True, True, True, False, False, False]
    assert rows[:3].tolist() == [0, 1, 2]
    assert cols[:3].tolist() == [0, 1, 4]
    assert geometry.index_from_position(2.04, 0.96) == (1, 1)
    assert geometry.index_from_position(3.6, 0.0) is None
    assert geometry.index_from_position(float("nan"), 0.0) is None


def test_sequence_numbers_follow_snaking():
    geometry = ScanGeometry(shape=(2, 3), extents=((0, 1), (0, 2)), snaking=(False, True))
    rows, cols, valid = geometry.indices_from_sequence(np.arange(1, 8))
    assert list(zip(rows[:6].tolist(), cols[:6].tolist(), strict=True)) == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 2),
        (1, 1),
        (1, 0),
    ]
    assert valid.tolist() == [True] * 6 + [False]


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ({"uid": "a"}, "no 'shape'"),
        ({"uid": "a", "shape": [10]}, "2-D"),
        ({"uid": "a", "shape": [4, 4]}, "no 'extents'"),
        ({"uid": "a", "shape": [4, 4], "extents": [[0, 1]]}, "two"),
        ({"uid": "a", "shape": [4, 4], "extents": [[0, 1], [0, "x"]]}, "pair of numbers"),
        ({"uid": "a", "shape": [4, 0], "extents": [[0, 1], [0, 1]]}, "positive"),
        ({"uid": "a", "shape": [1, 1], "extents": [[0, 0], [0, 0]]}, None),
    ],
)
def test_bad_start_documents_raise_geometry_errors(start, message):
    if message is None:  # a valid document whose step cannot be found
        with pytest.raises(GeometryError, match="scan step"):
            ScanGeometry.from_start(start).pixel_um()
    else:
        with pytest.raises(GeometryError, match=message):
            ScanGeometry.from_start(start)


def test_map_sources_resolve_against_data_keys():
    keys = {
        "xrf_Cu": {"shape": []},
        "xrf_Ar": {"shape": []},
        "i0": {"shape": []},
        "xrf_spectrum": {"shape": [100]},
    }
    assert MapSource(element="cu").resolve(keys).fields == ("xrf_Cu",)
    assert MapSource(field=["xrf_Cu", "xrf_Ar"]).resolve(keys).value(
        {"xrf_Cu": 2, "xrf_Ar": 3}
    ) == pytest.approx(5.0)
    spectrum = MapSource(spectrum="xrf_spectrum", channels=(10, 20)).resolve(keys)
    data = {"xrf_spectrum": np.arange(100)}
    assert spectrum.value(data) == pytest.approx(sum(range(10, 20)))
    page = {"xrf_spectrum": [np.arange(100), np.ones(100)]}
    np.testing.assert_allclose(spectrum.values(page, 2), [145.0, 10.0])
    assert np.isnan(MapSource(field="xrf_Cu").resolve(keys).value({"xrf_Cu": "bad"}))
    with pytest.raises(SourceError, match="matches 0 fields"):
        MapSource(element="Fe").resolve(keys)
    with pytest.raises(SourceError, match="not in the stream"):
        MapSource(field="nope").resolve(keys)
    with pytest.raises(SourceError, match="do not fit"):
        MapSource(spectrum="xrf_spectrum", channels=(90, 120)).resolve(keys)
    with pytest.raises(SourceError, match="normalisation"):
        MapSource(field="xrf_Cu", normalize="i1").resolve(keys)
    with pytest.raises(ValueError, match="channels"):
        MapSource(spectrum="xrf_spectrum")


def test_live_map_rows_done_normalisation_and_filling():
    geometry = ScanGeometry(shape=(3, 4), extents=((0, 2), (0, 3)))
    live = LiveMap(geometry, normalized=True)
    rng = np.random.default_rng(0)
    values = rng.poisson(100, size=12).astype(float)
    flux = rng.uniform(0.5, 1.5, size=12)
    for k in range(6):
        live.add(k // 4, k % 4, values[k], flux[k])
    assert live.rows_done == 1
    assert live.rows_started == 2
    assert live.points == 6
    live.add_many(np.array([1, 1, 2, 2]), np.array([2, 3, 0, 1]), values[6:10], flux[6:10])
    assert live.rows_done == 2
    assert live.progress == pytest.approx(10 / 12)
    image = live.image()
    expected, _ = normalize(values[:10], "i0", flux[:10])
    np.testing.assert_allclose(image.ravel()[:10], expected, rtol=1e-6)
    assert np.isnan(image.ravel()[10:]).all()
    filled, n = fill_unmeasured(image[:3])
    assert n == 2
    assert np.isfinite(filled).all()
    assert filled[2, 3] == pytest.approx(np.nanmean(image), rel=1e-6)
    with pytest.raises(ValueError, match="no measured pixel"):
        fill_unmeasured(np.full((4, 4), np.nan, dtype=np.float32))
