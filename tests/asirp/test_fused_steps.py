"""The fused epilogues of the separable kernels equal the unfused operations they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asirp.blur import BlurOperator
from asirp.psf import gaussian_psf


def _operator(boundary: str, shape=(37, 29)) -> BlurOperator:
    operator = BlurOperator(torch.from_numpy(gaussian_psf((1.5, 2.0))), shape, boundary)
    assert operator.path == "direct"
    return operator


@pytest.mark.parametrize("boundary", ["extend", "zero", "periodic"])
@pytest.mark.parametrize("with_previous", [False, True])
def test_multiplicative_update_matches_adjoint_and_difference(boundary, with_previous):
    rng = np.random.default_rng(3)
    operator = _operator(boundary)
    batch, object_shape = 2, operator.object_shape
    data = rng.uniform(0.5, 2.0, (batch, *operator.data_shape)).astype(np.float32)
    factor = rng.uniform(1.0, 9.0, (batch, *object_shape)).astype(np.float32)
    denominator = rng.uniform(0.5, 1.0, (1, *object_shape)).astype(np.float32)
    previous = rng.normal(size=(batch, *object_shape)).astype(np.float32)
    out = np.empty_like(factor)
    step = np.empty_like(factor)

    sums = operator._direct.multiplicative_update(
        data, factor, denominator, out, step, previous if with_previous else None
    )

    expected = np.empty_like(factor)
    operator._direct.multiplicative_adjoint(data, factor, denominator, expected)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(step, expected - factor, rtol=1e-5, atol=1e-5)
    difference = (expected - factor).astype(np.float64).reshape(batch, -1)
    np.testing.assert_allclose(sums[:, 0], (difference**2).sum(1), rtol=1e-5)
    overlap = (difference * previous.reshape(batch, -1)).sum(1) if with_previous else 0.0
    np.testing.assert_allclose(sums[:, 1], overlap, rtol=1e-4, atol=1e-6)


def test_divided_adjoint_is_the_floored_quotient():
    rng = np.random.default_rng(4)
    operator = _operator("extend")
    data = rng.uniform(0.0, 3.0, (2, *operator.data_shape)).astype(np.float32)
    divisor = rng.uniform(0.5, 1.0, (1, *operator.object_shape)).astype(np.float32)
    floor = np.array([0.3, 0.6], dtype=np.float32)
    out = np.empty((2, *operator.object_shape), dtype=np.float32)

    operator._direct.divided_adjoint(data, divisor, floor, out)

    adjoint = np.empty_like(out)
    operator._direct.adjoint(data, adjoint)
    expected = np.maximum(adjoint / divisor, floor[:, None, None])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert (out[0] == np.float32(0.3)).any()  # the floors bite near the edges
    assert (out[1] == np.float32(0.6)).any()
