"""The TOML settings and the ``asirp xrf-map`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asirp.cli import main
from asirp.xrf.config import XRFMapConfig, read_config
from asirp.xrf.export import read_map_nexus

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "xrf-map.toml"


def test_example_config_is_valid():
    config = read_config(EXAMPLE)
    assert config.element == "Cu"
    assert config.normalize == "i0"
    assert config.dead_time is True
    assert config.restore_method == "richardson_lucy"
    assert config.beam_fwhm_um == 50.0
    assert config.restore_params == {"stop": "fixed"}
    assert config.data_folder == EXAMPLE.parent / "../out/xrf-data"


def test_config_paths_and_overrides(tmp_path):
    (tmp_path / "settings.toml").write_text(
        'data_folder = "data"\nraw = "scan.h5"\n[map]\nelement = "Fe"\n'
        '[restore]\nmethod = "wiener"\npsf_sigma_px = [1.5, 2.0]\n[restore.params]\nnsr = 0.1\n'
    )
    config = read_config(tmp_path / "settings.toml")
    assert config.raw_path() == tmp_path / "data" / "scan.h5"
    assert config.psf_sigma_px == (1.5, 2.0)
    changed = config.override(element="Cu", beam_fwhm_um=40.0, restore_params={"iterations": 3})
    assert (changed.element, changed.beam_fwhm_um, changed.psf_sigma_px) == ("Cu", 40.0, None)
    assert changed.restore_params == {"nsr": 0.1, "iterations": 3}
    assert changed.override(normalize=None).normalize is None  # None = not given
    assert XRFMapConfig(normalize="none").normalize is None
    with pytest.raises(ValueError, match="no raw scan"):
        XRFMapConfig().raw_path()


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("[map]\nelemnt = 'Cu'\n", ValueError, "unknown key 'elemnt' in \\[map\\]"),
        ("[mapp]\nelement = 'Cu'\n", ValueError, "unknown table \\[mapp\\]"),
        ("colour = 'red'\n", ValueError, "unknown top-level key 'colour'"),
        ("[map]\nnormalize = 'flux'\n", ValueError, "normalize must be"),
        ("[map]\ndead_time = 'yes'\n", TypeError, "dead_time must be true or false"),
        ("[map]\nchannels = [10]\n", ValueError, "channels must be a pair"),
        ("[map]\nchannels = [20, 10]\n", ValueError, "low <= high"),
        ("[map]\nline = 'Kz'\n", ValueError, "line must be one of"),
        ("[tools]\nrotate = 45\n", ValueError, "rotate must be"),
        ("[tools]\nthreshold_low = 5\nthreshold_high = 1\n", ValueError, "threshold_low"),
        ("[plot]\ncolormap = 'rainbowz'\n", ValueError, "not a matplotlib colour map"),
        ("[restore]\nmethod = 'magic'\n", ValueError, "unknown restore method 'magic'"),
        ("[restore]\nbeam_fwhm_um = 50\npsf_sigma_px = 2\n", ValueError, "not both"),
        ("[restore]\npsf_size_px = 20\n", ValueError, "must be odd"),
        ("[restore]\niterations = 0\n", ValueError, "iterations must be >= 1"),
        ("[restore]\nbeam_fwhm_um = -5\n", ValueError, "beam_fwhm_um must be > 0"),
        ("[map\nelement = 'Cu'\n", ValueError, "not valid TOML"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, error, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(error, match=words) as raised:
        read_config(path)
    assert "bad.toml" in str(raised.value)


def test_cli_makes_and_restores_a_map(tmp_path, raw_file, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "xrf-map",
            str(raw_file),
            "--element",
            "Cu",
            "--normalize",
            "i0",
            "--dead-time",
            "--restore",
            "richardson_lucy",
            "--beam-fwhm-um",
            "20",
            "--iterations",
            "5",
            "--param",
            "stop=fixed",
            "-o",
            str(out),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "Cu Ka map 12 x 15" in printed
    assert "restored with richardson_lucy" in printed
    names = {p.name for p in out.iterdir()}
    assert names == {
        "map.h5",
        "map.txt",
        "map.png",
        "restored.txt",
        "restored.png",
        "fluctuation.png",
        "summary.json",
    }
    cu = read_map_nexus(out / "map.h5")
    assert cu.shape == (12, 15)
    assert cu.normalization == "i0"
    table = np.loadtxt(out / "map.txt")
    np.testing.assert_allclose(table[:, 2], cu.data.ravel(), rtol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["restoration"]["params"]["iterations_run"] == 5
    assert summary["restoration"]["psf"]["beam_fwhm_um"] == [20.0, 20.0]
    assert summary["restoration"]["fluctuation"]["std_before"] > 0


def test_cli_with_config_and_overrides(tmp_path, raw_file, capsys):
    (tmp_path / "settings.toml").write_text(
        f'data_folder = "{raw_file.parent}"\nraw = "{raw_file.name}"\noutput = "from-config"\n'
        '[map]\nelement = "Fe"\nnormalize = "ar"\n[tools]\ncrop_x_um = [20.0, 100.0]\n'
        '[restore]\nmethod = "none"\n'
    )
    status = main(["xrf-map", "--config", str(tmp_path / "settings.toml"), "--element", "Cu"])
    assert status == 0
    out = tmp_path / "from-config"  # relative to the config file
    cu = read_map_nexus(out / "map.h5")
    assert cu.label == "Cu Ka"  # the flag won over the file
    assert cu.normalization == "ar"
    assert cu.shape == (12, 9)
    assert not (out / "restored.png").exists()
    assert "Cu Ka map 12 x 9" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["{raw}", "--element", "Xx", "-o", "{out}"], "unknown element symbol 'Xx'"),
        (["{missing}", "--element", "Cu", "-o", "{out}"], "raw scan file not found"),
        (["{raw}", "--element", "Cu", "--normalize", "flux", "-o", "{out}"], "invalid choice"),
        (["{raw}", "--element", "Cu"], "no output folder"),
        (["{raw}", "-o", "{out}"], "give an element"),
        (["{raw}", "--element", "Cu", "--config", "{missing}", "-o", "{out}"], "config file"),
        (["{raw}", "--element", "Cu", "--channels", "5", "2000", "-o", "{out}"], "extends past"),
        (["{raw}", "--element", "Cu", "--detectors", "7", "-o", "{out}"], "do not exist"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path, raw_file, capsys, arguments, words):
    values = {"raw": raw_file, "out": tmp_path / "out", "missing": tmp_path / "missing.h5"}
    argv = ["xrf-map", *(a.format(**values) for a in arguments)]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("asirp: error:")
    assert words in error
    assert "\n" not in error


def test_cli_needs_a_beam_size(tmp_path, scan, capsys):
    from dataclasses import replace

    from asirp.xrf import write_raw_scan

    path = write_raw_scan(tmp_path / "nobeam.h5", replace(scan, metadata={}))
    argv = ["xrf-map", str(path), "--element", "Cu", "--restore", "auto", "-o", str(tmp_path)]
    assert main(argv) == 2
    assert "needs the beam size" in capsys.readouterr().err


def test_psf_size_and_sigma_settings(scan):
    from asirp.xrf import build_map
    from asirp.xrf.workflow import psf_arguments

    cu = build_map(scan, "Cu")  # 12 x 15 cells of 10 µm
    sized = psf_arguments(XRFMapConfig(psf_sigma_px=1.5, psf_size_px=7), cu)
    assert sized["psf"].shape == (7, 7)
    assert sized["psf"].sum() == pytest.approx(1.0, abs=1e-6)
    beam = psf_arguments(XRFMapConfig(beam_fwhm_um=30.0, psf_size_px=5), cu)
    assert beam["psf"].shape == (5, 5)
    # Without a size the PSF is described in physical units (the scan's 20 µm beam here).
    assert psf_arguments(XRFMapConfig(), cu) == {"beam_fwhm_um": 20.0, "pixel_um": (10.0, 10.0)}
    assert psf_arguments(XRFMapConfig(psf_sigma_px=2.0), cu) == {"psf_sigma_px": 2.0}
    # Never larger than the map allows.
    assert psf_arguments(XRFMapConfig(psf_sigma_px=3.0, psf_size_px=51), cu)["psf"].shape == (
        11,
        11,
    )
