"""``run_tomo`` and ``read_scan`` confined to a data root (what the Tango device uses).

Inside a :class:`asirp.safe_files.DataRoot` the input is read by descriptor and the volume is
written by the root's atomic write: ``..`` and symbolic links are refused, an existing file is
kept without ``overwrite``, the input never replaced, and the volumes are the same as without
a root.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from asirp.safe_files import DataRoot, DataRootError, OutputExistsError, ProtectedFileError
from asirp.tomo.exchange import read_scan
from asirp.tomo.pipeline import run_tomo
from asirp.tomo.volume import RAW, RESTORED
from sim.tomo import simulate_tomo
from tests.asirp.tomo.conftest import write_exchange

OPTIONS = {"method": "richardson_lucy", "psf_fwhm_px": 2.0}


@pytest.fixture(scope="module")
def scan_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small simulated Data Exchange file (25 angles, 2 x 32 px), as bytes."""
    # 0° to 180° in 7.5° steps: a mirror pair for the centre search
    data = simulate_tomo(
        shape=(2, 32), n_angles=25, theta_range_deg=(0.0, 187.5), psf_fwhm_um=20.0, rng=5
    )
    path = write_exchange(
        tmp_path_factory.mktemp("scan") / "scan.h5",
        data=data.data,
        white=data.data_white,
        dark=data.data_dark,
        theta=data.theta_deg,
    )
    return path.read_bytes()


@pytest.fixture
def root(tmp_path: Path, scan_bytes: bytes) -> Path:
    """``tmp/root`` with ``scans/scan.h5``, and ``link`` -> ``tmp/outside`` (a symlink out)."""
    root = tmp_path / "root"
    (root / "scans").mkdir(parents=True)
    (root / "scans" / "scan.h5").write_bytes(scan_bytes)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "scan.h5").write_bytes(scan_bytes)
    (root / "link").symlink_to(outside)
    return root


def _volumes(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[f"entry/{name}/data"][...] for name in (RAW, RESTORED)}


def test_read_scan_from_an_open_stream_equals_from_the_path(root: Path):
    path = root / "scans" / "scan.h5"
    with DataRoot(root).open("scans/scan.h5") as stream:
        from_stream = read_scan(stream, name="scans/scan.h5")
        assert not stream.closed  # the caller's stream is left open
    from_path = read_scan(path)
    np.testing.assert_array_equal(from_stream.projections, from_path.projections)
    np.testing.assert_array_equal(from_stream.angles_rad, from_path.angles_rad)


def test_volume_in_a_root_is_the_same_as_without(root: Path, tmp_path: Path):
    plain = run_tomo(root / "scans" / "scan.h5", tmp_path / "plain.nxs", **OPTIONS)
    inside = run_tomo("scans/scan.h5", "volumes/scan.nxs", data_root=DataRoot(root), **OPTIONS)
    assert inside.output == root / "volumes" / "scan.nxs"  # the folder is made in the root
    assert inside.centre_px == plain.centre_px
    written, expected = _volumes(inside.output), _volumes(tmp_path / "plain.nxs")
    for name in (RAW, RESTORED):
        np.testing.assert_array_equal(written[name], expected[name])
    with h5py.File(inside.output, "r") as handle:
        recorded = handle["entry/process/input_path"][()].decode()
    assert recorded == str(root / "scans" / "scan.h5")


@pytest.mark.parametrize(
    ("input_path", "output_path"),
    [
        ("link/scan.h5", "out.nxs"),  # reading through a link out of the root
        ("scans/scan.h5", "link/out.nxs"),  # writing through it
        ("../outside/scan.h5", "out.nxs"),  # climbing out
        ("scans/scan.h5", "../outside/out.nxs"),
        ("scans/scan.h5", "scans/../../outside/out.nxs"),
    ],
)
def test_paths_leaving_the_root_are_refused_and_nothing_is_written(
    root: Path, tmp_path: Path, input_path: str, output_path: str
):
    with pytest.raises(DataRootError, match="data root"):
        run_tomo(input_path, output_path, data_root=DataRoot(root), method="none")
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["scan.h5"]
    assert not (root / "out.nxs").exists()


def test_missing_input_is_one_input_error(root: Path):
    with pytest.raises(ValueError, match="file not found"):
        run_tomo("scans/absent.h5", "out.nxs", data_root=DataRoot(root), method="none")


def test_existing_output_is_kept_without_overwrite_and_the_input_never_replaced(root: Path):
    data_root = DataRoot(root)
    existing = root / "volumes" / "old.nxs"
    existing.parent.mkdir()
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        run_tomo("scans/scan.h5", "volumes/old.nxs", data_root=data_root, method="none")
    assert existing.read_bytes() == b"keep me"
    for overwrite in (False, True):
        with pytest.raises(ProtectedFileError, match="input"):
            run_tomo(
                "scans/scan.h5",
                "scans/scan.h5",
                data_root=data_root,
                method="none",
                overwrite=overwrite,
            )
    assert read_scan(root / "scans" / "scan.h5").projections.shape == (25, 2, 32)
    replaced = run_tomo(
        "scans/scan.h5", "volumes/old.nxs", data_root=data_root, method="none", overwrite=True
    )
    assert replaced.restored is None
    assert _volumes_raw(existing).shape == replaced.raw.shape
    assert list(existing.parent.iterdir()) == [existing]  # no temporary file left


def _volumes_raw(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[f"entry/{RAW}/data"][...]
