"""Replay: every method's result re-runs bit for bit from its file; inputs are checked by hash."""

from __future__ import annotations

import functools
import json

import h5py
import numpy as np
import pytest
import torch

import asirp
import asirp.sr.internal as internal_module
from asirp import threads
from asirp.cli import main
from asirp.io import InputFileError
from asirp.metrics import blur
from asirp.provenance import SEEDED_METHODS, array_sha256
from asirp.psf import gaussian_psf
from asirp.replay import compare_images, replay
from asirp.restore import Restoration
from asirp.results_io import read_restoration, write_restoration

LENIENT = {"consistency_tolerance": 1000.0}  # tiny trainings and 24 px maps: no warning
TINY_ZSSR = {"iterations": 6, "crop": 16, "batch": 2, "eval_every": 2, "channels": 8, "depth": 3}
SETTINGS = {
    "richardson_lucy": {"psf_sigma_px": 1.2, "iterations": 4, "stop": "fixed"},
    "landweber": {"psf_sigma_px": 1.2, "iterations": 4, "stop": "fixed"},
    "van_cittert": {"psf_sigma_px": 1.2},
    "wiener": {"psf_sigma_px": 1.2},
    "tikhonov": {"psf_sigma_px": 1.2},
    "unsupervised_wiener": {"psf_sigma_px": 1.2, "max_samples": 20},  # > 15 burn-in samples
    "blind_richardson_lucy": {
        "psf_sigma_px": 1.0,
        "iterations": 3,
        "search_iterations": 10,
        "search_window_px": 24,
    },
    "fca_sr": {"psf_sigma_px": 0.8, **LENIENT},  # the shipped weights
    "beam_sr": {"psf_sigma_px": 0.8, **LENIENT},
    "rrdb_sr": {"psf_sigma_px": 0.8, **LENIENT},
    "rl_sr": {"psf_sigma_px": 0.8, "iterations": 4, "stop": "fixed", **LENIENT},
    "zssr": {"psf_sigma_px": 0.8, **TINY_ZSSR, **LENIENT},
}
"""A tiny run of every built-in method (24 x 24 maps, a few iterations)."""


@pytest.fixture(autouse=True)
def two_torch_threads():
    # at most two: the reductions of a 24 px map still split across threads
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield
    torch.set_num_threads(previous)


def _map(seed: int = 0, shape=(24, 24)) -> np.ndarray:
    """Poisson counts of a few blurred spots on a background, integers (H, W)."""
    rng = np.random.default_rng(seed)
    truth = np.full(shape, 20.0)
    for row, col in rng.integers(3, min(shape) - 3, size=(6, 2)):
        truth[row, col] += 400.0
    return rng.poisson(blur(truth, gaussian_psf(1.2))).astype(np.int32)


@functools.cache
def _restored(method: str, seed: int) -> Restoration:
    return asirp.restore(_map(), method, device="cpu", seed=seed, **SETTINGS[method])


def _write(tmp_path, result: Restoration, image: np.ndarray, name: str = "result.h5"):
    source = tmp_path / "input.npy"
    np.save(source, image)
    target = tmp_path / name
    write_restoration(target, result, input_path=source)
    return target, source


@pytest.mark.parametrize("method", asirp.available_methods())
def test_every_method_replays_bit_identically(method, tmp_path):
    assert method in SETTINGS, f"give {method!r} a tiny setting in SETTINGS"
    result = _restored(method, 0)
    path, source = _write(tmp_path, result, _map())
    report, again = replay(path)
    assert report.identical, report.summary()
    assert report.differing_pixels == 0
    assert report.max_abs_difference == 0.0
    assert report.method == method
    assert report.input_source == str(source)
    np.testing.assert_array_equal(again.image, result.image)
    assert report.environment == []  # the same machine and libraries


@pytest.mark.parametrize("method", asirp.available_methods())
def test_the_seed_is_recorded_for_the_methods_that_use_it(method):
    first, other = _restored(method, 0), _restored(method, 1)
    uses_seed = not np.array_equal(first.image, other.image)
    assert uses_seed == (method in SEEDED_METHODS)
    assert first.provenance()["seed"] == (0 if uses_seed else None)
    assert other.provenance()["replay_seed"] == 1


def test_provenance_records_input_versions_device_threads_and_the_request():
    image = _map()
    psf = gaussian_psf(1.3).astype(np.float64) * 7.0  # not normalised: recorded as given
    with threads.fixed_threads(2):
        result = asirp.restore(image, "richardson_lucy", psf=psf, iterations=3, device="cpu")
    record = result.provenance()
    assert record["input_sha256"] == array_sha256(image)
    assert record["input_shape"] == [24, 24]
    assert record["input_dtype"] == "<i4"
    assert set(record["versions"]) >= {"asirp", "numpy", "scipy", "torch", "numba", "h5py"}
    assert record["versions"]["torch"] == torch.__version__
    assert record["device"] == "cpu"
    assert record["device_name"]
    assert record["threads"] == 2
    assert record["params"]["threads"] == 2
    assert record["params_requested"] == {"iterations": 3}
    assert record["params_resolved"]["iterations"] == 3
    assert record["params_resolved"]["stop"] == "discrepancy"  # the default that applied
    assert "iterations_run" in record["params"]
    assert "iterations_run" not in record["params_resolved"]
    assert record["method_requested"] == "richardson_lucy"
    np.testing.assert_array_equal(np.array(record["psf_given"]["values"]), psf)
    json.dumps(record)  # all of it JSON


def test_array_hash_is_of_values_dtype_and_shape_not_layout():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    digest = array_sha256(values)
    assert array_sha256(np.asfortranarray(values)) == digest
    assert array_sha256(values.astype(">f4")) == digest  # big-endian file, same values
    assert array_sha256(values.astype(np.float64)) != digest
    assert array_sha256(values.reshape(4, 3)) != digest
    changed = values.copy()
    changed[2, 3] = np.nextafter(changed[2, 3], np.float32(100))
    assert array_sha256(changed) != digest
    with pytest.raises(TypeError, match="numeric"):
        array_sha256(np.array(["a"]))


def test_a_changed_input_is_refused_by_its_hash(tmp_path):
    image = _map()
    path, source = _write(tmp_path, _restored("wiener", 0), image)
    changed = image.copy()
    changed[5, 5] += 1
    np.save(source, changed)
    with pytest.raises(InputFileError, match=r"not the one the result was made from.*sha256"):
        replay(path)
    assert main(["replay", str(path)]) == 2
    np.save(tmp_path / "moved.npy", image)  # the right values elsewhere are accepted
    report, _ = replay(path, input_path=tmp_path / "moved.npy")
    assert report.identical


def test_the_input_stored_in_the_result_file_is_used_when_no_path_is_recorded(tmp_path):
    image = _map()
    result = _restored("tikhonov", 0)
    path = tmp_path / "self_contained.h5"
    write_restoration(path, result, input_image=image)
    report, _ = replay(path)
    assert report.identical
    assert report.input_source == "stored in the result file"
    again = tmp_path / "again.h5"
    assert main(["replay", str(path), "-o", str(again)]) == 0
    assert replay(again)[0].identical  # the replayed file keeps the copy of the input
    bare = tmp_path / "bare.h5"
    write_restoration(bare, result)
    with pytest.raises(InputFileError, match=r"names no input.*--input"):
        replay(bare)


def test_a_relative_input_path_is_found_beside_the_result(tmp_path, monkeypatch):
    image = _map()
    np.save(tmp_path / "counts.npy", image)
    path = tmp_path / "result.h5"
    write_restoration(path, _restored("van_cittert", 0), input_path="counts.npy")
    monkeypatch.chdir(tmp_path.parent)  # the relative path no longer resolves from here
    report, _ = replay(path)
    assert report.identical
    assert report.input_source == str(tmp_path / "counts.npy")


def test_auto_replays_the_method_it_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("ASIRP_POLICY", str(tmp_path / "policy.json"))
    image = _map(shape=(40, 40))
    for candidates in (None, ["identity"]):
        result = asirp.restore(
            image, "auto", psf_sigma_px=1.2, mode="cheap", remember=False, candidates=candidates
        )
        assert result.provenance()["method_requested"] == "auto"
        assert result.provenance()["seed"] == 0  # the split is seeded
        path, _ = _write(tmp_path, result, image, name=f"auto_{result.method}.h5")
        report, _ = replay(path)
        assert report.identical, report.summary()
        assert report.method == result.method != "auto"
    assert result.method == "identity"


def test_a_different_result_is_reported_with_its_size(tmp_path, capsys):
    path, _ = _write(tmp_path, _restored("landweber", 0), _map())
    with h5py.File(path, "r+") as handle:
        data = handle["entry/restored/data"]
        stored = data[()]
        stored[3, 4] += 0.5
        data[...] = stored
    report, _ = replay(path)
    assert not report.identical
    assert report.differing_pixels == 1
    assert report.max_abs_difference == pytest.approx(0.5, abs=1e-3)
    assert main(["replay", str(path)]) == 1
    assert "different:" in capsys.readouterr().out


def test_command_line_reports_json_writes_the_replay_and_refuses_to_overwrite(tmp_path, capsys):
    path, _ = _write(tmp_path, _restored("richardson_lucy", 0), _map())
    assert main(["replay", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical"] is True
    assert report["differing_pixels"] == 0
    output = tmp_path / "again.h5"
    assert main(["replay", str(path), "-o", str(output)]) == 0
    assert "bit-identical" in capsys.readouterr().out
    np.testing.assert_array_equal(
        read_restoration(output)["image"], read_restoration(path)["image"]
    )
    assert main(["replay", str(path), "-o", str(output)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["replay", str(path), "-o", str(output), "--overwrite"]) == 0
    assert main(["replay", str(path), "-o", str(path), "--overwrite"]) == 2
    assert main(["replay", str(tmp_path / "missing.h5")]) == 2
    assert "asirp: error:" in capsys.readouterr().err


def test_a_result_without_a_replay_record_is_refused(tmp_path, capsys):
    result = _restored("wiener", 0)
    old = Restoration(result.image, result.method, result.params, result.psf, {}, 0.0)
    path, _ = _write(tmp_path, old, _map())
    with pytest.raises(InputFileError, match=r"lacks .*input_sha256"):
        replay(path)
    assert main(["replay", str(path)]) == 2


def test_zssr_gives_the_same_result_twice_and_never_stops_on_the_clock(monkeypatch):
    clock = iter(range(0, 10**9, 1000))  # every reading 1000 s after the last one
    monkeypatch.setattr(internal_module.time, "perf_counter", lambda: float(next(clock)))
    image = _map(3)
    params = {**TINY_ZSSR, "eval_every": 3, "patience": 100, **LENIENT}
    with threads.fixed_threads(1):  # the engine adapts threads to the load: pin them
        first = asirp.restore(image, "zssr", psf_sigma_px=0.8, seed=2, **params)
        again = asirp.restore(image, "zssr", psf_sigma_px=0.8, seed=2, **params)
    assert np.array_equal(first.image, again.image)
    assert first.params["iterations_run"] == 6  # all of them, however late the clock says
    assert first.params["stopped_by"] == "iterations"
    assert "time_budget_s" not in {p.name for p in asirp.get_method("zssr").parameters}


def test_zssr_leaves_the_global_random_state_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    asirp.restore(_map(), "zssr", psf_sigma_px=0.8, **TINY_ZSSR, **LENIENT)
    assert torch.equal(torch.rand(3), expected)


def test_fixed_threads_pins_the_count_whatever_the_load(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 1)  # a busy machine
    with threads.compute_threads() as adaptive:
        assert adaptive == 1
    with threads.fixed_threads(2, blas=1) as count:
        assert count == 2
        with threads.compute_threads() as pinned:
            assert pinned == 2 == torch.get_num_threads()
        assert threads.blas_threads() == 1
        assert threads.pinned_threads() == 2
    assert threads.pinned_threads() is None
    with pytest.raises(ValueError, match="threads"), threads.fixed_threads(0):
        pass


def test_compare_images_counts_bits():
    stored = np.zeros((2, 3), np.float32)
    assert compare_images(stored, stored.copy()) == (True, 0.0, 0)
    assert compare_images(stored, -stored)[0] is False  # -0.0: other bits
    assert compare_images(stored, np.zeros((3, 2), np.float32))[1] == float("inf")


def test_a_replay_on_a_busy_machine_keeps_the_recorded_thread_count(tmp_path, monkeypatch):
    # zssr's training sums differ in the last bits between 1 and 2 threads (20 of 2304 pixels)
    image = _map()
    with threads.fixed_threads(2):
        result = asirp.restore(image, "zssr", psf_sigma_px=0.8, **TINY_ZSSR, **LENIENT)
    path, _ = _write(tmp_path, result, image)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)  # unpinned, the count would be 1
    report, again = replay(path)
    assert again.params["threads"] == 2
    assert report.threads == 2
    assert report.identical, report.summary()


def test_an_xrf_map_restoration_replays_from_the_map_in_its_own_file(tmp_path, monkeypatch):
    from tests.conftest import APS_STEP_MDA

    out = tmp_path / "fe"
    command = ["xrf-map", str(APS_STEP_MDA), "-o", str(out), "--element", "Fe"]
    assert main([*command, "--restore", "richardson_lucy", "--beam-fwhm-um", "50"]) == 0
    monkeypatch.chdir(tmp_path)  # another folder: the input is found beside the result
    report, _ = replay(out / "map.h5")
    assert report.identical
    assert report.input_source.endswith("map.h5::/entry/map/data")
