"""Tomography projection source: exact projections, blur, noise, flats, darks, Data Exchange."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy.ndimage import convolve

from asirp.io import read_array
from sim.tomo import Ellipsoid, line_integrals, simulate_tomo
from tests.conftest import TOOTH_H5


def test_sphere_projection_is_the_exact_chord():
    sphere = [Ellipsoid((0.0, 0.0, 0.0), (100.0, 100.0, 100.0), 0.0, 1.0)]
    projection = line_integrals(sphere, np.array([0.0, 37.0]), (41, 41), 5.0, supersample=1)
    centre = projection[:, 20, 20]
    assert centre == pytest.approx([0.2, 0.2])  # 1/mm * 200 µm
    # Off-centre: chord 2 sqrt(R^2 - r^2) at r = 60 µm (12 px from the centre).
    assert projection[0, 20, 32] == pytest.approx(2e-3 * math.sqrt(100**2 - 60**2), rel=1e-6)
    assert projection[1].sum() == pytest.approx(projection[0].sum(), rel=1e-3)  # rotation
    assert projection[0, 20, 0] == 0.0


def test_rotated_ellipsoid_projects_its_rotated_width():
    blade = [Ellipsoid((0.0, 0.0, 0.0), (50.0, 200.0, 20.0), 0.0, 1.0)]
    theta = np.array([0.0, 90.0])
    projection = line_integrals(blade, theta, (1, 101), 5.0, supersample=1)
    width = (projection > 0).sum(axis=(1, 2)) * 5.0
    # At 0° the detector sees the x semi-axis (20 µm), at 90° the y semi-axis (200 µm).
    assert width[0] == pytest.approx(40.0, abs=10.0)
    assert width[1] == pytest.approx(400.0, abs=10.0)


@pytest.fixture(scope="module")
def tomo():
    return simulate_tomo(shape=(16, 64), n_angles=30, psf_fwhm_um=40.0, flat_counts=20000.0, rng=1)


def test_flat_dark_normalisation_recovers_the_blurred_line_integrals(tomo):
    measured = -np.log(np.clip(tomo.normalized(), 1e-3, None))
    blurred = -np.log(
        convolve(np.exp(-tomo.line_integrals), tomo.psf[None].astype(float), mode="reflect")
    )
    rms_blurred = np.sqrt(np.mean((measured - blurred) ** 2))
    rms_sharp = np.sqrt(np.mean((measured - tomo.line_integrals) ** 2))
    # Residual against the blurred model is noise only (~1/sqrt(20000 * T)); the sharp model
    # misses the blur.
    assert rms_blurred < 0.015, rms_blurred
    assert rms_sharp > 2.5 * rms_blurred
    assert tomo.line_integrals.max() > 0.3  # the object attenuates


def test_flats_darks_and_noise_levels(tomo):
    assert tomo.data.dtype == np.float32
    assert tomo.data.shape == (30, 16, 64)
    assert tomo.data_white.shape == (10, 16, 64)
    assert tomo.data_dark.shape == (10, 16, 64)
    assert tomo.data_dark.mean() == pytest.approx(100.0, abs=0.5)
    assert tomo.data_dark.std() == pytest.approx(3.0, rel=0.1)
    open_beam = tomo.data_white - tomo.data_dark.mean()
    # Flats are Poisson around the beam profile: frame-to-frame variance ~ mean + read noise^2.
    variance = open_beam.var(axis=0, ddof=1).mean()
    assert variance / open_beam.mean() == pytest.approx(1.0, abs=0.15)
    assert tomo.psf.sum() == pytest.approx(1.0)
    assert tomo.psf.shape[1] % 2 == 1
    assert np.array_equal(tomo.theta_deg, np.arange(30) * 6.0)


def test_data_exchange_file_matches_the_real_layout(tmp_path, tomo):
    path = tomo.write(tmp_path / "phantom.h5")
    assert np.array_equal(read_array(f"{path}::/exchange/data"), tomo.data)
    with h5py.File(path, "r") as handle, h5py.File(TOOTH_H5) as real:
        # Same datasets and attributes as the real TomoPy file (tooth.h5, see its README).
        for name in ("data", "data_white", "data_dark", "theta"):
            assert handle[f"exchange/{name}"].dtype.kind == real[f"exchange/{name}"].dtype.kind
            assert dict(handle[f"exchange/{name}"].attrs) == dict(real[f"exchange/{name}"].attrs)
        assert np.array_equal(handle["exchange/theta"][()], tomo.theta_deg)


def test_bad_tomography_arguments():
    with pytest.raises(ValueError, match="n_angles"):
        simulate_tomo(n_angles=0)
    with pytest.raises(ValueError, match="shape"):
        simulate_tomo(shape=(4, 4))
    with pytest.raises(ValueError, match="flat_counts"):
        simulate_tomo(flat_counts=-1.0)
