"""Small synthetic raw µ-XRF scans (seeded) for the xrf tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asirp.xrf import EnergyCalibration, RawXRFScan, write_raw_scan
from asirp.xrf.synthetic import synthetic_scan

CALIBRATION = EnergyCalibration(offset_kev=-0.02, gain_kev_per_channel=0.01)
N_CHANNELS = 1024


def small_scan(kind: str = "raster", shape=(12, 15), seed: int = 0, **options) -> RawXRFScan:
    """A scan of a Cu bar pattern and flat Fe, 4 detector elements x 1024 channels (10 keV)."""
    cu = np.full(shape, 40.0)
    cu[:, shape[1] // 3 : 2 * shape[1] // 3] = 160.0
    settings = {
        "kind": kind,
        "n_detectors": 4,
        "n_channels": N_CHANNELS,
        "calibration": CALIBRATION,
        "incident_energy_kev": 9.8,
        "seed": seed,
        "metadata": {"beam_fwhm_um": 20.0, "sample": "bars"},
    }
    settings.update(options)
    return synthetic_scan({"Cu": cu, "Fe": np.full(shape, 80.0)}, **settings)


@pytest.fixture
def scan() -> RawXRFScan:
    return small_scan()


@pytest.fixture
def raw_file(tmp_path, scan) -> Path:
    return write_raw_scan(tmp_path / "raw.h5", scan)
