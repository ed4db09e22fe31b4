"""How good is a reconstruction: PSNR against truth, even/odd FRC, a check for invented detail.

Four figures, for judging a restoration by what it does to the *reconstruction*:

* :func:`psnr_db` -- with a known truth (a simulation): PSNR on the reconstruction circle, the
  truth's range as the peak.
* :func:`even_odd_frc` -- without truth (real data): Fourier ring correlation between the
  reconstructions from the even and from the odd projections. The two halves share the object
  but not the noise, so the FRC says up to which frequency the data agree with themselves.
  It is the resolution of a *half* data set (each half has half the angles, so its
  reconstruction also has more angular-undersampling streaks far from the axis).
* :func:`invented_detail_check` -- the caveat of even/odd FRC made into a figure. FRC measures
  consistency between two halves, not truth: a method that puts the same structure into both
  halves (a network's learned texture, strong regularisation whose artefacts follow the
  shared object) raises the FRC without adding information. Detail that is *in the data*
  correlates with the other half's **raw** reconstruction; detail a method invented does not.
  So the check computes the *cross* FRC between the restored-even and the raw-odd
  reconstruction and compares it with the plain (restored/restored) one. A restoration that
  only re-weights frequencies (a linear deconvolution) leaves every ring's correlation
  unchanged (a filter that is constant on a ring cancels in the normalised FRC), so plain,
  cross and raw FRC agree; invented detail adds power that both restored halves share but the
  raw odd half does not, so the plain FRC *rises* above the cross FRC. The flag is the plain
  resolution beating the cross one: the part of the agreement that the measured data do not
  support. (A nonlinear denoiser legitimately raises the cross FRC a little too, and a shared
  prior raises the plain one more; the cross FRC is the resolution the data support.) The
  alternative, high-frequency power over the noise floor, was not chosen: a deconvolution
  raises it too, legitimately, so it cannot tell amplified real detail from invented detail.
* :func:`air_noise` -- standard deviation in air around the object, on a mask
  (:func:`air_mask`) made once from the raw reconstruction and reused for every method, so
  every method is measured on the same pixels.

Resolution figures: the FRC curve of each slice pair comes from
:func:`asirp.metrics.fourier_ring_correlation` (Hann window, rings one bin wide); for volumes
the curves are averaged over slices. The reported resolution is the **1/7 threshold** crossing
(:data:`asirp.metrics.FRC_THRESHOLD`), in pixels and as a fraction of Nyquist
(``2 px / resolution``); the half-bit crossing (van Heel and Schatz 2005) is reported beside it.
A curve that never falls below the threshold gives the finest ring's period and
``limited_by_sampling``.

Units: reconstructions are attenuation per pixel (as :mod:`asirp.tomo.reconstruct` gives);
resolution in pixels of the grid the maps are on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter

from asirp.metrics import FRC_THRESHOLD, fourier_ring_correlation
from asirp.tomo.reconstruct import reconstruct as fbp_reconstruct

CIRCLE_FRACTION = 0.95
"""Default disc radius as a fraction of half the grid side (the FBP circle, less its rim)."""
INVENTED_TOLERANCE = 0.05
"""Relative change of a resolution (px) that counts as a change in :func:`invented_detail_check`."""
MIN_AIR_PIXELS = 64
"""An air mask with fewer pixels cannot give a noise figure."""


def disc_mask(side: int, fraction: float = CIRCLE_FRACTION) -> np.ndarray:
    """Pixels of a ``(side, side)`` grid within ``fraction`` of the inscribed circle.

    Returns
    -------
    numpy.ndarray
        ``(side, side)`` bool, centred on ``side // 2`` as :func:`skimage.transform.iradon`'s
        reconstruction circle.
    """
    y, x = np.mgrid[:side, :side] - side // 2
    return np.hypot(y, x) < fraction * side / 2.0


def psnr_db(reconstruction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR of a reconstruction against its truth, dB, on a mask.

    Parameters
    ----------
    reconstruction, truth : numpy.ndarray
        ``(C, C)`` slices or ``(Z, C, C)`` volumes of the same shape (attenuation per pixel).
    mask : numpy.ndarray, optional
        ``(C, C)`` bool pixels to compare (default :func:`disc_mask`: the reconstruction
        circle, where FBP has data).

    Returns
    -------
    float
        ``10 log10(range^2 / MSE)`` with the truth's range on the mask as the peak; ``inf``
        when they are equal there.
    """
    test = np.asarray(reconstruction, dtype=np.float64)
    reference = np.asarray(truth, dtype=np.float64)
    if test.shape != reference.shape or test.ndim not in (2, 3):
        raise ValueError(
            f"reconstruction {test.shape} and truth {reference.shape} must be equal 2-D or 3-D"
        )
    chosen = disc_mask(test.shape[-1]) if mask is None else np.asarray(mask, dtype=bool)
    if chosen.shape != test.shape[-2:] or not chosen.any():
        raise ValueError(f"the mask must be a non-empty {test.shape[-2:]} boolean map")
    values, expected = test[..., chosen], reference[..., chosen]
    error = float(np.mean((values - expected) ** 2))
    span = float(np.ptp(expected)) or 1.0
    return math.inf if error == 0.0 else 10.0 * math.log10(span**2 / error)


@dataclass(frozen=True)
class FRCFigures:
    """A Fourier ring correlation curve and its resolution.

    Attributes
    ----------
    frequency : numpy.ndarray
        ``(n,)`` ring centres, cycles per pixel (0 to 0.5).
    correlation : numpy.ndarray
        ``(n,)`` FRC, averaged over slices.
    resolution_px : float
        Period where the curve first falls below 1/7, px (the reported figure).
    fraction_nyquist : float
        ``2 / resolution_px`` (1 = the grid's Nyquist).
    half_bit_resolution_px : float
        The same at the half-bit threshold, px.
    limited_by_sampling : bool
        The curve never fell below 1/7 (``resolution_px`` is the finest ring's period).
    """

    frequency: np.ndarray
    correlation: np.ndarray
    resolution_px: float
    fraction_nyquist: float
    half_bit_resolution_px: float
    limited_by_sampling: bool

    def to_dict(self) -> dict[str, float | bool]:
        """The scalar figures (JSON-serialisable)."""
        return {
            "resolution_px": self.resolution_px,
            "fraction_nyquist": self.fraction_nyquist,
            "half_bit_resolution_px": self.half_bit_resolution_px,
            "limited_by_sampling": self.limited_by_sampling,
        }


def _as_slices(volume: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(volume, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ValueError(f"{name} must be a (C, C) slice or a (Z, C, C) volume, got {values.shape}")
    return values


def _half_bit_threshold(side: int, rings: int) -> np.ndarray:
    """Half-bit threshold per ring for the ring geometry of the FRC metric, ``(rings,)``."""
    freq = np.fft.fftfreq(side)
    radius = np.hypot(freq[:, None], freq[None, :])
    ring = np.minimum((radius * 2 * rings).astype(int), rings)
    counts = np.maximum(np.bincount(ring.ravel(), minlength=rings + 1)[:rings], 1)
    root = np.sqrt(counts)
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


def _crossing_px(
    frequency: np.ndarray, correlation: np.ndarray, threshold: float | np.ndarray
) -> float:
    """Period of the first ring (after the DC ring) below ``threshold``; ``nan`` if none.

    ``threshold`` is a number or one value per ring (the rule of the FRC metric).
    """
    limit = np.broadcast_to(np.asarray(threshold, dtype=np.float64), correlation.shape)
    below = np.nonzero(correlation[1:] < limit[1:])[0]
    return float(1.0 / frequency[below[0] + 1]) if below.size else math.nan


def frc_figures(first: np.ndarray, second: np.ndarray) -> FRCFigures:
    """FRC between two reconstructions of the same object (slices or volumes).

    Parameters
    ----------
    first, second : numpy.ndarray
        ``(C, C)`` or ``(Z, C, C)``, same shape; slice ``z`` of one is compared with slice
        ``z`` of the other and the curves are averaged.

    Returns
    -------
    FRCFigures
    """
    a, b = _as_slices(first, "first"), _as_slices(second, "second")
    if a.shape != b.shape or a.shape[1] != a.shape[2]:
        raise ValueError(f"the reconstructions must be equal square grids: {a.shape}, {b.shape}")
    curves = [fourier_ring_correlation(x, y) for x, y in zip(a, b, strict=True)]
    frequency = curves[0].frequency
    correlation = np.mean([curve.correlation for curve in curves], axis=0)
    resolution = _crossing_px(frequency, correlation, FRC_THRESHOLD)
    limited = math.isnan(resolution)
    if limited:
        resolution = float(1.0 / frequency[-1])
    half_bit = _crossing_px(frequency, correlation, _half_bit_threshold(a.shape[1], frequency.size))
    if math.isnan(half_bit):
        half_bit = float(1.0 / frequency[-1])
    return FRCFigures(frequency, correlation, resolution, 2.0 / resolution, half_bit, limited)


Reconstructor = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
"""``(projections, angles_rad, centre) -> (Z, C, C)`` reconstruction."""


@dataclass(frozen=True)
class EvenOdd:
    """Reconstructions from the even and the odd projections, and their FRC.

    Attributes
    ----------
    even, odd : numpy.ndarray
        ``(Z, C, C)`` reconstructions from projections ``0, 2, 4, ...`` and ``1, 3, 5, ...``.
    frc : FRCFigures
        FRC between them.
    """

    even: np.ndarray
    odd: np.ndarray
    frc: FRCFigures


def even_odd_frc(
    sinogram_or_projections: np.ndarray,
    angles_rad: np.ndarray,
    centre: float,
    *,
    reconstruct: Reconstructor = fbp_reconstruct,
) -> EvenOdd:
    """FRC between the reconstructions from the even and from the odd projections.

    Parameters
    ----------
    sinogram_or_projections : numpy.ndarray
        ``(N, C)`` sinogram or ``(N, R, C)`` projections, in what ``reconstruct`` takes (the
        default takes line integrals ``-log T``).
    angles_rad : numpy.ndarray
        ``(N,)`` angles, radians.
    centre : float
        Rotation axis, detector columns.
    reconstruct : callable
        ``(projections, angles_rad, centre) -> (Z, C, C)``; default FBP
        (:func:`asirp.tomo.reconstruct.reconstruct`). A restoration under test goes in here,
        so that each half is restored on its own (a method that mixes neighbouring angles,
        such as a network run on the sinogram, would otherwise share noise between halves).

    Returns
    -------
    EvenOdd
    """
    data = np.asarray(sinogram_or_projections)
    if data.ndim == 2:
        data = data[:, None, :]
    angles = np.asarray(angles_rad, dtype=np.float64)
    if data.ndim != 3 or data.shape[0] != angles.size or angles.size < 4:
        raise ValueError(
            f"need (N, C) or (N, R, C) data with N >= 4 matching {angles.size} angles, "
            f"got {np.shape(sinogram_or_projections)}"
        )
    even = np.asarray(reconstruct(data[0::2], angles[0::2], centre))
    odd = np.asarray(reconstruct(data[1::2], angles[1::2], centre))
    return EvenOdd(even, odd, frc_figures(even, odd))


@dataclass(frozen=True)
class InventedDetailCheck:
    """Plain and cross even/odd FRC of a restoration, against the raw even/odd FRC.

    Attributes
    ----------
    raw : FRCFigures
        Raw even vs raw odd.
    plain : FRCFigures
        Restored even vs restored odd (what a plain even/odd FRC reports).
    cross : FRCFigures
        Restored even vs **raw** odd: only detail present in the data correlates.
    invented : bool
        The plain resolution is finer than the cross one by more than
        :data:`INVENTED_TOLERANCE`: the two restored halves agree on detail that the measured
        other half does not support.
    """

    raw: FRCFigures
    plain: FRCFigures
    cross: FRCFigures
    invented: bool


def invented_detail_check(
    raw_even: np.ndarray,
    raw_odd: np.ndarray,
    restored_even: np.ndarray,
    restored_odd: np.ndarray,
    *,
    tolerance: float = INVENTED_TOLERANCE,
) -> InventedDetailCheck:
    """Check whether a restoration's even/odd FRC gain comes from the data or the method.

    See the module docstring for why the cross FRC (restored even vs raw odd) is the check.

    Parameters
    ----------
    raw_even, raw_odd, restored_even, restored_odd : numpy.ndarray
        ``(C, C)`` or ``(Z, C, C)`` reconstructions on one grid.
    tolerance : float
        Relative resolution change that counts (default 5 %).

    Returns
    -------
    InventedDetailCheck
    """
    raw = frc_figures(raw_even, raw_odd)
    plain = frc_figures(restored_even, restored_odd)
    cross = frc_figures(restored_even, raw_odd)
    invented = plain.resolution_px < cross.resolution_px * (1.0 - tolerance)
    return InventedDetailCheck(raw, plain, cross, bool(invented))


def air_mask(
    raw_reconstruction: np.ndarray,
    *,
    margin_px: int = 8,
    level: float = 0.1,
    fraction: float = 0.9,
) -> np.ndarray:
    """Air pixels away from the object, from the RAW reconstruction (reuse it for every method).

    The object is where the smoothed reconstruction (Gaussian, sigma 2 px; the maximum over
    slices) exceeds ``level`` times its 99.5th percentile inside the circle; it is grown by
    ``margin_px`` so that edges and their ringing stay out, and the rest of a disc of
    ``fraction`` of the reconstruction circle is air.

    Parameters
    ----------
    raw_reconstruction : numpy.ndarray
        ``(C, C)`` or ``(Z, C, C)`` reconstruction from the measured projections.
    margin_px : int
        Distance kept from the object, px.
    level : float
        Object threshold as a fraction of the bright end.
    fraction : float
        Disc radius as a fraction of the reconstruction circle.

    Returns
    -------
    numpy.ndarray
        ``(C, C)`` bool.

    Raises
    ------
    ValueError
        When fewer than :data:`MIN_AIR_PIXELS` pixels are air.
    """
    slices = _as_slices(raw_reconstruction, "raw_reconstruction")
    smooth = np.max([gaussian_filter(image, 2.0) for image in slices], axis=0)
    disc = disc_mask(smooth.shape[-1], fraction)
    bright = float(np.percentile(smooth[disc], 99.5))
    grown = binary_dilation(smooth > level * bright, iterations=max(1, int(margin_px)))
    mask = disc & ~grown
    if mask.sum() < MIN_AIR_PIXELS:
        raise ValueError(
            f"only {int(mask.sum())} air pixels around the object (need {MIN_AIR_PIXELS}): "
            "the object fills the field, so there is no air to measure the noise in"
        )
    return mask


def air_noise(reconstruction: np.ndarray, air_mask: np.ndarray) -> float:
    """Noise of a reconstruction: standard deviation in air, attenuation per pixel.

    Each slice's mean over the mask is removed first (an offset is not noise); the deviations
    of all slices are pooled.

    Parameters
    ----------
    reconstruction : numpy.ndarray
        ``(C, C)`` or ``(Z, C, C)``.
    air_mask : numpy.ndarray
        ``(C, C)`` bool from :func:`air_mask` on the raw reconstruction.

    Returns
    -------
    float
    """
    slices = _as_slices(reconstruction, "reconstruction")
    mask = np.asarray(air_mask, dtype=bool)
    if mask.shape != slices.shape[1:] or not mask.any():
        raise ValueError(f"the air mask must be a non-empty {slices.shape[1:]} boolean map")
    values = slices[:, mask]
    return float(np.sqrt(np.mean((values - values.mean(axis=1, keepdims=True)) ** 2)))
