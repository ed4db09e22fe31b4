"""Readers for real single spectra (PyMca example data) and PyMca calibrations.

The files in tests/data/real/pymca come from PyMca (``PyMca5/PyMcaData``, MIT licence):
``Steel.spe`` (NIST SRM 1155 stainless steel, 16 keV excitation, 2048 channels), ``Steel.cfg``
(its fit configuration: gain 0.011928 keV/channel, zero -0.00612 keV) and ``XRFSpectrum.mca``
(a multi-element thin standard, 4096 channels, "main Co peak close to channel 1474").
"""

from __future__ import annotations

import numpy as np
import pytest

from asirp.io import InputFileError, InputTooLargeError
from asirp.xrf import element_roi
from asirp.xrf.spectra import (
    read_mca_column,
    read_pymca_calibration,
    read_pymca_config,
    read_spe,
    read_spectrum,
)
from tests.conftest import STEEL_CFG, STEEL_SPE, XRF_MCA


def test_read_steel_spe():
    spectrum = read_spe(STEEL_SPE)
    assert spectrum.counts.shape == (2048,)
    assert spectrum.first_channel == 0
    assert spectrum.counts[:3].tolist() == [0.0, 9.0, 5.0]  # the first $DATA values
    assert spectrum.counts[-1] == 5.0
    assert spectrum.calibration is None
    with pytest.raises(ValueError, match="no calibration"):
        spectrum.energy_kev()


def test_read_pymca_calibration():
    calibration, resolution = read_pymca_calibration(STEEL_CFG)
    assert calibration.gain_kev_per_channel == pytest.approx(0.011928, abs=1e-6)
    assert calibration.offset_kev == pytest.approx(-0.00612, abs=1e-5)
    assert resolution.noise_kev == pytest.approx(0.127439)
    assert resolution.fano == pytest.approx(0.101156)


@pytest.mark.parametrize("element", ["Cr", "Fe", "Ni"])
def test_steel_peaks_fall_in_the_element_rois(element):
    spectrum = read_spectrum(STEEL_SPE)
    calibration, resolution = read_pymca_calibration(STEEL_CFG)
    roi = element_roi(element, calibration, resolution=resolution, n_channels=2048)
    energies = spectrum.energy_kev(calibration)
    near = np.flatnonzero(np.abs(energies - roi.energy_kev) < 0.3)
    peak = near[np.argmax(spectrum.counts[near])]
    assert roi.first_channel < peak < roi.last_channel
    assert energies[peak] == pytest.approx(roi.energy_kev, abs=0.02)
    # The ROI holds most of the counts of its window: it sits on the peak.
    window = spectrum.counts[near].sum()
    assert spectrum.roi_counts(roi) > 0.6 * window


def test_steel_iron_dominates():
    spectrum = read_spe(STEEL_SPE)
    calibration, resolution = read_pymca_calibration(STEEL_CFG)
    counts = {
        element: spectrum.roi_counts(element_roi(element, calibration, resolution=resolution))
        for element in ("Cr", "Fe", "Ni")
    }
    # SRM 1155 is about 65 % Fe, 18 % Cr, 12 % Ni.
    assert counts["Fe"] > counts["Cr"] > counts["Ni"]


def test_read_one_column_mca():
    spectrum = read_mca_column(XRF_MCA)
    assert spectrum.counts.shape == (4096,)
    assert spectrum.counts[:5].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    co_peak = 1400 + int(np.argmax(spectrum.counts[1400:1550]))
    assert abs(co_peak - 1474) <= 5


def test_bad_spectra(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_spe(tmp_path / "absent.spe")
    (tmp_path / "short.spe").write_text("$SPEC_ID:\n\n$DATA:\n0 9\n1 2 3\n")
    with pytest.raises(InputFileError, match=r"announces channels 0..9 \(10\) but holds 3"):
        read_spe(tmp_path / "short.spe")
    (tmp_path / "nodata.spe").write_text("$SPEC_ID:\nhello\n")
    with pytest.raises(InputFileError, match=r"no \$DATA"):
        read_spe(tmp_path / "nodata.spe")
    (tmp_path / "text.spe").write_text("$DATA:\n0 2\n1 x 3\n")
    with pytest.raises(InputFileError, match="line 3: not numbers"):
        read_spe(tmp_path / "text.spe")
    (tmp_path / "two.mca").write_text("# header\n1\n2 3\n")
    with pytest.raises(InputFileError, match="not a one-column spectrum: the number of columns"):
        read_mca_column(tmp_path / "two.mca")
    (tmp_path / "word.mca").write_text("1\nx\n")
    with pytest.raises(InputFileError, match="not a one-column spectrum: could not convert"):
        read_mca_column(tmp_path / "word.mca")
    (tmp_path / "nan.mca").write_text("1\nnan\n")
    with pytest.raises(InputFileError, match="non-finite"):
        read_mca_column(tmp_path / "nan.mca")
    (tmp_path / "negative.mca").write_text("1\n-2\n")
    with pytest.raises(InputFileError, match="negative counts"):
        read_mca_column(tmp_path / "negative.mca")
    (tmp_path / "empty.mca").write_text("# nothing\n")
    with pytest.raises(InputFileError, match="no counts"):
        read_mca_column(tmp_path / "empty.mca")
    with pytest.raises(InputFileError, match="unknown spectrum format"):
        read_spectrum(tmp_path / "spectrum.txt")
    (tmp_path / "nodetector.cfg").write_text("[fit]\nxmin = 1\n")
    with pytest.raises(InputFileError, match=r"no \[detector\]"):
        read_pymca_calibration(tmp_path / "nodetector.cfg")
    (tmp_path / "badgain.cfg").write_text("[detector]\nzero = 0\ngain = -1\n")
    with pytest.raises(InputFileError, match="invalid calibration"):
        read_pymca_calibration(tmp_path / "badgain.cfg")


def test_our_readers_agree_with_pymca_on_the_real_files():
    # PyMca's readers are the reference for well-formed files (ours stay for damaged ones:
    # see read_spe and read_mca_column).
    from PyMca5.PyMcaIO import specfilewrapper

    steel = specfilewrapper.Specfile(str(STEEL_SPE))[0].mca(1)
    np.testing.assert_array_equal(read_spe(STEEL_SPE).counts, steel)
    table = specfilewrapper.Specfile(str(XRF_MCA))[0].data()  # (point, counts) rows
    np.testing.assert_array_equal(read_mca_column(XRF_MCA).counts, table[-1])


def test_pymca_config_is_read_by_pymca(tmp_path):
    config = read_pymca_config(STEEL_CFG)
    assert config["peaks"]["Fe"] == ["Ka", "Kb"]  # PyMca's parsing of "Fe = Ka, Kb"
    assert config["fit"]["xmax"] == 1432
    (tmp_path / "noheader.cfg").write_text("zero = 0\n")
    with pytest.raises(InputFileError, match="cannot parse PyMca configuration"):
        read_pymca_config(tmp_path / "noheader.cfg")
    (tmp_path / "wordgain.cfg").write_text("[detector]\nzero = 0\ngain = abc\n")
    with pytest.raises(InputFileError, match="gain is not a number: 'abc'"):
        read_pymca_calibration(tmp_path / "wordgain.cfg")
    with pytest.raises(InputFileError, match="not found"):
        read_pymca_config(tmp_path / "absent.cfg")


def test_oversized_files_are_refused_before_reading(monkeypatch):
    monkeypatch.setenv("ASIRP_MAX_INPUT_BYTES", "1000")
    for reader, path in ((read_spe, STEEL_SPE), (read_mca_column, XRF_MCA)):
        with pytest.raises(InputTooLargeError):
            reader(path)
    with pytest.raises(InputTooLargeError):
        read_pymca_calibration(STEEL_CFG)
