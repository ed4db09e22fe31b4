r"""The super-resolution forward model: Gaussian beam blur on the fine grid, then area sampling.

A measured map ``y`` of shape ``(H, W)`` is modelled as the fine (super-resolved) object ``x`` of
shape ``(s H, s W)`` blurred by the beam and averaged over each measured pixel:

.. math:: y = D_s (g_{s \sigma} * x) + n

- :math:`g_{s\sigma}` is the Gaussian beam of standard deviation :math:`s \sigma` fine pixels
  (``sigma`` in measured pixels), integrated over each fine pixel (:func:`asirp.psf.gaussian_psf`),
  with mirror boundaries;
- :math:`D_s` is **area sampling**: the mean of each ``s x s`` block (a detector pixel, or a scan
  step, integrates the signal over its area). Means, not sums: the fine image keeps the intensity
  scale of the measurement (counts per measured pixel area), so ``x`` and ``y`` are comparable;
- ``n`` is Poisson noise on counts.

The same operator makes the training pairs (:mod:`asirp.sr.data`), the lower-resolution "sons" of
ZSSR (:mod:`asirp.sr.zssr`), and the consistency check of every super-resolved result
(:mod:`asirp.sr.consistency`), so all three agree on what "the measurement of the output" is.

A PSF given on the measured grid (the ``psf`` every ASIRP method receives) is described by the
Gaussian whose pixel-integrated kernel has the same second moments (:func:`sigma_from_psf`); when
none is given, the beam width is estimated from the map's power spectrum
(:func:`estimate_blur_sigma`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from asirp.metrics import noise_sigma
from asirp.psf import gaussian_psf, psf_sigma_px

SIGMA_RANGE_PX = (0.05, 3.0)
"""Bounds of a beam sigma estimated or derived here, in measured pixels."""

SHIFTED_SUM_PIXELS = 512 * 512
"""Maps larger than this are blurred by sums of shifted copies instead of convolutions."""


def gaussian_profile(sigma_px: float, radius: int | None = None) -> np.ndarray:
    """One axis of the pixel-integrated Gaussian of :func:`asirp.psf.gaussian_psf`.

    Parameters
    ----------
    sigma_px : float
        Standard deviation in pixels (> 0).
    radius : int, optional
        Half-length of the profile; the default is the PSF helper's (4 sigma, at least 1).

    Returns
    -------
    numpy.ndarray
        Shape ``(2 * radius + 1,)``, float32, sum 1.
    """
    profile = gaussian_psf((sigma_px, sigma_px)).sum(axis=1, dtype=np.float64)
    if radius is not None:
        own = profile.size // 2
        if radius >= own:
            profile = np.pad(profile, radius - own)
        else:
            profile = profile[own - radius : own + radius + 1]
    return (profile / profile.sum()).astype(np.float32)


def _profiles(sigmas: Sequence[float], device: torch.device) -> torch.Tensor:
    """Stack of 1-D profiles of one common odd length, ``(N, 2 r + 1)``."""
    radius = max(1, max(math.ceil(4.0 * s) for s in sigmas))
    rows = [gaussian_profile(s, radius) for s in sigmas]
    return torch.from_numpy(np.stack(rows)).to(device)


def _per_map(sigma_px: float | Sequence[float] | torch.Tensor, batch: int) -> list[float]:
    sigmas = torch.as_tensor(sigma_px, dtype=torch.float64).flatten().tolist()
    if len(sigmas) == 1:
        sigmas = sigmas * batch
    if len(sigmas) != batch:
        raise ValueError(f"got {len(sigmas)} sigmas for {batch} maps")
    return sigmas


def gaussian_blur(
    images: torch.Tensor,
    sigma_px: float | Sequence[float] | torch.Tensor,
    sigma_cols_px: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Blur maps with pixel-integrated Gaussians, mirror boundaries, same shape.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, H, W)`` float maps.
    sigma_px : float or sequence of float or torch.Tensor
        One sigma (pixels) for all maps, or one per map (``(B,)``); along both axes unless
        ``sigma_cols_px`` is given, then along the rows (the vertical axis) only.
    sigma_cols_px : float or sequence of float or torch.Tensor, optional
        The sigma along the columns (the horizontal axis), for anisotropic beams; the same
        forms as ``sigma_px``.

    Returns
    -------
    torch.Tensor
        ``(B, H, W)``, the blurred maps (same dtype and device).
    """
    batch = images.shape[0]
    sigmas = _per_map(sigma_px, batch)
    across = sigmas if sigma_cols_px is None else _per_map(sigma_cols_px, batch)
    # one common radius for both axes: the narrower profile is zero-padded
    both = _profiles(sigmas + across, images.device).to(images.dtype)  # (2B, K)
    kernels, kernels_cols = both[:batch], both[batch:]
    radius = kernels.shape[1] // 2
    rows, cols = images.shape[-2:]
    mode = "reflect" if radius < min(rows, cols) else "replicate"
    if rows * cols <= SHIFTED_SUM_PIXELS:
        grouped = images.unsqueeze(0)  # (1, B, H, W): one group per map
        grouped = F.pad(grouped, (radius, radius, radius, radius), mode=mode)
        grouped = F.conv2d(grouped, kernels[:, None, :, None], groups=batch)
        grouped = F.conv2d(grouped, kernels_cols[:, None, None, :], groups=batch)
        return grouped[0]
    # Large maps: sums of shifted copies, several times faster than a one-channel convolution
    # on CPUs; the same result up to float rounding.
    padded = F.pad(images.unsqueeze(1), (radius, radius, radius, radius), mode=mode)[:, 0]
    weights = kernels[:, :, None, None]  # (B, K, 1, 1)
    along_rows = weights[:, 0] * padded[:, :rows, :]
    for shift in range(1, 2 * radius + 1):
        along_rows = along_rows + weights[:, shift] * padded[:, shift : shift + rows, :]
    weights = kernels_cols[:, :, None, None]
    blurred = weights[:, 0] * along_rows[:, :, :cols]
    for shift in range(1, 2 * radius + 1):
        blurred = blurred + weights[:, shift] * along_rows[:, :, shift : shift + cols]
    return blurred


def area_downsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over each ``scale x scale`` block: ``(B, s H, s W) -> (B, H, W)``.

    Rows and columns past the last whole block are dropped.
    """
    return F.avg_pool2d(images.unsqueeze(1), scale)[:, 0]


def degrade(
    fine: torch.Tensor,
    sigma_px: float | Sequence[float] | torch.Tensor,
    scale: int,
    sigma_cols_px: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the forward model without noise: blur on the fine grid, then area sampling.

    Parameters
    ----------
    fine : torch.Tensor
        ``(B, s H, s W)`` fine-grid maps.
    sigma_px : float or sequence of float or torch.Tensor
        Beam standard deviation in **measured** (coarse) pixels, one or one per map; the fine-grid
        blur is ``scale * sigma_px`` fine pixels.
    scale : int
        Upscaling factor ``s``.
    sigma_cols_px : float or sequence of float or torch.Tensor, optional
        For an anisotropic beam: its sigma along the columns (horizontal), measured pixels;
        ``sigma_px`` is then the one along the rows (vertical).

    Returns
    -------
    torch.Tensor
        ``(B, H, W)``, what a noise-free measurement of ``fine`` would be.
    """
    sigma_fine = torch.as_tensor(sigma_px, dtype=torch.float64).flatten() * scale
    cols_fine = None
    if sigma_cols_px is not None:
        cols_fine = torch.as_tensor(sigma_cols_px, dtype=torch.float64).flatten() * scale
    return area_downsample(gaussian_blur(fine, sigma_fine, cols_fine), scale)


def sigma_from_psf(psf: np.ndarray | torch.Tensor) -> float:
    """Sigma (measured pixels) of the pixel-integrated Gaussian with the same moments as a PSF.

    Anisotropic PSFs are described by the geometric mean of the two axes of
    :func:`sigma_axes_from_psf`.

    Parameters
    ----------
    psf : numpy.ndarray or torch.Tensor
        ``(h, w)`` non-negative kernel on the measured grid.

    Returns
    -------
    float
        Sigma in measured pixels, within :data:`SIGMA_RANGE_PX`.
    """
    rows, cols = sigma_axes_from_psf(psf)
    return float(math.sqrt(rows * cols))


def sigma_axes_from_psf(psf: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Sigmas (measured pixels) along the rows and the columns of a PSF's equivalent Gaussian.

    The second moments of a sampled kernel include the pixel's own width, so the equivalent
    Gaussian is found by matching the moments of :func:`gaussian_profile` (bisection), which is
    exact for the PSFs that :func:`asirp.psf.gaussian_psf` makes, anisotropic ones included.
    A rotated (off-axis) beam is described by its moments along the grid's axes.

    Parameters
    ----------
    psf : numpy.ndarray or torch.Tensor
        ``(h, w)`` (or ``(B, h, w)``, averaged) non-negative kernel on the measured grid.

    Returns
    -------
    (float, float)
        ``(sigma_rows, sigma_cols)`` in measured pixels, each within :data:`SIGMA_RANGE_PX`.
    """
    array = psf.detach().cpu().numpy() if isinstance(psf, torch.Tensor) else np.asarray(psf)
    if array.ndim == 3:
        array = array.mean(axis=0)
    moments = psf_sigma_px(array)
    low_bound, high_bound = SIGMA_RANGE_PX

    def moment(sigma: float) -> float:
        profile = gaussian_profile(sigma).astype(np.float64)
        centres = np.arange(profile.size) - profile.size // 2
        return math.sqrt(float((profile * centres**2).sum()))

    matched = []
    for target in moments:
        low, high = low_bound, high_bound
        if moment(low) >= target:
            matched.append(low)
            continue
        if moment(high) <= target:
            matched.append(high)
            continue
        for _ in range(40):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if moment(middle) < target else (low, middle)
        matched.append(0.5 * (low + high))
    return float(matched[0]), float(matched[1])


def estimate_blur_sigma(image: np.ndarray) -> float:
    r"""Estimate the Gaussian beam sigma (measured pixels) of a map from its power spectrum.

    The ring-averaged power of an area-sampled, blurred map above the white-noise floor is
    modelled as a natural-image power law :math:`f^{-2}` (Field 1987) times the pixel's transfer
    function :math:`\mathrm{sinc}^2 f` times the Gaussian's,

    .. math:: \log P(f) = a - 2 \log f + 2 \log \mathrm{sinc} f - 4 \pi^2 \sigma^2 f^2,

    and :math:`a, \sigma` are fitted by least squares on the rings above 0.1 cycles per pixel
    whose power is at least three times the noise floor (Immerkaer's noise estimate). It is a
    rough, blind estimate: within about 40 % for objects with edges of all orientations and
    sizes (a Siemens star, polygons); objects that are smooth themselves (tissue with Gaussian
    hotspots) read as a wider beam, and periodic ones (meshes), whose spectrum is a set of peaks,
    can be off by a factor of two. Give the beam size when it is known.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` map, at least 16 x 16 pixels.

    Returns
    -------
    float
        Sigma in measured pixels, within :data:`SIGMA_RANGE_PX`; 0.5 when too few rings carry
        signal to fit (a beam about one step wide).

    References
    ----------
    .. [1] D. J. Field, "Relations between the statistics of natural images and the response
       properties of cortical cells", JOSA A 4, 2379-2394 (1987).
    """
    data = np.asarray(image, dtype=np.float64)
    rows, cols = data.shape
    if min(rows, cols) < 16:
        return 0.5
    window = np.outer(np.hanning(rows), np.hanning(cols))
    spectrum = np.abs(np.fft.rfft2((data - data.mean()) * window)) ** 2
    noise_floor = noise_sigma(data) ** 2 * float((window**2).sum())
    freq_y = np.fft.fftfreq(rows)[:, None]
    freq_x = np.fft.rfftfreq(cols)[None, :]
    radius = np.sqrt(freq_y**2 + freq_x**2)
    n_rings = min(rows, cols) // 2
    ring = np.minimum((radius * 2 * n_rings).astype(int), n_rings)
    count = np.bincount(ring.ravel(), minlength=n_rings + 1)[:n_rings]
    power = np.bincount(ring.ravel(), spectrum.ravel(), minlength=n_rings + 1)[:n_rings]
    power = power / np.maximum(count, 1)
    freq = (np.arange(n_rings) + 0.5) / (2 * n_rings)
    signal = power - noise_floor
    usable = (signal > 3.0 * noise_floor) & (freq >= 0.1)
    if usable.sum() < 4:
        return 0.5
    f = freq[usable]
    observed = np.log(signal[usable]) + 2.0 * np.log(f) - 2.0 * np.log(np.sinc(f))
    design = np.stack([np.ones_like(f), -4.0 * math.pi**2 * f**2], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, observed, rcond=None)
    variance = float(coefficients[1])
    sigma = math.sqrt(max(variance, 0.0))
    return float(min(max(sigma, SIGMA_RANGE_PX[0]), SIGMA_RANGE_PX[1]))
