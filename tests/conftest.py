"""Shared fixtures: small simulated µ-XRF-like maps with known truth and PSF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from asirp.metrics import blur
from asirp.phantoms import copper_mesh, hotspot_tissue, siemens_star
from asirp.psf import gaussian_psf

SIGMA_PX = 2.0

REAL_DATA = Path(__file__).parent / "data" / "real"
"""Real measured data kept in the repository (sources and licences in ``tests/data/README.md``)."""
TOOTH_H5 = REAL_DATA / "tomopy" / "tooth.h5"
STEEL_SPE = REAL_DATA / "pymca" / "Steel.spe"
STEEL_CFG = REAL_DATA / "pymca" / "Steel.cfg"
XRF_MCA = REAL_DATA / "pymca" / "XRFSpectrum.mca"
APS_STEP_MDA = REAL_DATA / "aps_2ide" / "2xfm_0010.mda"
APS_STANDARD_MDA = REAL_DATA / "aps_2ide" / "axo_std.mda"
APS_FLY_MDA = REAL_DATA / "aps_2ide" / "2xfm_0011.mda"
APS_FLY_H5 = REAL_DATA / "aps_2ide" / "2xfm_0011_2xfm3__0.h5"
APS_FIT_OVERRIDE = REAL_DATA / "aps_2ide" / "maps_fit_parameters_override.txt"
APS_STANDARD_INFO = REAL_DATA / "aps_2ide" / "maps_standardinfo.txt"
DIAMOND_I18_NXS = REAL_DATA / "diamond_i18" / "i18_test_data.nxs"
CA_FE_CU_CFG = Path(__file__).parent / "data" / "derived" / "CaFeCu.cfg"


@dataclass
class NoisyMap:
    truth: np.ndarray  # expected counts without blur, (H, W)
    measured: np.ndarray  # Poisson counts of the blurred truth, (H, W) float32
    psf: np.ndarray
    sigma_px: float


def make_noisy_map(
    kind: str = "mesh", peak: float = 200.0, shape=(64, 64), sigma_px=SIGMA_PX, seed: int = 0
) -> NoisyMap:
    rng = np.random.default_rng(seed)
    if kind == "mesh":
        fraction = copper_mesh(shape, 10.0)
    elif kind == "tissue":
        fraction = hotspot_tissue(shape, 10.0, seed=seed)
    else:
        fraction = siemens_star(shape)
    truth = peak * fraction + 0.05 * peak
    psf = gaussian_psf(sigma_px)
    measured = rng.poisson(blur(truth, psf)).astype(np.float32)
    return NoisyMap(truth, measured, psf, sigma_px)


@pytest.fixture
def mesh_map() -> NoisyMap:
    return make_noisy_map("mesh", peak=200.0)
