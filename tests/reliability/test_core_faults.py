"""Core-engine faults of the security issue: one clear error (or a correct result), never a
traceback from deep inside, a silently wrong map or a memory bomb.

One test per finding: the numba cache without a writable location, tile/overlap of the
super-resolution methods, ``cancel=`` that is not an event, a tiny ``step_um`` for an XRF map, a
glitched encoder position, a deeply nested ``parameters_json`` and weight files whose metadata
asks for gigabytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import asirp
from asirp.sr import WeightsArchitectureError, WeightsTooLargeError
from asirp.sr.weights import MAX_HEADER_BYTES, MAX_WEIGHTS_BYTES
from asirp.xrf import build_map, infer_grid, write_raw_scan
from asirp.xrf.maps import MAX_MAP_CELLS
from tests.asirp.xrf.conftest import small_scan

PACKAGE = Path(asirp.__file__).parent


def _counts(shape=(16, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(50.0, shape).astype(np.float32)


# --- 1. numba cache -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)  # a fresh process compiles the kernels (about 30 s)
def test_restoration_works_when_no_numba_cache_location_is_writable(tmp_path):
    """A read-only installation run with an unusable home: the cache moves to a private folder.

    The package is copied to a folder whose ``__pycache__`` cannot be created (a file of that
    name: unwritable even for root), HOME is ``/dev/null`` (no ``~/.cache``) and
    ``NUMBA_CACHE_DIR`` is unset: numba alone refuses to compile the kernels ("cannot cache
    function"), so every restoration failed.
    """
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "asirp", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "asirp" / "__pycache__").write_text("not a folder")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")
    }
    env.update(HOME="/dev/null", TMPDIR=str(scratch), PYTHONPATH=str(site))
    script = (
        "import numpy as np, asirp, asirp._kernels as k\n"
        f"assert asirp.__file__.startswith({str(site)!r}), asirp.__file__\n"
        "image = np.random.default_rng(0).poisson(50.0, (24, 24)).astype(np.float32)\n"
        "result = asirp.restore(image, 'richardson_lucy', psf_sigma_px=1.5, iterations=3)\n"
        "print('cached', k.CACHED, result.image.shape)\n"
    )
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "cached True (24, 24)" in run.stdout
    user = os.getuid() if hasattr(os, "getuid") else os.getpid()
    folder = scratch / f"asirp-numba-cache-{user}"
    assert folder.is_dir()
    assert (folder.stat().st_mode & 0o077) == 0  # private: cached kernels are loaded as code
    assert list(folder.rglob("*.nbi"))  # the kernels really were cached there


# --- 2. tile and overlap ------------------------------------------------------------------------


def test_sr_overlap_beyond_half_the_tile_is_one_clear_error_before_work(monkeypatch):
    import asirp.sr.runner as runner
    import asirp.sr.zssr as zssr

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(runner, "network_for", no_work)
    monkeypatch.setattr(zssr, "train_zssr", no_work)
    image = _counts((64, 64))
    with pytest.raises(ValueError, match=r"overlap \(256 px\).*less than half the tile \(16 px"):
        asirp.restore(image, "fca_sr", tile=16, overlap=256)
    with pytest.raises(ValueError, match=r"0 <= overlap <= 7"):
        asirp.restore(image, "rrdb_sr", tile=16, overlap=8)
    with pytest.raises(ValueError, match=r"automatic tile on cpu"):
        asirp.restore(image, "zssr", overlap=200, device="cpu")


# --- 3. cancel= ---------------------------------------------------------------------------------


def test_cancel_that_is_not_an_event_is_a_type_error_before_work(monkeypatch):
    restore_module = sys.modules["asirp.restore"]
    monkeypatch.setattr(restore_module, "resolve_psf", lambda *a, **k: pytest.fail("work began"))
    image = _counts()
    for cancel in (True, "yes", 1):
        with pytest.raises(
            TypeError, match=r"cancel must be a threading.Event \(or an object with is_set\(\)\)"
        ):
            asirp.restore(image, "richardson_lucy", psf_sigma_px=1.5, cancel=cancel)
    with pytest.raises(TypeError, match="progress must be a callable"):
        asirp.restore(image, "richardson_lucy", psf_sigma_px=1.5, progress=0.5)
    monkeypatch.undo()
    result = asirp.restore(
        image, "richardson_lucy", psf_sigma_px=1.5, iterations=2, cancel=threading.Event()
    )
    assert result.image.shape == image.shape


# --- 4. a tiny step_um --------------------------------------------------------------------------


def test_tiny_step_um_is_refused_with_the_limit(tmp_path):
    path = write_raw_scan(tmp_path / "raw.h5", small_scan(shape=(6, 5)))
    with pytest.raises(ValueError, match=rf"at most {MAX_MAP_CELLS} cells.*larger step_um"):
        build_map(path, "Cu", step_um=1e-3)
    with pytest.raises(ValueError, match=rf"at most {MAX_MAP_CELLS} cells"):
        build_map(path, "Cu", step_um=(1e-300, 10.0))
    assert build_map(path, "Cu", step_um=5.0).shape == (11, 9)  # finer than measured: fine


# --- 5. a glitched encoder position -------------------------------------------------------------


@pytest.mark.parametrize("nominal", [False, True], ids=["estimated", "metadata-extents"])
def test_glitched_position_is_masked_not_a_giant_map(tmp_path, caplog, nominal):
    scan = small_scan(shape=(24, 20))
    clean = infer_grid(scan.x_um, scan.y_um, scan.line_index)
    assert clean.shape == (24, 20)
    glitch = 137
    x = scan.x_um.copy()
    x[glitch] = 1e5  # µm: one bad encoder reading
    metadata = dict(scan.metadata)
    if nominal:
        metadata["extents_um"] = {"x": [0.0, 190.0], "y": [0.0, 230.0]}
    path = write_raw_scan(
        tmp_path / "glitch.h5", dataclasses.replace(scan, x_um=x, metadata=metadata)
    )
    with caplog.at_level(logging.WARNING, logger="asirp.xrf.maps"):
        cu = build_map(path, "Cu")
    assert cu.shape == (24, 20)
    row, col = clean.rows[glitch], clean.cols[glitch]
    assert not cu.mask[row, col]
    assert np.isnan(cu.masked()[row, col])
    assert cu.mask.sum() == 24 * 20 - 1
    np.testing.assert_allclose(cu.x_um, clean.x_um)
    assert any("1 of 480 scan positions" in r.getMessage() for r in caplog.records)


# --- 6. parameters_json nested 100,000 deep -----------------------------------------------------


def test_deep_parameters_json_is_one_clear_value_error():
    from asirp_device.settings import parse_parameters

    with pytest.raises(ValueError, match="at most 65536"):
        parse_parameters("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="at most 65536"):
        parse_parameters('{"a": ' * 20_000 + "1" + "}" * 20_000)  # 140 k characters
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_parameters('{"a": ' * 9_000 + "1" + "}" * 9_000)  # 63 k chars, deeper than Python
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_parameters('{"a": ' * 40 + "1" + "}" * 40)
    assert parse_parameters('{"tv_weight": 0.01, "stop": "fixed"}') == {
        "tv_weight": 0.01,
        "stop": "fixed",
    }


# --- 7. weight files that ask for gigabytes -----------------------------------------------------


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to measure the peak memory")


def _tiny_safetensors(path: Path, arch: str, config: dict) -> Path:
    from safetensors.torch import save_file

    metadata = {"format": "asirp-sr", "arch": arch, "scale": "2", "config": json.dumps(config)}
    save_file({"w": torch.zeros(1)}, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    ("arch", "config", "error"),
    [
        ("fca_sr", {"channels": 2500, "groups": 2, "blocks": 2, "reduction": 4}, "too large"),
        (
            "rrdb_sr",
            {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 2500, "num_block": 2, "num_grow_ch": 12},
            "too large",
        ),
        # Within the limits (450 MiB of parameters) but the file holds none of them.
        ("fca_sr", {"channels": 1024, "groups": 2, "blocks": 2, "reduction": 4}, "architecture"),
    ],
)
def test_tiny_weight_file_cannot_allocate_gigabytes(tmp_path, arch, config, error):
    path = _tiny_safetensors(tmp_path / "bomb.safetensors", arch, config)
    assert path.stat().st_size < 400
    expected = WeightsTooLargeError if error == "too large" else WeightsArchitectureError
    image = _counts()
    _reset_peak_rss()
    before = _current_rss_mib()
    with pytest.raises(expected, match=r"at most 1024 is accepted|do not fit"):
        asirp.restore(image, arch, weights=str(path))
    assert _peak_rss_mib() - before < 100


def test_weight_file_headers_and_sizes_are_checked_before_reading(tmp_path):
    from asirp.sr.weights import load_weights

    # A header that declares 1 GiB of tensors in a file of a few hundred bytes.
    header = {"w": {"dtype": "F32", "shape": [1 << 28], "data_offsets": [0, 1 << 30]}}
    text = json.dumps(header).encode()
    big = tmp_path / "declared.safetensors"
    big.write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(WeightsTooLargeError, match=f"at most {MAX_WEIGHTS_BYTES >> 20}.0 MiB"):
        load_weights(big)
    # A header length of 1 TiB.
    long_header = tmp_path / "header.safetensors"
    long_header.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(WeightsTooLargeError, match=f"at most {MAX_HEADER_BYTES >> 20}.0 MiB"):
        load_weights(long_header)
    # A .pth above the limit (sparse: no disk used) is refused before torch.load.
    huge = tmp_path / "huge.pth"
    with huge.open("wb") as handle:
        handle.truncate(MAX_WEIGHTS_BYTES + 1)
    with pytest.raises(WeightsTooLargeError, match="weight files of at most"):
        load_weights(huge)
