"""Bad input gets a ValueError/TypeError that names the problem, and loses nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import asirp
from asirp.methods.blind_richardson_lucy import BlindWidthWarning
from asirp.sr.consistency import ConsistencyWarning

GOOD = np.random.default_rng(0).poisson(50.0, size=(32, 32)).astype(np.float32)


@pytest.mark.parametrize(
    ("image", "error", "words"),
    [
        (np.where(np.eye(32, dtype=bool), np.nan, GOOD), ValueError, "NaN or Inf"),
        (np.where(np.eye(32, dtype=bool), np.inf, GOOD), ValueError, "NaN or Inf"),
        (np.zeros((0, 32)), ValueError, "empty"),
        (np.ones(32), ValueError, "1-D"),
        (np.ones((2, 2, 32, 32)), ValueError, "4-D"),
        (GOOD.astype(np.complex64), TypeError, "complex"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "real numbers"),
        (np.ones((2, 32)), ValueError, "too small"),
        (np.full((8, 8), 1e300), ValueError, "float32 range"),
        (GOOD * np.float32(1e15), ValueError, "rescale the map"),
        ("image.npy", TypeError, "numeric array"),
    ],
)
def test_bad_images(image, error, words):
    with pytest.raises(error, match=words):
        asirp.restore(image, "richardson_lucy", psf_sigma_px=1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"iterations": 0}, ValueError, "'iterations'.*>= 1"),
        ({"iterations": -5}, ValueError, "'iterations'.*>= 1"),
        ({"iterations": 2.5}, TypeError, "integer"),
        ({"iterations": "ten"}, TypeError, "number"),
        ({"tv_weight": float("nan")}, ValueError, "finite"),
        ({"stop": "never"}, ValueError, "allowed: fixed, discrepancy, stagnation"),
        ({"acceleration": "yes"}, TypeError, "true or false"),
        ({"colour": 3}, ValueError, "no parameter 'colour'"),
        ({"psf": np.ones((65, 65))}, ValueError, "larger than the image"),
        ({"psf": np.ones((4, 5))}, ValueError, "odd size"),
        ({"psf": -np.ones((3, 3))}, ValueError, "non-negative"),
        ({"psf": np.full((3, 3), np.nan)}, ValueError, "NaN"),
        ({"psf": np.zeros((3, 3))}, ValueError, "sums to zero"),
        ({"psf": np.ones((3, 3, 3))}, ValueError, "2-D"),
        ({"beam_fwhm_um": 50.0}, ValueError, "needs pixel_um"),
        ({"beam_fwhm_um": -50.0, "pixel_um": 10.0}, ValueError, "> 0"),
        ({"psf_sigma_px": 1.0, "beam_fwhm_um": 5.0, "pixel_um": 1.0}, ValueError, "not several"),
        ({"device": "tpu"}, ValueError, "unknown device"),
    ],
)
def test_bad_parameters(kwargs, error, words):
    describes_psf = {"psf", "beam_fwhm_um", "psf_sigma_px"} & set(kwargs)
    if not describes_psf:
        kwargs = {"psf_sigma_px": 1.0, **kwargs}
    with pytest.raises(error, match=words):
        asirp.restore(GOOD, "richardson_lucy", **kwargs)


@pytest.mark.parametrize("method", [m for m in asirp.available_methods() if m != "zssr"])
@pytest.mark.parametrize("level", [0.0, 5.0])
def test_a_constant_map_gives_a_finite_result(method, level):
    flat = np.full((32, 32), level, dtype=np.float32)
    with warnings.catch_warnings():
        # noise-free data: blind RL cannot bound the width, and the SR check has no noise scale
        warnings.simplefilter("ignore", BlindWidthWarning)
        warnings.simplefilter("ignore", ConsistencyWarning)
        result = asirp.restore(flat, method, psf_sigma_px=1.0)
    assert np.isfinite(result.image).all()
    np.testing.assert_allclose(result.image, level, atol=1e-3 * max(level, 1.0))


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown method .magic.; available: auto, .*wiener"):
        asirp.restore(GOOD, "magic", psf_sigma_px=1.0)


def test_missing_psf_is_named():
    with pytest.raises(ValueError, match="needs a PSF"):
        asirp.restore(GOOD, "wiener")
    with pytest.raises(ValueError, match="auto' needs the PSF"):
        asirp.restore(GOOD)


def test_reference_shape_must_match():
    with pytest.raises(ValueError, match="reference has shape"):
        asirp.restore(GOOD, "wiener", psf_sigma_px=1.0, reference=np.ones((8, 8)))


def test_input_survives_a_failed_call():
    image = GOOD.copy()
    with pytest.raises(ValueError, match="iterations"):
        asirp.restore(image, "richardson_lucy", psf_sigma_px=1.0, iterations=0)
    np.testing.assert_array_equal(image, GOOD)
