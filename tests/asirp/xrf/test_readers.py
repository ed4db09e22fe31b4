"""Readers for the files beamlines write: APS MDA step scans, APS fly scans, Diamond Xspress3.

Real files (``tests/data/README.md``) are read and mapped; small MDA files written here byte by
byte check what the real ones cannot show (a stopped scan); truncated and corrupt copies and
files of other formats must each give one :class:`asirp.io.InputFileError`.
"""

from __future__ import annotations

import json
import shutil
import struct

import h5py
import numpy as np
import pytest

from asirp.cli import main
from asirp.io import InputFileError, InputTooLargeError
from asirp.xrf import EnergyCalibration, build_map, line_energy_kev, write_raw_scan
from asirp.xrf.aps_fly import companion_candidates, read_aps_fly
from asirp.xrf.config import XRFMapConfig
from asirp.xrf.formats import FORMATS, detect_format, read_scan, scan_source
from asirp.xrf.lines import ChannelROI
from asirp.xrf.mda import read_mda
from asirp.xrf.mda_scan import read_mda_scan
from asirp.xrf.workflow import make_map
from asirp.xrf.xspress3 import read_xspress3
from tests.asirp.xrf.conftest import small_scan
from tests.conftest import (
    APS_FLY_H5,
    APS_FLY_MDA,
    APS_STANDARD_MDA,
    APS_STEP_MDA,
    DIAMOND_I18_NXS,
    STEEL_SPE,
    TOOTH_H5,
)

XSPRESS3_CALIBRATION = EnergyCalibration(0.0, 0.01)  # 10 eV channels, checked on Co Ka below


def _steps(values: np.ndarray) -> np.ndarray:
    return np.diff(np.unique(np.round(values, 3)))


# --- the real files -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [APS_STEP_MDA, APS_STANDARD_MDA, APS_FLY_MDA, APS_FLY_H5])
def test_detect_format_from_the_bytes(tmp_path, path):
    expected = "aps_fly" if path.suffix == ".h5" else "aps_mda"
    assert detect_format(path) == expected
    # The name does not matter: the same bytes under another suffix are the same format.
    renamed = tmp_path / "scan.dat"
    shutil.copyfile(path, renamed)
    assert detect_format(renamed) == expected


def test_detect_format_of_xspress3_and_project_raw(tmp_path):
    assert detect_format(DIAMOND_I18_NXS) == "xspress3_nexus"
    raw = write_raw_scan(tmp_path / "raw.h5", small_scan(shape=(4, 5)))
    assert detect_format(raw) == "asirp_raw"
    assert scan_source(raw) == raw  # the project's raw HDF5 stays a path (ROI-slab reads)
    assert read_scan(raw).metadata["source_format"] == "asirp_raw"


def test_mda_header_matches_the_bytes():
    mda = read_mda(APS_STEP_MDA)
    head = APS_STEP_MDA.read_bytes()[:24]
    version, number, rank, d0, d1, d2 = struct.unpack(">fiiiii", head)
    assert mda.version == pytest.approx(version) == pytest.approx(1.3)
    assert (mda.scan_number, mda.rank, mda.dimensions) == (number, rank, (d0, d1, d2))
    assert mda.dimensions == (11, 11, 2000)
    assert [level.name for level in mda.levels] == ["2xfm:scan2", "2xfm:scan1", "2xfm:scanH"]
    assert mda.levels[2].detectors[0].data.shape == (11, 11, 2000)
    assert mda.extra_pvs["dxpXMAP2xfm3:mca1.CALS"].value == pytest.approx((0.0094,))
    assert mda.extra_pvs["2xfm:scaler1.NM2"].value == "US Ion Cham. A1"


@pytest.mark.parametrize(("path", "step_um"), [(APS_STEP_MDA, 50.0), (APS_STANDARD_MDA, 100.0)])
def test_mda_step_scan_reads(path, step_um):
    scan = read_scan(path)
    assert scan.spectra.shape == (121, 4, 2000)
    assert scan.spectra.dtype.kind in "iu"
    assert scan.calibration.offset_kev == pytest.approx(0.05)
    assert scan.calibration.gain_kev_per_channel == pytest.approx(0.0094)
    np.testing.assert_allclose(_steps(scan.x_um), step_um, rtol=1e-6)
    np.testing.assert_allclose(_steps(scan.y_um), step_um, rtol=1e-6)
    assert scan.metadata["step_um"] == pytest.approx(step_um)
    assert np.array_equal(scan.line_index, np.repeat(np.arange(11), 11))
    # Raster rows: x runs along each line, y is constant on it.
    assert np.all(np.diff(scan.x_um.reshape(11, 11), axis=1) > 0)
    assert np.ptp(scan.y_um.reshape(11, 11), axis=1).max() == 0
    # I0 is the upstream ion chamber: scaler channel 2, labelled so in the extra PVs.
    mda = read_mda(path)
    by_name = {d.name: d for d in mda.levels[1].detectors}
    np.testing.assert_array_equal(scan.i0, by_name["2xfm:scaler3_cts1.B"].data.ravel())
    assert "US Ion Cham" in scan.metadata["i0_source"]
    np.testing.assert_array_equal(
        scan.live_time_s[:, 3], by_name["dxpXMAP2xfm3:mca4.ELTM"].data.ravel()
    )
    assert np.all(scan.live_time_s <= scan.real_time_s)
    # The counts are the file's, pixel (row 1, column 2) of element 0.
    np.testing.assert_array_equal(scan.spectra[13, 0], mda.levels[2].detectors[0].data[1, 2])
    assert scan.metadata["source_format"] == "aps_mda"
    assert isinstance(scan.metadata["cautions"], list)
    json.dumps(scan.metadata)


def test_mda_calibration_puts_the_standards_lines_where_they_belong():
    # The file's own calibration is about 1.5 % low in gain (Fe Ka at 6.31, Cu Ka at 7.92 keV;
    # tests/data/README.md; MAPS refits it), so the peaks sit within 0.2 keV of the lines; a
    # misread calibration (another element's, or a wrong field) would miss them by far more.
    scan = read_scan(APS_STANDARD_MDA)
    total = scan.spectra.sum(axis=(0, 1), dtype=np.int64)
    energies = scan.energy_kev()
    for element in ("Ca", "Fe", "Cu"):
        line = line_energy_kev(element)
        window = np.abs(energies - line) < 0.3
        peak = energies[window][np.argmax(total[window])]
        assert abs(peak - line) < 0.2, element


def test_fly_scan_reads_with_its_companion():
    scan = read_scan(APS_FLY_H5)
    assert scan.spectra.shape == (99, 4, 2048)
    assert scan.metadata["companion_file"] == APS_FLY_MDA.name
    assert scan.metadata["scan_kind"] == "fly"
    np.testing.assert_allclose(_steps(scan.x_um), 50.0)
    np.testing.assert_allclose(_steps(scan.y_um), 50.0)
    assert np.array_equal(scan.line_index, np.repeat(np.arange(11), 9))
    with h5py.File(APS_FLY_H5, "r") as handle:
        raw = handle["MAPS_RAW"]
        np.testing.assert_array_equal(scan.spectra[10, 1], raw["data_b"][:, 1, 1])
        np.testing.assert_allclose(scan.real_time_s[:, 2], raw["realtime"][2].ravel(), rtol=1e-6)
    mda = read_mda(APS_FLY_MDA)
    i0 = {d.name: d for d in mda.levels[1].detectors}["2xfm:mcs:mca2.VAL"].data[:, :9]
    np.testing.assert_array_equal(scan.i0, i0.ravel())
    assert scan.calibration.gain_kev_per_channel == pytest.approx(0.0094)
    assert any("x positioner has no unit" in c for c in scan.metadata["cautions"])


def test_fly_scan_companion_missing_named_or_found_in_mda_folder(tmp_path):
    alone = tmp_path / "flyXRF.h5" / APS_FLY_H5.name
    alone.parent.mkdir()
    shutil.copyfile(APS_FLY_H5, alone)
    with pytest.raises(InputFileError, match=r"companion.*2xfm_0011\.mda.*--companion"):
        read_scan(alone)
    named = read_scan(alone, companion=APS_FLY_MDA)
    assert named.spectra.shape == (99, 4, 2048)
    # XRF-Maps keeps the MDA files in mda/ next to flyXRF.h5/.
    (tmp_path / "mda").mkdir()
    shutil.copyfile(APS_FLY_MDA, tmp_path / "mda" / APS_FLY_MDA.name)
    assert tmp_path / "mda" / APS_FLY_MDA.name in companion_candidates(alone)
    np.testing.assert_array_equal(read_aps_fly(alone).i0, named.i0)
    # A step scan as companion does not fit.
    with pytest.raises(InputFileError, match="rank-2"):
        read_aps_fly(alone, companion=APS_STEP_MDA)


def test_xspress3_needs_and_records_a_calibration():
    with pytest.raises(InputFileError, match="no energy calibration"):
        read_scan(DIAMOND_I18_NXS)
    scan = read_scan(DIAMOND_I18_NXS, calibration=XSPRESS3_CALIBRATION)
    assert scan.spectra.shape == (4, 10, 4096)
    assert scan.metadata["calibration_source"] == "given"
    cautions = " ".join(scan.metadata["cautions"])
    assert "no energy calibration" in cautions
    assert "no y position" in cautions
    assert "thetafine" in cautions
    assert scan.metadata["incident_energy_kev"] == pytest.approx(13.0, abs=1e-3)
    np.testing.assert_allclose(scan.x_um[:2], [-1180.0, -1175.04132], rtol=1e-6)
    with h5py.File(DIAMOND_I18_NXS, "r") as handle:
        np.testing.assert_array_equal(
            scan.i0, handle["entry1/instrument/raster_counterTimer01/I0"][()].ravel()
        )
        file_co = handle["entry1/xspress3/Co_K"][()].reshape(4, 10)
        spectra = handle["entry1/xspress3/MCAs"][()].reshape(4, 10, 4096)
    np.testing.assert_allclose(scan.spectra, spectra, atol=0.5)  # rounded to whole counts
    # The map's Co counts agree with the ROI sums Diamond wrote (another window, same peak).
    co = build_map(scan, "Co", keep_detector_maps=True)
    ti = build_map(scan, "Ti")
    assert co.shape == (2, 2)
    assert co.data.sum() == pytest.approx(file_co.sum(), rel=0.25)
    assert co.data.mean() > 20 * ti.data.mean() > 0


@pytest.mark.parametrize("kind", ["energy axis", "eV per channel"])
def test_xspress3_calibration_from_the_file(tmp_path, kind):
    copy = tmp_path / "with_calibration.nxs"
    shutil.copyfile(DIAMOND_I18_NXS, copy)
    with h5py.File(copy, "r+") as handle:
        group = handle["entry1/instrument/xspress3"]
        if kind == "energy axis":
            group.create_dataset("energy", data=5.0 + 10.0 * np.arange(4096))
            group["energy"].attrs["units"] = "eV"
        else:
            group.attrs["eV_per_channel"] = 10.0
    scan = read_scan(copy)
    assert scan.calibration.gain_kev_per_channel == pytest.approx(0.01)
    assert scan.calibration.offset_kev == pytest.approx(0.005 if kind == "energy axis" else 0.0)
    assert scan.metadata["calibration_source"] != "given"
    assert not any("no energy calibration" in c for c in scan.metadata["cautions"])


def test_xspress3_reader_direct_call_matches_dispatch():
    direct = read_xspress3(DIAMOND_I18_NXS, calibration=XSPRESS3_CALIBRATION)
    np.testing.assert_array_equal(
        direct.spectra, read_scan(DIAMOND_I18_NXS, calibration=XSPRESS3_CALIBRATION).spectra
    )


@pytest.mark.parametrize("path", [APS_STEP_MDA, APS_STANDARD_MDA, APS_FLY_H5], ids=lambda p: p.name)
@pytest.mark.parametrize("element", ["Fe", "Ca", "Cu"])
def test_cli_xrf_map_of_real_files(tmp_path, capsys, path, element):
    out = tmp_path / "out"
    main(["xrf-map", str(path), "--element", element, "--normalize", "i0", "-o", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["map"]["label"] == f"{element} Ka"
    rows, columns = (11, 9) if path == APS_FLY_H5 else (11, 11)
    assert summary["map"]["shape"] == [rows, columns]
    assert summary["map"]["measured_cells"] == rows * columns
    assert summary["map"]["mean"] > 0
    assert (out / "map.png").stat().st_size > 0
    assert f"{element} Ka map {rows} x {columns}" in capsys.readouterr().out


def test_cli_companion_option(tmp_path, capsys):
    alone = tmp_path / "spectra" / APS_FLY_H5.name
    alone.parent.mkdir()
    shutil.copyfile(APS_FLY_H5, alone)
    out = tmp_path / "out"
    arguments = ["xrf-map", str(alone), "--element", "Fe", "-o", str(out)]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("asirp: error:")
    assert "--companion" in error
    assert "\n" not in error
    main([*arguments, "--companion", str(APS_FLY_MDA)])
    assert json.loads((out / "summary.json").read_text())["map"]["shape"] == [11, 9]


def test_make_map_reads_the_companion_from_the_settings():
    config = XRFMapConfig(element="Cu", companion=str(APS_FLY_MDA))
    copper = make_map(config, APS_FLY_H5)
    assert copper.metadata["companion_file"] == APS_FLY_MDA.name
    assert copper.shape == (11, 9)


def test_build_map_from_a_path_equals_from_the_scan():
    from_path = build_map(APS_STEP_MDA, "Fe", normalize_by="i0", dead_time=True)
    from_scan = build_map(read_scan(APS_STEP_MDA), "Fe", normalize_by="i0", dead_time=True)
    np.testing.assert_array_equal(from_path.data, from_scan.data)
    assert from_path.pixel_um == (50.0, 50.0)


def test_axo_standard_calcium_map_is_flat_and_far_above_background():
    scan = read_scan(APS_STANDARD_MDA)
    calcium = build_map(scan, "Ca", normalize_by="i0")
    roi = calcium.rois[0]
    width = roi.last_channel - roi.first_channel + 1
    below = build_map(
        scan, roi=ChannelROI("below", roi.first_channel - width, roi.first_channel - 1)
    )
    above = build_map(scan, roi=ChannelROI("above", roi.last_channel + 1, roi.last_channel + width))
    background = max(below.data.mean(), above.data.mean())
    assert calcium.data.min() > 0
    assert calcium.data.mean() > 4 * background
    # A uniform film: the pixels scatter by a few per cent (Poisson and flux), not more.
    assert calcium.data.std() / calcium.data.mean() < 0.1


# --- bad files ------------------------------------------------------------------------------


def _truncations() -> list[int]:
    data = APS_STEP_MDA.read_bytes()
    extra_offset = struct.unpack(">i", data[28:32])[0]  # after version, number, rank, 3 dims
    return [6, 30, 200, 4000, len(data) // 2, extra_offset - 8, len(data) - 40]


@pytest.mark.parametrize("size", _truncations())
def test_truncated_mda_gives_one_input_file_error(tmp_path, size):
    cut = tmp_path / "cut.mda"
    cut.write_bytes(APS_STEP_MDA.read_bytes()[:size])
    with pytest.raises(InputFileError, match=r"cut\.mda") as error:
        read_mda_scan(cut)
    if size > 12:
        assert "truncated or corrupt" in str(error.value)


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (8, 99, "neither HDF5 nor MDA"),  # the header's rank: no longer an MDA header
        (28, 10**9, "outside the file"),  # the extra PVs' offset
        (44, 10**8, "outside the file"),  # the first lower scan's offset
        (32, 7, "scan rank 7"),  # the outer scan's own rank
    ],
)
def test_corrupt_mda_gives_one_input_file_error(tmp_path, offset, value, words):
    data = bytearray(APS_STEP_MDA.read_bytes())
    data[offset : offset + 4] = struct.pack(">i", value)
    bad = tmp_path / "bad.mda"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match=words):
        read_scan(bad)


def test_records_shared_by_two_scans_are_refused(tmp_path):
    # Pointing row 1 at row 0's record would make a small file describe a large scan.
    data = bytearray(APS_STEP_MDA.read_bytes())
    data[48:52] = data[44:48]
    bad = tmp_path / "shared.mda"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="same record"):
        read_mda(bad)


@pytest.mark.parametrize("path", [APS_FLY_H5, DIAMOND_I18_NXS], ids=lambda p: p.name)
def test_truncated_hdf5_gives_one_input_file_error(tmp_path, path):
    cut = tmp_path / path.name
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    shutil.copyfile(APS_FLY_MDA, tmp_path / APS_FLY_MDA.name)
    with pytest.raises(InputFileError, match=path.name):
        read_scan(cut, calibration=XSPRESS3_CALIBRATION)


@pytest.mark.parametrize(
    ("path", "words"),
    [(STEEL_SPE, "neither HDF5 nor MDA"), (TOOTH_H5, "HDF5 file of another layout")],
    ids=["text", "hdf5"],
)
def test_wrong_format_lists_the_supported_ones(tmp_path, path, words):
    disguised = tmp_path / "scan.mda"
    shutil.copyfile(path, disguised)
    with pytest.raises(InputFileError, match=words) as error:
        read_scan(disguised)
    assert all(name in str(error.value) for name in FORMATS)
    with pytest.raises(InputFileError, match="raw scan file not found"):
        read_scan(tmp_path / "missing.mda")


def test_fly_mda_alone_and_misplaced_companion(tmp_path):
    with pytest.raises(InputFileError, match="holds no spectra"):
        read_scan(APS_FLY_MDA)
    with pytest.raises(InputFileError, match="only used by APS fly scans"):
        read_scan(APS_STEP_MDA, companion=APS_FLY_MDA)


def test_sizes_are_checked_before_reading():
    with pytest.raises(InputTooLargeError, match="nothing was read"):
        read_scan(APS_STEP_MDA, max_bytes=1 << 20)  # the file is 3.9 MiB
    with pytest.raises(InputTooLargeError):
        read_scan(APS_FLY_H5, max_bytes=1 << 14)
    with pytest.raises(InputTooLargeError):
        read_scan(DIAMOND_I18_NXS, calibration=XSPRESS3_CALIBRATION, max_bytes=1 << 16)


# --- small MDA files written here -----------------------------------------------------------


def _xdr_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">i", len(raw)) + raw + b"\0" * (-len(raw) % 4)


def _counted(text: str) -> bytes:
    return struct.pack(">i", len(text)) + (_xdr_string(text) if text else b"")


def _record(rank, npts, curr_pt, lower, positioner, detectors) -> bytes:
    """One scan record: one positioner (name, unit, values), detectors (name, values)."""
    out = struct.pack(">iii", rank, npts, curr_pt)
    if rank > 1:
        out += struct.pack(f">{npts}i", *lower)
    out += struct.pack(">i", 5) + _xdr_string("scanN") + struct.pack(">i", 4) + _xdr_string("now!")
    out += struct.pack(">iii", 1, len(detectors), 0)
    name, unit, values = positioner
    out += struct.pack(">i", 0) + _counted(name) + _counted("") + _counted("LINEAR")
    out += _counted(unit) + _counted("") + _counted("") + _counted("")
    for number, (detector, _) in enumerate(detectors):
        out += struct.pack(">i", number) + _counted(detector) + _counted("") + _counted("")
    out += np.asarray(values, dtype=">f8").tobytes()
    for _, data in detectors:
        out += np.asarray(data, dtype=">f4").tobytes()
    return out


def _stopped_scan(
    n_rows=3, n_columns=4, n_channels=8, rows_done=2, columns_done=3, i0_name="I0 monitor"
) -> bytes:
    """A rank-3 scan stopped in row ``rows_done`` after ``columns_done`` pixels (no extra PVs)."""
    rng = np.random.default_rng(1)

    def inner(row, column):
        spectrum = rng.poisson(5.0, n_channels).astype(float)
        return _record(
            1, n_channels, n_channels, [], ("chan", "", np.arange(n_channels)), [("mca1", spectrum)]
        )

    def middle(row, offsets):
        done = n_columns if row < rows_done else columns_done
        x = np.arange(n_columns) * 0.01
        return _record(
            2,
            n_columns,
            done,
            offsets,
            ("sam:x", "mm", x),
            [
                (i0_name, np.full(n_columns, 1000.0 + row)),
                ("mca1.ELTM", np.full(n_columns, 0.9)),
                ("mca1.ERTM", np.full(n_columns, 1.0)),
            ],
        )

    header = struct.pack(">fi", 1.3, 7) + struct.pack(">i3i", 3, n_rows, n_columns, n_channels)
    header += struct.pack(">ii", 1, 0)
    y = np.arange(n_rows) * 0.02
    lines = [
        [inner(r, c) for c in range(n_columns if r < rows_done else columns_done)]
        for r in range(rows_done + 1)
    ]
    outer_size = len(_record(3, n_rows, rows_done + 1, [0] * n_rows, ("sam:y", "mm", y), []))
    position = len(header) + outer_size
    middles, lower_outer = [], []
    for r, pixels in enumerate(lines):
        lower_outer.append(position)
        size = len(middle(r, [0] * n_columns))
        offsets, at = [], position + size
        for pixel in pixels:
            offsets.append(at)
            at += len(pixel)
        middles.append(middle(r, offsets + [0] * (n_columns - len(offsets))) + b"".join(pixels))
        position = at
    lower_outer += [0] * (n_rows - len(lower_outer))
    outer = _record(3, n_rows, rows_done + 1, lower_outer, ("sam:y", "mm", y), [])
    return header + outer + b"".join(middles)


def test_stopped_scan_keeps_the_acquired_pixels(tmp_path):
    path = tmp_path / "stopped.mda"
    path.write_bytes(_stopped_scan())
    mda = read_mda(path)
    assert mda.levels[1].acquired.sum() == 2 * 4 + 3
    assert np.isnan(mda.levels[1].detectors[0].data[2, 3])
    scan = read_scan(path, calibration=EnergyCalibration(0.0, 1.0))
    assert scan.spectra.shape == (11, 1, 8)
    np.testing.assert_allclose(scan.x_um[-3:], [0.0, 10.0, 20.0])
    np.testing.assert_allclose(scan.y_um[-1], 40.0)
    np.testing.assert_array_equal(scan.i0[-1], 1002.0)  # found by its name "I0 monitor"
    assert scan.metadata["calibration_source"] == "given"
    with pytest.raises(InputFileError, match="no energy calibration"):
        read_scan(path)
    partial = build_map(scan, roi=ChannelROI("all", 0, 7))
    assert partial.shape == (3, 4)
    assert int(partial.mask.sum()) == 11


def test_scan_without_i0_says_so(tmp_path):
    path = tmp_path / "no_i0.mda"
    path.write_bytes(_stopped_scan(i0_name="diode"))
    scan = read_scan(path, calibration=EnergyCalibration(0.0, 1.0))
    np.testing.assert_array_equal(scan.i0, 1.0)
    assert scan.metadata["i0_source"] is None
    assert any("no I0 monitor" in c for c in scan.metadata["cautions"])


def test_xrf_map_command_takes_a_calibration_for_files_without_one(tmp_path, capsys):
    command = ["xrf-map", str(DIAMOND_I18_NXS), "--element", "Co"]
    assert main([*command, "-o", str(tmp_path / "none")]) == 2
    assert "calibration" in capsys.readouterr().err
    out = tmp_path / "co"
    assert main([*command, "-o", str(out), "--calibration", "0", "0.01"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["map"]["mean"] > 0
    assert any("calibration" in note for note in summary["cautions"])
