"""MAPS settings files of the APS 2-ID-E dataset: the fit override's calibration, the standard."""

from __future__ import annotations

import json

import pytest

from asirp.cli import main
from asirp.io import InputFileError
from asirp.xrf.maps_settings import read_maps_override, read_standard_info
from tests.conftest import APS_FIT_OVERRIDE, APS_STANDARD_INFO, APS_STEP_MDA


def test_the_override_gives_the_calibration_maps_fitted():
    override = read_maps_override(APS_FIT_OVERRIDE)
    assert override.calibration.offset_kev == pytest.approx(-0.0041840752)
    assert override.calibration.gain_kev_per_channel == pytest.approx(0.0095216077)
    assert override.incident_energy_kev == pytest.approx(10.0)
    assert {"Ca", "Fe", "Cu"} <= set(override.elements_to_fit)
    assert override.elements_to_fit[0] == "Si"
    assert override.elements_to_fit[-1] == "Zn"
    assert override.provenance()["calibration"]["gain_kev_per_channel"] == pytest.approx(0.0095216)


def test_the_standard_names_its_scan_and_areal_densities():
    standard = read_standard_info(APS_STANDARD_INFO)
    assert standard.filename == "axo_std.mda"
    assert standard.areal_density_ug_cm2 == pytest.approx({"Ca": 1.931, "Fe": 0.504, "Cu": 0.284})


@pytest.mark.parametrize(
    ("reader", "content", "message"),
    [
        (read_maps_override, b"VERSION: 5.0\n", "no CAL_OFFSET"),
        (read_maps_override, b"CAL_OFFSET_[E_OFFSET]: 0\nCAL_SLOPE_[E_LINEAR]: abc\n", "number"),
        (read_maps_override, b"CAL_OFFSET_[E_OFFSET]: 0\nCAL_SLOPE_[E_LINEAR]: -1\n", "gain"),
        (read_maps_override, b"\x00\x01binary", "not a text file"),
        (read_standard_info, b"FILENAME: a.mda\nELEMENTS_IN_STANDARD: Ca, Fe\nWEIGHT: 1\n", "2 el"),
        (read_standard_info, b"FILENAME: a.mda\nELEMENTS_IN_STANDARD: Qq\nWEIGHT: 1\n", "element"),
        (read_standard_info, b"FILENAME: a.mda\nELEMENTS_IN_STANDARD: Ca\nWEIGHT: 0\n", "> 0"),
        (read_standard_info, b"ELEMENTS_IN_STANDARD: Ca\nWEIGHT: 1\n", "no FILENAME"),
    ],
)
def test_bad_settings_files_give_one_clear_error(tmp_path, reader, content, message):
    path = tmp_path / "settings.txt"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=message):
        reader(path)


def test_missing_and_oversized_settings_files_are_refused(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_maps_override(tmp_path / "none.txt")
    big = tmp_path / "big.txt"
    big.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(InputFileError, match="at most"):
        read_maps_override(big)


def test_xrf_map_with_the_override_puts_more_of_the_cu_peak_in_its_roi(tmp_path):
    """The MDA file's nominal gain is 1.3 % low: Cu K-alpha sits at the ROI's edge without it."""
    command = ["xrf-map", str(APS_STEP_MDA), "--element", "Cu"]
    assert main([*command, "-o", str(tmp_path / "file")]) == 0
    assert (
        main([*command, "-o", str(tmp_path / "maps"), "--maps-override", str(APS_FIT_OVERRIDE)])
        == 0
    )
    nominal = json.loads((tmp_path / "file" / "summary.json").read_text())
    fitted = json.loads((tmp_path / "maps" / "summary.json").read_text())
    assert fitted["map"]["mean"] > 1.1 * nominal["map"]["mean"]
    assert (
        main(
            [
                *command,
                "-o",
                str(tmp_path / "both"),
                "--maps-override",
                str(APS_FIT_OVERRIDE),
                "--calibration",
                "0",
                "0.01",
            ]
        )
        == 2
    )
