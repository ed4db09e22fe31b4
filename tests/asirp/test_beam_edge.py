"""The beam from a knife-edge scan: edge fits, focus series, files, the psf-from-edge command."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from scipy.special import erfc

from asirp.beam_edge import EdgeFit, fit_edge, fit_focus_series
from asirp.beam_file import beam_from_json, read_beam_json, read_edge_scan, write_beam_json
from asirp.cli import main
from asirp.io import InputFileError
from asirp.psf import FWHM_PER_SIGMA
from asirp.safe_files import OutputExistsError

COUNTS = 10_000.0
"""Counts on the bright side of the edge: an ion chamber or a strong fluorescence line."""

HELD_OUT_SEEDS = range(9100, 9112)
"""Seeds never used while writing the fit (it was tried on seeds 0 to 199)."""


def knife_edge(
    rng: np.random.Generator,
    *,
    fwhm_steps: float,
    step_um: float,
    counts: float = COUNTS,
    falling: bool = True,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A Poisson knife-edge scan of a Gaussian beam at a random edge position.

    Returns the positions (µm), the counts and the true FWHM (µm).
    """
    sigma_um = fwhm_steps * step_um / FWHM_PER_SIGMA
    points = int(max(40, 12 * fwhm_steps))
    position = np.arange(points) * step_um + rng.uniform(-100.0, 100.0)
    edge = rng.uniform(position[0] + 3 * sigma_um, position[-1] - 3 * sigma_um)
    background = 0.05 * counts
    fraction = 0.5 * erfc((position - edge) / (math.sqrt(2.0) * sigma_um))
    mean = background + counts * (fraction if falling else 1.0 - fraction)
    return position, rng.poisson(mean).astype(np.float64), fwhm_steps * step_um


def random_scan(seed: int) -> tuple[np.ndarray, np.ndarray, float, bool]:
    rng = np.random.default_rng(seed)
    fwhm_steps = rng.uniform(2.0, 20.0)
    step_um = float(rng.choice([0.05, 0.5, 2.0]))
    falling = bool(rng.integers(2))
    position, signal, truth = knife_edge(
        rng, fwhm_steps=fwhm_steps, step_um=step_um, falling=falling
    )
    return position, signal, truth, falling


@pytest.mark.parametrize("seed", HELD_OUT_SEEDS)
def test_the_fit_recovers_the_beam_fwhm_within_ten_percent(seed):
    position, signal, truth, falling = random_scan(seed)
    fit = fit_edge(position, signal)
    assert fit.fwhm_um == pytest.approx(truth, rel=0.10)
    assert fit.weights == "poisson"
    assert (fit.amplitude > 0) == falling  # the step's sign says which way the edge goes
    assert fit.sigma_um == pytest.approx(fit.fwhm_um / FWHM_PER_SIGMA)
    assert 0.5 < fit.reduced_chi2 < 2.0


def test_the_uncertainty_covers_the_truth_in_most_cases():
    within_one, within_two = 0, 0
    seeds = range(9200, 9240)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        position, signal, truth = knife_edge(
            rng, fwhm_steps=rng.uniform(2.0, 20.0), step_um=1.0, counts=500.0
        )
        fit = fit_edge(position, signal)
        miss = abs(fit.fwhm_um - truth)
        within_one += miss <= fit.fwhm_uncertainty_um
        within_two += miss <= 2 * fit.fwhm_uncertainty_um
    # a one-sigma interval holds the truth 68 % of the time, two sigmas 95 %
    assert within_one >= 0.5 * len(seeds)
    assert within_two >= 0.85 * len(seeds)


def test_a_signal_normalised_by_a_monitor_gets_uniform_weights():
    rng = np.random.default_rng(9301)
    position, counts, truth = knife_edge(rng, fwhm_steps=6.0, step_um=0.25)
    monitor = rng.uniform(0.9, 1.1, size=counts.size) * 2.0e5
    fit = fit_edge(position, counts / monitor)
    assert fit.weights == "uniform"
    assert fit.fwhm_um == pytest.approx(truth, rel=0.10)


def test_a_focus_series_finds_the_best_focus():
    rng = np.random.default_rng(9401)
    best_z, best_fwhm, rayleigh = 37.0, 1.5, 90.0
    rows = []
    for z in np.linspace(-250.0, 250.0, 9):
        fwhm = best_fwhm * math.sqrt(1.0 + ((z - best_z) / rayleigh) ** 2)
        position, signal, _ = knife_edge(rng, fwhm_steps=fwhm / 0.1, step_um=0.1)
        rows += [(p, s, z) for p, s in zip(position, signal, strict=True)]
    table = np.array(rows)
    series = fit_focus_series(table[:, 0], table[:, 1], table[:, 2], axis="vertical")
    assert len(series.fits) == 9
    assert series.best_z_um == pytest.approx(
        best_z, abs=max(10.0, 3 * series.best_z_uncertainty_um)
    )
    assert series.fwhm_um == pytest.approx(best_fwhm, rel=0.05)
    assert series.rayleigh_um == pytest.approx(rayleigh, rel=0.2)
    assert min(fit.fwhm_um for fit in series.fits) >= 0.9 * series.fwhm_um
    record = series.provenance()
    assert record["kind"] == "focus_series"
    assert [fit["z_um"] for fit in record["fits"]] == sorted(set(table[:, 2]))


def test_a_focus_series_without_a_minimum_inside_is_refused():
    rng = np.random.default_rng(9402)
    rows = []
    for z in (0.0, 50.0, 100.0, 150.0):  # the FWHM only grows: the focus is before the series
        fwhm = 1.0 + 0.02 * z
        position, signal, _ = knife_edge(rng, fwhm_steps=fwhm / 0.1, step_um=0.1)
        rows += [(p, s, z) for p, s in zip(position, signal, strict=True)]
    table = np.array(rows)
    with pytest.raises(ValueError, match="focus"):
        fit_focus_series(table[:, 0], table[:, 1], table[:, 2])
    with pytest.raises(ValueError, match="at least 3"):
        fit_focus_series(table[:80, 0], table[:80, 1], table[:80, 2])


def test_scans_that_cannot_give_the_beam_are_refused_with_one_clear_error():
    rng = np.random.default_rng(9501)
    position, signal, _ = knife_edge(rng, fwhm_steps=5.0, step_um=1.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_edge(position, np.where(np.arange(signal.size) == 7, np.nan, signal))
    with pytest.raises(ValueError, match="fewer than the 8"):
        fit_edge(position[:7], signal[:7])
    flat = rng.poisson(COUNTS, size=60).astype(float)
    with pytest.raises(ValueError, match="no edge"):
        fit_edge(np.arange(60.0), flat)
    beam = 0.5 * erfc((np.arange(60.0) - 57.0) / (math.sqrt(2.0) * 3.0))
    cut = rng.poisson(COUNTS * beam + 100.0).astype(float)  # the edge at the end of the scan
    with pytest.raises(ValueError, match="not inside the scan"):
        fit_edge(np.arange(60.0), cut)
    with pytest.raises(ValueError, match="axis must be one of"):
        fit_edge(position, signal, axis="diagonal")
    with pytest.raises(TypeError):
        fit_edge(position, ["a"] * position.size)


def test_edge_scan_files_of_every_kind_give_the_same_fit(tmp_path):
    rng = np.random.default_rng(9601)
    position, signal, truth = knife_edge(rng, fwhm_steps=8.0, step_um=0.5)
    table = np.column_stack([position, signal])
    np.savetxt(
        tmp_path / "edge.csv", table, delimiter=",", header="position_um,counts", comments=""
    )
    np.savetxt(tmp_path / "edge.txt", table, header="a comment")
    np.save(tmp_path / "edge.npy", table.T)  # (2, n) is read as columns too
    with h5py.File(tmp_path / "edge.h5", "w") as handle:
        handle["scan/edge"] = table
    fits = [
        fit_edge(scan.position_um, scan.signal)
        for scan in map(
            read_edge_scan,
            [
                tmp_path / "edge.csv",
                tmp_path / "edge.txt",
                tmp_path / "edge.npy",
                f"{tmp_path / 'edge.h5'}::/scan/edge",
            ],
        )
    ]
    assert fits[0].fwhm_um == pytest.approx(truth, rel=0.1)
    for fit in fits[1:]:
        assert fit.fwhm_um == pytest.approx(fits[0].fwhm_um, rel=1e-9)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", "position,signal\n1,2\n3,oops\n", "line 3"),
        ("ragged.csv", "1,2\n3,4,5\n", "different numbers of columns"),
        ("empty.txt", "# nothing\n", "no rows of numbers"),
        ("edge.xyz", "1 2\n", "unknown edge-scan format"),
    ],
)
def test_bad_edge_files_raise_input_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputFileError, match=message):
        read_edge_scan(path)


def test_a_wrong_array_shape_is_an_input_file_error(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((4, 5, 6)))
    np.save(tmp_path / "wide.npy", np.zeros((20, 5)))
    with pytest.raises(InputFileError, match="3-D array"):
        read_edge_scan(tmp_path / "cube.npy")
    with pytest.raises(InputFileError, match="shape"):
        read_edge_scan(tmp_path / "wide.npy")
    with pytest.raises(InputFileError, match="not found"):
        read_edge_scan(tmp_path / "missing.csv")


def test_beam_file_round_trip_and_no_overwrite(tmp_path):
    rng = np.random.default_rng(9701)
    fits = []
    for fwhm_steps, axis in ((4.0, "vertical"), (9.0, "horizontal")):
        position, signal, _ = knife_edge(rng, fwhm_steps=fwhm_steps, step_um=0.2)
        fits.append(fit_edge(position, signal, axis=axis))
    path = tmp_path / "beam.json"
    written = write_beam_json(path, fits)
    assert written["beam_fwhm_um"] == [fits[0].fwhm_um, fits[1].fwhm_um]
    assert read_beam_json(path) == written
    fwhm, provenance = beam_from_json(path)
    assert fwhm == (fits[0].fwhm_um, fits[1].fwhm_um)
    assert provenance["method"] == "knife-edge"
    assert len(provenance["sha256"]) == 64
    assert provenance["fits"][1]["axis"] == "horizontal"
    with pytest.raises(OutputExistsError):
        write_beam_json(path, fits[0])
    write_beam_json(path, fits[0], overwrite=True)
    single, _ = beam_from_json(path)
    assert single == fits[0].fwhm_um
    with pytest.raises(ValueError, match="vertical then the horizontal"):
        write_beam_json(tmp_path / "swapped.json", fits[::-1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a JSON beam file"),
        ('{"method": "knife-edge"}', "no 'beam_fwhm_um'"),
        ('{"beam_fwhm_um": 1.0, "method": "guess"}', "expected 'knife-edge'"),
        ('{"beam_fwhm_um": [1.0, -2.0], "method": "knife-edge"}', "finite and > 0"),
        ('{"beam_fwhm_um": [1, 2, 3], "method": "knife-edge"}', "pair"),
    ],
)
def test_bad_beam_files_are_refused(tmp_path, content, message):
    path = tmp_path / "beam.json"
    path.write_text(content)
    with pytest.raises(InputFileError, match=message):
        read_beam_json(path)


def test_the_fit_is_a_frozen_record_with_json_provenance():
    rng = np.random.default_rng(9801)
    position, signal, _ = knife_edge(rng, fwhm_steps=5.0, step_um=1.0)
    fit = fit_edge(position, signal, source="scan 12")
    with pytest.raises(AttributeError):
        fit.fwhm_um = 1.0  # type: ignore[misc]
    record = json.loads(json.dumps(fit.provenance()))
    assert record["source"] == "scan 12"
    assert record["n_points"] == position.size
    assert EdgeFit(**{k: v for k, v in record.items() if k not in ("kind", "model")}) == fit
    np.testing.assert_allclose(fit.model(position), signal, rtol=0.2, atol=5 * np.sqrt(COUNTS))


def write_scan(path, seed: int, fwhm_steps: float, step_um: float = 0.5):
    rng = np.random.default_rng(seed)
    position, signal, truth = knife_edge(rng, fwhm_steps=fwhm_steps, step_um=step_um)
    np.savetxt(path, np.column_stack([position, signal]), delimiter=",")
    return truth


def test_the_command_writes_the_beam_file_and_refuses_to_overwrite(tmp_path, capsys):
    vertical = write_scan(tmp_path / "v.csv", 9901, 3.0)
    horizontal = write_scan(tmp_path / "h.csv", 9902, 10.0)
    beam = tmp_path / "beam.json"
    figure = tmp_path / "edges.png"
    arguments = ["psf-from-edge", str(tmp_path / "v.csv"), str(tmp_path / "h.csv")]
    status = main([*arguments, "-o", str(beam), "--plot", str(figure)])
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("FWHM ")
    assert "(vertical x horizontal)" in out
    assert "±" in out
    assert figure.read_bytes().startswith(b"\x89PNG")
    fwhm, _ = beam_from_json(beam)
    assert fwhm == pytest.approx((vertical, horizontal), rel=0.1)
    before = beam.read_bytes()

    status = main([*arguments, "-o", str(beam)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("asirp: error: output")
    assert "--overwrite" in err
    assert beam.read_bytes() == before

    assert main(["psf-from-edge", str(tmp_path / "h.csv"), "-o", str(beam), "--overwrite"]) == 0
    capsys.readouterr()
    assert beam_from_json(beam)[0] == pytest.approx(horizontal, rel=0.1)
    # an input is never an output, even with --overwrite
    assert main([*arguments, "-o", str(tmp_path / "v.csv"), "--overwrite"]) == 2
    assert "is an input file" in capsys.readouterr().err


def test_the_command_fits_a_focus_series(tmp_path, capsys):
    rng = np.random.default_rng(9903)
    rows = []
    for z in np.linspace(-100.0, 100.0, 5):
        fwhm = 2.0 * math.sqrt(1.0 + (z / 60.0) ** 2)
        position, signal, _ = knife_edge(rng, fwhm_steps=fwhm / 0.2, step_um=0.2)
        rows += [(p, s, z) for p, s in zip(position, signal, strict=True)]
    np.savetxt(tmp_path / "series.txt", np.array(rows))
    command = ["psf-from-edge", str(tmp_path / "series.txt"), "--axis", "horizontal"]
    assert main(command) == 2  # several z without --focus-series
    assert "--focus-series" in capsys.readouterr().err
    beam = tmp_path / "beam.json"
    assert main([*command, "--focus-series", "-o", str(beam)]) == 0
    out = capsys.readouterr().out
    assert "(horizontal); horizontal focus at z = " in out
    record = read_beam_json(beam)
    assert record["axes"] == ["horizontal"]
    assert record["beam_fwhm_um"] == pytest.approx(2.0, rel=0.1)
    assert record["fits"][0]["kind"] == "focus_series"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "\n".join(
                f"{i},{n}" for i, n in enumerate(np.random.default_rng(9904).poisson(100, 40))
            ),
            "no edge",
        ),
        ("1,2\n2,3\n3,4\n", "fewer than the 8"),
        ("\n".join(f"{i},nan" for i in range(10)), "NaN or Inf"),
        ("x,y\n1,2\nfoo,bar\n", "line 3"),
    ],
)
def test_the_command_reports_bad_input_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "edge.csv"
    path.write_text(content)
    assert main(["psf-from-edge", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asirp: error: ")
    assert err.count("\n") == 1
    assert message in err


def test_the_measured_beam_feeds_restore_and_xrf_map_and_their_provenance(tmp_path, capsys):
    from asirp.results_io import read_restoration
    from tests.conftest import APS_STEP_MDA

    write_scan(tmp_path / "v.csv", 9911, 4.0, step_um=5.0)
    write_scan(tmp_path / "h.csv", 9912, 6.0, step_um=5.0)
    beam = tmp_path / "beam.json"
    assert (
        main(["psf-from-edge", str(tmp_path / "v.csv"), str(tmp_path / "h.csv"), "-o", str(beam)])
        == 0
    )
    fwhm, _ = beam_from_json(beam)
    counts = np.random.default_rng(5).poisson(40.0, (24, 24)).astype(np.float32)
    np.save(tmp_path / "map.npy", counts)
    restored = tmp_path / "restored.h5"
    command = ["restore", str(tmp_path / "map.npy"), "-o", str(restored), "-m", "richardson_lucy"]
    assert (
        main([*command, "--beam-from-edge", str(beam), "--pixel-um", "10", "--iterations", "3"])
        == 0
    )
    source = read_restoration(restored)["provenance"]["psf"]["beam_source"]
    assert source["method"] == "knife-edge"
    assert tuple(source["beam_fwhm_um"]) == pytest.approx(fwhm)
    assert (
        main([*command, "--beam-from-edge", str(beam), "--beam-fwhm-um", "50", "--overwrite"]) == 2
    )
    assert "not both" in capsys.readouterr().err

    out = tmp_path / "xrf"
    xrf = ["xrf-map", str(APS_STEP_MDA), "-o", str(out), "--element", "Fe", "--restore"]
    assert main([*xrf, "richardson_lucy", "--beam-from-edge", str(beam), "--iterations", "2"]) == 0
    with h5py.File(out / "map.h5", "r") as handle:
        recorded = json.loads(handle["entry/process/provenance/data"].asstr()[()])
    assert recorded["psf"]["beam_source"]["sha256"] == source["sha256"]
    assert recorded["psf"]["beam_fwhm_um"] == pytest.approx(list(fwhm))
