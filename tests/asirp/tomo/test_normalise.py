"""Flat/dark correction and -log against a hand computation."""

from __future__ import annotations

import numpy as np

from asirp.tomo.normalise import MIN_TRANSMISSION, flat_dark_correct, minus_log


def test_median_flat_dark_and_minus_log():
    projections = np.array([[[550.0, 100.0, 1000.0, 50.0]]])  # (1, 1, 4)
    flats = np.array([[[1000.0, 1000.0, 1000.0, 1000.0]]] * 2 + [[[9000.0] * 4]])  # a zinger
    darks = np.array([[[100.0] * 4], [[100.0] * 4], [[700.0] * 4]])
    result = flat_dark_correct(projections, flats, darks)
    # median flat 1000, median dark 100: (550-100)/900 = 0.5, 0, 1, (50-100)/900 < 0
    expected = np.array([[[0.5, MIN_TRANSMISSION, 1.0, MIN_TRANSMISSION]]], dtype=np.float32)
    np.testing.assert_allclose(result.values, expected, rtol=1e-6)
    assert result.values.dtype == np.float32
    assert result.clipped == 2
    assert "2 pixel(s)" in result.caution()
    logged = minus_log(result.values)
    np.testing.assert_allclose(logged[0, 0, :3], [np.log(2.0), -np.log(MIN_TRANSMISSION), 0.0])
    assert logged.dtype == np.float32


def test_no_caution_when_nothing_clipped():
    result = flat_dark_correct(
        np.full((2, 1, 4), 500.0), np.full((1, 1, 4), 900.0), np.zeros((1, 1, 4))
    )
    assert result.clipped == 0
    assert result.caution() is None
