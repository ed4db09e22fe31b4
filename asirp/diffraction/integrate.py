"""Azimuthal integration of area-detector frames to I(q) with pyFAI.

The integrator is pyFAI's (a real dependency, no hand-written binning); this module only checks
the frames, builds pyFAI's engine once and reuses it, and hands back a small immutable
:class:`Pattern` with the Poisson error of every bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asirp.diffraction.geometry import DetectorGeometry

_METHODS = {"no", "bbox", "pseudo", "full"}


@dataclass(frozen=True, eq=False)
class Pattern:
    """One integrated powder pattern.

    Attributes
    ----------
    q_A : numpy.ndarray
        ``(n_bins,)`` bin centres, 1/Å (increasing).
    intensity : numpy.ndarray
        ``(n_bins,)`` mean counts per pixel in the bin, counts (float64). 0 in empty bins.
    sigma : numpy.ndarray
        ``(n_bins,)`` Poisson standard error of ``intensity``, counts; 0 in empty bins.
    counts : numpy.ndarray
        ``(n_bins,)`` summed raw counts that fell in the bin (pixel splitting shares a pixel
        between bins, so these are fractional), counts.
    n_pixels : numpy.ndarray
        ``(n_bins,)`` number of pixels in the bin (fractional with pixel splitting), px;
        ``intensity == counts / n_pixels`` where ``n_pixels > 0``.
    """

    q_A: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    counts: np.ndarray
    n_pixels: np.ndarray

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("q_A", "intensity", "sigma", "counts", "n_pixels"):
            value = np.array(getattr(self, name), dtype=np.float64)  # a copy: immutable
            if value.ndim != 1:
                raise ValueError(f"Pattern.{name} must be 1-D, got shape {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"Pattern.{name} holds NaN or Inf")
            value.setflags(write=False)
            arrays[name] = value
        n = arrays["q_A"].size
        if n < 8:
            raise ValueError(f"a pattern needs at least 8 bins, got {n}")
        if any(a.size != n for a in arrays.values()):
            raise ValueError("Pattern arrays must all have the same length")
        if np.any(np.diff(arrays["q_A"]) <= 0):
            raise ValueError("Pattern.q_A must be strictly increasing")
        if np.any(arrays["sigma"] < 0) or np.any(arrays["n_pixels"] < 0):
            raise ValueError("Pattern.sigma and Pattern.n_pixels must be non-negative")
        for name, value in arrays.items():
            object.__setattr__(self, name, value)

    @property
    def valid(self) -> np.ndarray:
        """``(n_bins,)`` bool: bins that hold pixels and a positive error."""
        return (self.n_pixels > 0) & (self.sigma > 0)

    @classmethod
    def from_intensity(
        cls, q_A: np.ndarray, intensity: np.ndarray, n_pixels: np.ndarray | float = 1.0
    ) -> Pattern:
        """A pattern from mean counts per pixel alone, with Poisson errors.

        Parameters
        ----------
        q_A : numpy.ndarray
            ``(n_bins,)`` bin centres, 1/Å.
        intensity : numpy.ndarray
            ``(n_bins,)`` mean counts per pixel, counts (non-negative).
        n_pixels : numpy.ndarray or float
            Pixels per bin, px (scalar or ``(n_bins,)``).

        Returns
        -------
        Pattern
            ``counts = intensity * n_pixels`` and ``sigma = sqrt(counts) / n_pixels``; a bin
            with no counts gets the error of one count, so that it still carries weight.
        """
        intensity = np.asarray(intensity, dtype=np.float64)
        if intensity.ndim != 1 or not np.all(np.isfinite(intensity)) or np.any(intensity < 0):
            raise ValueError("intensity must be 1-D, finite and non-negative")
        pixels = np.broadcast_to(np.asarray(n_pixels, dtype=np.float64), intensity.shape)
        if not np.all(np.isfinite(pixels)) or np.any(pixels <= 0):
            raise ValueError("n_pixels must be finite and positive")
        counts = intensity * pixels
        sigma = np.sqrt(np.maximum(counts, 1.0)) / pixels
        return cls(q_A, intensity, sigma, counts, pixels)


def check_frame(frame: object, shape: tuple[int, int], name: str = "frame") -> np.ndarray:
    """Check a detector frame and return it as float32 (no copy when already float32).

    Parameters
    ----------
    frame : array_like
        ``shape`` counts per pixel: finite, non-negative real numbers.
    shape : tuple of int
        Expected ``(rows, columns)``, px.
    name : str
        What to call the array in error messages.

    Returns
    -------
    numpy.ndarray
        ``shape`` float32.

    Raises
    ------
    TypeError
        For non-numeric data.
    ValueError
        For a wrong shape, an empty frame, NaN/Inf or negative values.
    """
    if frame is None or isinstance(frame, str | bytes):
        raise TypeError(f"{name} must be a numeric array, got {type(frame).__name__}")
    array = np.asarray(frame)
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"{name} must hold real numbers (counts), got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have the detector shape {tuple(shape)}, got {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        # one reduction catches NaN and +-Inf; far cheaper than isfinite over 1 Mpx
        total = float(np.sum(array, dtype=np.float64))
        if not np.isfinite(total):
            raise ValueError(f"{name} holds NaN or Inf values")
    if array.min() < 0:
        raise ValueError(f"{name} holds negative counts (min {array.min()})")
    return np.asarray(array, dtype=np.float32)


class PatternIntegrator:
    """Integrate frames of one detector to I(q) with a pyFAI engine built once.

    Parameters
    ----------
    geometry : DetectorGeometry
        Where the detector sits.
    n_bins : int
        Number of q bins.
    q_range_A : tuple of float, optional
        ``(q_min, q_max)``, 1/Å; the whole detector when omitted.
    mask : numpy.ndarray, optional
        ``geometry.shape_px`` bool (or 0/1), true where a pixel must be ignored (gaps, beam stop).
    method : tuple of str
        pyFAI method ``(splitting, algorithm, implementation)``; ``("bbox", "csr", "cython")``
        splits pixels over bins (smoother patterns), ``("no", "csr", "cython")`` is ~1.5x faster.
    correct_solid_angle : bool
        Divide by the pixels' solid angle (relative to the PONI pixel). Off by default so that
        ``intensity`` is plain counts per pixel and Poisson statistics hold exactly.

    Examples
    --------
    >>> integrator = PatternIntegrator(DetectorGeometry(shape_px=(256, 256)), n_bins=400)
    >>> pattern = integrator(np.ones((256, 256)))  # doctest: +SKIP
    """

    def __init__(
        self,
        geometry: DetectorGeometry,
        *,
        n_bins: int = 1000,
        q_range_A: tuple[float, float] | None = None,
        mask: np.ndarray | None = None,
        method: Sequence[str] = ("bbox", "csr", "cython"),
        correct_solid_angle: bool = False,
    ) -> None:
        if not isinstance(geometry, DetectorGeometry):
            raise TypeError(f"geometry must be a DetectorGeometry, got {type(geometry).__name__}")
        if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer):
            raise TypeError(f"n_bins must be an integer, got {n_bins!r}")
        if not 8 <= int(n_bins) <= 100_000:
            raise ValueError(f"n_bins must be within [8, 100000], got {n_bins}")
        self.geometry = geometry
        self.n_bins = int(n_bins)
        self.q_range_A = check_q_range(q_range_A)
        method = tuple(method)
        if (
            len(method) != 3
            or method[0] not in _METHODS
            or not all(isinstance(m, str) for m in method)
        ):
            raise ValueError(
                f"method must be (splitting, algorithm, implementation) with splitting in "
                f"{sorted(_METHODS)}, got {method!r}"
            )
        self.method = method
        self.correct_solid_angle = bool(correct_solid_angle)
        self.mask = None
        if mask is not None:
            mask_array = np.asarray(mask)
            if mask_array.shape != geometry.shape_px:
                raise ValueError(
                    f"mask must have the detector shape {geometry.shape_px}, got {mask_array.shape}"
                )
            mask_array = mask_array.astype(bool)
            if mask_array.all():
                raise ValueError("the mask hides every pixel")
            self.mask = np.ascontiguousarray(mask_array, dtype=np.int8)
        self._ai = geometry.make_integrator()

    def __call__(self, frame: np.ndarray) -> Pattern:
        """Integrate one frame.

        Parameters
        ----------
        frame : numpy.ndarray
            ``geometry.shape_px`` counts per pixel (finite, non-negative).

        Returns
        -------
        Pattern
            ``n_bins`` bins over the q range.

        Raises
        ------
        ValueError, TypeError
            For a frame of the wrong shape, empty, non-numeric, with NaN/Inf or negative counts.
        """
        data = check_frame(frame, self.geometry.shape_px)
        # pyFAI keeps the CSR engine of (method, bins, range, mask) on the integrator: the first
        # call builds it, every later one reuses it
        result = self._ai.integrate1d(
            data,
            self.n_bins,
            unit="q_A^-1",
            radial_range=self.q_range_A,
            mask=self.mask,
            method=self.method,
            error_model="poisson",
            correctSolidAngle=self.correct_solid_angle,
            dummy=None,
        )
        n_pixels = np.asarray(result.count, dtype=np.float64)
        norm = np.asarray(result.sum_normalization, dtype=np.float64)
        counts = np.asarray(result.sum_signal, dtype=np.float64)
        filled = norm > 0
        safe = np.where(filled, norm, 1.0)
        intensity = np.where(filled, counts / safe, 0.0)
        variance = np.asarray(result.sum_variance, dtype=np.float64)
        # a filled bin without counts still has the error of one count (not zero: it must
        # keep a finite weight in any fit)
        sigma = np.where(filled, np.sqrt(np.maximum(variance, 1.0)) / safe, 0.0)
        return Pattern(
            q_A=np.asarray(result.radial, dtype=np.float64),
            intensity=intensity,
            sigma=sigma,
            counts=counts,
            n_pixels=np.where(filled, n_pixels, 0.0),
        )


def check_q_range(q_range_A: object) -> tuple[float, float] | None:
    """Check an optional ``(q_min, q_max)`` range, 1/Å; returns a tuple of floats or None."""
    if q_range_A is None:
        return None
    try:
        low, high = (float(v) for v in q_range_A)  # type: ignore[union-attr]
    except (TypeError, ValueError) as error:
        raise ValueError(f"q_range_A must be two numbers (1/Å), got {q_range_A!r}") from error
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
        raise ValueError(f"q_range_A must satisfy 0 <= q_min < q_max, got {q_range_A!r}")
    return (low, high)
