"""File formats, the HDF5 result with provenance, and the ``asirp`` command line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tifffile

import asirp
from asirp.cli import main
from asirp.io import read_array
from asirp.results_io import read_restoration, write_restoration
from tests.conftest import make_noisy_map


@pytest.fixture
def measured():
    return make_noisy_map("mesh", shape=(48, 48)).measured


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_npy_tiff_and_hdf5(tmp_path, measured):
    np.save(tmp_path / "map.npy", measured)
    tifffile.imwrite(tmp_path / "map.tif", measured)
    with h5py.File(tmp_path / "scan.h5", "w") as handle:
        handle["entry/data/cu_ka"] = measured
        handle["entry/data/i0"] = np.ones(3)
    for name in ("map.npy", "map.tif", "scan.h5::/entry/data/cu_ka"):
        np.testing.assert_array_equal(read_array(tmp_path / name), measured)


@pytest.mark.parametrize(
    ("content", "name", "words"),
    [
        (None, "missing.npy", "not found"),
        (b"not an hdf5 file", "broken.h5", "cannot read"),
        (b"\x93NUMPY garbage", "broken.npy", "cannot read"),
        (b"text", "map.png", "unknown input format"),
    ],
)
def test_unreadable_files_give_clear_errors(tmp_path, content, name, words):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=words):
        read_array(tmp_path / name)


def test_hdf5_needs_a_dataset_name_when_ambiguous(tmp_path, measured):
    with h5py.File(tmp_path / "scan.h5", "w") as handle:
        handle["a"] = measured
        handle["b"] = measured
    with pytest.raises(ValueError, match="holds 2 datasets"):
        read_array(tmp_path / "scan.h5")
    with pytest.raises(ValueError, match="no dataset"):
        read_array(f"{tmp_path / 'scan.h5'}::/c")


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read"):
        read_array(tmp_path / "objects.npy")


def test_result_file_round_trip(tmp_path, measured):
    result = asirp.restore(measured, "wiener", beam_fwhm_um=30.0, pixel_um=10.0)
    path = write_restoration(tmp_path / "out.h5", result, input_path="scan.h5::/x")
    back = read_restoration(path)
    np.testing.assert_array_equal(back["image"], result.image)
    np.testing.assert_array_equal(back["psf"], result.psf)
    assert back["method"] == "wiener"
    assert back["params"]["boundary"] == "reflect"
    assert back["psf_description"]["beam_fwhm_um"] == [30.0, 30.0]
    assert back["version"] == asirp.__version__
    assert back["input_path"] == "scan.h5::/x"
    assert set(back["metrics"]) >= {"contrast_std", "sharpness", "noise_sigma", "residual"}
    assert not list(tmp_path.glob("*.part"))


def test_cli_restore_writes_provenance_and_leaves_the_input_alone(tmp_path, measured, capsys):
    source = tmp_path / "scan.h5"
    with h5py.File(source, "w") as handle:
        handle["entry/cu"] = measured
    before = _digest(source)
    status = main(
        [
            "restore",
            f"{source}::/entry/cu",
            "-o",
            str(tmp_path / "restored.h5"),
            "--method",
            "richardson_lucy",
            "--beam-fwhm-um",
            "50",
            "--pixel-um",
            "10",
            "5",
            "--iterations",
            "7",
            "--param",
            "stop=fixed",
            "--plot",
            str(tmp_path / "fig.png"),
        ]
    )
    assert status == 0
    assert _digest(source) == before
    back = read_restoration(tmp_path / "restored.h5")
    assert back["params"]["iterations_run"] == 7
    assert back["psf_description"]["pixel_um"] == [10.0, 5.0]
    assert back["input_path"].endswith("scan.h5::/entry/cu")
    assert (tmp_path / "fig.png").stat().st_size > 1000
    assert "richardson_lucy" in capsys.readouterr().out


def test_cli_prints_the_engines_cautions_in_one_line_each(tmp_path, measured, capsys):
    flat = np.random.default_rng(1).poisson(100.0, (64, 64)).astype(np.float32)
    np.save(tmp_path / "flat.npy", flat)
    arguments = ["-m", "blind_richardson_lucy", "--psf-sigma-px", "1.5"]
    status = main(["restore", str(tmp_path / "flat.npy"), "-o", str(tmp_path / "r.h5"), *arguments])
    assert status == 0
    error = capsys.readouterr().err
    assert error.startswith("asirp: caution: the data did not determine the beam width")
    assert len(error.strip().splitlines()) == 1  # no Python warning traceback
    np.save(tmp_path / "map.npy", measured)
    assert (
        main(
            [
                "restore",
                str(tmp_path / "map.npy"),
                "-o",
                str(tmp_path / "m.h5"),
                "-m",
                "wiener",
                "--psf-sigma-px",
                "2",
            ]
        )
        == 0
    )
    assert "caution" not in capsys.readouterr().err


def test_cli_restores_a_stack_with_a_psf_file(tmp_path, measured):
    np.save(tmp_path / "stack.npy", np.stack([measured, measured[::-1]]))
    np.save(tmp_path / "psf.npy", asirp.psf.gaussian_psf(1.5))
    status = main(
        [
            "restore",
            str(tmp_path / "stack.npy"),
            "-o",
            str(tmp_path / "r.h5"),
            "-m",
            "tikhonov",
            "--psf",
            str(tmp_path / "psf.npy"),
        ]
    )
    assert status == 0
    assert read_restoration(tmp_path / "r.h5")["image"].shape == (2, 48, 48)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--method", "magic", "--psf-sigma-px", "1"], "unknown method 'magic'"),
        (["--psf-sigma-px", "1", "--iterations", "0"], "'iterations'"),
        (["--method", "wiener"], "needs a PSF"),
        (["--psf-sigma-px", "1", "--param", "colour=red"], "no parameter 'colour'"),
        (["--psf-sigma-px", "99"], None),
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(tmp_path, measured, capsys, extra, words):
    np.save(tmp_path / "map.npy", measured)
    status = main(["restore", str(tmp_path / "map.npy"), "-o", str(tmp_path / "r.h5"), *extra])
    error = capsys.readouterr().err
    if words is None:  # a huge beam is cropped to the map: still valid
        assert status == 0
        return
    assert status == 2
    assert error.startswith("asirp: error: ")
    assert error.count("\n") == 1
    assert words in error
    assert not (tmp_path / "r.h5").exists()


def test_cli_refuses_to_overwrite_its_input(tmp_path, measured, capsys):
    path = tmp_path / "map.h5"
    with h5py.File(path, "w") as handle:
        handle["m"] = measured
    before = _digest(path)
    assert main(["restore", str(path), "-o", str(path), "--psf-sigma-px", "1"]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert _digest(path) == before


def test_cli_usage_errors_and_missing_files_exit_2(tmp_path, capsys):
    assert main(["restore", str(tmp_path / "none.npy"), "-o", "x.h5"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main(["restore"]) == 2


def test_methods_table_lists_every_method_and_parameter(capsys):
    assert main(["methods"]) == 0
    table = capsys.readouterr().out
    for spec in asirp.method_specs():
        assert spec.name in table
        assert spec.family in table
        for parameter in spec.parameters:
            assert f"{parameter.name}=" in table


def test_demo_writes_result_figure_and_metrics(tmp_path):
    # The console script, as a user runs it.
    completed = subprocess.run(
        [sys.executable, "-m", "asirp.cli", "demo", "-o", str(tmp_path), "--device", "cpu"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["metrics"]["psnr"] > summary["metrics"]["psnr_input"]
    assert summary["metrics"]["ssim"] > summary["metrics"]["ssim_input"]
    assert read_restoration(tmp_path / "restored.h5")["image"].shape == (128, 128)
    assert (tmp_path / "before_after.png").stat().st_size > 10_000
    assert "PSNR" in completed.stdout


def test_cli_takes_the_counts_gain_of_a_normalised_map(tmp_path, capsys):
    # a map divided by its monitor (I0 = 400 counts per unit): one count is 1/400 of a unit
    counts = np.random.default_rng(2).poisson(400.0, (48, 48)).astype(np.float32)
    np.save(tmp_path / "normalised.npy", counts / 400.0)
    arguments = ["-m", "richardson_lucy", "--psf-sigma-px", "1.2", "--counts-gain", "0.0025"]
    status = main(
        ["restore", str(tmp_path / "normalised.npy"), "-o", str(tmp_path / "r.h5"), *arguments]
    )
    assert status == 0
    params = read_restoration(tmp_path / "r.h5")["params"]
    assert params["counts_gain_source"] == "given"
    assert params["counts_gain"] == pytest.approx(0.0025)
    bad = ["restore", str(tmp_path / "normalised.npy"), "-o", str(tmp_path / "s.h5")]
    assert main([*bad, "--psf-sigma-px", "1.2", "--counts-gain", "-1"]) == 2
    assert "counts_gain must be finite and > 0" in capsys.readouterr().err
