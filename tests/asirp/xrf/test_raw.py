"""Raw µ-XRF scans in HDF5: round trip, partial ROI reads, layout, and bad files."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from asirp.io import InputFileError, UnsafeInputError
from asirp.xrf import (
    ChannelROI,
    RawScanFile,
    RawXRFScan,
    argon_roi,
    element_roi,
    read_raw_scan,
    read_roi_sums,
    write_raw_scan,
)
from tests.asirp.xrf.conftest import small_scan


def _assert_same_scan(back: RawXRFScan, scan: RawXRFScan, dtype=None) -> None:
    np.testing.assert_array_equal(back.spectra, scan.spectra)
    assert back.spectra.dtype == (scan.spectra.dtype if dtype is None else dtype)
    for name in ("x_um", "y_um", "i0", "live_time_s", "real_time_s", "time_s", "line_index"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scan, name), err_msg=name)
    assert back.calibration == scan.calibration
    assert back.metadata == scan.metadata
    assert back.first_channel == scan.first_channel


@pytest.mark.parametrize("kind", ["raster", "snake", "fly"])
def test_round_trip(tmp_path, kind):
    scan = small_scan(kind, dtype=np.uint16)
    path = write_raw_scan(tmp_path / "scan.h5", scan)
    _assert_same_scan(read_raw_scan(path), scan)
    assert not list(tmp_path.glob("*.part"))  # the temporary file was renamed


@pytest.mark.parametrize(
    ("compression", "checksum"), [(None, True), ("lzf", False), ("gzip", True)]
)
def test_round_trip_with_filters(tmp_path, scan, compression, checksum):
    path = write_raw_scan(tmp_path / "scan.h5", scan, compression=compression, checksum=checksum)
    _assert_same_scan(read_raw_scan(path), scan, dtype=np.uint16)


def test_counts_are_stored_narrow_when_they_fit(tmp_path, scan):
    assert scan.spectra.dtype == np.uint32
    narrow = read_raw_scan(write_raw_scan(tmp_path / "narrow.h5", scan))
    _assert_same_scan(narrow, scan, dtype=np.uint16)
    kept = read_raw_scan(write_raw_scan(tmp_path / "kept.h5", scan, narrow=False))
    _assert_same_scan(kept, scan)
    spectra = scan.spectra.copy()
    spectra[0, 0, 0] = 70000  # does not fit in uint16
    wide = dataclasses.replace(scan, spectra=spectra)
    _assert_same_scan(read_raw_scan(write_raw_scan(tmp_path / "wide.h5", wide)), wide)


def test_nexus_layout_and_chunks(raw_file, scan):
    with h5py.File(raw_file, "r") as handle:
        assert handle["entry"].attrs["NX_class"] == "NXentry"
        detector = handle["entry/instrument/xrf"]
        assert detector.attrs["NX_class"] == "NXdetector"
        assert detector.attrs["calibration_gain_kev_per_channel"] == pytest.approx(0.01)
        data = detector["data"]
        # Chunks span many points, all detector elements and a few tens of channels.
        assert data.chunks[1:] == (4, 64)
        assert data.chunks[0] == scan.n_points  # 180 points fit in one chunk row
        assert handle["entry/positioners/x"].attrs["units"] == "um"
        assert handle["entry/monitor"].attrs["NX_class"] == "NXmonitor"
        nxdata = handle["entry/data"]
        assert nxdata.attrs["signal"] == "data"
        assert nxdata["data"] == data  # a hard link to the detector data
        np.testing.assert_allclose(nxdata["energy"][:3], [-0.02, -0.01, 0.0], atol=1e-12)
        assert json.loads(handle["entry/notes/data"][()])["sample"] == "bars"


def test_partial_reads_equal_sums_of_the_full_spectra(raw_file, scan):
    rois = [
        element_roi("Cu", scan.calibration, n_channels=scan.n_channels),
        argon_roi(scan.calibration),
        ChannelROI("first", 0, 0),
        ChannelROI("edge", 60, 70),  # across a chunk boundary (64)
        ChannelROI("last", 1000, 1023),
    ]
    sums = read_roi_sums(raw_file, rois)
    assert sums.counts.shape == (scan.n_points, 4, len(rois))
    for index, roi in enumerate(rois):
        expected = scan.spectra[:, :, roi.first_channel : roi.last_channel + 1].sum(axis=2)
        np.testing.assert_array_equal(sums.counts[:, :, index], expected, err_msg=roi.name)
        np.testing.assert_array_equal(sums.roi_counts(roi), expected)
    np.testing.assert_array_equal(sums.i0, scan.i0)
    part = read_raw_scan(raw_file, channels=(60, 70))
    assert part.first_channel == 60
    assert part.spectra.shape == (scan.n_points, 4, 11)
    np.testing.assert_array_equal(part.roi_counts(rois[3]), sums.counts[:, :, 3])
    with pytest.raises(ValueError, match="not inside the channels held"):
        part.roi_counts(rois[0])
    with pytest.raises(ValueError, match="was not read"):
        sums.roi_counts(ChannelROI("other", 5, 6))


def test_partial_scan_writes_and_reads_back(tmp_path, raw_file):
    part = read_raw_scan(raw_file, channels=(100, 199))
    again = read_raw_scan(write_raw_scan(tmp_path / "part.h5", part))
    _assert_same_scan(again, part)
    with pytest.raises(ValueError, match="outside the channels stored"):
        read_raw_scan(tmp_path / "part.h5", channels=(0, 150))


def test_raw_file_reports_sizes(raw_file, scan):
    with RawScanFile(raw_file) as raw:
        assert (raw.n_points, raw.n_detectors, raw.n_channels) == scan.spectra.shape
        points = raw.read_points()
    np.testing.assert_array_equal(points["line_index"], scan.line_index)


# --- bad input -------------------------------------------------------------------------------


def _edit(path, action) -> None:
    with h5py.File(path, "r+") as handle:
        action(handle)


def _replace(name, value):
    def action(handle):
        del handle[name]
        handle[name] = value

    return action


@pytest.mark.parametrize(
    ("action", "words"),
    [
        (lambda h: h.__delitem__("entry/instrument/i0/data"), "/entry/instrument/i0/data: missing"),
        (_replace("entry/positioners/x", np.zeros(10)), "/entry/positioners/x: shape"),
        (_replace("entry/instrument/xrf/live_time", np.ones((180, 3))), "live_time: shape"),
        (_replace("entry/positioners/y", np.zeros((180, 2))), "expected 1-D"),
        (_replace("entry/positioners/line_index", np.zeros(180)), "unexpected dtype"),
        (_replace("entry/positioners/x", np.full(180, np.nan)), "x: holds non-finite"),
        (_replace("entry/instrument/xrf/live_time", np.full((180, 4), 9.0)), "exceeds real"),
        (
            lambda h: h["entry/instrument/xrf"].attrs.__setitem__(
                "calibration_gain_kev_per_channel", -1.0
            ),
            "invalid calibration",
        ),
        (
            lambda h: h["entry/instrument/xrf"].attrs.__delitem__("calibration_offset_kev"),
            "missing attribute",
        ),
        (_replace("entry/notes/data", "{not json"), "not valid JSON"),
        (lambda h: h.__delitem__("entry/data"), None),  # the NXdata links are not required
    ],
)
def test_inconsistent_files_name_file_and_dataset(raw_file, action, words):
    _edit(raw_file, action)
    if words is None:
        assert read_raw_scan(raw_file).n_points == 180
        return
    with pytest.raises(InputFileError, match=words) as error:
        read_raw_scan(raw_file)
    assert str(raw_file) in str(error.value)


def test_missing_spectra_and_other_files(tmp_path, raw_file):
    _edit(raw_file, lambda h: h.__delitem__("entry/instrument/xrf/data"))
    with pytest.raises(InputFileError, match="xrf/data: missing dataset"):
        read_raw_scan(raw_file)
    with pytest.raises(InputFileError, match="not found"):
        read_raw_scan(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not HDF5 at all")
    with pytest.raises(InputFileError, match="truncated, corrupt or not HDF5"):
        read_raw_scan(tmp_path / "text.h5")


def test_truncated_file(tmp_path, scan):
    path = write_raw_scan(tmp_path / "scan.h5", scan)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(InputFileError, match=r"cannot open raw scan .*truncated"):
        read_raw_scan(path)


def test_corrupt_spectra_chunk_is_detected_by_the_checksum(tmp_path, scan):
    path = write_raw_scan(tmp_path / "scan.h5", scan, checksum=True)
    with h5py.File(path, "r") as handle:
        info = handle["entry/instrument/xrf/data"].id.get_chunk_info(3)
    with path.open("r+b") as handle:
        handle.seek(info.byte_offset + 100)
        # (not 0xFF over zeros: Fletcher-32 cannot tell 0x0000 from 0xFFFF words)
        handle.write(b"\x12\x34" * 8)
    with RawScanFile(path) as raw:
        raw.read_points()  # the per-point data are intact
        with pytest.raises(InputFileError, match="xrf/data: cannot read"):
            raw.read_spectra()


def test_scan_validation():
    scan = small_scan(shape=(3, 4))
    with pytest.raises(TypeError, match="integer counts"):
        dataclasses.replace(scan, spectra=scan.spectra.astype(float))
    with pytest.raises(ValueError, match="x_um must have shape"):
        dataclasses.replace(scan, x_um=scan.x_um[:-1])
    with pytest.raises(ValueError, match="y_um holds non-finite"):
        dataclasses.replace(scan, y_um=np.full(12, np.inf))
    with pytest.raises(ValueError, match="spectra must have shape"):
        dataclasses.replace(scan, spectra=scan.spectra[:, 0])
    with pytest.raises(ValueError, match="live_time_s exceeds"):
        dataclasses.replace(scan, live_time_s=scan.real_time_s * 2)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        dataclasses.replace(scan, metadata={"when": object()})
    with pytest.raises(TypeError, match="EnergyCalibration"):
        dataclasses.replace(scan, calibration=(0.0, 0.01))
    with pytest.raises(TypeError, match="RawXRFScan"):
        write_raw_scan("unused.h5", {"spectra": scan.spectra})


def test_a_folder_in_the_way_is_refused_and_left_alone(tmp_path, scan):
    target = tmp_path / "scan.h5"
    target.mkdir()  # a folder in the way: even with overwrite, never replaced
    with pytest.raises(ValueError, match="is a folder"):
        write_raw_scan(target, scan, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["scan.h5"]
    assert target.is_dir()


def test_an_existing_raw_scan_is_never_replaced_unless_asked(tmp_path, scan):
    path = write_raw_scan(tmp_path / "scan.h5", scan)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        write_raw_scan(path, scan)
    assert path.read_bytes() == before
    write_raw_scan(path, scan, overwrite=True)
    np.testing.assert_array_equal(read_raw_scan(path).spectra, scan.spectra)


@pytest.mark.parametrize(
    "layout",
    [
        {"compression": "gzip"},
        {"checksum": True},
        {"chunks": (7, 3, 50)},  # another writer's chunks: partial chunks along every axis
        {"chunks": None},  # contiguous
    ],
)
def test_roi_sums_do_not_depend_on_the_layout(tmp_path, scan, layout):
    path = tmp_path / "scan.h5"
    if "chunks" in layout:
        write_raw_scan(path, scan)
        with h5py.File(path, "r+") as handle:
            del handle["entry/data/data"], handle["entry/instrument/xrf/data"]
            handle.create_dataset(
                "entry/instrument/xrf/data", data=scan.spectra, chunks=layout["chunks"]
            )
    else:
        write_raw_scan(path, scan, **layout)
    rois = [ChannelROI("a", 45, 120), ChannelROI("b", 0, 3), ChannelROI("c", 990, 1023)]
    sums = read_roi_sums(path, rois)
    for index, roi in enumerate(rois):
        expected = scan.spectra[:, :, roi.slice].sum(axis=2)
        np.testing.assert_array_equal(sums.counts[:, :, index], expected, err_msg=roi.name)
    with RawScanFile(path) as raw:
        # Unfiltered chunks are summed from raw chunk reads (not through the fallback).
        direct = raw._unfiltered_chunks()
        assert direct == (
            layout.get("chunks", 1) is not None
            and "compression" not in layout
            and "checksum" not in layout
        )
        if direct:
            out = np.empty((scan.n_points, scan.n_detectors), dtype=np.int64)
            raw._roi_sum_direct(45, 121, out)
            np.testing.assert_array_equal(out, scan.spectra[:, :, 45:121].sum(axis=2))


@pytest.mark.parametrize(
    "name", ["entry/instrument/i0/data", "entry/instrument/xrf", "entry/notes/data"]
)
def test_links_to_other_files_are_refused_before_they_are_opened(tmp_path, raw_file, name):
    # the other file holds what the link promises: only the link itself can be refused
    outside = tmp_path / "outside.h5"
    with h5py.File(raw_file, "r") as source, h5py.File(outside, "w") as target:
        source.copy(source[name], target, name="node")
    _edit(
        raw_file,
        lambda h: (
            h.__delitem__(name),
            h.__setitem__(name, h5py.ExternalLink(str(outside), "/node")),
        ),
    )
    with pytest.raises(UnsafeInputError, match="external link"):
        read_raw_scan(raw_file)


def test_virtual_datasets_are_refused(tmp_path, raw_file):
    name = "entry/instrument/i0/data"
    outside = tmp_path / "outside.h5"
    with h5py.File(raw_file, "r") as source, h5py.File(outside, "w") as target:
        values = source[name][()]
        target["i0"] = values
    layout = h5py.VirtualLayout(shape=values.shape, dtype=values.dtype)
    layout[:] = h5py.VirtualSource(str(outside), "i0", shape=values.shape)
    _edit(raw_file, lambda h: (h.__delitem__(name), h.create_virtual_dataset(name, layout)))
    with pytest.raises(UnsafeInputError, match="other files"):
        read_raw_scan(raw_file)
