"""Line energies (xraylib), energy calibration, detector resolution and channel ROIs."""

from __future__ import annotations

import numpy as np
import pytest

from asirp.xrf import (
    ChannelROI,
    DetectorResolution,
    EnergyCalibration,
    argon_roi,
    channel_roi,
    element_roi,
    line_energy_kev,
)


def test_line_energies_match_tabulated_values():
    # Ka is the rate-weighted mean of Ka1 (8.048 keV) and Ka2 (8.028 keV) for Cu.
    cu_ka = line_energy_kev("Cu", "Ka")
    assert line_energy_kev("Cu", "Ka2") < cu_ka < line_energy_kev("Cu", "Ka1")
    assert cu_ka == pytest.approx(8.041, abs=0.002)
    assert line_energy_kev("Fe") == pytest.approx(6.40, abs=0.01)
    assert line_energy_kev("Ar", "ka") == pytest.approx(2.957, abs=0.002)
    assert line_energy_kev("Cu", "Kb") == pytest.approx(8.905, abs=0.01)
    assert line_energy_kev("Pb", "La") == pytest.approx(10.55, abs=0.02)


@pytest.mark.parametrize(
    ("element", "line", "words"),
    [("Xx", "Ka", "unknown element"), ("Cu", "Kz", "unknown line"), ("C", "La", "no La line")],
)
def test_bad_lines_name_the_problem(element, line, words):
    with pytest.raises(ValueError, match=words):
        line_energy_kev(element, line)


def test_calibration_inverts_linear_and_quadratic():
    for calibration in (
        EnergyCalibration(-0.00612, 0.011928),
        EnergyCalibration(0.05, 0.01, quadratic_kev=2e-7),
    ):
        channels = np.array([0.0, 10.5, 800.0, 2047.0])
        energies = calibration.energy_kev(channels)
        np.testing.assert_allclose(calibration.channel(energies), channels, atol=1e-9)
        assert isinstance(calibration.channel(6.4), float)
    assert EnergyCalibration(0.0, 0.01).energy_kev(100) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ((0.0, 0.0), ValueError),
        ((0.0, -0.01), ValueError),
        ((float("nan"), 0.01), ValueError),
        (("0", 0.01), TypeError),
    ],
)
def test_bad_calibrations_are_refused(arguments, error):
    with pytest.raises(error, match="calibration"):
        EnergyCalibration(*arguments)


def test_resolution_grows_with_energy():
    resolution = DetectorResolution(noise_kev=0.1, fano=0.114)
    assert resolution.fwhm_kev(0.0) == pytest.approx(0.1)
    # Mn Ka FWHM of an SDD with this noise is about 150 eV.
    assert 0.13 < resolution.fwhm_kev(5.9) < 0.17
    assert resolution.fwhm_kev(10.0) > resolution.fwhm_kev(5.9)


def test_element_roi_brackets_the_line_with_the_asked_width():
    calibration = EnergyCalibration(0.0, 0.01)
    roi = element_roi("Cu", calibration, width_kev=0.4)
    assert roi.name == "Cu Ka"
    low, high = calibration.energy_kev(np.array([roi.first_channel, roi.last_channel]))
    assert low >= 8.041 - 0.2 - 1e-9
    assert high <= 8.041 + 0.2 + 1e-9
    assert roi.n_channels in (40, 41)
    default = element_roi("Cu", calibration)
    two_fwhm = 2 * DetectorResolution().fwhm_kev(8.041)
    assert abs(default.n_channels * 0.01 - two_fwhm) <= 0.02
    assert argon_roi(calibration).energy_kev == pytest.approx(2.957, abs=0.002)


def test_roi_outside_the_detector_is_refused():
    calibration = EnergyCalibration(0.0, 0.01)
    with pytest.raises(ValueError, match="past the detector"):
        element_roi("Pb", calibration, "Kb", n_channels=1024)
    clipped = channel_roi("edge", calibration, 10.0, 10.5, n_channels=1024)
    assert clipped.last_channel == 1023
    with pytest.raises(ValueError, match="holds no channel"):
        channel_roi("thin", calibration, 1.0001, 1.0002)


def test_channel_roi_validation():
    roi = ChannelROI("Cu Ka", 10, 20, 8.04)
    assert roi.slice == slice(10, 21)
    assert roi.as_dict()["last_channel"] == 20
    assert ChannelROI("raw", 1, 2).as_dict()["energy_kev"] is None
    with pytest.raises(ValueError, match="first_channel <= last_channel"):
        ChannelROI("bad", 20, 10)
    with pytest.raises(TypeError, match="integer"):
        ChannelROI("bad", 1.5, 10)
    with pytest.raises(ValueError, match="extends past"):
        roi.check_within(15)
