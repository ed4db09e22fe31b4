"""Richardson-Lucy on I(q) with the banded q-dependent Gaussian."""

from __future__ import annotations

import time

import numpy as np
import pytest

from asirp.diffraction import InstrumentProfile, blur_operator, richardson_lucy_1d

Q = np.linspace(1.0, 3.0, 1000)
PROFILE = InstrumentProfile((1.0e-5, 0.0, 2.0e-6), (1.0, 3.0))


def peak_pair(separation: float) -> np.ndarray:
    truth = np.zeros(Q.size)
    centre = int(np.searchsorted(Q, 2.0))
    step = Q[1] - Q[0]
    truth[centre] = 1000.0
    truth[centre + round(separation / step)] = 800.0
    return truth


def test_operator_is_banded_and_conserves_flux():
    matrix = blur_operator(Q, PROFILE)
    assert matrix.shape == (1000, 1000)
    assert matrix.nnz < 40 * 1000  # banded: a few sigma either side
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=0)).ravel(), 1.0, rtol=1e-12)
    assert blur_operator(Q, PROFILE) is matrix  # cached per grid and profile


def test_rl_sharpens_a_blurred_pair_and_conserves_flux():
    sigma = float(PROFILE.sigma_q_A(2.0))
    step = Q[1] - Q[0]
    truth = peak_pair(2.0 * sigma)
    blurred = blur_operator(Q, PROFILE) @ truth + 2.0
    restored = richardson_lucy_1d(blurred, Q, PROFILE, n_iter=200)
    assert restored.sum() == pytest.approx(blurred.sum(), rel=1e-9)
    # the default 20 iterations already sharpen: higher maximum, same flux
    quick = richardson_lucy_1d(blurred, Q, PROFILE)
    assert quick.max() > 1.3 * blurred.max()
    assert quick.sum() == pytest.approx(blurred.sum(), rel=1e-9)
    centre = int(np.searchsorted(Q, 2.0))
    second = centre + round(2.0 * sigma / step)

    def contrast(y):
        # the lower of the two maxima over the lowest point between them
        left = y[centre - 2 : centre + 3].max()
        right = y[second - 2 : second + 3].max()
        return min(left, right) / y[centre + 1 : second].min()

    assert contrast(blurred) < 1.1  # the pair is barely resolved...
    assert contrast(restored) > 1.5  # ...and resolved after restoration
    # a stack is restored pattern by pattern, the same way
    stack = richardson_lucy_1d(np.stack([blurred, 2 * blurred]), Q, PROFILE, n_iter=200)
    np.testing.assert_allclose(stack[0], restored, rtol=1e-10)
    np.testing.assert_allclose(stack[1], 2 * restored, rtol=1e-6)


def test_rl_with_background_keeps_it_out():
    truth = peak_pair(0.02)
    background = np.full(Q.size, 50.0)
    blurred = blur_operator(Q, PROFILE) @ truth + background
    restored = richardson_lucy_1d(blurred, Q, PROFILE, n_iter=100, background=background)
    assert restored.sum() == pytest.approx(truth.sum(), rel=0.02)


def test_rl_is_fast():
    y = blur_operator(Q, PROFILE) @ peak_pair(0.02) + 5.0
    richardson_lucy_1d(y, Q, PROFILE)
    start = time.perf_counter()
    for _ in range(20):
        richardson_lucy_1d(y, Q, PROFILE, n_iter=20)
    # ~1 ms on an idle core; generous for a loaded shared machine
    assert (time.perf_counter() - start) / 20 < 0.02


def test_rl_refuses_bad_input():
    y = np.ones(Q.size)
    for bad in (np.ones(10), np.full(Q.size, np.nan), -y):
        with pytest.raises(ValueError, match="intensity"):
            richardson_lucy_1d(bad, Q, PROFILE)
    with pytest.raises(ValueError, match="increasing"):
        richardson_lucy_1d(y, Q[::-1], PROFILE)
    with pytest.raises(ValueError, match="n_iter"):
        richardson_lucy_1d(y, Q, PROFILE, n_iter=-1)
    with pytest.raises(TypeError):
        richardson_lucy_1d(y, Q, PROFILE, n_iter=2.5)
    with pytest.raises(ValueError, match="background"):
        richardson_lucy_1d(y, Q, PROFILE, background=-y)
    with pytest.raises(TypeError):
        richardson_lucy_1d(y, Q, {"sigma": 1})
