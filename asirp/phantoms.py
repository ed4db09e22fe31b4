"""Small synthetic samples in physical units (µm), for the demo, tests and benchmarks.

The full simulated beamline (spectra, ring current, ophyd devices) lives in ``sim/``; these are
the pure area-fraction maps it and the engine's own checks start from. Each function returns the
fraction of every scan pixel covered by the feature, in [0, 1], computed by supersampling.
"""

from __future__ import annotations

import math

import numpy as np


def _pixel_centres(shape: tuple[int, int], pixel_um: float, supersample: int) -> tuple:
    """Sub-pixel centre coordinates (µm) of a map, relative to its centre."""
    rows, cols = shape
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    y = (np.arange(rows)[:, None] + offsets[None, :]).ravel() * pixel_um
    x = (np.arange(cols)[:, None] + offsets[None, :]).ravel() * pixel_um
    y -= y.mean()
    x -= x.mean()
    return np.meshgrid(y, x, indexing="ij")


def _bin(fine: np.ndarray, supersample: int) -> np.ndarray:
    rows, cols = fine.shape[0] // supersample, fine.shape[1] // supersample
    return fine.reshape(rows, supersample, cols, supersample).mean(axis=(1, 3))


def copper_mesh(
    shape: tuple[int, int] = (128, 128),
    pixel_um: float = 10.0,
    *,
    hole_um: float = 58.0,
    bar_um: float = 25.0,
    angle_deg: float = 3.0,
    supersample: int = 8,
) -> np.ndarray:
    """Bar fraction of a square copper TEM grid (AG300: 58 µm holes, 25 µm bars).

    Parameters
    ----------
    shape : (int, int)
        Map size in pixels (rows, columns).
    pixel_um : float
        Scan step, µm.
    hole_um, bar_um : float
        Hole width and bar width, µm (AG175: 108 and 37).
    angle_deg : float
        Rotation of the grid, degrees.
    supersample : int
        Sub-pixels per pixel and axis for the area fraction.

    Returns
    -------
    numpy.ndarray
        ``shape``, float64 in [0, 1]: 1 on copper bars.
    """
    y, x = _pixel_centres(shape, pixel_um, supersample)
    angle = math.radians(angle_deg)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    period = hole_um + bar_um
    on_bar = (np.mod(u, period) < bar_um) | (np.mod(v, period) < bar_um)
    return _bin(on_bar.astype(np.float64), supersample)


def hotspot_tissue(
    shape: tuple[int, int] = (128, 128),
    pixel_um: float = 10.0,
    *,
    n_hotspots: int = 12,
    seed: int = 0,
) -> np.ndarray:
    """Seed-like tissue: a smooth elliptical body with element hotspots of varied sizes.

    Parameters
    ----------
    shape : (int, int)
        Map size in pixels.
    pixel_um : float
        Scan step, µm.
    n_hotspots : int
        Number of Gaussian hotspots (FWHM 15-80 µm, amplitude 0.5-2 times the tissue level).
    seed : int
        Seed of the random layout.

    Returns
    -------
    numpy.ndarray
        ``shape``, float64, tissue level about 0.3 and hotspots up to about 1.
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    y = (np.arange(rows) - rows / 2 + 0.5) * pixel_um
    x = (np.arange(cols) - cols / 2 + 0.5) * pixel_um
    yy, xx = np.meshgrid(y, x, indexing="ij")
    half_y, half_x = 0.42 * rows * pixel_um, 0.42 * cols * pixel_um
    body = np.clip(1.0 - (yy / half_y) ** 2 - (xx / half_x) ** 2, 0, None) ** 0.5
    image = 0.3 * body
    for _ in range(n_hotspots):
        cy, cx = rng.uniform(-0.6, 0.6) * half_y, rng.uniform(-0.6, 0.6) * half_x
        sigma = rng.uniform(15.0, 80.0) / 2.3548
        amplitude = rng.uniform(0.15, 0.6)
        image += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return image


def siemens_star(
    shape: tuple[int, int] = (128, 128), *, spokes: int = 24, supersample: int = 8
) -> np.ndarray:
    """Siemens star resolution target with ``spokes`` dark/bright pairs, fraction in [0, 1]."""
    y, x = _pixel_centres(shape, 1.0, supersample)
    radius = np.hypot(y, x)
    inside = radius < 0.45 * min(shape)
    bright = np.sin(spokes * np.arctan2(y, x)) > 0
    return _bin((bright & inside).astype(np.float64), supersample)
