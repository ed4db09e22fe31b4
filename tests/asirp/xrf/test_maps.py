"""Map geometry, channel-adding, dead time, normalisation and XRFMap."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import asirp
from asirp.xrf import (
    ChannelROI,
    build_map,
    dead_time_correct,
    element_counts,
    element_roi,
    infer_grid,
    normalize,
    read_roi_sums,
)
from asirp.xrf.synthetic import scan_positions
from tests.asirp.xrf.conftest import small_scan


@pytest.mark.parametrize("kind", ["raster", "snake"])
@pytest.mark.parametrize("with_lines", [True, False])
def test_grid_of_step_scans(kind, with_lines):
    x, y, lines, rows, cols = scan_positions((6, 9), 2.5, kind, np.random.default_rng(0))
    grid = infer_grid(x + 100.0, y - 40.0, lines if with_lines else None)
    assert grid.shape == (6, 9)
    assert grid.step_um == pytest.approx((2.5, 2.5))
    assert grid.origin_um == pytest.approx((-40.0, 100.0))
    assert grid.kind == kind
    assert grid.fast_axis == "x"
    np.testing.assert_array_equal(grid.rows, rows)
    np.testing.assert_array_equal(grid.cols, cols)
    assert grid.mask.all()
    np.testing.assert_allclose(grid.x_um, 100.0 + 2.5 * np.arange(9))


def test_grid_of_fly_lines_of_unequal_length():
    rng = np.random.default_rng(3)
    x, y, lines, rows, cols = scan_positions((10, 30), 5.0, "fly", rng)
    counts = np.bincount(lines)
    assert len(set(counts)) > 1  # the lines really differ in length
    for line_index in (lines, None):
        grid = infer_grid(x, y, line_index)
        assert grid.kind == "fly"
        assert grid.shape[0] == 10
        assert grid.step_um == pytest.approx((5.0, 5.0), rel=0.02)
        np.testing.assert_array_equal(grid.rows, rows)
        # Positions jitter by ±10 % of a step: each point stays in its own cell.
        np.testing.assert_array_equal(grid.cols, cols - cols.min())
        # Cells outside the shorter lines are unmeasured.
        assert grid.mask.sum() == x.shape[0] < grid.shape[0] * grid.shape[1]
    values = grid.assemble(np.arange(x.shape[0], dtype=float))
    assert np.isnan(values[~grid.mask]).all()
    assert values[grid.rows[7], grid.cols[7]] == 7.0


def test_grid_with_vertical_lines_and_missing_points():
    x, y, lines, rows, _ = scan_positions((8, 5), 1.0, "raster", np.random.default_rng(0))
    # Swap axes: the lines now run along y with a 2 µm step between them; drop 3 points.
    keep = np.ones(x.shape[0], dtype=bool)
    keep[[4, 17, 30]] = False
    grid = infer_grid(2.0 * y[keep], x[keep], lines[keep])
    assert grid.fast_axis == "y"
    assert grid.shape == (5, 8)
    assert grid.step_um == pytest.approx((1.0, 2.0))
    assert grid.mask.sum() == 37
    np.testing.assert_array_equal(grid.cols, rows[keep])


def test_grid_averages_points_in_one_cell_and_takes_a_given_step():
    grid = infer_grid(np.array([0.0, 0.1, 10.0, 0.0, 10.0]), np.array([0.0, 0, 0, 10, 10]), None)
    assert grid.shape == (2, 2)
    assert grid.hits[0, 0] == 2
    np.testing.assert_allclose(grid.assemble(np.array([1.0, 3.0, 5, 7, 9]))[0, 0], 2.0)
    fine = infer_grid(np.arange(4.0) * 10, np.zeros(4), step_um=(1.0, 5.0))
    assert fine.shape == (1, 7)


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (np.zeros(3), np.zeros(4), "equal length"),
        (np.zeros(1), np.zeros(1), "at least 2 points"),
        (np.array([0.0, np.nan]), np.zeros(2), "non-finite"),
        (np.zeros(3), np.zeros(3), "same position"),
    ],
)
def test_grid_errors(x, y, words):
    with pytest.raises(ValueError, match=words):
        infer_grid(x, y)


def test_channel_adding_sums_roi_channels(scan):
    roi = element_roi("Cu", scan.calibration)
    counts = element_counts(scan, roi)
    expected = scan.spectra[:, :, roi.first_channel : roi.last_channel + 1].sum(axis=2)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(element_counts(scan, roi, detectors=[2, 0]), expected[:, [2, 0]])
    with pytest.raises(ValueError, match=r"do not exist; the scan has 4"):
        element_counts(scan, roi, detectors=[4])


def test_dead_time_correction_recovers_the_true_counts():
    rng = np.random.default_rng(0)
    live_fraction = rng.uniform(0.5, 1.0, (2000, 2))
    counts = rng.poisson(500.0 * live_fraction)
    corrected = dead_time_correct(counts, 0.1 * live_fraction, np.full((2000, 2), 0.1))
    assert abs(corrected.mean() - 500.0) < 3.0
    # The raw counts carry the dead-time variation, the corrected ones only Poisson noise.
    assert counts.std() > 3 * corrected.std() / 2
    with pytest.raises(ValueError, match="live time is zero at 1 point"):
        dead_time_correct(np.ones((2, 1)), np.array([[0.1], [0.0]]), np.full((2, 1), 0.1))
    with pytest.raises(ValueError, match="same shape"):
        dead_time_correct(np.ones((2, 1)), np.ones((2, 2)), np.ones((2, 1)))


def test_normalize_removes_a_multiplicative_flux_variation():
    rng = np.random.default_rng(1)
    flux = 1.0 + 0.4 * np.sin(np.linspace(0, 12, 5000))
    i0 = 1e5 * flux
    counts = rng.poisson(400.0 * flux).astype(float)
    normalised, mean = normalize(counts, "i0", i0)
    assert mean == pytest.approx(i0.mean())
    assert normalised.mean() == pytest.approx(counts.mean(), rel=0.01)
    assert counts.std() / counts.mean() > 0.25
    # What is left is the Poisson noise of 400 counts (5 %).
    assert normalised.std() / normalised.mean() == pytest.approx(0.05, rel=0.15)
    same, nan = normalize(counts, None)
    np.testing.assert_array_equal(same, counts)
    assert np.isnan(nan)


@pytest.mark.parametrize(
    ("by", "reference", "words"),
    [
        ("flux", np.ones(3), "must be 'i0', 'ar' or None"),
        ("i0", None, "needs the reference"),
        ("i0", np.ones(2), "shape"),
        ("ar", np.array([1.0, 0.0, 2.0]), "zero, negative or non-finite at 1 point"),
    ],
)
def test_normalize_errors(by, reference, words):
    with pytest.raises(ValueError, match=words):
        normalize(np.ones(3), by, reference)


@pytest.mark.parametrize("normalize_by", ["i0", "ar"])
def test_flat_sample_is_flat_after_normalisation(normalize_by):
    # Fe is homogeneous; the synthetic flux varies by ±20 % and the live time by ±5 %.
    scan = small_scan(shape=(20, 25), i0_fluctuation=0.3, ar_counts=400.0)
    raw = build_map(scan, "Fe")
    fixed = build_map(scan, "Fe", normalize_by=normalize_by, dead_time=True)
    spread = [m.data.std() / m.data.mean() for m in (raw, fixed)]
    poisson = 1.0 / np.sqrt(4 * 80.0 * 0.9)  # ~4 x 80 counts per point in the ROI
    assert spread[0] > 2.5 * poisson
    assert spread[1] < 1.5 * poisson * (1.3 if normalize_by == "ar" else 1.0)
    assert fixed.normalization == normalize_by
    assert fixed.units.startswith("counts at mean")


def test_build_map_from_scan_file_and_roi_sums_agree(tmp_path, raw_file, scan):
    from_scan = build_map(scan, "Cu", normalize_by="i0", dead_time=True)
    from_file = build_map(raw_file, "Cu", normalize_by="i0", dead_time=True)
    np.testing.assert_allclose(from_file.data, from_scan.data)
    roi = element_roi("Cu", scan.calibration)
    from_sums = build_map(read_roi_sums(raw_file, [roi]), roi=roi, dead_time=True)
    np.testing.assert_allclose(from_sums.data, build_map(scan, "Cu", dead_time=True).data)
    assert from_sums.element == "Cu Ka"
    assert from_sums.line == ""
    assert from_file.shape == (12, 15)
    assert from_file.pixel_um == (10.0, 10.0)
    assert from_file.rois[0].name == "Cu Ka"
    # Per-element maps are kept and add up to the total.
    np.testing.assert_allclose(
        from_file.detector_maps.sum(axis=0), from_file.data, rtol=1e-5, atol=1e-3
    )
    only = build_map(raw_file, "Cu", detectors=[1], keep_detector_maps=False)
    np.testing.assert_allclose(only.data, build_map(scan, "Cu").detector_maps[1], rtol=1e-6)
    assert only.detectors == (1,)
    assert only.detector_maps is None


def test_map_shows_the_pattern(scan):
    cu = build_map(scan, "Cu", normalize_by="i0", dead_time=True)
    middle = cu.data[:, 5:10].mean()
    sides = np.concatenate([cu.data[:, :5], cu.data[:, 10:]], axis=1).mean()
    assert middle / sides == pytest.approx(4.0, rel=0.1)  # 160 vs 40 counts per element


def test_fly_map_fills_unmeasured_cells_and_masks_them():
    scan = small_scan("fly", shape=(10, 24))
    cu = build_map(scan, "Cu")
    assert cu.scan_kind == "fly"
    assert not cu.mask.all()
    assert np.isfinite(cu.data).all()  # ready for asirp.restore
    assert np.isnan(cu.masked()[~cu.mask]).all()


def test_build_map_errors(scan):
    with pytest.raises(ValueError, match="element"):
        build_map(scan)
    with pytest.raises(ValueError, match="normalisation"):
        build_map(scan, "Cu", normalize_by="flux")
    with pytest.raises(ValueError, match="extends past"):
        build_map(scan, roi=ChannelROI("high", 1000, 2000))
    with pytest.raises(TypeError, match="RawXRFScan, ROISums or a file path"):
        build_map(scan.spectra, "Cu")
    with pytest.raises(ValueError, match="starts past"):
        build_map(scan, "Pb", line="Kb")


def test_map_restores_with_the_scan_beam(scan):
    cu = build_map(scan, "Cu", normalize_by="i0")
    result = cu.restore("richardson_lucy", iterations=5, stop="fixed")
    assert isinstance(result, asirp.Restoration)
    assert result.image.shape == cu.shape
    assert result.psf_description["beam_fwhm_um"] == [20.0, 20.0]
    assert result.psf_description["pixel_um"] == [10.0, 10.0]
    no_beam = dataclasses.replace(cu, metadata={})
    with pytest.raises(ValueError, match="no beam size"):
        no_beam.restore("wiener")


def test_xrf_map_validation(scan):
    cu = build_map(scan, "Cu")
    with pytest.raises(ValueError, match="axes must match"):
        cu.replace(x_um=cu.x_um[:-1])
    with pytest.raises(ValueError, match="mask shape"):
        cu.replace(mask=cu.mask[:-1])
    with pytest.raises(ValueError, match="detector_maps"):
        cu.replace(detector_maps=cu.detector_maps[:, :-1])


def test_ar_smoothing_applies_to_ar_only(scan):
    plain = build_map(scan, "Fe", normalize_by="i0")
    np.testing.assert_array_equal(
        build_map(scan, "Fe", normalize_by="i0", ar_smooth_points=9).data, plain.data
    )
    rough = build_map(scan, "Fe", normalize_by="ar")
    smooth = build_map(scan, "Fe", normalize_by="ar", ar_smooth_points=9)
    # Averaging the few Ar counts per point over 9 points adds less noise to the map.
    assert smooth.data.std() < rough.data.std()
