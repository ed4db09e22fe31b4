"""Point-spread functions: Gaussian beams in physical units, arrays, files, and their checks.

A µ-XRF map is the sample convolved with the beam profile sampled at the scan step. A beam of full
width at half maximum ``FWHM`` (µm) scanned with a step ``p`` (µm) blurs the map with a Gaussian of
standard deviation ``FWHM / (2 sqrt(2 ln 2)) / p`` pixels along that axis. Fly scans usually have a
different step along the fast axis than between lines, so every size here may be given per axis as
``(rows, columns)`` = ``(slow/y, fast/x)``.

Every PSF that reaches a method is a 2-D float32 array, finite, non-negative, of odd size on both
axes (its centre pixel is the origin), not larger than the image, and normalised to a sum of 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""Ratio FWHM / sigma of a Gaussian (about 2.3548)."""

DEFAULT_TRUNCATE = 4.0
"""Gaussian PSFs are cut at this many standard deviations from the centre."""


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """Return ``(rows, columns)`` from a scalar or a 2-sequence of positive finite numbers."""
    if isinstance(value, str | bytes):
        raise TypeError(f"{name} must be a number or a (rows, columns) pair, not {value!r}")
    values = np.atleast_1d(np.asarray(value, dtype=float)) if not isinstance(value, bool) else None
    if values is None or values.ndim != 1 or values.size not in (1, 2):
        raise ValueError(f"{name} must be a number or a (rows, columns) pair, got {value!r}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    if values.size == 1:
        return float(values[0]), float(values[0])
    return float(values[0]), float(values[1])


def fwhm_to_sigma(fwhm: float) -> float:
    """Convert a Gaussian's full width at half maximum to its standard deviation (same unit)."""
    return fwhm / FWHM_PER_SIGMA


def beam_sigma_px(
    beam_fwhm_um: float | Sequence[float], pixel_um: float | Sequence[float]
) -> tuple[float, float]:
    """Standard deviation of the beam in pixels along (rows, columns).

    Parameters
    ----------
    beam_fwhm_um : float or (float, float)
        Beam FWHM in µm, isotropic or per axis (vertical, horizontal).
    pixel_um : float or (float, float)
        Scan step (pixel size) in µm, isotropic or per axis (between lines, along a line).

    Returns
    -------
    (float, float)
        Sigma in pixels along rows and columns.
    """
    fwhm_y, fwhm_x = _pair(beam_fwhm_um, "beam_fwhm_um")
    step_y, step_x = _pair(pixel_um, "pixel_um")
    return fwhm_to_sigma(fwhm_y) / step_y, fwhm_to_sigma(fwhm_x) / step_x


def gaussian_psf(
    sigma_px: float | Sequence[float],
    *,
    truncate: float = DEFAULT_TRUNCATE,
    max_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Sampled 2-D Gaussian PSF, normalised to sum 1.

    Each pixel holds the integral of the Gaussian over that pixel (error functions), so narrow
    beams (sigma below one pixel) are represented correctly.

    Parameters
    ----------
    sigma_px : float or (float, float)
        Standard deviation in pixels, isotropic or (rows, columns).
    truncate : float
        Half-size of the kernel in standard deviations (at least one pixel each side).
    max_shape : (int, int), optional
        Largest allowed kernel shape (for example the image shape); the kernel is cropped to the
        largest odd size that fits.

    Returns
    -------
    numpy.ndarray
        Shape ``(2 * ry + 1, 2 * rx + 1)``, float32, sum 1.
    """
    from scipy.special import erf

    sigma_y, sigma_x = _pair(sigma_px, "sigma_px")
    if not math.isfinite(truncate) or truncate <= 0:
        raise ValueError(f"truncate must be finite and > 0, got {truncate!r}")

    def profile(sigma: float, limit: int | None) -> np.ndarray:
        radius = max(1, math.ceil(truncate * sigma))
        if limit is not None:
            radius = min(radius, max(0, (limit - 1) // 2))
        edges = (np.arange(-radius, radius + 2, dtype=float) - 0.5) / (math.sqrt(2.0) * sigma)
        weights = np.diff(0.5 * erf(edges))
        return weights / weights.sum()

    limit_y, limit_x = max_shape if max_shape is not None else (None, None)
    kernel = np.outer(profile(sigma_y, limit_y), profile(sigma_x, limit_x))
    return (kernel / kernel.sum()).astype(np.float32)


def validate_psf(psf: Any, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Check a PSF array and return it as a normalised float32 copy.

    Parameters
    ----------
    psf : array_like
        2-D kernel, shape ``(h, w)`` with odd ``h`` and ``w``; values are relative weights
        (any positive sum; it is normalised to 1).
    image_shape : tuple of int, optional
        Shape of the image (2-D) or stack (3-D) it will be used with; the PSF may not be larger
        than one image.

    Returns
    -------
    numpy.ndarray
        The PSF, float32, sum 1.

    Raises
    ------
    TypeError
        If the PSF is not a real numeric array.
    ValueError
        If it is not 2-D, has an even or empty size, holds NaN/Inf or negative values, sums to
        zero, or is larger than the image.
    """
    array = np.asarray(psf)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or array.dtype == bool
    ):
        raise TypeError(f"PSF must be a real numeric array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"PSF must be 2-D (rows, columns), got {array.ndim}-D shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"PSF is empty (shape {array.shape})")
    if array.shape[0] % 2 == 0 or array.shape[1] % 2 == 0:
        raise ValueError(
            f"PSF must have an odd size on both axes so that its centre is a pixel, got "
            f"{array.shape}; pad it by one row/column or re-centre it"
        )
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("PSF holds NaN or Inf values")
    if np.any(array < 0):
        raise ValueError(f"PSF must be non-negative, its minimum is {array.min():.3g}")
    total = array.sum()
    if total <= 0:
        raise ValueError("PSF sums to zero; it must carry some weight")
    if image_shape is not None:
        rows, cols = image_shape[-2:]
        if array.shape[0] > rows or array.shape[1] > cols:
            raise ValueError(
                f"PSF of shape {array.shape} is larger than the image ({rows}, {cols}); "
                "crop the PSF or use a larger image"
            )
    return (array / total).astype(np.float32)


def psf_sigma_px(psf: np.ndarray) -> tuple[float, float]:
    """Standard deviation (pixels) of a PSF along rows and columns, from its second moments.

    Parameters
    ----------
    psf : numpy.ndarray
        2-D non-negative kernel, shape ``(h, w)``.

    Returns
    -------
    (float, float)
        Sigma along rows and columns about the kernel's centroid, in pixels.
    """
    weights = np.asarray(psf, dtype=np.float64)
    weights = weights / weights.sum()
    rows = np.arange(weights.shape[0], dtype=np.float64)
    cols = np.arange(weights.shape[1], dtype=np.float64)
    p_rows, p_cols = weights.sum(axis=1), weights.sum(axis=0)
    mean_r, mean_c = (p_rows * rows).sum(), (p_cols * cols).sum()
    return (
        math.sqrt((p_rows * (rows - mean_r) ** 2).sum()),
        math.sqrt((p_cols * (cols - mean_c) ** 2).sum()),
    )


@dataclass
class ResolvedPSF:
    """A PSF ready for a method, with a JSON-serialisable description of where it came from.

    Attributes
    ----------
    array : numpy.ndarray
        Shape ``(h, w)``, float32, sum 1.
    description : dict
        ``source`` (``"array"``, ``"file"``, ``"beam"``, ``"gaussian"``), ``shape`` and, for
        Gaussians, ``sigma_px`` and (for beams) ``beam_fwhm_um`` and ``pixel_um``.
    """

    array: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)


def resolve_psf(
    image_shape: tuple[int, ...],
    *,
    psf: Any = None,
    beam_fwhm_um: float | Sequence[float] | None = None,
    pixel_um: float | Sequence[float] | None = None,
    psf_sigma_px: float | Sequence[float] | None = None,
) -> ResolvedPSF | None:
    """Build the PSF from exactly one of its descriptions.

    Parameters
    ----------
    image_shape : tuple of int
        Shape of the image or stack the PSF is for.
    psf : array_like or str or os.PathLike, optional
        A kernel array, or a path to one (``.npy``, TIFF, ``file.h5::/dataset``).
    beam_fwhm_um, pixel_um : float or (float, float), optional
        Beam FWHM and scan step in µm; both are needed together.
    psf_sigma_px : float or (float, float), optional
        Gaussian standard deviation in pixels.

    Returns
    -------
    ResolvedPSF or None
        ``None`` when no PSF was described.

    Raises
    ------
    ValueError
        If several descriptions are given, or only one of ``beam_fwhm_um`` / ``pixel_um``.
    """
    import os

    given = [
        name
        for name, value in (
            ("psf", psf),
            ("beam_fwhm_um", beam_fwhm_um),
            ("psf_sigma_px", psf_sigma_px),
        )
        if value is not None
    ]
    if beam_fwhm_um is None and pixel_um is not None and not given:
        raise ValueError("pixel_um was given without beam_fwhm_um; give both to describe the beam")
    if len(given) > 1:
        raise ValueError(f"give one PSF description, not several: {', '.join(given)}")
    if not given:
        return None
    max_shape = (int(image_shape[-2]), int(image_shape[-1]))
    if beam_fwhm_um is not None:
        if pixel_um is None:
            raise ValueError("beam_fwhm_um needs pixel_um (the scan step in µm) to make a PSF")
        sigma = beam_sigma_px(beam_fwhm_um, pixel_um)
        kernel = gaussian_psf(sigma, max_shape=max_shape)
        return ResolvedPSF(
            kernel,
            {
                "source": "beam",
                "model": "gaussian",
                "beam_fwhm_um": list(_pair(beam_fwhm_um, "beam_fwhm_um")),
                "pixel_um": list(_pair(pixel_um, "pixel_um")),
                "sigma_px": [round(s, 6) for s in sigma],
                "truncate_sigma": DEFAULT_TRUNCATE,
                "shape": list(kernel.shape),
            },
        )
    if psf_sigma_px is not None:
        sigma = _pair(psf_sigma_px, "psf_sigma_px")
        kernel = gaussian_psf(sigma, max_shape=max_shape)
        return ResolvedPSF(
            kernel,
            {
                "source": "gaussian",
                "model": "gaussian",
                "sigma_px": list(sigma),
                "truncate_sigma": DEFAULT_TRUNCATE,
                "shape": list(kernel.shape),
            },
        )
    if isinstance(psf, str | os.PathLike):
        # Lazy on purpose: asirp.io imports h5py (about 0.2 s, measured with ``python -X
        # importtime``), which ``import asirp`` does not otherwise load.
        from asirp.io import read_array

        kernel = validate_psf(read_array(psf), image_shape)
        return ResolvedPSF(
            kernel, {"source": "file", "path": str(psf), "shape": list(kernel.shape)}
        )
    kernel = validate_psf(psf, image_shape)
    return ResolvedPSF(kernel, {"source": "array", "shape": list(kernel.shape)})
