"""Reading tomography scans (Data Exchange, NXtomo) and refusing bad ones in one line."""

from __future__ import annotations

import numpy as np
import pytest

from asirp.tomo.exchange import read_scan
from tests.asirp.tomo.conftest import COLUMNS, ROWS, write_exchange, write_nxtomo
from tests.conftest import TOOTH_H5


def test_tooth_data_exchange():
    scan = read_scan(TOOTH_H5)
    assert scan.projections.shape == (181, 2, 640)
    assert scan.projections.dtype == np.float32
    assert scan.flats.shape == (10, 2, 640)
    assert scan.darks.shape[1:] == (2, 640)
    assert scan.metadata["format"] == "Data Exchange"
    assert scan.metadata["angle_units"] == "degrees"
    assert scan.metadata["angle_units_source"] == "attribute"
    assert scan.angles_rad[0] == pytest.approx(0.0)
    assert scan.angles_rad[-1] == pytest.approx(np.deg2rad(179.0055), abs=1e-4)


def test_angle_units_guessed_from_the_range(tmp_path):
    radians = np.linspace(0.0, 3.0, 6)
    scan = read_scan(write_exchange(tmp_path / "r.h5", theta=radians, theta_units=None))
    assert scan.metadata["angle_units"] == "radians"
    assert scan.metadata["angle_units_source"] == "guessed from the range"
    np.testing.assert_allclose(scan.angles_rad, radians, rtol=1e-6)
    degrees = np.linspace(0.0, 150.0, 6)
    scan = read_scan(write_exchange(tmp_path / "d.h5", theta=degrees, theta_units=None))
    assert scan.metadata["angle_units"] == "degrees"
    np.testing.assert_allclose(scan.angles_rad, np.deg2rad(degrees), rtol=1e-6)


def test_nxtomo_image_keys_split_frames(tmp_path):
    rng = np.random.default_rng(1)
    keys = np.array([2, 2, 1, 1, 1, 0, 0, 0, 0, 1])
    frames = rng.integers(100, 4000, (keys.size, 3, 8))
    angles = np.array([0, 0, 0, 0, 0, 0, 45, 90, 135, 180], dtype=float)
    scan = read_scan(write_nxtomo(tmp_path / "scan.nxs", frames, keys, angles))
    assert scan.metadata["format"] == "NXtomo"
    np.testing.assert_array_equal(scan.projections, frames[keys == 0].astype(np.float32))
    np.testing.assert_array_equal(scan.flats, frames[keys == 1].astype(np.float32))
    np.testing.assert_array_equal(scan.darks, frames[keys == 2].astype(np.float32))
    np.testing.assert_allclose(scan.angles_rad, np.deg2rad([0, 45, 90, 135]))
    assert scan.pixel_um == pytest.approx(6.5)


def _bad(path, message):
    with pytest.raises(ValueError, match=message) as caught:
        read_scan(path)
    assert "\n" not in str(caught.value)


def test_missing_flats(tmp_path):
    _bad(write_exchange(tmp_path / "a.h5", skip=("data_white",)), "has no flat fields")


def test_nan_in_projections(tmp_path):
    data = np.full((6, ROWS, COLUMNS), 500.0)
    data[3, 1, 5] = np.nan
    _bad(write_exchange(tmp_path / "a.h5", data=data), r"NaN/Inf .*frame 3 at pixel \(1, 5\)")


def test_mismatched_flat_shape(tmp_path):
    white = np.full((3, ROWS, COLUMNS + 2), 1000.0)
    _bad(write_exchange(tmp_path / "a.h5", white=white), "flat-field frames are")


def test_angles_not_one_per_projection(tmp_path):
    _bad(write_exchange(tmp_path / "a.h5", theta=np.arange(5.0)), "one angle per projection")


def test_not_hdf5(tmp_path):
    path = tmp_path / "scan.h5"
    path.write_text("not an HDF5 file\n")
    _bad(path, "is not an HDF5 file")


def test_neither_layout(tmp_path):
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.zeros(3)
    _bad(path, "neither Data Exchange")


def test_nxtomo_without_darks(tmp_path):
    keys = np.array([1, 0, 0, 0])
    frames = np.ones((4, 3, 8))
    _bad(write_nxtomo(tmp_path / "s.nxs", frames, keys, np.zeros(4)), "no dark fields")


def test_external_link_refused(tmp_path):
    import h5py

    other = write_exchange(tmp_path / "other.h5")
    path = write_exchange(tmp_path / "scan.h5", skip=("data_white",))
    with h5py.File(path, "a") as handle:
        handle["exchange/data_white"] = h5py.ExternalLink(other.name, "/exchange/data_white")
    _bad(path, "external link")
