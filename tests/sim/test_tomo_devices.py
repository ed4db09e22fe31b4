"""The simulated tomography beamline: frames at the stage's angle, flats, darks, seeds."""

from __future__ import annotations

import numpy as np
import pytest
from ophyd.utils import LimitError

from sim.tomo import simulate_tomo
from sim.tomo_devices import make_tomo_beamline


def _frame(beamline, *, shutter="open", sample="in", angle=0.0):
    beamline.shutter.set(shutter)
    beamline.sample.set(sample)
    beamline.rotation.set(angle)
    beamline.detector.trigger()
    return beamline.detector.image.get().copy()


@pytest.fixture
def beamline():
    return make_tomo_beamline(shape=(4, 64), seed=0, psf_fwhm_um=25.0)


def test_projections_depend_on_the_angle_flats_are_brighter_darks_are_dark(beamline):
    at_0 = _frame(beamline, angle=0.0)
    at_90 = _frame(beamline, angle=90.0)
    flat = _frame(beamline, sample="out")
    dark = _frame(beamline, shutter="closed")
    assert at_0.shape == (4, 64)
    assert at_0.dtype == np.float32
    assert beamline.detector.kinds == ["projection", "projection", "flat", "dark"]
    # the phantom is not round: its shadow changes with the angle, far beyond the noise
    expected = beamline.physics.transmitted(np.array([0.0, 90.0]))
    assert np.abs(expected[0] - expected[1]).max() > 200
    assert np.abs(at_0 - at_90).max() > 200
    # the object absorbs: the open beam is brighter where the object is
    middle = slice(24, 40)
    assert flat[:, middle].mean() > at_0[:, middle].mean() + 500
    assert flat.mean() > at_0.mean() > dark.mean()
    assert dark.mean() == pytest.approx(100.0, abs=2.0)  # the dark level
    assert beamline.detector.mean_counts.get() == pytest.approx(float(dark.mean()))


def test_the_stage_reads_degrees_and_charges_simulated_time(beamline):
    start = beamline.clock.now
    beamline.rotation.set(90.0)
    assert beamline.rotation.read()["rotation"]["value"] == 90.0
    assert beamline.rotation.describe()["rotation"]["units"] == "deg"
    beamline.detector.trigger()
    assert beamline.clock.now - start == pytest.approx(90.0 / 30.0 + 0.01 + 0.1 + 0.01)
    with pytest.raises(LimitError):
        beamline.rotation.set(1000.0)
    with pytest.raises(ValueError, match="one of"):
        beamline.shutter.set("ajar")
    config = beamline.detector.read_configuration()
    assert config["tomo_det_pixel_size"]["value"] == 10.0
    assert config["tomo_det_psf_fwhm"]["value"] == 25.0


def test_seeds_are_reproducible_and_match_simulate_tomo():
    frames = [_frame(make_tomo_beamline(seed=3), angle=30.0) for _ in range(2)]
    assert np.array_equal(frames[0], frames[1])
    other = _frame(make_tomo_beamline(seed=4), angle=30.0)
    assert not np.array_equal(frames[0], other)
    # the same object and pixel gains as the scan simulator with the same seed
    beamline = make_tomo_beamline(shape=(4, 64), seed=3)
    scan = simulate_tomo(shape=(4, 64), n_angles=2, rng=3)
    assert beamline.physics.phantom == scan.phantom
    np.testing.assert_array_equal(beamline.physics.psf, scan.psf)
    np.testing.assert_allclose(
        beamline.physics.gains * beamline.physics.transmitted(scan.theta_deg), scan.expected
    )
