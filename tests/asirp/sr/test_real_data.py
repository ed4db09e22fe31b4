"""Real tomography data (TomoPy's tooth.h5) through every super-resolution method."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

import asirp
from asirp.sr import ConsistencyWarning
from tests.conftest import TOOTH_H5 as TOOTH  # TomoPy, source/tomopy/data/tooth.h5


@pytest.fixture(scope="module")
def sinograms():
    """Flat/dark-corrected transmission, as the two sinograms (2, 181, 640) of the 2-row scan."""
    with h5py.File(TOOTH, "r") as handle:
        data = handle["exchange/data"][()].astype(np.float64)
        white = handle["exchange/data_white"][()].astype(np.float64).mean(axis=0)
        dark = handle["exchange/data_dark"][()].astype(np.float64).mean(axis=0)
    transmission = (data - dark) / (white - dark)
    return np.ascontiguousarray(transmission.transpose(1, 0, 2), dtype=np.float32)


@pytest.mark.parametrize("method", ["fca_sr", "rrdb_sr", "zssr"])
def test_tooth_sinograms_go_through_with_consistency_reported(sinograms, method):
    params = {"iterations": 20, "crop": 48} if method == "zssr" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsistencyWarning)  # flagged or not, it is reported
        result = asirp.restore(sinograms, method, scale=2, device="cpu", **params)
    assert result.image.shape == (2, 362, 1280)
    assert np.isfinite(result.image).all()
    # intensities keep their physical scale (transmission, about 0.1 to 1.2)
    assert abs(float(result.image.mean()) - float(sinograms.mean())) < 0.02
    assert 0.0 < result.metrics["consistency_residual"] < 1e3
    assert 0.0 < result.metrics["consistency_relative"] < 0.2
    assert isinstance(result.metrics["consistent"], bool)
    flagged = [note for note in result.cautions() if "does not reproduce the input" in note]
    assert bool(flagged) == (not result.metrics["consistent"])
    assert result.params["beam_source"] == "estimated"
