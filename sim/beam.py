"""The focused X-ray beam: a 2-D Gaussian in µm, optionally anisotropic, with optional tails.

The intensity profile is ``(1 - f) * G(core) + f * G(tail)``: a core Gaussian of FWHM
``fwhm_um`` (vertical, horizontal) and, for ``f = tail_fraction > 0``, a wider Gaussian of FWHM
``tail_fwhm_um`` carrying that fraction of the flux (the halo of focusing mirrors). Kernels are
sampled with :func:`asirp.psf.gaussian_psf` (pixel-integrated) and normalised to sum 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asirp.psf import beam_sigma_px, gaussian_psf


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, bool | str | bytes):
        raise TypeError(f"{name} must be a number or a (vertical, horizontal) pair, not {value!r}")
    values = np.atleast_1d(np.asarray(value, dtype=float))
    if values.ndim != 1 or values.size not in (1, 2):
        raise ValueError(f"{name} must be a number or a (vertical, horizontal) pair: {value!r}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{name} must be finite and > 0 µm, got {value!r}")
    return (float(values[0]), float(values[-1]))


@dataclass(frozen=True)
class Beam:
    """Beam profile on the sample.

    Parameters
    ----------
    fwhm_um : float or (float, float)
        Core FWHM, µm, isotropic or ``(vertical, horizontal)``.
    tail_fraction : float
        Fraction of the flux in the tails, in ``[0, 1)``.
    tail_fwhm_um : float or (float, float), optional
        FWHM of the tail Gaussian, µm (default four times the core).
    """

    fwhm_um: tuple[float, float]
    tail_fraction: float = 0.0
    tail_fwhm_um: tuple[float, float] | None = None

    def __init__(
        self,
        fwhm_um: float | Sequence[float],
        tail_fraction: float = 0.0,
        tail_fwhm_um: float | Sequence[float] | None = None,
    ) -> None:
        core = _pair(fwhm_um, "beam fwhm_um")
        if not (isinstance(tail_fraction, int | float) and 0.0 <= tail_fraction < 1.0):
            raise ValueError(f"tail_fraction must be in [0, 1), got {tail_fraction!r}")
        tail = (
            (4.0 * core[0], 4.0 * core[1])
            if tail_fwhm_um is None
            else _pair(tail_fwhm_um, "tail_fwhm_um")
        )
        object.__setattr__(self, "fwhm_um", core)
        object.__setattr__(self, "tail_fraction", float(tail_fraction))
        object.__setattr__(self, "tail_fwhm_um", tail if tail_fraction > 0 else None)

    @property
    def anisotropy(self) -> float:
        """Ratio of vertical to horizontal core FWHM."""
        return self.fwhm_um[0] / self.fwhm_um[1]

    @property
    def support_um(self) -> float:
        """Half-width (µm) beyond which the profile is negligible (4 sigma of the widest part)."""
        widest = max(self.fwhm_um) if self.tail_fwhm_um is None else max(self.tail_fwhm_um)
        return 4.0 * widest / (2.0 * math.sqrt(2.0 * math.log(2.0)))

    def kernel(self, pixel_um: float | Sequence[float]) -> np.ndarray:
        """The profile sampled on pixels of ``pixel_um`` (µm, or (rows, columns)).

        Parameters
        ----------
        pixel_um : float or (float, float)
            Pixel (scan step) size, µm.

        Returns
        -------
        numpy.ndarray
            ``(2 ry + 1, 2 rx + 1)``, float64, sum 1; the centre pixel is the beam centre.
        """
        core = gaussian_psf(beam_sigma_px(self.fwhm_um, pixel_um)).astype(np.float64)
        if self.tail_fwhm_um is None:
            return core / core.sum()
        tail = gaussian_psf(beam_sigma_px(self.tail_fwhm_um, pixel_um)).astype(np.float64)
        shape = (max(core.shape[0], tail.shape[0]), max(core.shape[1], tail.shape[1]))
        kernel = (1.0 - self.tail_fraction) * _embed(core, shape)
        kernel += self.tail_fraction * _embed(tail, shape)
        return kernel / kernel.sum()

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable description (µm)."""
        return {
            "model": "gaussian" if self.tail_fwhm_um is None else "gaussian+tails",
            "fwhm_um": list(self.fwhm_um),
            "tail_fraction": self.tail_fraction,
            "tail_fwhm_um": None if self.tail_fwhm_um is None else list(self.tail_fwhm_um),
        }


def _embed(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape)
    r0 = (shape[0] - kernel.shape[0]) // 2
    c0 = (shape[1] - kernel.shape[1]) // 2
    out[r0 : r0 + kernel.shape[0], c0 : c0 + kernel.shape[1]] = kernel
    return out


def blur_maps(maps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve maps with a beam kernel (zero outside the field: nothing is there).

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n, ny, nx)`` or ``(ny, nx)`` maps on the kernel's pixel grid.
    kernel : numpy.ndarray
        ``(h, w)``, odd sizes, sum 1.

    Returns
    -------
    numpy.ndarray
        Same shape as ``maps``, float64.
    """
    from scipy.signal import fftconvolve

    array = np.asarray(maps, dtype=np.float64)
    if array.ndim == 2:
        return np.clip(fftconvolve(array, kernel, mode="same"), 0.0, None)
    return np.clip(fftconvolve(array, kernel[None], mode="same", axes=(1, 2)), 0.0, None)
