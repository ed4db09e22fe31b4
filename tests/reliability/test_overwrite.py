"""Nothing existing is replaced unless asked, and an input never (#12).

Each case writes onto a file whose bytes are known and asserts they are intact afterwards.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import tango
import tifffile

import asirp
from asirp.cli import main
from asirp.policy import Policy
from asirp.results_io import read_restoration, write_restoration
from asirp.safe_files import OutputExistsError, ProtectedFileError, atomic_write
from asirp.xrf import write_raw_scan
from asirp_device.component import RestorationComponent
from asirp_device.settings import Settings
from tests.asirp.xrf.conftest import small_scan
from tests.asirp_device.conftest import nodb_server, small_map


@pytest.fixture(scope="module")
def result() -> asirp.Restoration:
    return asirp.restore(small_map((16, 16)), "wiener", psf_sigma_px=1.0)


def fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_ino


def test_write_restoration_refuses_existing_files_and_never_replaces_its_input(tmp_path, result):
    existing = tmp_path / "old.h5"
    existing.write_bytes(b"an earlier result")
    before = fingerprint(existing)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_restoration(existing, result)
    assert fingerprint(existing) == before

    raw = tmp_path / "raw.h5"
    raw.write_bytes(b"raw scan bytes")
    (tmp_path / "alias.h5").hardlink_to(raw)
    for target in (raw, tmp_path / "alias.h5", tmp_path / "." / "raw.h5"):
        with pytest.raises(ProtectedFileError, match="never replaced"):
            write_restoration(target, result, input_path=f"{raw}::/data", overwrite=True)
    assert raw.read_bytes() == b"raw scan bytes"

    write_restoration(existing, result, overwrite=True)  # asked for: replaced
    np.testing.assert_array_equal(read_restoration(existing)["image"], result.image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.h5", "old.h5", "raw.h5"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, result, umask, mode):
    previous = os.umask(umask)
    try:
        written = write_restoration(tmp_path / "out.h5", result)
        with atomic_write(tmp_path / "plain.txt") as output:
            output.file.write(b"text")
        policy = Policy(tmp_path / "policy.json")
        policy.pin("xrf_map", "wiener")
    finally:
        os.umask(previous)
    for path in (written, tmp_path / "plain.txt", tmp_path / "policy.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def _restore_argv(tmp_path: Path, source: Path, *extra: str) -> list[str]:
    return [
        "restore",
        str(source),
        "-o",
        str(tmp_path / "out.h5"),
        "--method",
        "wiener",
        "--psf-sigma-px",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def test_cli_plot_never_replaces_the_input_or_an_existing_figure(tmp_path, capsys):
    raw = tmp_path / "raw.tif"
    tifffile.imwrite(raw, small_map((16, 16)))
    before = fingerprint(raw)
    for extra in (("--plot", str(raw)), ("--plot", str(raw), "--overwrite")):
        assert main(_restore_argv(tmp_path, raw, *extra)) == 2
        assert "is the input file" in capsys.readouterr().err
        assert fingerprint(raw) == before
    assert not (tmp_path / "out.h5").exists()  # refused before any work

    figure = tmp_path / "figure.png"
    figure.write_bytes(b"an earlier figure")
    assert main(_restore_argv(tmp_path, raw, "--plot", str(figure))) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert figure.read_bytes() == b"an earlier figure"

    assert main(_restore_argv(tmp_path, raw, "--plot", str(tmp_path / "new.png"))) == 0
    out_bytes = (tmp_path / "out.h5").read_bytes()
    assert main(_restore_argv(tmp_path, raw)) == 2  # out.h5 exists now
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "out.h5").read_bytes() == out_bytes
    assert main(_restore_argv(tmp_path, raw, "--plot", str(figure), "--overwrite")) == 0
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert fingerprint(raw) == before


def test_xrf_map_never_replaces_its_raw_scan(tmp_path, capsys):
    folder = tmp_path / "DIR"
    raw = write_raw_scan(folder / "map.h5", small_scan())
    before = fingerprint(raw)
    for extra in ((), ("--overwrite",)):
        argv = ["xrf-map", str(raw), "--element", "Cu", "-o", str(folder), *extra]
        assert main(argv) == 2
        assert "raw scan" in capsys.readouterr().err
        assert fingerprint(raw) == before
    assert sorted(p.name for p in folder.iterdir()) == ["map.h5"]

    out = tmp_path / "out"
    argv = ["xrf-map", str(raw), "--element", "Cu", "-o", str(out)]
    assert main(argv) == 0
    first = (out / "map.h5").read_bytes()
    assert main(argv) == 2  # a second run into the same folder
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "map.h5").read_bytes() == first
    assert main([*argv, "--overwrite"]) == 0


def test_a_json_file_that_is_not_a_policy_is_never_rewritten(tmp_path):
    foreign = tmp_path / "settings.json"
    foreign.write_text(json.dumps({"beamline": "ID21", "version": 3, "motors": ["x", "y"]}))
    before = fingerprint(foreign)
    with pytest.raises(ValueError, match="not an ASIRP policy file"):
        Policy.load(foreign)
    with pytest.raises(ValueError, match="not an ASIRP policy file"):
        Policy(foreign).pin("xrf_map", "wiener")
    with pytest.raises(ValueError, match="not an ASIRP policy file"):
        asirp.select(small_map((16, 16)), psf_sigma_px=1.0, policy=foreign)
    assert fingerprint(foreign) == before

    legacy = tmp_path / "old_policy.json"  # written before the format marker
    legacy.write_text(json.dumps({"version": 1, "pinned": {}, "remembered": {}}))
    Policy.load(legacy).pin("xrf_map", "wiener")
    assert json.loads(legacy.read_text())["format"] == "asirp-policy"


def test_component_save_result_keeps_existing_files_and_the_input(tmp_path):
    np.save(tmp_path / "raw.npy", small_map((16, 16)))
    (tmp_path / "taken.h5").write_bytes(b"someone's file")
    raw_before = fingerprint(tmp_path / "raw.npy")
    for overwrite in (False, True):
        component = RestorationComponent(
            Settings(iterations=2), data_root=tmp_path, overwrite_results=overwrite
        )
        component.load_image("raw.npy")
        component.start()
        component.wait(60)
        written = component.save_result("result.h5")
        assert written == tmp_path.resolve() / "result.h5"
        if not overwrite:
            with pytest.raises(OutputExistsError, match="OverwriteResults"):
                component.save_result("taken.h5")
            assert (tmp_path / "taken.h5").read_bytes() == b"someone's file"
            (tmp_path / "result.h5").unlink()
        else:
            component.save_result("taken.h5")
            assert read_restoration(tmp_path / "taken.h5")["method"] == "richardson_lucy"
    # the input of the result, as HDF5 so SaveResult could name it: never replaced
    component = RestorationComponent(
        Settings(iterations=2), data_root=tmp_path, overwrite_results=True
    )
    component.load_image("result.h5::/entry/restored/data")
    component.start()
    component.wait(60)
    result_before = fingerprint(tmp_path / "result.h5")
    with pytest.raises(ProtectedFileError, match="never replaced"):
        component.save_result("result.h5")
    assert fingerprint(tmp_path / "result.h5") == result_before
    assert fingerprint(tmp_path / "raw.npy") == raw_before


def test_device_save_result_onto_an_existing_file_is_refused(tmp_path):
    raw = tmp_path / "raw_scan.h5"
    raw.write_bytes(b"raw scan: irreplaceable")
    np.save(tmp_path / "map.npy", small_map((16, 16)))
    with nodb_server({"DataRoot": str(tmp_path), "DefaultIterations": 3}) as trl:
        device = tango.DeviceProxy(trl)
        device.LoadImage("map.npy")
        device.Restore()
        _wait(device)
        with pytest.raises(tango.DevFailed) as caught:
            device.SaveResult("raw_scan.h5")
        error = caught.value.args[0]
        assert error.reason == "ASIRP_Exists", error
        assert "OverwriteResults" in error.desc
        assert raw.read_bytes() == b"raw scan: irreplaceable"
        assert device.SaveResult("fresh.h5") == str(tmp_path.resolve() / "fresh.h5")
        device.Restore()  # still usable
        _wait(device)
        assert device.state() == tango.DevState.ON, device.status()


def _wait(device: tango.DeviceProxy, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while device.state() == tango.DevState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert device.state() == tango.DevState.ON, device.status()
