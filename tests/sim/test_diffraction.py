"""Simulated powder diffraction: ground truth, rendered rings, and the ophyd devices."""

from __future__ import annotations

import math

import event_model
import h5py
import numpy as np
import pytest
from area_detector_handlers.handlers import AreaDetectorHDF5Handler
from bluesky.plans import count, scan
from ophyd.utils import LimitError

from sim.diffraction import (
    PowderFrameModel,
    TransitionEvent,
    calibrant_model,
    ceo2_phase,
    make_sequence,
    random_sequence,
    small_geometry,
    tetragonal_split,
)
from sim.xrd_devices import make_xrd_beamline

GEOMETRY = small_geometry()  # 256² of 300 µm at 200 mm, 0.5 Å: the q range of the 1024² one
TINY = small_geometry(factor=16)  # 64²: device tests and noise statistics


def integrate(geometry, image, npt, radial_range=None):
    """pyFAI I(q) of ``image`` without pixel splitting (corrected for solid angle, polarization)."""
    result = geometry.make_integrator().integrate1d(
        image,
        npt,
        unit="q_A^-1",
        polarization_factor=0.99,
        method=("no", "histogram", "cython"),
        radial_range=radial_range,
    )
    return result.radial, result.intensity


def local_peak(q, intensity, centre, half_width):
    """Position of the largest value within ``half_width`` of ``centre``."""
    window = np.abs(q - centre) < half_width
    return q[window][np.argmax(intensity[window])]


def area(q, profile, low, high):
    """Trapezoidal area of ``profile`` over ``[low, high]``."""
    keep = (q >= low) & (q <= high)
    return float(np.trapezoid(profile[keep], q[keep]))


def test_tetragonal_split_shares_each_family_by_multiplicity():
    phase = tetragonal_split("t", 4.0, {(2, 0, 0): 1.0, (1, 1, 0): 1.0, (1, 1, 1): 1.0}, 0.004)
    lines = dict(zip(phase.hkl, zip(phase.d_A, phase.intensity, strict=True), strict=True))
    assert sorted(lines) == [(0, 0, 2), (1, 0, 1), (1, 1, 0), (1, 1, 1), (2, 0, 0)]
    assert lines[(2, 0, 0)][1] == pytest.approx(2 * lines[(0, 0, 2)][1])
    assert lines[(1, 0, 1)][1] == pytest.approx(2 * lines[(1, 1, 0)][1])
    assert lines[(1, 1, 1)][1] == pytest.approx(1.0)
    assert lines[(0, 0, 2)][0] / lines[(2, 0, 0)][0] == pytest.approx(1.004)  # c/a
    volume = (2 * lines[(2, 0, 0)][0]) ** 2 * (2 * lines[(0, 0, 2)][0])
    assert volume == pytest.approx(4.0**3)  # the distortion keeps the cell volume


def test_rings_sit_at_two_pi_over_d_and_match_the_1d_profile():
    sequence = make_sequence(TransitionEvent("none"))
    model = PowderFrameModel(GEOMETRY, sequence)
    image = model.expected_frame(300.0)
    q, measured = integrate(GEOMETRY, image, 700)
    bin_width = q[1] - q[0]
    d, intensity = sequence.lines_at(300.0)
    strong = [2 * np.pi / x for x, i in zip(d, intensity, strict=True) if i >= 0.2]
    assert len(strong) >= 4
    found = [local_peak(q, measured, centre, 0.03) for centre in strong if centre < q.max()]
    assert len(found) == 4  # (100), (110), (111), (200) within the corners' q
    for centre, peak in zip(strong, found, strict=False):
        assert abs(peak - centre) <= bin_width
    # the corrected integration is the documented 1-D profile times the pixel's solid angle
    expected = model.expected_profile(q, 300.0, detector=True) * (GEOMETRY.pixel_um / 75.0) ** 2
    rings = np.abs(q - strong[1]) < 0.004
    assert measured[rings].max() == pytest.approx(expected[rings].max(), rel=0.05)
    flat = (q > 0.6) & (q < 1.3)
    assert np.median(measured[flat] / expected[flat]) == pytest.approx(1.0, abs=0.01)


def test_default_detector_counts_and_distortion_against_resolution():
    sequence = make_sequence(TransitionEvent("none"))
    model = PowderFrameModel(GEOMETRY, sequence)
    q110 = 2 * np.pi / (4.0 / math.sqrt(2))
    peak = model.expected_profile(np.array([q110]), 300.0, detector=True)[0]
    # a few thousand counts per 75 µm pixel per second on the strongest ring
    scale_to_75um = model.expected_profile(np.array([q110]), 300.0, detector=False)[0]
    assert 1000 < peak < scale_to_75um < 5000
    # a distortion of 0.4 % splits (110) by less than a line width
    assert 0.004 * q110 < model.fwhm_q_A(q110, detector=True)
    assert 0.004 * q110 > 0.5 * model.fwhm_q_A(q110, detector=True)


def test_thermal_expansion_shifts_the_peaks_by_the_expansion_ratio():
    sequence = make_sequence(TransitionEvent("none"), alpha_per_K=1.2e-5, strain_fwhm=0.0)
    model = PowderFrameModel(GEOMETRY, sequence, eta=0.0)
    q = np.linspace(2.15, 2.29, 14001)
    centroids = []
    for T in (300.0, 420.0):
        profile = model.expected_profile(q, T) - sequence.background(q)
        near = np.abs(q - q[np.argmax(profile)]) < 0.04  # a window centred on each peak
        centroids.append(np.sum(q[near] * profile[near]) / np.sum(profile[near]))
    expected = sequence.expansion(300.0) / sequence.expansion(420.0)  # q ∝ 1/d
    assert centroids[1] / centroids[0] == pytest.approx(expected, rel=2e-5)
    assert centroids[1] < centroids[0]


def test_splitting_gives_two_components_two_to_one_at_full_fraction():
    event = TransitionEvent("splitting", onset_K=350.0, width_K=2.0, magnitude=0.01)
    sequence = make_sequence(event, alpha_per_K=0.0, size_nm=None, strain_fwhm=0.0)
    assert sequence.fractions(349.0) == (1.0, 0.0, 0.0)
    assert sequence.fractions(351.0) == pytest.approx((0.5, 0.5, 0.0))
    model = PowderFrameModel(GEOMETRY, sequence, instrument_fwhm_deg=0.01)
    a_t = 4.0 * 1.01 ** (-1 / 3)
    q200, q002 = 2 * np.pi / (a_t / 2), 2 * np.pi / (a_t * 1.01 / 2)
    q = np.linspace(3.05, 3.25, 8001)
    split = model.expected_profile(q, 360.0) - sequence.background(q)
    mid = 0.5 * (q200 + q002)
    high, low = area(q, split, mid, q200 + 0.03), area(q, split, q002 - 0.03, mid)
    assert high / low == pytest.approx(2.0, rel=0.05)
    assert local_peak(q, split, q200, 0.005) == pytest.approx(q200, abs=1e-4)
    assert local_peak(q, split, q002, 0.005) == pytest.approx(q002, abs=1e-4)
    cubic = model.expected_profile(q, 340.0) - sequence.background(q)
    assert area(q, cubic, 3.05, 3.25) == pytest.approx(area(q, split, 3.05, 3.25), rel=0.01)
    assert local_peak(q, cubic, 3.1416, 0.01) == pytest.approx(2 * np.pi / 2.0, abs=1e-4)


def test_new_phase_adds_its_lines_with_its_volume_fraction():
    event = TransitionEvent("new_phase", onset_K=350.0, width_K=4.0, magnitude=0.04)
    sequence = make_sequence(event, alpha_per_K=0.0, size_nm=None, strain_fwhm=0.0)
    model = PowderFrameModel(GEOMETRY, sequence, instrument_fwhm_deg=0.01, eta=0.0)
    q_minor = 2 * np.pi / sequence.minor.d_A[0]  # rutile (110), the strongest, ~1.93 1/Å
    q_main = 2 * np.pi / (4.0 / math.sqrt(2))  # perovskite (110)
    q = np.linspace(1.8, 2.4, 12001)
    before = model.expected_profile(q, 340.0)
    after = model.expected_profile(q, 360.0)
    assert np.abs(before - sequence.background(q)).max() > 0
    grown = after - before
    window = (q_minor - 0.02, q_minor + 0.02)
    assert area(q, before - sequence.background(q), *window) < 1e-3
    minor_area = area(q, after - sequence.background(q), *window)
    main_area = area(q, after - sequence.background(q), q_main - 0.02, q_main + 0.02)
    assert minor_area / main_area == pytest.approx(0.04 / 0.96, rel=0.02)
    assert grown[np.abs(q - q_main) < 0.005].max() < 0  # the main phase lost 4 %
    half = model.expected_profile(q, 352.0) - sequence.background(q)
    assert area(q, half, *window) == pytest.approx(0.5 * minor_area, rel=0.01)


def test_none_keeps_the_pattern_up_to_the_expansion():
    sequence = random_sequence(4, "none")
    assert sequence.onset_K is None
    assert sequence.onset_frame is None
    d1, i1 = sequence.lines_at(300.0)
    d2, i2 = sequence.lines_at(420.0)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d2 / d1, sequence.expansion(420.0) / sequence.expansion(300.0))
    # one seed, one sample: only the event differs between kinds
    split = random_sequence(4, "splitting")
    assert split.cubic == sequence.cubic
    assert split.alpha_per_K == sequence.alpha_per_K


def test_random_sequences_are_reproducible_and_hide_the_onset_inside_the_ramp():
    assert random_sequence(7, "splitting") == random_sequence(7, "splitting")
    assert random_sequence(7, "splitting") != random_sequence(8, "splitting")
    for seed in range(40):
        for kind in ("splitting", "new_phase"):
            sequence = random_sequence(seed, kind, n_frames=60)
            temperatures = sequence.temperatures()
            before = int(np.sum(temperatures < sequence.onset_K))
            assert before >= math.ceil(0.3 * 60)
            assert 60 - before >= 15
            assert sequence.onset_frame == before
            assert 1.0 <= sequence.event.width_K <= 4.0
            low, high = (0.002, 0.006) if kind == "splitting" else (0.02, 0.05)
            assert low <= sequence.event.magnitude <= high
    cooling = random_sequence(3, "splitting", ramp_K=(420.0, 300.0))
    assert cooling.fractions(cooling.onset_K + 1.0)[1] == 0.0  # grows along the ramp
    assert cooling.fractions(cooling.onset_K - 5.0)[1] == 1.0


def test_counts_are_poisson_and_seeded():
    model = PowderFrameModel(TINY, random_sequence(1, "none"))
    mean = model.expected_frame(330.0, flux_scale=0.5, exposure_s=0.2)
    frames = np.stack(
        [
            model.frame(330.0, rng=np.random.default_rng(s), flux_scale=0.5, exposure_s=0.2)
            for s in range(300)
        ]
    ).astype(np.float64)
    assert frames.shape == (300, *TINY.shape_px)
    np.testing.assert_allclose(
        frames.mean(axis=0), mean, rtol=0.1, atol=3 * np.sqrt(mean.max() / 300)
    )
    ratio = frames.var(axis=0, ddof=1).sum() / mean.sum()
    assert ratio == pytest.approx(1.0, abs=0.03)
    a = model.frame(330.0, rng=np.random.default_rng(5))
    b = model.frame(330.0, rng=np.random.default_rng(5))
    assert a.dtype == np.uint32
    assert np.array_equal(a, b)
    approx = model.frame(330.0, rng=np.random.default_rng(5), approximate_noise=True)
    assert approx.dtype == np.uint32
    # exposure 1 s against 0.5 × 0.2 s for ``mean``: ten times its counts
    assert approx.sum() / (10 * mean.sum()) == pytest.approx(1.0, abs=0.01)


def test_calibrant_rings_and_documented_widths():
    geometry = small_geometry(factor=2)  # 512² of 150 µm
    model = calibrant_model(geometry)
    assert ceo2_phase().d_A[0] == pytest.approx(3.1244, abs=1e-3)
    image = model.expected_frame(295.0)
    centre = 2 * np.pi / ceo2_phase().d_A[0]
    q, measured = integrate(geometry, image, 200, radial_range=(centre - 0.05, centre + 0.05))
    background = np.median(np.r_[measured[:10], measured[-10:]])
    half = background + 0.5 * (measured.max() - background)
    top = int(np.argmax(measured))
    left = top - np.argmax(measured[top::-1] < half)  # last bin below half, each side
    right = top + np.argmax(measured[top:] < half)
    # half-maximum crossings, interpolated within their bins
    q_left = np.interp(half, measured[left : left + 2], q[left : left + 2])
    q_right = np.interp(half, measured[right - 1 : right + 1][::-1], q[right - 1 : right + 1][::-1])
    fwhm = q_right - q_left
    assert fwhm == pytest.approx(model.fwhm_q_A(centre, detector=True), rel=0.05)
    assert model.fwhm_q_A(centre, sample=False) < 0.7 * fwhm  # the detector adds width
    frame = make_xrd_beamline("none", 0, geometry=geometry).calibrant_frame(
        np.random.default_rng(0)
    )
    assert frame.dtype == np.uint32
    assert frame.shape == geometry.shape_px
    q, counted = integrate(geometry, frame, 1500)
    assert local_peak(q, counted, centre, 0.05) == pytest.approx(centre, abs=2 * (q[1] - q[0]))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.expected_frame(300.0, exposure_s=-1.0), ValueError),
        (lambda m: m.expected_frame(float("nan")), ValueError),
        (lambda m: m.expected_frame(True), TypeError),
        (lambda m: m.frame(300.0, rng=np.random.RandomState(0)), TypeError),
        (lambda m: random_sequence(0, "melting"), ValueError),
        (lambda m: random_sequence(0, 3), TypeError),
        (lambda m: TransitionEvent("splitting", 350.0, 2.0, 0.5), ValueError),
        (lambda m: random_sequence(0, "none", n_frames=10), ValueError),
    ],
)
def test_bad_inputs_raise(call, error):
    model = PowderFrameModel(TINY, random_sequence(0, "none"))
    with pytest.raises(error):
        call(model)


def test_scan_over_temperature_reads_inline_frames_and_charges_the_clock(run_plan):
    beamline = make_xrd_beamline("splitting", 2, geometry=TINY, ramp_K=(300.0, 420.0))
    clock = beamline.clock
    documents = run_plan(scan([beamline.detector], beamline.temperature, 300.0, 340.0, 3))
    events = [doc for name, doc in documents if name == "event"]
    assert len(events) == 3
    for event, setpoint in zip(events, (300.0, 320.0, 340.0), strict=True):
        image = event["data"]["xrd_image"]
        assert image.dtype == np.uint32
        assert image.shape == TINY.shape_px
        assert event["data"]["temperature_readback"] == pytest.approx(setpoint, abs=0.05)
        assert event["data"]["xrd_temperature"] == pytest.approx(setpoint, abs=0.05)
        assert 150.0 < event["data"]["xrd_ring_current"] <= 200.0
    keys = next(doc for name, doc in documents if name == "descriptor")["data_keys"]
    assert keys["xrd_image"]["shape"] == list(TINY.shape_px)
    assert keys["temperature_readback"]["units"] == "K"
    assert [r.sample_K for r in beamline.detector.records] == [300.0, 320.0, 340.0]
    # two ramps of 20 K at 10 K/min with 2 s settling, three exposures of 1 s + 10 ms readout
    assert clock.now == pytest.approx(2 * (20.0 / (10.0 / 60.0) + 2.0) + 3 * 1.01)
    with pytest.raises(LimitError):
        beamline.temperature.set(5000.0)
    with pytest.raises(ValueError, match="finite"):
        beamline.temperature.set(float("nan"))
    with pytest.raises(TypeError):
        beamline.temperature.set("hot")
    with pytest.raises(LimitError):
        beamline.detector.exposure.set(-1.0)


def test_external_frames_are_files_in_the_root_that_filler_reads_back(run_plan, tmp_path):
    root = tmp_path / "frames"
    root.mkdir()
    beamline = make_xrd_beamline("new_phase", 5, geometry=TINY, inline=False, write_root=root)
    written = []
    render = beamline.detector.model.frame

    def keep(*args, **kwargs):
        written.append(render(*args, **kwargs))
        return written[-1]

    beamline.detector.model.frame = keep
    documents = run_plan(count([beamline.detector], 3))
    names = [name for name, _ in documents]
    assert names.count("resource") == 3
    assert names.count("datum") == 3
    assert names.index("resource") < names.index("datum") < names.index("event")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    resources = [doc for name, doc in documents if name == "resource"]
    assert sorted(p.name for p in root.iterdir()) == sorted(r["resource_path"] for r in resources)
    assert all(r["spec"] == "AD_HDF5" and r["root"] == str(root) for r in resources)
    with h5py.File(root / resources[0]["resource_path"], "r") as handle:
        assert handle["entry/data/data"].shape == (1, *TINY.shape_px)
    keys = next(doc for name, doc in documents if name == "descriptor")["data_keys"]
    assert keys["xrd_image"]["external"] == "FILESTORE:"
    filler = event_model.Filler({"AD_HDF5": AreaDetectorHDF5Handler}, inplace=False)
    filled = []
    for name, doc in documents:
        _, out = filler(name, doc)
        if name == "event":
            filled.append(np.asarray(out["data"]["xrd_image"]))
    filler.close()
    assert len(filled) == 3
    for image, frame in zip(filled, written, strict=True):
        assert image.shape == (1, *TINY.shape_px)
        np.testing.assert_array_equal(image[0], frame)
    with pytest.raises(ValueError, match="write_root"):
        make_xrd_beamline("none", 0, geometry=TINY, inline=False)
