"""The simulated beamline under the RunEngine: grid scans, fly scans, I0, raw files, timing."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky.plans import count, grid_scan

import asirp
import sim
from asirp.metrics import psnr
from asirp.xrf.raw import read_raw_scan, read_roi_sums
from tests.sim.conftest import event_columns, grid_from_points

KEYS = ["y", "x", "xrf_Cu", "i0"]


def _grid_scan_map(run_plan, beamline, step_um, n, *, snake, dwell_s=0.02):
    beamline.xrf.dwell_time.put(dwell_s)
    start = -(n - 1) * step_um / 2
    stop = start + (n - 1) * step_um
    documents = run_plan(
        grid_scan(
            beamline.detectors,
            beamline.y,
            start,
            stop,
            n,
            beamline.x,
            start,
            stop,
            n,
            snake_axes=snake,
        )
    )
    columns = event_columns(documents, KEYS)
    normalised = columns["xrf_Cu"] * columns["i0"].mean() / columns["i0"]
    return documents, columns, normalised


@pytest.fixture(scope="module")
def ag300():
    return sim.make_beamline("ag300", 50.0, seed=0, field_um=600.0)


@pytest.fixture(scope="module")
def map_10um(ag300):
    # 30 x 30 points at 10 µm (0.3 x 0.3 mm): the RunEngine costs ~14 ms per point here.
    from bluesky import RunEngine

    documents = []
    engine = RunEngine({})
    engine.subscribe(lambda name, doc: documents.append((name, doc)))
    ag300.xrf.dwell_time.put(0.02)
    engine(grid_scan(ag300.detectors, ag300.y, -145, 145, 30, ag300.x, -145, 145, 30))
    return documents, event_columns(documents, KEYS)


def test_grid_scan_at_25um_snaking_correlates_with_the_blurred_truth(ag300, run_plan):
    documents, columns, normalised = _grid_scan_map(run_plan, ag300, 25.0, 16, snake=True)
    start = documents[0][1]
    assert start["shape"] == (16, 16)
    assert start["snaking"] == (False, True)
    # Snaking: the second row runs backwards.
    assert columns["x"][16] > columns["x"][17]
    truth = ag300.truth.concentration("Cu", columns["y"], columns["x"], blurred=True)
    r = np.corrcoef(normalised, truth)[0, 1]
    assert r > 0.95, r
    # A 50 µm beam over 58 µm holes always touches copper: the holes never read zero.
    image = grid_from_points(columns["y"], columns["x"], normalised, 25.0)
    assert not np.isnan(image).any()
    assert image.min() > 0.2 * image.max()


def test_grid_scan_at_10um_correlates_and_restoration_sharpens(ag300, map_10um):
    documents, columns = map_10um
    assert documents[0][1]["shape"] == (30, 30)
    assert documents[0][1]["snaking"] == (False, False)
    normalised = columns["xrf_Cu"] * columns["i0"].mean() / columns["i0"]
    truth = ag300.truth.concentration("Cu", columns["y"], columns["x"], blurred=True)
    assert np.corrcoef(normalised, truth)[0, 1] > 0.95
    measured = grid_from_points(columns["y"], columns["x"], columns["xrf_Cu"], 10.0)
    ys, xs = np.meshgrid(np.unique(columns["y"]), np.unique(columns["x"]), indexing="ij")
    sharp = ag300.truth.expected_counts("Cu", ys, xs, dwell_s=0.02, blurred=False)
    result = asirp.restore(measured, "richardson_lucy", beam_fwhm_um=50, pixel_um=10)
    before, after = psnr(sharp, measured), psnr(sharp, result.image)
    assert after > before + 2.0, (before, after)
    assert result.image.std() > 1.5 * measured.std(), (measured.std(), result.image.std())


def test_blurred_truth_is_the_truth_convolved_with_the_beam_psf(ag300):
    from asirp.metrics import blur

    fine = ag300.sample.pixel_um
    truth = ag300.truth.maps["Cu"]
    blurred = ag300.truth.blurred_maps["Cu"]
    by_hand = blur(truth, ag300.truth.psf(fine))
    inner = (slice(60, -60), slice(60, -60))
    assert np.allclose(blurred[inner], by_hand[inner], rtol=1e-3, atol=1e-3 * truth.max())
    assert ag300.truth.psf(10.0).shape[0] % 2 == 1


def test_counts_are_poisson_on_a_flat_foil(run_plan):
    beamline = sim.make_beamline("foil", 50.0, seed=3, field_um=800.0)
    documents = run_plan(
        sim.fly_map(beamline, -300, 300, -200, 200, 10, speed_um_s=1000, period_s=0.01)
    )
    counts = event_columns(documents, ["xrf_Cu"])["xrf_Cu"].astype(float)
    assert counts.size == 600
    ratio = counts.var(ddof=1) / counts.mean()
    assert 0.85 < ratio < 1.15, ratio
    assert counts.mean() > 50


def test_detector_elements_count_independently_and_sum_to_the_roi(ag300):
    ag300.xrf.dwell_time.put(0.05)
    per_element, totals = [], []
    for _ in range(200):
        ag300.xrf.trigger()
        per_element.append(ag300.xrf.det_roi_counts.get()[:, 0])
        totals.append(ag300.xrf.roi.Cu.get())
    per_element = np.asarray(per_element, dtype=float)
    assert np.array_equal(per_element.sum(axis=1), np.asarray(totals))
    assert per_element.shape[1] == 4
    # Independent Poisson channels: off-diagonal correlations near 0 (|r| < 0.25 for n = 200).
    correlations = np.corrcoef(per_element.T)[np.triu_indices(4, 1)]
    assert np.all(np.abs(correlations) < 0.25), correlations
    # Shares follow the elements' solid angles.
    shares = per_element.sum(axis=0) / per_element.sum()
    assert np.allclose(shares, ag300.model.detector.weights, atol=0.01)


def test_slow_scan_shows_ring_current_lines_that_i0_normalisation_removes(run_plan):
    # Parasitic mode: 1 h lifetime, injection every 5 min (8 % sawtooth).
    ring = sim.RingCurrent(top_current_ma=200.0, lifetime_h=1.0, injection_period_s=300.0)
    beamline = sim.make_beamline("foil", 50.0, seed=5, ring=ring, field_um=400.0)
    beamline.xrf.dwell_time.put(5.0)  # a slow scan: 20 rows of 10 points, ~17 minutes
    documents = run_plan(
        grid_scan(beamline.detectors, beamline.y, -190, 190, 20, beamline.x, -90, 90, 10)
    )
    columns = event_columns(documents, ["xrf_Cu", "i0", "i0_ring_current"])
    raw = columns["xrf_Cu"].reshape(20, 10).astype(float)
    i0 = columns["i0"].reshape(20, 10)
    normalised = raw * i0.mean() / i0
    assert beamline.clock.now > 2 * ring.injection_period_s  # at least two injections
    assert np.ptp(columns["i0_ring_current"]) > 0.02 * ring.top_current_ma

    def row_variation(image):
        """Std of the row means over its Poisson expectation (1 = only noise)."""
        return image.mean(axis=1).std(ddof=1) / np.sqrt(image.mean() / image.shape[1])

    before, after = row_variation(raw), row_variation(normalised)
    print(f"row-to-row variation / Poisson: raw {before:.1f}, I0-normalised {after:.2f}")
    assert before > 5.0, before
    assert after < 1.8, after


def test_i0_and_xrf_share_the_counting_window_and_time_is_accounted(run_plan):
    beamline = sim.make_beamline("ag300", 50.0, seed=2, field_um=400.0)
    beamline.xrf.dwell_time.put(0.05)
    t0 = beamline.clock.now
    documents = run_plan(
        grid_scan(beamline.detectors, beamline.y, -40, 40, 3, beamline.x, -100, 100, 5)
    )
    columns = event_columns(documents, ["y", "x"])
    # Expected time: per point dwell + overhead + the slowest of the moves issued together.
    expected, previous = 0.0, (0.0, 0.0)
    for y, x in zip(columns["y"], columns["x"], strict=True):
        moves = [beamline.y.move_time(y - previous[0]), beamline.x.move_time(x - previous[1])]
        expected += max(moves) + 0.05 + beamline.gate.overhead_s
        previous = (y, x)
    assert beamline.clock.now - t0 == pytest.approx(expected, rel=1e-9)
    # Re-triggering at the same place counts a new window each time (count plan).
    before = beamline.clock.now
    run_plan(count(beamline.detectors, num=3))
    assert beamline.clock.now - before == pytest.approx(3 * (0.05 + beamline.gate.overhead_s))


def test_fly_map_emits_one_event_page_per_line(run_plan):
    beamline = sim.make_beamline("ag300", 50.0, seed=4, field_um=600.0)
    t0 = beamline.clock.now
    documents = run_plan(
        sim.fly_map(beamline, -250, 250, -200, 200, 9, speed_um_s=1000, period_s=0.01, snake=True)
    )
    names = [name for name, _ in documents]
    assert names.count("event_page") == 9
    assert names.count("event") == 0
    start = documents[0][1]
    assert start["plan_name"] == "fly_map"
    assert start["shape"] == (9, 50)
    assert start["extents"][1] == [-245.0, 245.0]
    pages = [doc for name, doc in documents if name == "event_page"]
    assert all(len(page["data"]["x"]) == 50 for page in pages)
    assert pages[1]["data"]["x"][0] > pages[1]["data"]["x"][-1]  # snake
    columns = event_columns(documents, KEYS)
    normalised = columns["xrf_Cu"] * columns["i0"].mean() / columns["i0"]
    truth = beamline.truth.concentration("Cu", columns["y"], columns["x"], blurred=True)
    assert np.corrcoef(normalised, truth)[0, 1] > 0.95
    # 9 lines of 0.5 s plus run-up/down; the map took simulated time, not wall time.
    assert beamline.clock.now - t0 > 9 * 0.5


def test_fly_speed_and_period_limits():
    beamline = sim.make_beamline("ag300", 50.0, seed=0, field_um=400.0)
    with pytest.raises(ValueError, match="speed_um_s"):
        beamline.flyer.prepare(sim.FlyLine(0.0, -100.0, 100.0, 6000.0, 0.01))
    with pytest.raises(ValueError, match="period_s"):
        beamline.flyer.prepare(sim.FlyLine(0.0, -100.0, 100.0, 1000.0, 0.001))
    with pytest.raises(TypeError, match="FlyLine"):
        beamline.flyer.prepare({"y_um": 0.0})
    with pytest.raises(RuntimeError, match="prepare"):
        sim.make_beamline("foil", 50.0, seed=0, field_um=400.0).flyer.kickoff()
    # 5 mm/s at 10 ms is allowed: 50 µm bins.
    assert beamline.flyer.prepare(sim.FlyLine(0.0, -100.0, 100.0, 5000.0, 0.01)).done


def test_motor_limits_and_bad_arguments():
    beamline = sim.make_beamline("ag300", 50.0, seed=0, field_um=400.0)
    assert beamline.x.limits == (-200.0, 200.0)
    with pytest.raises(ValueError, match="outside the limits"):
        beamline.x.set(250.0)
    with pytest.raises(TypeError, match="number"):
        beamline.y.set("10")
    with pytest.raises(ValueError, match="unknown sample"):
        sim.make_beamline("ag400")
    with pytest.raises(ValueError, match="fwhm"):
        sim.make_beamline("ag300", -5.0)
    with pytest.raises(TypeError, match="seed"):
        sim.make_beamline("ag300", 50.0, seed=1.5)
    beamline.xrf.dwell_time.put(0.0)
    with pytest.raises(ValueError, match="dwell"):
        beamline.xrf.trigger()


def test_same_seed_same_counts_different_seed_different_counts(run_plan):
    def scan(seed):
        beamline = sim.make_beamline("seed", 30.0, seed=seed, field_um=400.0)
        documents = run_plan(
            grid_scan(beamline.detectors, beamline.y, -100, 100, 3, beamline.x, -100, 100, 3)
        )
        return event_columns(documents, ["xrf_Zn", "xrf_Se", "i0"])

    first, again, other = scan(7), scan(7), scan(8)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["xrf_Zn"], other["xrf_Zn"])


def test_raw_scan_round_trips_through_the_loader(tmp_path, run_plan):
    beamline = sim.make_beamline("ag300", 50.0, seed=6, field_um=400.0, record_spectra=True)
    beamline.xrf.dwell_time.put(0.05)
    documents = run_plan(
        grid_scan(
            beamline.detectors, beamline.y, -50, 50, 4, beamline.x, -60, 60, 5, snake_axes=True
        )
    )
    columns = event_columns(documents, ["y", "x", "xrf_Cu", "i0", "xrf_spectrum"])
    assert columns["xrf_spectrum"].shape == (20, 4096)
    path = beamline.save_raw_scan(tmp_path / "ag300_raw.h5", step_um=[33.3, 30.0])
    raw = read_raw_scan(path)
    assert raw.n_points == 20
    assert raw.n_detectors == 4
    assert raw.n_channels == 4096
    assert np.array_equal(raw.x_um, columns["x"])
    assert np.array_equal(raw.y_um, columns["y"])
    assert np.array_equal(raw.i0, columns["i0"])
    assert np.array_equal(raw.spectra.sum(axis=1), columns["xrf_spectrum"])
    cu_roi = beamline.xrf.rois["Cu"]
    assert np.array_equal(raw.roi_counts(cu_roi).sum(axis=1), columns["xrf_Cu"])
    assert raw.metadata["scan_kind"] == "snake"
    assert raw.metadata["sample"] == "ag300"
    assert raw.metadata["step_um"] == [33.3, 30.0]
    assert list(np.unique(raw.line_index)) == [0, 1, 2, 3]
    assert np.all(raw.live_time_s <= raw.real_time_s)
    assert np.all(raw.live_time_s > 0)
    sums = read_roi_sums(path, [cu_roi])
    assert np.array_equal(sums.counts[:, :, 0].sum(axis=1), columns["xrf_Cu"])
    # Spectra must have been drawn for every point.
    beamline.clear_log()
    beamline.xrf.record_spectra = False
    beamline.xrf.trigger()
    with pytest.raises(ValueError, match="record_spectra"):
        beamline.raw_scan()


def test_fly_raw_scan_has_one_line_index_per_line(tmp_path, run_plan):
    beamline = sim.make_beamline("ag175", 50.0, seed=8, field_um=400.0, record_spectra=True)
    run_plan(sim.fly_map(beamline, -100, 100, -50, 50, 3, speed_um_s=2000, period_s=0.01))
    path = sim.save_raw_scan(beamline, tmp_path / "fly.h5")
    raw = read_raw_scan(path)
    assert raw.metadata["scan_kind"] == "fly"
    assert np.array_equal(np.bincount(raw.line_index), [10, 10, 10])
    assert np.allclose(raw.real_time_s, 0.01)


def test_simulated_raw_fly_scan_makes_a_map_with_the_xrf_path(tmp_path, run_plan):
    from asirp.xrf.maps import build_map

    beamline = sim.make_beamline("ag300", 50.0, seed=9, field_um=500.0, record_spectra=True)
    run_plan(
        sim.fly_map(beamline, -200, 200, -180, 180, 13, speed_um_s=2000, period_s=0.01, snake=True)
    )
    path = beamline.save_raw_scan(tmp_path / "fly_ag300.h5")
    cu = build_map(path, "Cu", normalize_by="i0")
    assert cu.data.shape == (13, 20)
    assert cu.scan_kind in ("snake", "fly")
    ys, xs = np.meshgrid(cu.y_um, cu.x_um, indexing="ij")
    truth = beamline.truth.concentration("Cu", ys, xs, blurred=True)
    assert np.corrcoef(cu.data.ravel(), truth.ravel())[0, 1] > 0.9
