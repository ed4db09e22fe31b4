"""Map tools (threshold, flip, rotate, crop) and exports (NeXus, text, PNG, fluctuation)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import asirp
from asirp.io import InputFileError, read_array
from asirp.xrf import ChannelROI, XRFMap, build_map
from asirp.xrf.export import (
    intensity_fluctuation,
    read_map_nexus,
    write_fluctuation_figure,
    write_map_nexus,
    write_map_png,
    write_map_text,
)
from asirp.xrf.tools import crop, flip, rotate, threshold

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _map(shape=(3, 4), step=(2.0, 5.0)) -> XRFMap:
    data = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    return XRFMap(
        data=data,
        x_um=100.0 + step[1] * np.arange(shape[1]),
        y_um=-10.0 + step[0] * np.arange(shape[0]),
        mask=np.ones(shape, dtype=bool),
        element="Cu",
        line="Ka",
        rois=(ChannelROI("Cu Ka", 780, 830, 8.04),),
        detectors=(0, 1),
        detector_maps=np.stack([data / 4, 3 * data / 4]),
        metadata={"beam_fwhm_um": 10.0},
    )


def test_threshold_clip_and_mask():
    m = _map()
    clipped = threshold(m, 2.0, 9.0)
    assert clipped.data.min() == 2.0
    assert clipped.data.max() == 9.0
    assert clipped.detector_maps.max() <= 9.0
    assert clipped.history == ("threshold low=2.0 high=9.0 mode=clip",)
    masked = threshold(m, high=5.0, mode="mask")
    np.testing.assert_array_equal(masked.data, m.data)
    assert masked.mask.sum() == 6
    np.testing.assert_array_equal(m.mask, True)  # the input is unchanged
    with pytest.raises(ValueError, match="low, high or both"):
        threshold(m)
    with pytest.raises(ValueError, match="above high"):
        threshold(m, 5.0, 1.0)
    with pytest.raises(ValueError, match="mode"):
        threshold(m, 1.0, mode="zero")


def test_flip_and_rotate():
    m = _map()
    np.testing.assert_array_equal(flip(m, "x").data, m.data[:, ::-1])
    np.testing.assert_array_equal(flip(m, "y").data, m.data[::-1])
    np.testing.assert_array_equal(flip(m, "x").detector_maps[1], m.detector_maps[1][:, ::-1])
    turned = rotate(m, 90)
    assert turned.shape == (4, 3)
    # Shown with y up, the bottom-right cell (row 0, last column) goes to the top right.
    assert turned.data[-1, -1] == m.data[0, -1]
    # The bottom-left cell goes to the bottom right.
    assert turned.data[0, -1] == m.data[0, 0]
    assert turned.pixel_um == (5.0, 2.0)  # the steps swap
    np.testing.assert_array_equal(rotate(rotate(turned, 180), 90).data, m.data)
    np.testing.assert_array_equal(rotate(m, -90).data, rotate(m, 270).data)
    with pytest.raises(ValueError, match="multiple of 90"):
        rotate(m, 45)
    with pytest.raises(ValueError, match="'x' or 'y'"):
        flip(m, "z")


def test_crop_in_um_and_pixels():
    m = _map(shape=(6, 8), step=(1.0, 1.0))
    by_um = crop(m, x_um=(101.0, 103.2), y_um=(-9.0, -8.0))
    np.testing.assert_array_equal(by_um.data, m.data[1:3, 1:4])
    np.testing.assert_array_equal(by_um.x_um, [101.0, 102.0, 103.0])
    assert by_um.detector_maps.shape == (2, 2, 3)
    by_px = crop(m, rows=(1, 3), cols=(1, 4))
    np.testing.assert_array_equal(by_px.data, by_um.data)
    only_x = crop(m, x_um=(104.0, 200.0))
    assert only_x.shape == (6, 4)
    with pytest.raises(ValueError, match="holds no cell"):
        crop(m, x_um=(0.0, 50.0))
    with pytest.raises(ValueError, match="not both"):
        crop(m, x_um=(0.0, 1.0), cols=(0, 1))
    with pytest.raises(ValueError, match="start < stop"):
        crop(m, rows=(3, 3))
    with pytest.raises(ValueError, match="low <= high"):
        crop(m, y_um=(5.0, 1.0))


def test_nexus_round_trip_with_restoration(tmp_path, scan):
    cu = crop(build_map(scan, "Cu", normalize_by="ar", dead_time=True), rows=(1, 11))
    result = asirp.restore(
        cu.data, "richardson_lucy", beam_fwhm_um=20, pixel_um=10, iterations=3, stop="fixed"
    )
    path = write_map_nexus(tmp_path / "map.h5", cu, restoration=result, source="raw.h5")
    back = read_map_nexus(path)
    np.testing.assert_array_equal(back.data, cu.data)
    np.testing.assert_array_equal(back.x_um, cu.x_um)
    np.testing.assert_array_equal(back.y_um, cu.y_um)
    np.testing.assert_array_equal(back.mask, cu.mask)
    np.testing.assert_array_equal(back.detector_maps, cu.detector_maps)
    assert back.rois == cu.rois
    assert back.rois[1].name == "Ar Ka"
    assert back.calibration == cu.calibration
    assert (back.normalization, back.dead_time_corrected) == ("ar", True)
    assert back.history == cu.history
    assert back.metadata == cu.metadata
    np.testing.assert_array_equal(read_array(f"{path}::/entry/restored/data"), result.image)
    with h5py.File(path, "r") as handle:
        nxdata = handle["entry/map"]
        assert nxdata.attrs["signal"] == "data"
        assert list(nxdata.attrs["axes"]) == ["y", "x"]
        assert nxdata["x"].attrs["units"] == "um"
        rois = json.loads(handle["entry/mapping/rois/data"].asstr()[()])
        assert rois[0]["first_channel"] == cu.rois[0].first_channel
        assert rois[1]["role"] == "normalization"
        assert handle["entry/process/method"].asstr()[()] == "richardson_lucy"


def test_nexus_reader_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_map_nexus(tmp_path / "absent.h5")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["entry/map/data"] = np.zeros((2, 2))
    with pytest.raises(InputFileError, match="missing /entry/map/x"):
        read_map_nexus(tmp_path / "other.h5")


def test_text_columns(tmp_path):
    m = threshold(_map(), high=9.5, mode="mask")  # 2 cells unmeasured
    path = write_map_text(tmp_path / "map.txt", m)
    table = np.loadtxt(path)
    assert table.shape == (10, 3)
    np.testing.assert_allclose(table[0], [100.0, -10.0, 0.0])
    np.testing.assert_allclose(table[4], [100.0, -8.0, 4.0])  # row by row: y, then x
    header = path.read_text().splitlines()
    assert header[0].startswith("# asirp µ-XRF map: Cu Ka")
    assert header[2] == "# x_um\ty_um\tcounts"
    full = np.loadtxt(write_map_text(tmp_path / "all.txt", m, include_unmeasured=True))
    assert full.shape == (12, 3)
    assert np.isnan(full[-2:, 2]).all()
    upscaled = np.loadtxt(write_map_text(tmp_path / "up.txt", m, data=np.ones((6, 8))))
    assert upscaled.shape == (48, 3)
    np.testing.assert_allclose(upscaled[:2, 0], [98.75, 101.25])  # half-step cells


def test_png_and_fluctuation_view(tmp_path, scan):
    cu = build_map(scan, "Cu")
    png = write_map_png(tmp_path / "map.png", cu, cmap="magma")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert png.stat().st_size > 5000
    smooth = np.full(cu.shape, cu.data.mean(), dtype=np.float32)
    figures = write_fluctuation_figure(tmp_path / "fluctuation.png", cu, smooth)
    assert (tmp_path / "fluctuation.png").read_bytes().startswith(PNG_SIGNATURE)
    assert figures["std_before"] == pytest.approx(float(cu.data.std()), rel=1e-5)
    assert figures["std_after"] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="colour map"):
        write_map_png(tmp_path / "bad.png", cu, cmap="no-such-map")
    assert not (tmp_path / "bad.png").exists()


def test_intensity_fluctuation_uses_measured_cells():
    before = np.array([[1.0, 3.0], [5.0, 100.0]])
    after = np.array([[2.0, 2.0], [2.0, 0.0]])
    mask = np.array([[True, True], [True, False]])
    figures = intensity_fluctuation(before, after, mask)
    assert figures["mean_before"] == pytest.approx(3.0)
    assert figures["std_before"] == pytest.approx(np.std([1.0, 3.0, 5.0]))
    assert figures["std_after"] == 0.0
    assert figures["relative_std_after"] == 0.0
    with pytest.raises(ValueError, match="one shape"):
        intensity_fluctuation(before, after[:1])
