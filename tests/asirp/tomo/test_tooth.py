"""The tooth (real Data Exchange scan): its rotation centre, and ``asirp tomo`` end to end."""

from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest

from asirp.safe_files import OutputExistsError
from asirp.tomo.centre import find_centre
from asirp.tomo.exchange import read_scan
from asirp.tomo.normalise import flat_dark_correct, minus_log
from asirp.tomo_cli import register
from tests.conftest import TOOTH_H5
from tests.nexus_validation import assert_default_image, assert_valid_nexus

TOOTH_CENTRE_PX = 295.5
"""The tooth's rotation axis (tomopy's documentation and our own search agree to within 1 px)."""


def _run_cli(argv: list[str]) -> int:
    """Parse as ``asirp`` does with the ``tomo`` sub-command registered, and run it."""
    parser = argparse.ArgumentParser(prog="asirp")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture(scope="module")
def tooth_output(tmp_path_factory):
    output = tmp_path_factory.mktemp("tooth") / "out.h5"
    argv = ["tomo", str(TOOTH_H5), "-o", str(output)]
    status = _run_cli([*argv, "--method", "richardson_lucy", "--psf-fwhm-px", "2"])
    return status, output


def test_centre_found_on_tooth():
    scan = read_scan(TOOTH_H5)
    corrected = flat_dark_correct(scan.projections, scan.flats, scan.darks)
    centre = find_centre(minus_log(corrected.values), scan.angles_rad)
    assert abs(centre - TOOTH_CENTRE_PX) < 2.0


def test_cli_writes_valid_nexus_volumes(tooth_output):
    status, output = tooth_output
    assert status == 0
    assert_valid_nexus(output)
    path, shape = assert_default_image(output, ("y", "x"), units="pixel")
    assert path == "/entry/reconstruction_restored"
    assert shape == (2, 640, 640)
    with h5py.File(output, "r") as handle:
        process = handle["entry/process"]
        assert process["method"][()].decode() == "richardson_lucy"
        assert len(process["input_sha256"][()].decode()) == 64
        assert abs(float(process["centre_px"][()]) - TOOTH_CENTRE_PX) < 2.0
        for name in ("reconstruction_raw", "reconstruction_restored"):
            volume = handle[f"entry/{name}/data"][()]
            assert volume.shape == (2, 640, 640)
            assert volume.dtype == np.float32
            assert np.all(np.isfinite(volume))


def test_tooth_stands_out_from_air(tooth_output):
    _, output = tooth_output
    with h5py.File(output, "r") as handle:
        for name in ("reconstruction_raw", "reconstruction_restored"):
            image = handle[f"entry/{name}/data"][0]
            size = image.shape[0]
            y, x = np.mgrid[:size, :size] - (size - 1) / 2
            radius = np.hypot(y, x)
            tooth = image[radius < 60].mean()
            air = image[(radius > 240) & (radius < 300)]  # inside the FBP circle, off the tooth
            assert tooth - air.mean() > 5 * air.std(), name


def test_output_not_overwritten(tooth_output):
    _, output = tooth_output
    before = output.stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="already exists"):
        _run_cli(["tomo", str(TOOTH_H5), "-o", str(output), "--method", "none"])
    assert output.stat().st_mtime_ns == before


def test_bad_input_is_one_line_value_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="is not an HDF5 file") as caught:
        _run_cli(["tomo", str(bad), "-o", str(tmp_path / "out.h5")])
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out.h5").exists()


def test_psf_in_um_needs_a_pixel_size(tmp_path):
    with pytest.raises(ValueError, match="needs the pixel size"):
        _run_cli(["tomo", str(TOOTH_H5), "-o", str(tmp_path / "o.h5"), "--psf-fwhm-um", "3"])


def test_output_may_not_be_the_input(tmp_path):
    from asirp.safe_files import ProtectedFileError

    copy = tmp_path / "tooth.h5"
    copy.write_bytes(TOOTH_H5.read_bytes())
    with pytest.raises(ProtectedFileError, match="is the input"):
        _run_cli(["tomo", str(copy), "-o", str(copy), "--overwrite", "--method", "none"])
    assert copy.read_bytes() == TOOTH_H5.read_bytes()
