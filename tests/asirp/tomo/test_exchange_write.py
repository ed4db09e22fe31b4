"""Writing a TomoScan as Data Exchange: read back identically, never overwrite, clear errors."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from asirp.safe_files import OutputExistsError
from asirp.tomo.exchange import TomoScan, read_scan
from asirp.tomo.exchange_write import write_exchange


def _scan(pixel_um: float | None = 6.5) -> TomoScan:
    rng = np.random.default_rng(4)
    return TomoScan(
        projections=rng.uniform(200, 900, (7, 3, 12)).astype(np.float32),
        flats=rng.uniform(950, 1050, (2, 3, 12)).astype(np.float32),
        darks=rng.uniform(95, 105, (3, 3, 12)).astype(np.float32),
        angles_rad=np.linspace(0.0, np.pi, 7, endpoint=False) + 0.123,
        pixel_um=pixel_um,
    )


def test_round_trip_through_read_scan(tmp_path):
    scan = _scan()
    path = write_exchange(tmp_path / "scan.h5", scan, notes={"run_uid": "abc"})
    back = read_scan(path)
    for name in ("projections", "flats", "darks"):
        assert np.array_equal(getattr(back, name), getattr(scan, name)), name
        assert getattr(back, name).dtype == np.float32
    # degrees in the file (TomoPy's convention): radians back to float64 rounding
    np.testing.assert_allclose(back.angles_rad, scan.angles_rad, rtol=1e-15, atol=0)
    assert back.pixel_um == pytest.approx(6.5)
    assert back.metadata["format"] == "Data Exchange"
    assert back.metadata["angle_units_source"] == "attribute"
    with h5py.File(path, "r") as handle:
        assert handle["exchange/theta"].attrs["units"] == "degrees"
        # the NeXus view links the same projections (no copy)
        assert handle["entry/projections/data"].id == handle["exchange/data"].id
        assert '"run_uid": "abc"' in handle["measurement"].attrs["asirp_scan"]


def test_unknown_pixel_size_reads_back_as_unknown(tmp_path):
    back = read_scan(write_exchange(tmp_path / "scan.h5", _scan(pixel_um=None)))
    assert back.pixel_um is None


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "scan.h5"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        write_exchange(path, _scan())
    assert path.read_bytes() == b"precious"
    write_exchange(path, _scan(), overwrite=True)
    assert read_scan(path).projections.shape == (7, 3, 12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"angles_rad": np.zeros(6)}, "one per projection"),
        ({"flats": np.ones((2, 3, 11), np.float32)}, "flat-field frames"),
        ({"darks": np.ones((3, 12), np.float32)}, "must be 3-D"),
        ({"pixel_um": -1.0}, "pixel size"),
        ({"projections": np.full((7, 3, 12), np.nan, np.float32)}, "NaN"),
    ],
)
def test_bad_scans_are_one_clear_error_and_write_nothing(tmp_path, change, message):
    path = tmp_path / "scan.h5"
    with pytest.raises(ValueError, match=message):
        write_exchange(path, dataclasses.replace(_scan(), **change))
    assert not path.exists()
