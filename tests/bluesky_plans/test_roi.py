import numpy as np
import pytest

from bluesky_plans.roi import (
    RegionOfInterest,
    detect_rois,
    merge_overlapping,
    register_roi_strategy,
    roi_strategies,
)

STEP_UM = 10.0


def _axes(shape):
    rows, cols = shape
    return np.arange(cols) * STEP_UM, np.arange(rows) * STEP_UM


def _spots(shape=(64, 64), spots=((16, 16, 3, 8.0), (44, 40, 4, 3.0), (50, 10, 2, 1.0))):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 0.2)
    for row, col, radius, amplitude in spots:
        image[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] += amplitude
    return image


def test_threshold_finds_each_spot_at_its_position():
    image = _spots()
    x_um, y_um = _axes(image.shape)
    regions = detect_rois(image, x_um, y_um, "threshold", level=0.5)
    assert len(regions) == 3
    for row, col, *_ in ((16, 16), (44, 40), (50, 10)):
        assert sum(region.contains(col * STEP_UM, row * STEP_UM) for region in regions) == 1
    # best score first: the large bright spot beats the small faint one
    assert regions[0].contains(16 * STEP_UM, 16 * STEP_UM)
    assert regions[-1].contains(10 * STEP_UM, 50 * STEP_UM)


def test_region_covers_full_pixel_extent():
    image = np.zeros((10, 10))
    image[4:6, 2:5] = 1.0
    x_um, y_um = _axes(image.shape)
    (region,) = detect_rois(image, x_um, y_um, "threshold", level=0.5)
    assert region.x_min_um == pytest.approx(15.0)
    assert region.x_max_um == pytest.approx(45.0)
    assert region.y_min_um == pytest.approx(35.0)
    assert region.y_max_um == pytest.approx(55.0)


def test_top_k_keeps_the_strongest():
    image = _spots()
    x_um, y_um = _axes(image.shape)
    regions = detect_rois(image, x_um, y_um, "top_k", k=2)
    assert len(regions) == 2
    assert regions[0].contains(160.0, 160.0)
    assert regions[1].contains(400.0, 440.0)


def test_detail_strategy_marks_edges_not_flat_interior():
    image = np.zeros((64, 64))
    image[:, 32:] = 10.0
    x_um, y_um = _axes(image.shape)
    regions = detect_rois(image, x_um, y_um, "detail")
    assert regions
    assert all(region.contains(region.centre_um[0], 315.0) for region in regions)
    assert all(region.x_min_um > 200.0 and region.x_max_um < 440.0 for region in regions)


def test_margin_merges_neighbours_and_clips_to_bounds():
    image = np.zeros((40, 40))
    image[10:12, 10:12] = 1.0
    image[10:12, 15:17] = 1.0  # 30 µm gap between the two
    x_um, y_um = _axes(image.shape)
    separate = detect_rois(image, x_um, y_um, level=0.5)
    assert len(separate) == 2
    merged = detect_rois(image, x_um, y_um, level=0.5, margin_um=20.0)
    assert len(merged) == 1
    assert merged[0].score == pytest.approx(sum(region.score for region in separate))
    edge = detect_rois(image, x_um, y_um, level=0.5, margin_um=500.0)
    assert edge[0].x_min_um == pytest.approx(-5.0)
    assert edge[0].y_max_um == pytest.approx(395.0)


def test_min_and_max_size_and_cap():
    image = np.zeros((60, 60))
    image[5, 5] = 1.0
    image[20:50, 20:50] = 1.0
    x_um, y_um = _axes(image.shape)
    regions = detect_rois(image, x_um, y_um, level=0.5, min_size_um=50.0, max_size_um=120.0)
    small = [region for region in regions if region.contains(50.0, 50.0)]
    assert small
    assert small[0].width_um >= 50.0 - 1e-9
    assert all(region.width_um <= 120.0 + 1e-9 for region in regions)
    assert all(region.height_um <= 120.0 + 1e-9 for region in regions)
    assert len(regions) == 1 + 9  # 300 µm square split in 3 x 3 tiles
    capped = detect_rois(image, x_um, y_um, level=0.5, max_size_um=120.0, max_count=4)
    assert len(capped) == 4


def test_nan_pixels_are_never_interesting():
    image = _spots()
    image[:, 50:] = np.nan  # not measured yet
    x_um, y_um = _axes(image.shape)
    regions = detect_rois(image, x_um, y_um, level=0.5)
    assert all(region.x_max_um <= 50 * STEP_UM for region in regions)


def test_custom_strategy_is_pluggable():
    def corner(image, *, size=4):
        return [((0, size, 0, size), 1.0)]

    register_roi_strategy("corner_for_test", corner)
    assert "corner_for_test" in roi_strategies()
    image = np.ones((8, 8))
    (region,) = detect_rois(image, *_axes(image.shape), "corner_for_test", size=2)
    assert region.strategy == "corner_for_test"
    assert region.width_um == pytest.approx(20.0)


def test_merge_overlapping_is_transitive():
    chain = [RegionOfInterest(i * 9.0, i * 9.0 + 10.0, 0.0, 10.0, 1.0, "t") for i in range(4)]
    (merged,) = merge_overlapping(chain)
    assert merged.x_min_um == 0.0
    assert merged.x_max_um == pytest.approx(37.0)
    assert merged.score == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "nope"}, "unknown ROI strategy"),
        ({"margin_um": -1.0}, "margin_um"),
        ({"min_size_um": 50.0, "max_size_um": 20.0}, "max_size_um"),
        ({"max_count": 0}, "max_count"),
    ],
)
def test_bad_arguments(kwargs, message):
    image = _spots()
    with pytest.raises(ValueError, match=message):
        detect_rois(image, *_axes(image.shape), **kwargs)


def test_bad_maps_and_axes():
    x_um, y_um = _axes((8, 8))
    with pytest.raises(ValueError, match="2-D"):
        detect_rois(np.ones(8), x_um, y_um)
    with pytest.raises(ValueError, match="finite"):
        detect_rois(np.full((8, 8), np.nan), x_um, y_um)
    with pytest.raises(ValueError, match="axes must match"):
        detect_rois(np.ones((8, 8)), x_um[:5], y_um)
    with pytest.raises(ValueError, match="monotonic"):
        detect_rois(np.ones((8, 8)), np.zeros(8), y_um)
    with pytest.raises(ValueError, match="positive width"):
        RegionOfInterest(1.0, 1.0, 0.0, 1.0, 0.0, "t")


def test_hotspots_strategy_finds_local_peaks_on_a_smooth_background():
    rows, cols = np.mgrid[:64, :64]
    background = 5.0 + 0.1 * cols  # a gradient brighter than the faint spot on the left
    image = background.copy()
    image[(rows - 20) ** 2 + (cols - 10) ** 2 <= 4] += 2.0  # faint, on the dark side
    image[(rows - 40) ** 2 + (cols - 50) ** 2 <= 4] += 4.0
    x_um, y_um = _axes(image.shape)
    found = detect_rois(image, x_um, y_um, "hotspots")
    strongest = found[:2]  # best score first
    assert any(region.contains(100.0, 200.0) for region in strongest)
    assert any(region.contains(500.0, 400.0) for region in strongest)
    # a global threshold misses the faint spot: it is darker than the bright side's background
    assert not any(
        region.contains(100.0, 200.0)
        for region in detect_rois(image, x_um, y_um, "threshold")
        if region.width_um < 200.0
    )
    with pytest.raises(ValueError, match="background_px"):
        detect_rois(image, x_um, y_um, "hotspots", background_px=1)
