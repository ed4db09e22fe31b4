"""The held-out SR evaluation set of a different generator (asirp.sr.evalset)."""

from __future__ import annotations

import ast
import inspect

import h5py
import numpy as np
import pytest
import torch

import asirp.sr.data as training_data
import asirp.sr.train as training
import asirp.sr.train_denoiser as denoiser_training
from asirp.io import InputFileError
from asirp.psf import resolve_psf
from asirp.sr import evalset
from asirp.sr.degrade import degrade
from asirp.sr.evalset import CASES, EvalCase, blur_area_sample, evaluation_set
from tests.conftest import TOOTH_H5


@pytest.fixture(scope="module")
def sets() -> dict[int, list[EvalCase]]:
    return {scale: evaluation_set(scale) for scale in evalset.SCALES}


def _imported_modules(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_shapes_dtypes_and_size(sets):
    for scale, cases in sets.items():
        assert 8 <= len(cases) <= 12
        assert len({case.name for case in cases}) == len(cases)
        for case in cases:
            assert case.scale == scale
            assert case.truth.dtype == np.float64
            assert case.measured.dtype == np.float32
            assert max(case.truth.shape) <= 256
            assert case.truth.shape == tuple(scale * n for n in case.measured.shape)
            assert case.source
            assert case.peak_counts > 0
            assert case.background >= 0
            assert np.all(case.measured >= 0)
            assert np.all(case.measured == np.round(case.measured))
    # the same content at both scales
    for x2, x4 in zip(sets[2], sets[4], strict=True):
        assert x2.name == x4.name
        np.testing.assert_array_equal(x2.truth, x4.truth)


def test_deterministic_and_seeded(sets):
    again = evaluation_set(4, names=["fibres", "coins"])
    by_name = {case.name: case for case in sets[4]}
    for case in again:
        np.testing.assert_array_equal(case.measured, by_name[case.name].measured)
        np.testing.assert_array_equal(case.truth, by_name[case.name].truth)
    other = evaluation_set(4, seed=evalset.NOISE_SEED + 1, names=["fibres"])[0]
    np.testing.assert_array_equal(other.truth, by_name["fibres"].truth)
    assert not np.array_equal(other.measured, by_name["fibres"].measured)
    # noise seeds differ between cases and scales
    seeds = [case.seed for cases in sets.values() for case in cases]
    assert len(set(seeds)) == len(seeds)


def test_measured_is_the_degraded_truth_within_poisson_noise(sets):
    for cases in sets.values():
        for case in cases:
            clean = blur_area_sample(case.truth, case.sigma_px, case.scale)
            assert clean.shape == case.measured.shape
            # the mean over the map agrees within 4 standard errors of Poisson noise
            error = abs(case.measured.mean() - clean.mean())
            assert error < 4 * np.sqrt(clean.mean() / clean.size), case.name
            # and the residuals have Poisson variance: standardised, about unit variance
            bright = clean > 5
            z = (case.measured[bright] - clean[bright]) / np.sqrt(clean[bright])
            assert 0.8 < z.var() < 1.2, case.name


def test_isotropic_forward_model_is_asirps(sets):
    for case in sets[2]:
        if case.anisotropic:
            continue
        ours = blur_area_sample(case.truth, case.sigma_px, case.scale)
        fine = torch.from_numpy(case.truth)[None]
        theirs = degrade(fine, case.sigma_px[0], case.scale)[0].numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * case.truth.max())


def test_anisotropic_beam_blurs_rows_and_columns_differently():
    truth = np.zeros((64, 64))
    truth[32, 32] = 1.0
    spot = blur_area_sample(truth, (1.2, 0.4), 2)
    rows, cols = spot.sum(axis=1) / spot.sum(), spot.sum(axis=0) / spot.sum()
    centres = np.arange(32)
    width = [np.sqrt((p * (centres - (p * centres).sum()) ** 2).sum()) for p in (rows, cols)]
    assert width[0] > 2 * width[1]


def test_methods_are_told_the_beam_as_restore_expects(sets):
    kinds = {case.name: case for case in sets[2]}
    coins, cell = kinds["coins"], kinds["cell"]
    assert coins.anisotropic
    assert coins.psf_sigma_px == (1.2, 0.7)
    assert not cell.anisotropic
    assert cell.psf_sigma_px == 0.9
    kernel = resolve_psf(coins.measured.shape, psf_sigma_px=coins.psf_sigma_px).array
    assert kernel.shape[0] > kernel.shape[1]
    assert coins.beam_sigma_px == pytest.approx(np.sqrt(1.2 * 0.7))


def test_outside_the_training_distribution(sets):
    cases = sets[2]
    low, high = training_data.SIGMA_RANGE_LR
    sigmas = [s for case in cases for s in case.sigma_px]
    assert min(sigmas) < low
    assert max(sigmas) > high
    assert any(case.anisotropic for case in cases)
    peak_low, peak_high = training_data.PEAK_COUNTS_RANGE
    peaks = [case.peak_counts for case in cases]
    assert min(peaks) < peak_low
    assert max(peaks) > peak_high
    assert max(case.background for case in cases) > 0.2


def test_nothing_comes_from_the_training_generators():
    training_values = set(map(id, vars(training_data).values()))
    training_values |= set(map(id, training_data.GENERATORS.values()))
    for spec in CASES:
        assert spec.content.__module__ == "asirp.sr.evalset", spec.name
        assert id(spec.content) not in training_values, spec.name
    assert not any(name.startswith("asirp.sr.data") for name in _imported_modules(evalset))
    # and training never reads the evaluation set
    for module in (training_data, training, denoiser_training):
        assert not any("evalset" in name for name in _imported_modules(module))
    # the seeds differ from those training (0; the prior denoiser's) and the old held-out set
    # (7, 20240607) use
    used = {0, 7, 20240607, denoiser_training.SEED, denoiser_training.SEED + 1}
    assert {evalset.CONTENT_SEED, evalset.NOISE_SEED}.isdisjoint(used)


def test_real_case_is_the_tooth_sinogram(sets):
    case = next(case for case in sets[2] if case.name == "tooth_sinogram")
    assert evalset.TOOTH_H5 == TOOTH_H5
    assert "tooth.h5" in case.source
    with h5py.File(TOOTH_H5, "r") as handle:  # an independent read of the same file
        data = handle["exchange/data"][:180, :, 160:416].astype(np.float64)
        white = handle["exchange/data_white"][:, :, 160:416].astype(np.float64).mean(axis=0)
        dark = handle["exchange/data_dark"][:, :, 160:416].astype(np.float64).mean(axis=0)
    absorption = -np.log(np.clip(((data - dark) / (white - dark)).mean(axis=1), 1e-3, None))
    content = (case.truth / case.peak_counts) - case.background  # back to [0, 1]
    correlation = np.corrcoef(content.ravel(), absorption.ravel())[0, 1]
    assert correlation > 0.9999
    assert case.truth.shape == (180, 256)
    assert case.measured.shape == (90, 128)


def test_bad_real_files_raise_one_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        evalset.tooth_sinogram(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputFileError, match="not an HDF5 file"):
        evalset.tooth_sinogram(tmp_path / "text.h5")
    with h5py.File(tmp_path / "small.h5", "w") as handle:
        for key in ("data", "data_white", "data_dark"):
            handle[f"exchange/{key}"] = np.ones((4, 2, 8), dtype=np.float32)
    with pytest.raises(InputFileError, match="at least"):
        evalset.tooth_sinogram(tmp_path / "small.h5")


def test_bad_requests_raise_one_clear_error():
    with pytest.raises(ValueError, match="scale must be one of"):
        evaluation_set(3)
    with pytest.raises(ValueError, match="unknown case"):
        evaluation_set(2, names=["mesh"])
    with pytest.raises(ValueError, match="beam too wide"):
        blur_area_sample(np.ones((8, 8)), (3.0, 3.0), 2)
