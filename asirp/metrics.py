"""Image-quality figures: contrast, sharpness, noise, data consistency, PSNR/SSIM and FRC.

All functions take 2-D maps ``(H, W)`` as numpy arrays (any real dtype) and return Python floats,
so results are JSON-serialisable. Figures that need no reference (contrast, sharpness, noise) are
what a beamline has online; PSNR and SSIM need the ground truth (simulations); Fourier ring
correlation needs two independent measurements of the same map (for example two detector
elements).

The no-reference figures and the residual read the maps in float32 and accumulate in float64, one
parallel pass each (compiled kernels, :mod:`asirp._kernels`): a few milliseconds for a megapixel
map. PSNR, SSIM and FRC compute in float64.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch

from asirp.backend import fast_fft_shape
from asirp.blur import _complex_array, cached_otf
from asirp.separable import separable_factors, use_torch_threads

FRC_THRESHOLD = 1.0 / 7.0
"""Fixed FRC threshold for the resolution (the common "1/7" criterion)."""


def _as_map(image: np.ndarray, name: str = "image") -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2 or min(array.shape) < 3:
        raise ValueError(
            f"{name} must be a 2-D map of at least 3x3 pixels, got shape {array.shape}"
        )
    return array


def _as_float32_map(image: np.ndarray, name: str = "image") -> np.ndarray:
    """The map as C-contiguous float32 (no copy when it already is), checked like ``_as_map``."""
    array = np.asarray(image)
    if array.ndim != 2 or min(array.shape) < 3:
        raise ValueError(
            f"{name} must be a 2-D map of at least 3x3 pixels, got shape {array.shape}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _kernels():
    """The compiled kernels, set to torch's thread count (imported on first use)."""
    # Lazy on purpose: importing the kernels imports numba (about 0.9 s, measured with
    # ``python -X importtime -c "import numba"``); ``import asirp`` does not load it.
    from asirp import _kernels

    use_torch_threads()
    return _kernels


def _figures(image: np.ndarray) -> dict[str, float]:
    """Per-pixel means of one map, from one pass of :func:`asirp._kernels.image_figures`.

    Keys: ``std`` (counts), ``mean_abs`` (counts), ``sobel`` (mean ``gy**2 + gx**2``, Sobel / 8)
    and ``immerkaer`` (mean ``|image * K|`` over the valid region).
    """
    array = _as_float32_map(image)
    total, total_abs, total_square, sobel, immerkaer = _kernels().image_figures(array)
    count = array.size
    mean = total / count  # of x - x[0, 0]
    return {
        "std": float(np.sqrt(max(total_square / count - mean * mean, 0.0))),
        "mean_abs": total_abs / count,
        "sobel": sobel / count,
        "immerkaer": immerkaer / ((array.shape[0] - 2) * (array.shape[1] - 2)),
    }


def contrast_std(image: np.ndarray) -> float:
    """Standard deviation of the intensities (the contrast figure quoted at beamlines), counts."""
    return _figures(image)["std"]


def sharpness(image: np.ndarray) -> float:
    """No-reference sharpness: RMS Sobel gradient over mean absolute intensity (dimensionless).

    Scale-invariant; larger is sharper. It also grows with noise, so compare it together with
    :func:`noise_sigma`.
    """
    return _sharpness(_figures(image))


def _sharpness(sums: dict[str, float]) -> float:
    if sums["mean_abs"] == 0:
        return 0.0
    return float(np.sqrt(sums["sobel"]) / sums["mean_abs"])


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of additive white noise, estimated by Immerkaer's method (counts).

    The image is filtered with a kernel that cancels smooth structure up to second order; the mean
    absolute response, times ``sqrt(pi / 2) / 6``, estimates the noise sigma.

    References
    ----------
    .. [1] J. Immerkaer, "Fast noise variance estimation", Computer Vision and Image
       Understanding 64, 300-302 (1996).
    """
    return _noise_sigma(_figures(image))


def _noise_sigma(sums: dict[str, float]) -> float:
    return float(np.sqrt(np.pi / 2.0) * sums["immerkaer"] / 6.0)


def blur(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolve a map with a PSF, mirror boundary, same shape."""
    array = np.asarray(image, dtype=np.float64)
    pad_y, pad_x = psf.shape[0] // 2, psf.shape[1] // 2
    padded = np.pad(array, ((pad_y, pad_y), (pad_x, pad_x)), mode="symmetric")
    return scipy.signal.fftconvolve(padded, np.asarray(psf, dtype=np.float64), mode="valid")


def data_residual(
    data: np.ndarray, restored: np.ndarray, psf: np.ndarray, background: float = 0.0
) -> float:
    """Relative data-consistency residual ``||y - (H x + b)|| / ||y||`` (dimensionless).

    Parameters
    ----------
    data : numpy.ndarray
        Measured map ``y``, ``(H, W)``.
    restored : numpy.ndarray
        Restored map ``x``, ``(H, W)``.
    psf : numpy.ndarray
        PSF ``(h, w)``, sum 1.
    background : float
        Constant background ``b`` (counts).
    """
    measured = _as_float32_map(data, "data")
    estimate = _as_float32_map(restored, "restored")
    kernels = _kernels()
    factors = separable_factors(psf)
    if factors is not None:  # the mirror-boundary convolution of blur(), as two 1-D passes
        column, row = factors
        predicted = np.empty((1, *estimate.shape), dtype=np.float32)
        kernels.correlate_separable(
            estimate[None],
            np.ascontiguousarray(column[::-1]),
            np.ascontiguousarray(row[::-1]),
            column.size // 2,
            row.size // 2,
            kernels.EDGE_SYMMETRIC,
            predicted,
            kernels.PLAIN,
            predicted,
            predicted,
            np.float32(0.0),
        )
        predicted = predicted[0]
        misfit, energy = kernels.residual_sums(measured, predicted, float(background))
    elif np.ndim(psf) == 2 and np.shape(psf)[0] % 2 and np.shape(psf)[1] % 2:
        misfit, energy = _fft_residual_sums(measured, estimate, np.asarray(psf), float(background))
    else:  # even sides: keep blur()'s own shapes and checks
        predicted = blur(estimate, psf).astype(np.float32)
        misfit, energy = kernels.residual_sums(measured, predicted, float(background))
    return float(np.sqrt(misfit / energy)) if energy > 0 else 0.0


def _fft_residual_sums(
    measured: np.ndarray, estimate: np.ndarray, psf: np.ndarray, background: float
) -> tuple[float, float]:
    """``(sum (y - (H x + b))**2, sum y**2)`` with ``H x`` = :func:`blur`, by float32 FFTs.

    The mirrored extension of ``x`` is convolved circularly on a fast FFT grid at least its size,
    which leaves the ``(H, W)`` window that :func:`blur` keeps (``mode="valid"``) untouched by
    the wrap-around. The grid is the one :class:`asirp.blur.BlurOperator` uses for
    ``boundary="extend"``, so the PSF's transfer function comes from :func:`asirp.blur.cached_otf`
    when a restoration just computed it. Same result as :func:`blur` to float32 rounding, about
    ten times faster than its float64 ``scipy.signal.fftconvolve`` at a megapixel.

    Parameters
    ----------
    measured, estimate : numpy.ndarray
        ``y`` and ``x``, ``(H, W)`` C-contiguous float32 (counts).
    psf : numpy.ndarray
        ``(h, w)`` with odd sides.
    background : float
        ``b``, counts per pixel.
    """
    from asirp import _fft_kernels  # lazy, as _kernels() (numba)

    pad_y, pad_x = psf.shape[0] // 2, psf.shape[1] // 2
    height, width = estimate.shape
    fft_shape = fast_fft_shape((height + 2 * pad_y, width + 2 * pad_x))
    grid = _residual_buffer(fft_shape)
    _fft_kernels.mirror_pad(estimate, grid.numpy()[0], pad_y, pad_x)  # writes every pixel
    otf = _complex_array(
        cached_otf(torch.from_numpy(np.ascontiguousarray(psf, dtype=np.float32)), fft_shape)
    )
    plan = _fft_kernels.real_fft2_plan(1, fft_shape)
    if plan is not None:  # in place on the buffer
        plan.forward(grid)
        _fft_kernels.multiply_spectrum(_complex_array(plan.spectrum(grid)), otf, False)
        plan.backward(grid)
        blurred = grid
    else:
        spectrum = torch.fft.rfft2(grid[..., : fft_shape[1]])
        _fft_kernels.multiply_spectrum(_complex_array(spectrum), otf, False)
        blurred = torch.fft.irfft2(spectrum, s=fft_shape)
    # The centred transfer function puts blur()'s "valid" window at the pads' offset.
    return _fft_kernels.residual_sums_at(measured, blurred.numpy()[0], pad_y, pad_x, background)


_residual_arrays = threading.local()


def _residual_buffer(fft_shape: tuple[int, int]) -> torch.Tensor:
    """The calling thread's FFT buffer ``(1, N0, 2 (N1 // 2 + 1))`` float32 for the residual.

    Kept for the last grid size: a fresh 4.7 MB array (a 1080² grid) costs about as much in page
    faults as the FFT itself (see :mod:`asirp._fft_kernels`), and a beamline computes the
    residual of map after map of one size.
    """
    rows, cols = fft_shape
    shape = (1, rows, 2 * (cols // 2 + 1))
    kept = getattr(_residual_arrays, "buffer", None)
    if kept is None or tuple(kept.shape) != shape:
        kept = _residual_arrays.buffer = torch.empty(shape)
    return kept


def _data_range(reference: np.ndarray) -> float:
    span = float(reference.max() - reference.min())
    return span if span > 0 else 1.0


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, with the reference's range as the peak."""
    from skimage.metrics import peak_signal_noise_ratio

    truth, test = _as_map(reference, "reference"), _as_map(image)
    if truth.shape != test.shape:
        raise ValueError(f"reference {truth.shape} and image {test.shape} differ in shape")
    return float(peak_signal_noise_ratio(truth, test, data_range=_data_range(truth)))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """Structural similarity index (Wang et al. 2004), with the reference's range."""
    from skimage.metrics import structural_similarity

    truth, test = _as_map(reference, "reference"), _as_map(image)
    if truth.shape != test.shape:
        raise ValueError(f"reference {truth.shape} and image {test.shape} differ in shape")
    window = min(7, *(s if s % 2 else s - 1 for s in truth.shape))
    return float(structural_similarity(truth, test, data_range=_data_range(truth), win_size=window))


@dataclass
class FRCResult:
    """Fourier ring correlation of two measurements of one map.

    Attributes
    ----------
    frequency : numpy.ndarray
        Ring centres in cycles per pixel, ``(n_rings,)``, from 0 to 0.5.
    correlation : numpy.ndarray
        FRC value of each ring, ``(n_rings,)``, in [-1, 1].
    resolution_px : float
        Period (pixels) where the FRC first falls below the threshold; ``nan`` if it never does
        (the maps agree at every frequency, so the resolution is limited by sampling).
    resolution_um : float
        The same in µm when a pixel size was given, else ``nan``.
    threshold : float
        The threshold used.
    """

    frequency: np.ndarray
    correlation: np.ndarray
    resolution_px: float
    resolution_um: float
    threshold: float


def fourier_ring_correlation(
    first: np.ndarray,
    second: np.ndarray,
    *,
    pixel_um: float | None = None,
    threshold: float = FRC_THRESHOLD,
) -> FRCResult:
    """Fourier ring correlation between two independent measurements of the same map.

    Both maps are apodised with a Hann window (so their edges add no spurious correlation), the
    correlation of their spectra is averaged over rings of width one frequency bin, and the
    resolution is the period where it first drops below ``threshold``.

    Parameters
    ----------
    first, second : numpy.ndarray
        Maps ``(H, W)`` with independent noise (two detector elements, or a binomial split).
    pixel_um : float, optional
        Pixel size in µm, to report the resolution in µm.
    threshold : float
        FRC threshold (default 1/7).

    Returns
    -------
    FRCResult
        The curve and the resolution.

    References
    ----------
    .. [1] N. Banterle, K. H. Bui, E. A. Lemke and M. Beck, "Fourier ring correlation as a
       resolution criterion for super-resolution microscopy", J. Struct. Biol. 183, 363 (2013).
    """
    a, b = _as_map(first, "first"), _as_map(second, "second")
    if a.shape != b.shape:
        raise ValueError(f"the two maps differ in shape: {a.shape} and {b.shape}")
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    spec_a = np.fft.fft2((a - a.mean()) * window)
    spec_b = np.fft.fft2((b - b.mean()) * window)
    freq_y = np.fft.fftfreq(a.shape[0])[:, None]
    freq_x = np.fft.fftfreq(a.shape[1])[None, :]
    radius = np.sqrt(freq_y**2 + freq_x**2)
    n_rings = max(a.shape) // 2
    ring = np.minimum((radius * 2 * n_rings).astype(int), n_rings)
    cross = np.bincount(ring.ravel(), (spec_a * spec_b.conj()).real.ravel(), n_rings + 1)
    power_a = np.bincount(ring.ravel(), (np.abs(spec_a) ** 2).ravel(), n_rings + 1)
    power_b = np.bincount(ring.ravel(), (np.abs(spec_b) ** 2).ravel(), n_rings + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = cross / np.sqrt(power_a * power_b)
    correlation = np.nan_to_num(correlation[:n_rings], nan=0.0)
    frequency = (np.arange(n_rings) + 0.5) / (2 * n_rings)
    below = np.nonzero(correlation[1:] < threshold)[0]
    resolution_px = float(1.0 / frequency[below[0] + 1]) if below.size else float("nan")
    resolution_um = resolution_px * pixel_um if pixel_um is not None else float("nan")
    return FRCResult(frequency, correlation, resolution_px, resolution_um, threshold)


def summary(
    data: np.ndarray,
    restored: np.ndarray,
    psf: np.ndarray | None = None,
    *,
    reference: np.ndarray | None = None,
    background: float = 0.0,
) -> dict[str, float]:
    """All figures that apply to one restoration of one map, as a flat dict of floats.

    Keys: ``contrast_std[_input]``, ``sharpness[_input]``, ``noise_sigma[_input]``, and when a
    PSF is given and the shapes agree, ``residual``; with a reference, ``psnr[_input]`` and
    ``ssim[_input]`` (the ``_input`` figures describe the measured map, for comparison).
    """
    figures: dict[str, float] = {}
    for suffix, image in (("", restored), ("_input", data)):
        sums = _figures(image)  # one pass for the three no-reference figures
        figures[f"contrast_std{suffix}"] = sums["std"]
        figures[f"sharpness{suffix}"] = _sharpness(sums)
        figures[f"noise_sigma{suffix}"] = _noise_sigma(sums)
    figures = {  # the documented order
        key + suffix: figures[key + suffix]
        for key in ("contrast_std", "sharpness", "noise_sigma")
        for suffix in ("", "_input")
    }
    if psf is not None and np.shape(restored) == np.shape(data):
        figures["residual"] = data_residual(data, restored, psf, background)
    if reference is not None:
        if np.shape(reference) == np.shape(restored):
            figures["psnr"] = psnr(reference, restored)
            figures["ssim"] = ssim(reference, restored)
        if np.shape(reference) == np.shape(data):
            figures["psnr_input"] = psnr(reference, data)
            figures["ssim_input"] = ssim(reference, data)
    return figures
