"""Every HDF5 file ASIRP writes is valid NeXus and opens in silx as an image with axes.

Files checked: ``write_restoration`` (used by ``asirp restore``, ``asirp demo`` and the Tango
device's SaveResult), the µ-XRF map export (``asirp xrf-map``'s map.h5), the raw µ-XRF scan,
and the simulated beamline's tomography and diffraction-frame files. Each goes through the
NeXus validator (``nxvalidate``, see :mod:`tests.nexus_validation`), silx's default-plot
lookup, and is read back.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import asirp
from asirp import nexus
from asirp.cli import main
from asirp.io import InputFileError
from asirp.restore import Restoration
from asirp.results_io import read_restoration, write_restoration
from asirp.xrf import ChannelROI, XRFMap, build_map, read_raw_scan, write_raw_scan
from asirp.xrf.export import read_map_nexus, write_map_nexus
from asirp_device.files import DataFiles
from sim.tomo import simulate_tomo
from tests.asirp.xrf.conftest import small_scan
from tests.conftest import make_noisy_map
from tests.nexus_validation import (
    assert_default_image,
    assert_valid_nexus,
    default_nxdata,
    validate_nexus,
)


@pytest.fixture(scope="module")
def measured() -> np.ndarray:
    return make_noisy_map("mesh", shape=(24, 32)).measured


@pytest.fixture(scope="module")
def restored(measured) -> Restoration:
    return asirp.restore(measured, "wiener", beam_fwhm_um=30.0, pixel_um=(10.0, 5.0))


def _process_fields(path, name="entry/process") -> dict[str, object]:
    with h5py.File(path, "r") as handle:
        process = handle[name]
        assert process.attrs["NX_class"] == "NXprocess"
        assert set(process.attrs) == {"NX_class"}, "provenance belongs in fields, not attrs"
        return {
            key: nexus.read_text(item) if item.dtype.kind in "OSU" else item[()]
            for key, item in process.items()
            if isinstance(item, h5py.Dataset)
        }


# --- the validator helper itself -------------------------------------------------------------


def test_the_validator_reports_what_breaks_nexus(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        data = entry.create_group("plot")
        data.attrs["NX_class"] = "NXdata"  # no @signal
        data["values"] = np.zeros((2, 3))
        entry.create_group("loose")  # no NX_class under an NXentry
        entry.create_group("instrument").attrs["NX_class"] = "NXinstrument"
        entry["instrument"].create_group("i0").attrs["NX_class"] = "NXmonitor"
    report = validate_nexus(path)
    joined = "\n".join(report.errors)
    assert '/entry/plot: "@signal" is not present' in joined
    assert "/entry/loose: This group has no NeXus base class" in joined
    assert "/entry/instrument/i0: NXmonitor is an invalid class in NXinstrument" in joined
    with pytest.raises(AssertionError, match="not valid NeXus"):
        assert_valid_nexus(path)


# --- restorations ----------------------------------------------------------------------------


def test_restoration_file_is_valid_nexus_with_axes_in_um_and_provenance_fields(
    tmp_path, measured, restored
):
    path = write_restoration(
        tmp_path / "out.h5", restored, input_path="scan.h5::/x", input_image=measured
    )
    warnings = assert_valid_nexus(path)
    # only fields the NXprocess base class does not name (allowed, listed here)
    assert all("/entry/process/" in warning for warning in warnings), warnings
    assert assert_default_image(path, units="um") == ("/entry/restored", measured.shape)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["default"] == "entry"
        assert handle["entry"].attrs["default"] == "restored"
        assert "definition" not in handle["entry"]
        restored_group = handle["entry/restored"]
        assert list(restored_group.attrs["axes"]) == ["y", "x"]
        assert (restored_group.attrs["y_indices"], restored_group.attrs["x_indices"]) == (0, 1)
        np.testing.assert_array_equal(restored_group["y"][:3], [0.0, 10.0, 20.0])
        np.testing.assert_array_equal(restored_group["x"][:3], [0.0, 5.0, 10.0])
        assert restored_group["data"].attrs["units"] == "counts"
        assert restored_group["x"].attrs["long_name"] == "x (µm)"
        np.testing.assert_array_equal(handle["entry/input/data"][()], measured)
        np.testing.assert_array_equal(handle["entry/input/x"][()], restored_group["x"][()])
        psf = handle["entry/psf"]
        assert psf["data"].shape == restored.psf.shape
        assert psf["x"][psf["x"].shape[0] // 2] == 0.0  # offsets from the PSF's centre
        note = handle["entry/process/provenance"]
        assert note.attrs["NX_class"] == "NXnote"
        assert nexus.read_text(note["type"]) == "application/json"
    fields = _process_fields(path)
    assert fields["program"] == "asirp"
    assert fields["version"] == asirp.__version__
    assert fields["sequence_index"] == 1
    assert fields["method"] == "wiener"
    assert fields["input_path"] == "scan.h5::/x"
    assert str(fields["date"]).startswith(("20", "19"))


def test_read_restoration_gives_back_the_whole_provenance(tmp_path, measured, restored):
    path = write_restoration(tmp_path / "out.h5", restored, input_image=measured)
    back = read_restoration(path)
    # exactly the dict written, whatever keys the engine puts in it
    assert back["provenance"] == json.loads(json.dumps(restored.provenance()))
    assert list(back["provenance"]) == list(restored.provenance())
    assert back["params"] == json.loads(json.dumps(restored.params))
    assert back["metrics"] == restored.metrics
    assert back["psf_description"]["pixel_um"] == [10.0, 5.0]
    assert (back["method"], back["version"], back["input_path"]) == (
        "wiener",
        asirp.__version__,
        "",
    )
    np.testing.assert_array_equal(back["image"], restored.image)
    np.testing.assert_array_equal(back["psf"], restored.psf)
    np.testing.assert_array_equal(back["input_image"], measured)


def test_provenance_with_numpy_values_and_new_keys_is_stored_generically(tmp_path, restored):
    extra = Restoration(
        image=restored.image,
        method="wiener",
        params={"iterations_run": np.int64(3), "weights": np.array([0.5, 0.25])},
        psf=None,
        metrics={"psnr": np.float32(20.5)},
        elapsed_s=0.25,
        run_record={"input": {"sha256": "ab" * 32, "shape": [24, 32]}, "seed": 7},
    )
    path = write_restoration(tmp_path / "extra.h5", extra)
    assert_valid_nexus(path)
    back = read_restoration(path)
    assert back["params"] == {"iterations_run": 3, "weights": [0.5, 0.25]}
    assert back["psf"] is None
    assert back["input_image"] is None
    assert back["provenance"] == json.loads(nexus.to_json(extra.provenance()))
    # no PSF description: the axes are pixel indices
    assert_default_image(path, units="pixel")


def test_a_stack_is_an_image_stack_with_a_frame_dimension(tmp_path):
    stack = np.stack([make_noisy_map("mesh", shape=(20, 20), seed=s).measured for s in (1, 2)])
    result = asirp.restore(stack, "wiener", psf_sigma_px=1.5)
    path = write_restoration(tmp_path / "stack.h5", result, input_image=stack, pixel_um=2.0)
    assert_valid_nexus(path)
    assert assert_default_image(path, units="um") == ("/entry/restored", (2, 20, 20))
    with h5py.File(path, "r") as handle:
        group = handle["entry/restored"]
        assert list(group.attrs["axes"]) == [".", "y", "x"]
        assert (group.attrs["y_indices"], group.attrs["x_indices"]) == (1, 2)
        assert group["data"].attrs["interpretation"] == "image"
        np.testing.assert_array_equal(group["x"][:2], [0.0, 2.0])
        assert default_nxdata(handle).is_image


def test_a_super_resolved_grid_covers_the_input_cells(tmp_path, measured):
    fine = np.kron(measured, np.ones((2, 2), dtype=np.float32))
    result = Restoration(
        image=fine,
        method="fca_sr",
        params={"scale": 2},
        psf=None,
        metrics={},
        elapsed_s=0.1,
        psf_description={"pixel_um": [10.0, 10.0], "source": "beam"},
    )
    for kwargs in ({}, {"input_image": measured}):  # scale from params, or from the shapes
        path = write_restoration(tmp_path / f"sr{len(kwargs)}.h5", result, **kwargs)
        assert_valid_nexus(path)
        with h5py.File(path, "r") as handle:
            # input pixel 0 is centred at 0 µm and spans -5..5 µm: two 5 µm cells
            np.testing.assert_allclose(handle["entry/restored/x"][:3], [-2.5, 2.5, 7.5])
            if kwargs:
                np.testing.assert_array_equal(handle["entry/input/x"][:2], [0.0, 10.0])


def test_restoration_files_of_the_earlier_layout_are_still_read(tmp_path, restored):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["restored/data"] = restored.image
        entry["restored/psf"] = restored.psf
        process = entry.create_group("process")
        process.attrs.update(
            NX_class="NXprocess",
            program="asirp",
            version="0.0.9",
            method="wiener",
            parameters=json.dumps(restored.params),
            psf=json.dumps(restored.psf_description),
            metrics=json.dumps(restored.metrics),
            elapsed_s=1.5,
            input_path="a.h5",
            date="2024-01-01T00:00:00+00:00",
        )
    back = read_restoration(path)
    assert (back["method"], back["version"], back["input_path"]) == ("wiener", "0.0.9", "a.h5")
    np.testing.assert_array_equal(back["psf"], restored.psf)
    assert back["provenance"]["elapsed_s"] == 1.5
    assert back["provenance"]["params"] == back["params"]


def test_read_restoration_errors_are_input_file_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_restoration(tmp_path / "absent.h5")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["entry/restored/data"] = np.zeros((2, 2))
    with pytest.raises(InputFileError, match="missing /entry/process"):
        read_restoration(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputFileError, match="cannot read restoration file"):
        read_restoration(tmp_path / "text.h5")


def test_cli_restore_output_is_valid_nexus_with_the_input_and_its_steps(tmp_path, measured):
    np.save(tmp_path / "scan.npy", measured)
    output = tmp_path / "restored.h5"
    args = ["restore", str(tmp_path / "scan.npy"), "-o", str(output), "--method", "wiener"]
    assert main([*args, "--beam-fwhm-um", "30", "--pixel-um", "10", "5"]) == 0
    assert_valid_nexus(output)
    assert_default_image(output, units="um")
    with h5py.File(output, "r") as handle:
        np.testing.assert_array_equal(handle["entry/restored/y"][:2], [0.0, 10.0])
        np.testing.assert_array_equal(handle["entry/restored/x"][:2], [0.0, 5.0])
        np.testing.assert_array_equal(handle["entry/input/data"][()], measured)


def test_demo_restored_file_is_valid_nexus(tmp_path, monkeypatch):
    import asirp.demo

    monkeypatch.setattr(asirp.demo, "MAP_SHAPE", (40, 40))  # the demo's map, smaller
    figures = []  # the demo's figure is not what is checked here (and takes seconds)
    monkeypatch.setattr(asirp.demo, "before_after_figure", lambda *a, **k: figures.append(a))
    asirp.demo.run_demo(tmp_path, method="wiener", device="cpu")
    path = tmp_path / "restored.h5"
    assert_valid_nexus(path)
    assert assert_default_image(path, units="um") == ("/entry/restored", (40, 40))
    assert len(figures) == 1
    back = read_restoration(path)
    np.testing.assert_array_equal(back["input_image"], np.load(tmp_path / "measured.npy"))
    with h5py.File(path, "r") as handle:
        assert handle["entry/restored/x"][1] == asirp.demo.STEP_UM


def test_device_save_result_file_is_valid_nexus(tmp_path, restored):
    files = DataFiles(tmp_path)
    written = files.save_result("results/saved.h5", restored, "scan.h5")
    assert_valid_nexus(written)
    assert_default_image(written, units="um")
    assert read_restoration(written)["input_path"] == "scan.h5"


# --- µ-XRF maps and raw scans ----------------------------------------------------------------


@pytest.fixture(scope="module")
def scan():
    return small_scan()


def test_map_file_is_valid_nexus_and_keeps_how_the_map_was_made(tmp_path, scan):
    cu = build_map(scan, "Cu", normalize_by="ar", dead_time=True)
    cu = XRFMap(
        **{
            **cu.__dict__,
            "rois": (*cu.rois, ChannelROI("unknown", 10, 12, float("nan"))),
            "metadata": {**cu.metadata, "cautions": ["the beam width was guessed"]},
            "history": ("crop rows=(0, 12)",),
        }
    )
    result = asirp.restore(
        cu.data, "richardson_lucy", beam_fwhm_um=20, pixel_um=10, iterations=2, stop="fixed"
    )
    path = write_map_nexus(tmp_path / "map.h5", cu, restoration=result, source="raw.h5")
    assert_valid_nexus(path)
    assert assert_default_image(path, units="um") == ("/entry/map", cu.shape)
    with h5py.File(path, "r") as handle:
        assert "definition" not in handle["entry"]  # an application-definition name, not ours
        np.testing.assert_array_equal(handle["entry/map/x"][()], cu.x_um)
        assert handle["entry/detector_maps/x"] == handle["entry/map/x"]  # one dataset, linked
        mapping = handle["entry/mapping"]
        cautions = nexus.read_json_note(mapping["metadata"])["cautions"]
        assert cautions == ["the beam width was guessed"]
        roles = [roi["role"] for roi in nexus.read_json_note(mapping["rois"])]
        assert roles == ["element", "normalization", "normalization"]
        restored_x = handle["entry/restored/x"]
        assert restored_x.attrs["units"] == "um"
        np.testing.assert_allclose(restored_x[()], cu.x_um)
        assert nexus.read_json_note(handle["entry/process/provenance"])["method"] == (
            "richardson_lucy"
        )
    assert _process_fields(path, "entry/mapping")["element"] == "Cu"
    assert _process_fields(path)["sequence_index"] == 2
    back = read_map_nexus(path)
    np.testing.assert_array_equal(back.data, cu.data)
    np.testing.assert_array_equal(back.detector_maps, cu.detector_maps)
    assert back.rois[:2] == cu.rois[:2]
    assert np.isnan(back.rois[2].energy_kev)
    assert (back.metadata, back.history, back.calibration) == (
        cu.metadata,
        cu.history,
        cu.calibration,
    )
    assert (back.normalization, back.dead_time_corrected, back.detectors) == (
        "ar",
        True,
        cu.detectors,
    )
    assert back.reference_mean == cu.reference_mean


def test_pymca_finds_the_map_image(tmp_path, scan):
    from PyMca5.PyMcaCore import NexusTools
    from PyMca5.PyMcaIO import NexusUtils

    path = write_map_nexus(tmp_path / "map.h5", build_map(scan, "Cu"))
    with h5py.File(path, "r") as handle:
        found = NexusTools.getNXdataList(handle, "/entry")
        assert sorted(found) == ["/entry/detector_maps", "/entry/map"]
        group = handle["entry/map"]
        assert NexusUtils.nxDataGetSignals(group) == ["data"]
        (image,) = NexusUtils.selectDatasets(group)
        assert image.ndim == 2
        assert [group[name].attrs["units"] for name in group.attrs["axes"]] == ["um", "um"]


def test_map_files_of_the_earlier_layout_are_still_read(tmp_path, scan):
    cu = build_map(scan, "Cu", normalize_by="i0")
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as handle:
        handle["entry/map/data"] = cu.data
        handle["entry/map/x"] = cu.x_um
        handle["entry/map/y"] = cu.y_um
        handle["entry/map/mask"] = cu.mask.astype(np.uint8)
        definition = handle.create_group("entry/definition")
        definition.attrs.update(
            element="Cu",
            line="Ka",
            normalization="i0",
            reference_mean=cu.reference_mean,
            dead_time_corrected=False,
            detectors=np.asarray(cu.detectors),
            scan_kind=cu.scan_kind,
            history=json.dumps([]),
            metadata=json.dumps(cu.metadata),
            **{f"calibration_{k}": v for k, v in cu.calibration.as_dict().items()},
        )
        for order, roi in enumerate(cu.rois):
            group = definition.create_group(f"rois/roi{order}")
            group.attrs.update(name=roi.name, order=order)
            group["first_channel"] = roi.first_channel
            group["last_channel"] = roi.last_channel
            group["energy_kev"] = roi.energy_kev
    back = read_map_nexus(path)
    np.testing.assert_array_equal(back.data, cu.data)
    assert (back.rois, back.calibration, back.normalization) == (cu.rois, cu.calibration, "i0")


def test_cli_xrf_map_output_is_valid_nexus(tmp_path, scan):
    raw = write_raw_scan(tmp_path / "raw.h5", scan)
    out = tmp_path / "out"
    # without --restore (a map with a restoration is checked above): no figures but map.png
    assert main(["xrf-map", str(raw), "--element", "Cu", "-o", str(out)]) == 0
    assert_valid_nexus(out / "map.h5")
    assert_default_image(out / "map.h5", units="um")
    with h5py.File(out / "map.h5", "r") as handle:
        assert nexus.read_text(handle["entry/mapping/source"]) == str(raw)


def test_raw_scan_file_is_valid_nexus_with_the_monitor_in_the_entry(tmp_path, scan):
    path = write_raw_scan(tmp_path / "raw.h5", scan)
    assert_valid_nexus(path)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["default"] == "entry"
        assert handle["entry/monitor"].attrs["NX_class"] == "NXmonitor"
        assert handle["entry/monitor/data"] == handle["entry/instrument/i0/data"]
        assert handle["entry/instrument/i0"].attrs["NX_class"] == "NXdetector"
        default = default_nxdata(handle)
        assert default.is_valid
        assert default.signal.shape == scan.spectra.shape
    np.testing.assert_array_equal(read_raw_scan(path).i0, scan.i0)


# --- the simulated beamline's files ----------------------------------------------------------


def test_simulated_tomography_file_is_valid_nexus_and_still_data_exchange(tmp_path):
    tomo = simulate_tomo(shape=(16, 24), n_angles=4, n_flats=2, n_darks=2)
    path = tomo.write(tmp_path / "tomo.h5")
    assert_valid_nexus(path)
    with h5py.File(path, "r") as handle:
        default = default_nxdata(handle)
        assert default.is_valid
        assert default.axes_dataset_names == ["theta", "y", "x"]
        assert default.signal == handle["exchange/data"]  # the same dataset, hard-linked
        # nothing added to the Data Exchange datasets (readers compare them with TomoPy's)
        assert set(handle["exchange/data"].attrs) == {"axes", "units", "description"}
        assert set(handle["exchange/theta"].attrs) == {"units"}
        np.testing.assert_array_equal(default.axes[0][()], tomo.theta_deg)
        assert default.axes[2].attrs["units"] == "um"


def test_simulated_diffraction_frame_file_is_valid_nexus(tmp_path):
    from sim.diffraction import small_geometry
    from sim.xrd_devices import AD_HDF5_DATASET, make_xrd_beamline

    beamline = make_xrd_beamline(
        "new_phase", 0, geometry=small_geometry(factor=16), inline=False, write_root=tmp_path
    )
    beamline.detector.trigger()
    path = beamline.detector.records[-1].path
    assert_valid_nexus(path)
    frame = beamline.detector.last_frame
    assert assert_default_image(path, units="pixel") == ("/entry/data", (1, *frame.shape))
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle[AD_HDF5_DATASET][0], frame)


# --- the helpers -----------------------------------------------------------------------------


def test_nexus_helpers_refuse_inconsistent_input(tmp_path):
    with h5py.File(tmp_path / "h.h5", "w") as handle:
        entry = nexus.create_entry(handle)
        y, x = nexus.pixel_axes((3, 4), 1.0)
        with pytest.raises(ValueError, match="2 axes for a signal of shape"):
            nexus.write_nxdata(entry, "a", np.zeros((2, 3, 4)), [y, x])
        with pytest.raises(ValueError, match="axis 'x' has shape"):
            nexus.write_nxdata(entry, "b", np.zeros((3, 5)), [y, x])
        with pytest.raises(ValueError, match="no member 'c'"):
            nexus.set_default(entry, "c")
        note = entry.create_group("note")
        note["type"] = "text/plain"
        note["data"] = "hello"
        with pytest.raises(ValueError, match="not an NXnote holding JSON"):
            nexus.read_json_note(note)
        with pytest.raises(TypeError, match="cannot store a object as JSON"):
            nexus.to_json({"a": object()})
    for bad in (0.0, -1.0, (1.0, 2.0, 3.0), float("nan")):
        with pytest.raises(ValueError, match="pixel_um"):
            nexus.pixel_pair(bad)
