"""The numpy forward model: samples, beam, ring current, spectra, dead time (no devices)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from asirp.psf import psf_sigma_px
from asirp.xrf.lines import line_energy_kev
from sim.samples import copper_mesh, resolution_target, saturated_areal_density_ug_cm2
from sim.spectra import DetectorModel, SpectralModel, compton_energy_kev, emission_lines


@pytest.mark.parametrize(("kind", "hole", "bar"), [("ag300", 58.0, 25.0), ("ag175", 108.0, 37.0)])
def test_mesh_bar_fraction_and_period_match_the_grid(kind, hole, bar):
    period = hole + bar
    sample = copper_mesh(kind, field_um=8 * period, pixel_um=2.0, angle_deg=0.0)
    cu = sample.maps["Cu"]
    density = sample.description["effective_areal_density_ug_cm2"]
    # Bar area fraction of a square grid: 1 - (hole / period)^2.
    expected = 1.0 - (hole / (hole + bar)) ** 2
    assert cu.mean() / density == pytest.approx(expected, abs=0.03)
    # The period shows as the strongest non-zero frequency of a row profile.
    profile = cu.mean(axis=0) - cu.mean()
    spectrum = np.abs(np.fft.rfft(profile))
    frequency = np.fft.rfftfreq(profile.size, d=2.0)[np.argmax(spectrum[1:]) + 1]
    assert 1.0 / frequency == pytest.approx(period, rel=0.05)


def test_mesh_rotation_moves_the_bars():
    straight = copper_mesh("ag300", field_um=300.0, angle_deg=0.0).maps["Cu"]
    rotated = copper_mesh("ag300", field_um=300.0, angle_deg=5.0).maps["Cu"]
    assert straight.mean() == pytest.approx(rotated.mean(), rel=0.03)
    assert np.abs(straight - rotated).mean() > 0.1 * straight.mean()


def test_thick_bar_yield_saturates():
    thin = saturated_areal_density_ug_cm2("Cu", 0.01, 8.96, 13.0)
    thick = saturated_areal_density_ug_cm2("Cu", 20.0, 8.96, 13.0)
    thicker = saturated_areal_density_ug_cm2("Cu", 40.0, 8.96, 13.0)
    assert thin == pytest.approx(8.96 * 0.01e-4 * 1e6, rel=0.01)  # thin film: rho * t
    assert thick < 0.3 * 8.96 * 20e-4 * 1e6  # self-absorption: a quarter of the bar counts
    assert thicker == pytest.approx(thick, rel=0.05)


def test_seed_hotspots_are_returned_and_sit_in_the_maps():
    sample = sim.make_sample("seed", field_um=600.0, pixel_um=2.0, rng=3, n_hotspots=10)
    assert len(sample.hotspots) == 10
    assert set(sample.elements) == {"Se", "Zn", "Fe"}
    assert sample.matrix is not None
    assert sample.matrix.max() > 1000.0
    sizes = [h.radius_um for h in sample.hotspots]
    assert max(sizes) > 2 * min(sizes)  # varied sizes
    for spot in sample.hotspots:
        i = round(spot.centre_um[0] / 2.0 + (sample.shape[0] - 1) / 2)
        j = round(spot.centre_um[1] / 2.0 + (sample.shape[1] - 1) / 2)
        assert sample.maps[spot.element][i, j] >= 0.9 * spot.concentration
    # A different seed gives a different layout.
    other = sim.make_sample("seed", field_um=600.0, pixel_um=2.0, rng=4, n_hotspots=10)
    assert other.hotspots != sample.hotspots


def test_resolution_targets():
    star = resolution_target("siemens", field_um=400.0, pixel_um=2.0)
    gold = star.maps["Au"]
    assert 0.3 < (gold > 0).mean() < 0.5  # half of the disc (90 % of the field)
    pairs = resolution_target(
        "line_pairs", field_um=(200.0, 1400.0), pixel_um=2.0, periods_um=(80.0, 40.0, 20.0)
    )
    row = pairs.maps["Au"][50]
    transitions = np.count_nonzero(np.diff(row > 100.0))
    assert transitions == 3 * 5 * 2  # five bars per group, two edges each
    with pytest.raises(ValueError, match="resolution target"):
        resolution_target("usaf")


def test_beam_kernel_width_anisotropy_and_tails():
    beam = sim.Beam(50.0)
    sigma_y, sigma_x = psf_sigma_px(beam.kernel(10.0))
    fwhm = 2 * math.sqrt(2 * math.log(2)) * 10.0 * np.array([sigma_y, sigma_x])
    assert fwhm == pytest.approx([50.0, 50.0], rel=0.03)
    flat = sim.Beam((30.0, 90.0))
    sy, sx = psf_sigma_px(flat.kernel(5.0))
    assert sx / sy == pytest.approx(3.0, rel=0.05)
    assert flat.anisotropy == pytest.approx(1 / 3)
    tails = sim.Beam(50.0, tail_fraction=0.1)
    kernel = tails.kernel(5.0)
    assert kernel.sum() == pytest.approx(1.0)
    assert psf_sigma_px(kernel)[0] > 1.5 * psf_sigma_px(beam.kernel(5.0))[0]
    with pytest.raises(ValueError, match="tail_fraction"):
        sim.Beam(50.0, tail_fraction=1.0)
    with pytest.raises(ValueError, match="fwhm"):
        sim.Beam(0.0)


def test_ring_current_sawtooth_and_exact_mean():
    ring = sim.RingCurrent(top_current_ma=200.0, lifetime_h=2.0, injection_period_s=600.0)
    assert ring.current_ma(0.0) == pytest.approx(200.0)
    assert ring.current_ma(599.999) == pytest.approx(ring.bottom_current_ma, rel=1e-5)
    assert ring.current_ma(600.0) == pytest.approx(200.0)  # refilled
    assert ring.bottom_current_ma == pytest.approx(200.0 * math.exp(-600 / 7200))
    # The exact mean over a window that spans an injection equals a fine numerical average.
    t = np.linspace(500.0, 800.0, 300001)
    numeric = ring.current_ma(t).mean()
    assert float(ring.mean_current_ma(500.0, 300.0)) == pytest.approx(numeric, rel=1e-5)
    with pytest.raises(ValueError, match="lifetime_h"):
        sim.RingCurrent(lifetime_h=0.0)
    with pytest.raises(ValueError, match="phase_s"):
        sim.RingCurrent(injection_period_s=60.0, phase_s=60.0)


@pytest.fixture(scope="module")
def model():
    return SpectralModel(("Fe", "Zn", "Se", "Au"), incident_energy_kev=13.0)


def _peak_energy(model, row, near_kev, window_kev=0.3):
    energies = model.detector.energies_kev
    inside = np.abs(energies - near_kev) < window_kev
    return energies[inside][np.argmax(model.templates[row][inside])]


def test_spectral_templates_put_peaks_at_the_lines(model):
    for row, element in enumerate(("Fe", "Zn", "Se")):
        for line in ("Ka", "Kb"):
            energy = line_energy_kev(element, line)
            assert _peak_energy(model, row, energy) == pytest.approx(energy, abs=0.03)
    # Gold is excited on its L lines only (K edge 80.7 keV).
    assert _peak_energy(model, 3, 9.71) == pytest.approx(line_energy_kev("Au", "La"), abs=0.03)
    assert model.detector.roi("Au").name == "Au La"
    # Ar K-alpha from the air path, elastic and Compton scatter.
    air = model.components.index("air")
    assert _peak_energy(model, air, 2.96) == pytest.approx(2.957, abs=0.03)
    matrix = model.components.index("matrix")
    assert _peak_energy(model, matrix, 13.0, 0.1) == pytest.approx(13.0, abs=0.02)
    compton = compton_energy_kev(13.0, 90.0)
    assert compton == pytest.approx(12.68, abs=0.01)
    assert _peak_energy(model, matrix, compton, 0.15) == pytest.approx(compton, abs=0.05)


def test_detector_resolution_is_130_to_150_ev_at_mn_ka():
    detector = DetectorModel(n_elements=1)
    model = SpectralModel(("Mn",), incident_energy_kev=10.0, detector=detector)
    energies = detector.energies_kev
    peak = model.templates[0] * (np.abs(energies - 5.9) < 0.4)
    half = peak >= peak.max() / 2
    fwhm = energies[half].max() - energies[half].min() + detector.calibration.gain_kev_per_channel
    assert 0.125 < fwhm < 0.155, fwhm
    assert detector.fwhm_kev(5.9) < detector.fwhm_kev(12.0)  # energy dependent


def test_emission_lines_and_bad_elements():
    lines = emission_lines("Cu", 13.0)
    assert lines[0][0] == pytest.approx(8.048, abs=0.002)  # K-L3 is the strongest
    assert emission_lines("Se", 12.0)[0][0] < 2.0  # below the Se K edge only L lines remain
    with pytest.raises(ValueError, match="unknown element"):
        emission_lines("Xx", 13.0)
    with pytest.raises(ValueError, match="repeated"):
        SpectralModel(("Fe", "Fe"))


def test_dead_time_grows_with_count_rate_and_reduces_live_time():
    low = sim.make_beamline("foil", 50.0, seed=0, field_um=200.0, flux_ph_s=1e9)
    high = sim.make_beamline("foil", 50.0, seed=0, field_um=200.0, flux_ph_s=1e11)
    amounts = low.model.amounts_at(np.zeros(1), np.zeros(1))
    rng = np.random.default_rng(0)
    slow = low.model.measure(amounts, 0.0, 10.0, rng)
    fast = high.model.measure(amounts, 0.0, 1.0, rng)
    assert slow.dead_time[0] < 0.01 < 0.3 < fast.dead_time[0]
    assert np.allclose(fast.live_time_s, 1.0 - fast.dead_time[0], rtol=0.1)
    # Output counts per incident photon drop by the (solid-angle weighted) live fraction.
    weights = low.model.detector.weights
    live_slow = (weights * slow.live_time_s[0] / 10.0).sum()
    live_fast = (weights * fast.live_time_s[0]).sum()
    per_photon_slow = slow.roi_totals[0, 0] / slow.photons[0] / live_slow
    per_photon_fast = fast.roi_totals[0, 0] / fast.photons[0] / live_fast
    assert per_photon_fast == pytest.approx(per_photon_slow, rel=0.01)
    assert fast.roi_totals[0, 0] / fast.photons[0] < 0.75 * per_photon_slow


def test_tissue_sample_holds_close_pairs_and_weak_spots_next_to_strong_ones():
    from sim.samples import PAIR_DISTANCE_UM, SATELLITE_DISTANCE_UM, WEAK_CONCENTRATION

    sample = sim.make_sample("tissue", field_um=600.0, pixel_um=4.0, rng=7)
    assert sample.name == "tissue"
    singles, rest = sample.hotspots[:12], sample.hotspots[12:]
    assert len(singles) == 12
    assert len(rest) == 12
    pairs, groups = rest[:6], rest[6:]

    def distance(a, b):
        return float(np.hypot(a.centre_um[0] - b.centre_um[0], a.centre_um[1] - b.centre_um[1]))

    for first, second in zip(pairs[::2], pairs[1::2], strict=True):
        assert first.element == second.element
        assert PAIR_DISTANCE_UM[0] <= distance(first, second) <= PAIR_DISTANCE_UM[1]
    for strong, weak in zip(groups[::2], groups[1::2], strict=True):
        assert strong.element == weak.element
        assert SATELLITE_DISTANCE_UM[0] <= distance(strong, weak) <= SATELLITE_DISTANCE_UM[1]
        assert WEAK_CONCENTRATION[0] <= weak.concentration <= WEAK_CONCENTRATION[1]
        assert strong.concentration > weak.concentration
        assert strong.radius_um > weak.radius_um
    # the plain seed sample is unchanged by the new options' existence
    seed = sim.make_sample("seed", field_um=600.0, pixel_um=4.0, rng=7)
    assert len(seed.hotspots) == 16
    with pytest.raises(ValueError, match="close_pairs"):
        sim.make_sample("seed", field_um=600.0, pixel_um=4.0, close_pairs=-1)
