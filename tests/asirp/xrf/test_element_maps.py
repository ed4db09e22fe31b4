"""Element maps beyond channel sums: background subtraction, PyMca fits, detector-element checks.

Synthetic scans carry known peak counts and a known continuum; ``2xfm_0010.mda`` (APS 2-ID-E) is
real data whose detector elements 2 and 3 see almost none of the sample's Ca, Fe and Cu.
``tests/data/derived/CaFeCu.cfg`` is a PyMca configuration derived from PyMca's ``Steel.cfg``
for these scans (its header says how).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from asirp.cli import main
from asirp.xrf import (
    ChannelROI,
    EnergyCalibration,
    RawXRFScan,
    build_map,
    element_roi,
    read_roi_sums,
    write_raw_scan,
)
from asirp.xrf.background import estimate_background, side_windows
from asirp.xrf.config import read_config
from asirp.xrf.element_check import check_detector_elements, choose_detectors
from asirp.xrf.fitted import fit_group, read_fit_config
from asirp.xrf.synthetic import synthetic_scan
from tests.asirp.xrf.conftest import small_scan
from tests.conftest import APS_STEP_MDA, CA_FE_CU_CFG, STEEL_CFG

ROI = ChannelROI("peak", 140, 159)  # 20 channels around the synthetic peak at channel 149.5


def _peak_scan(
    continuum: np.ndarray,
    *,
    peak_counts: float = 30.0,
    n_points: int = 400,
    neighbour_counts: float = 0.0,
    seed: int = 0,
) -> tuple[RawXRFScan, float]:
    """Points with a Gaussian peak (sigma 4 channels) on a given continuum, 2 elements.

    Returns the scan and the true peak counts inside :data:`ROI`, summed over points and
    elements.
    """
    rng = np.random.default_rng(seed)
    channels = np.arange(continuum.shape[0])
    profile = np.exp(-0.5 * ((channels - 149.5) / 4.0) ** 2)
    profile /= profile.sum()
    neighbour = np.exp(-0.5 * ((channels - 172.0) / 4.0) ** 2)
    neighbour /= neighbour.sum()
    amplitude = peak_counts * rng.uniform(0.2, 1.8, n_points)  # a varying element map
    expected = (
        amplitude[:, None, None] * profile
        + neighbour_counts * neighbour
        + continuum[None, None, :]
        + np.zeros((1, 2, 1))
    )
    spectra = rng.poisson(expected).astype(np.uint16)
    n_side = int(np.sqrt(n_points))
    rows, cols = np.divmod(np.arange(n_points), n_side)
    scan = RawXRFScan(
        spectra=spectra,
        x_um=cols * 10.0,
        y_um=rows * 10.0,
        i0=np.full(n_points, 1e5),
        live_time_s=np.full((n_points, 2), 0.09),
        real_time_s=np.full((n_points, 2), 0.1),
        time_s=np.arange(n_points) * 0.1,
        line_index=rows,
        calibration=EnergyCalibration(0.0, 0.01),
    )
    true_in_roi = 2 * amplitude.sum() * profile[ROI.slice].sum()
    return scan, float(true_in_roi)


@pytest.mark.parametrize("background", ["linear", "snip"])
@pytest.mark.parametrize("slope", [0.0, 0.004], ids=["flat", "sloped"])
def test_background_subtraction_recovers_the_peak_counts(background, slope):
    # About 30 peak counts per point and 0.6 to 1.5 continuum counts per channel: low counts.
    continuum = 0.6 + slope * np.arange(300)
    scan, true_counts = _peak_scan(continuum)
    gross = build_map(scan, roi=ROI)
    net = build_map(scan, roi=ROI, background=background)
    assert gross.data.sum() > 1.35 * true_counts  # the continuum is a quarter or more of the ROI
    assert net.data.sum() == pytest.approx(true_counts, rel=0.03)
    assert net.metadata["background"]["method"] == background
    assert net.metadata["background"]["side_windows"]["left"]["last_channel"] < ROI.first_channel


def test_snip_copes_with_a_neighbouring_peak_in_a_side_window():
    # A strong line 22 channels above the ROI fills the upper side window: the straight line
    # through the windows overestimates the continuum, SNIP on the summed spectrum does not.
    scan, true_counts = _peak_scan(np.full(300, 0.6), neighbour_counts=40.0)
    linear = build_map(scan, roi=ROI, background="linear").data.sum()
    snip = build_map(scan, roi=ROI, background="snip").data.sum()
    assert abs(snip / true_counts - 1) < 0.05
    assert linear < 0.8 * true_counts


def test_background_from_a_file_reads_the_side_windows_and_roi_sums_say_they_cannot(tmp_path):
    scan = small_scan()
    path = write_raw_scan(tmp_path / "raw.h5", scan)
    for background in ("linear", "snip"):
        from_file = build_map(path, "Cu", background=background, dead_time=True)
        from_scan = build_map(scan, "Cu", background=background, dead_time=True)
        np.testing.assert_allclose(from_file.data, from_scan.data, rtol=1e-6)
    roi = element_roi("Cu", scan.calibration)
    sums = read_roi_sums(path, [roi])
    with pytest.raises(ValueError, match="needs the counts in the side windows"):
        build_map(sums, roi=roi, background="linear")
    windows = side_windows(roi, 1024)
    with_windows = read_roi_sums(path, [roi, *windows.rois])
    np.testing.assert_allclose(
        build_map(with_windows, roi=roi, background="linear").data,
        build_map(scan, roi=roi, background="linear").data,
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="snip' needs the spectra summed"):
        build_map(with_windows, roi=roi, background="snip")
    with pytest.raises(ValueError, match="background must be one of"):
        build_map(scan, "Cu", background="polynomial")
    with pytest.raises(ValueError, match="no room for background windows"):
        estimate_background(scan, ChannelROI("all", 0, 1023), "linear")


def _with_dead_element(scan: RawXRFScan, element: int, keep: float, seed: int = 1) -> RawXRFScan:
    """The scan with one detector element's counts thinned to a fraction (a shadowed element)."""
    rng = np.random.default_rng(seed)
    spectra = scan.spectra.copy()
    spectra[:, element] = rng.binomial(spectra[:, element], keep)
    return dataclasses.replace(scan, spectra=spectra)


def test_a_dead_element_is_left_out_with_a_caution_unless_named():
    healthy = small_scan()
    assert build_map(healthy, "Cu").detectors == (0, 1, 2, 3)
    assert build_map(healthy, "Cu").metadata["cautions"] == []
    scan = _with_dead_element(healthy, 2, keep=0.01)
    cu = build_map(scan, "Cu", background="linear")
    assert cu.detectors == (0, 1, 3)
    (caution,) = cu.metadata["cautions"]
    assert caution.startswith("detector element 2 left out of the sum")
    assert "Cu Ka net counts" in caution
    assert cu.metadata["detector_check"]["weak"] == [2]
    named = build_map(scan, "Cu", background="linear", detectors=[0, 1, 2, 3])
    assert named.detectors == (0, 1, 2, 3)
    assert named.data.sum() > cu.data.sum()  # element 2's few counts are in
    assert "kept in the sum because detectors were named" in named.metadata["cautions"][0]
    # Naming elements without the dead one: no caution about it.
    assert build_map(scan, "Cu", detectors=[0, 1]).metadata["cautions"] == []


def test_an_anomalous_dead_time_is_flagged():
    scan = small_scan()
    live = scan.live_time_s.copy()
    live[:, 1] = 0.1 * scan.real_time_s[:, 1]  # 90 % dead time against about 10 %
    fe = build_map(dataclasses.replace(scan, live_time_s=live), "Fe", dead_time=True)
    assert fe.detectors == (0, 2, 3)
    assert "dead time is 90 % against 10 % typical" in fe.metadata["cautions"][0]


def test_the_check_is_robust_to_absent_elements_and_half_dead_detectors():
    rng = np.random.default_rng(3)
    real = np.full((500, 4), 0.1)
    # An element the sample does not hold: net counts are noise on every detector element.
    noise = rng.normal(0.0, 3.0, (500, 4)) + 20.0
    absent = check_detector_elements(
        noise, real * 0.9, real, background_counts=np.full_like(noise, 20.0)
    )
    assert not absent.significant
    assert absent.flagged == ()
    # Two of four elements dead: the typical element is the median of the stronger half.
    counts = rng.poisson([50.0, 45.0, 1.0, 0.5], (500, 4)).astype(float)
    check = check_detector_elements(counts, real * 0.9, real)
    assert check.weak == (2, 3)
    chosen, cautions = choose_detectors(check, None)
    assert chosen == [0, 1]
    assert len(cautions) == 2


def test_the_aps_scan_flags_its_two_elements_without_signal():
    for element in ("Ca", "Fe", "Cu"):
        xrf_map = build_map(APS_STEP_MDA, element, background="linear")
        assert xrf_map.detectors == (0, 1), element
        flagged = [c for c in xrf_map.metadata["cautions"] if c.startswith("detector element")]
        assert [c.split()[2] for c in flagged] == ["2", "3"]
        assert all("sees almost no signal" in c for c in flagged)


def test_fit_group_follows_the_configuration():
    steel = read_fit_config(STEEL_CFG)
    assert fit_group(steel, "Fe", "Ka") == "Fe Ka"  # Steel.cfg splits Fe into Ka and Kb
    assert fit_group(steel, "Fe", "Kb") == "Fe Kb"
    assert fit_group(steel, "Cu", "Ka") == "Cu K"
    assert fit_group(steel, "Pb", "La") == "Pb L"
    assert fit_group(steel, "W", "La") == "W L3"
    with pytest.raises(ValueError, match="does not include Zn"):
        fit_group(steel, "Zn", "Ka")
    with pytest.raises(ValueError, match="fits Cr K lines, not its La line"):
        fit_group(steel, "Cr", "La")


def test_fitted_map_matches_the_element_distribution(capsys):
    rng = np.random.default_rng(5)
    shape = (6, 8)
    cu = 60.0 + 240.0 * rng.uniform(size=shape)
    fe = 300.0 - 0.8 * cu + 20.0 * rng.uniform(size=shape)  # anti-correlated with Cu
    scan = synthetic_scan(
        {"Cu": cu, "Fe": fe},
        n_detectors=2,
        n_channels=1200,
        calibration=EnergyCalibration(-0.003, 0.00959),  # the configuration's calibration
        incident_energy_kev=10.0,
        seed=5,
    )
    fitted_cu = build_map(scan, "Cu", fit_config=CA_FE_CU_CFG, dead_time=True, normalize_by="i0")
    fitted_fe = build_map(scan, "Fe", fit_config=CA_FE_CU_CFG, dead_time=True, normalize_by="i0")
    for fitted, truth in ((fitted_cu, cu), (fitted_fe, fe)):
        assert np.corrcoef(fitted.data.ravel(), truth.ravel())[0, 1] > 0.97
        # Both detector elements summed: the K-group area is about twice the map's counts.
        assert fitted.data.mean() == pytest.approx(2 * truth.mean(), rel=0.1)
    assert fitted_cu.metadata["fit"]["group"] == "Cu K"
    assert fitted_cu.metadata["background"]["method"] == "fit"
    assert capsys.readouterr().out == ""  # PyMca's prints and logs stay out of stdout
    with pytest.raises(ValueError, match="does not include Zn"):
        build_map(scan, "Zn", fit_config=CA_FE_CU_CFG)
    with pytest.raises(ValueError, match="needs an element"):
        build_map(scan, roi=ChannelROI("x", 10, 20), fit_config=CA_FE_CU_CFG)


def test_fitted_map_of_the_aps_scan_agrees_with_its_net_roi_map():
    fitted = build_map(APS_STEP_MDA, "Fe", fit_config=CA_FE_CU_CFG)
    net = build_map(APS_STEP_MDA, "Fe", background="linear")
    assert fitted.detectors == (0, 1)
    assert np.corrcoef(fitted.data.ravel(), net.data.ravel())[0, 1] > 0.8  # 0.87 measured


def test_cli_background_fit_and_cautions(tmp_path, capsys):
    scan = _with_dead_element(small_scan(), 3, keep=0.005)
    raw = write_raw_scan(tmp_path / "raw.h5", scan)
    out = tmp_path / "out"
    assert (
        main(["xrf-map", str(raw), "--element", "Cu", "--background", "snip", "-o", str(out)]) == 0
    )
    captured = capsys.readouterr()
    assert "asirp: caution: detector element 3 left out of the sum" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["map"]["background"]["method"] == "snip"
    assert summary["map"]["detectors"] == [0, 1, 2]
    assert any("detector element 3" in c for c in summary["cautions"])
    # The default is the net counts of side windows.
    main(["xrf-map", str(raw), "--element", "Cu", "-o", str(tmp_path / "default")])
    default = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert default["map"]["background"]["method"] == "linear"
    status = main(
        [
            "xrf-map",
            str(raw),
            "--element",
            "Zn",
            "--fit-config",
            str(CA_FE_CU_CFG),
            "-o",
            str(tmp_path / "z"),
        ]
    )
    assert status == 2
    assert "does not include Zn" in capsys.readouterr().err


def test_config_background_and_fit_config(tmp_path):
    (tmp_path / "settings.toml").write_text(
        '[map]\nelement = "Cu"\nbackground = "snip"\nfit_config = "fits/CaFeCu.cfg"\n'
    )
    config = read_config(tmp_path / "settings.toml")
    assert config.background == "snip"
    assert config.fit_config == tmp_path / "fits" / "CaFeCu.cfg"  # relative to the file
    (tmp_path / "bad.toml").write_text('[map]\nbackground = "spline"\n')
    with pytest.raises(ValueError, match=r"bad\.toml: background must be one of"):
        read_config(tmp_path / "bad.toml")
