"""The suite and the set-up need nothing outside the repository (a fresh clone passes)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The machine's work folder, the shared folder beside the clone, and the old override variable;
# written in parts so that the pattern (and tree-wide greps for these paths) never match here.
OUTSIDE = re.compile("|".join(["/" + "work/", r"\.\./" + "shared", "ASIRP_" + "REAL_DATA"]))


def test_no_test_or_setup_file_names_a_path_outside_the_repository():
    files = [*ROOT.joinpath("tests").rglob("*.py"), ROOT / "Makefile", ROOT / "pyproject.toml"]
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_real_test_data_is_in_the_repository_with_its_licences():
    data = ROOT / "tests" / "data" / "real"
    for name in ("tomopy/tooth.h5", "pymca/Steel.spe", "pymca/Steel.cfg", "pymca/XRFSpectrum.mca"):
        assert (data / name).stat().st_size > 1000, name
    assert (data / "tomopy" / "LICENSE.txt").is_file()
    assert (data / "pymca" / "LICENSE").is_file()
