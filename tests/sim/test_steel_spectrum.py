"""Model spectra put peaks where a real measured spectrum has them.

Real data: ``Steel.spe``, an XRF spectrum of NIST SRM 1155 stainless steel (16 keV
excitation, 300 s, 2048 channels) and its PyMca fit configuration ``Steel.cfg`` (calibration
gain 0.011928 keV/channel, zero -0.00612 keV; detector noise and Fano factor), both from PyMca
(``PyMca5/PyMcaData/Steel.spe`` and ``Steel.cfg``, MIT licence), kept in
``tests/data/real/pymca`` (see ``tests/data/README.md``).
"""

from __future__ import annotations

import numpy as np
import pytest

from asirp.xrf.spectra import read_pymca_calibration, read_spe
from sim.spectra import DetectorModel, simulate_spectrum
from tests.conftest import STEEL_CFG, STEEL_SPE

CALIBRATION, RESOLUTION = read_pymca_calibration(STEEL_CFG)
# NIST SRM 1155 (certified mass fractions, %): Cr 18.45, Ni 12.18, Mn 1.63, Fe balance.
COMPOSITION = {"Fe": 64.5, "Cr": 18.45, "Ni": 12.18, "Mn": 1.63}


@pytest.fixture(scope="module")
def spectra():
    real = read_spe(STEEL_SPE).counts
    assert real.size == 2048
    assert CALIBRATION.gain_kev_per_channel == pytest.approx(0.011928, rel=1e-4)
    detector = DetectorModel(
        n_elements=1, n_channels=real.size, calibration=CALIBRATION, resolution=RESOLUTION
    )
    model = simulate_spectrum(
        {k: 10.0 * v for k, v in COMPOSITION.items()},
        photons=1e10,
        incident_energy_kev=16.0,
        detector=detector,
    )
    return real, model


@pytest.mark.parametrize(
    ("label", "energy_kev"),
    [
        ("Cr Ka", 5.41),
        ("Mn Ka / Cr Kb", 5.90),
        ("Fe Ka", 6.40),
        ("Fe Kb", 7.06),
        ("Ni Ka", 7.47),
        ("Ni Kb", 8.27),
    ],
)
def test_model_peaks_fall_on_the_real_steel_peaks(spectra, label, energy_kev):
    real, model = spectra
    energies = np.asarray(CALIBRATION.energy_kev(np.arange(real.size)))
    window = np.abs(energies - energy_kev) < 0.15
    channels = np.flatnonzero(window)
    real_peak = channels[np.argmax(real[window])]
    model_peak = channels[np.argmax(model[window])]
    assert abs(int(real_peak) - int(model_peak)) <= 1, (label, real_peak, model_peak)
    assert energies[model_peak] == pytest.approx(energy_kev, abs=0.03)


def test_model_and_real_spectra_agree_in_shape_over_the_k_lines(spectra):
    real, model = spectra
    energies = np.asarray(CALIBRATION.energy_kev(np.arange(real.size)))
    lines = (energies > 4.8) & (energies < 9.0)
    assert np.corrcoef(real[lines], model[lines])[0, 1] > 0.95
    # The strongest peak of both is Fe K-alpha.
    assert energies[np.argmax(real)] == pytest.approx(6.40, abs=0.02)
    assert energies[np.argmax(model)] == pytest.approx(6.40, abs=0.02)
