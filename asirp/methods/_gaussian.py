"""Pixel-integrated Gaussian kernels in batches, for the blind beam-width search and blind RL.

One job: the Gaussian PSF of a candidate width as the blind methods build it, many widths at
once (:func:`gaussian_kernels`), and the window half-size that holds one (:func:`kernel_radius`).
The kernels agree with :func:`asirp.psf.gaussian_psf` (same pixel integration and cut-off,
:data:`TRUNCATE`); they are used by :mod:`asirp.methods._psf_search` and
:mod:`asirp.methods.blind_richardson_lucy`.
"""

from __future__ import annotations

import math

import torch

TRUNCATE = 4.0
"""Gaussian kernels are cut at this many standard deviations (as :func:`asirp.psf.gaussian_psf`)."""


def gaussian_kernels(
    sigmas: torch.Tensor, radius: tuple[int, int], truncate: float | None = TRUNCATE
) -> torch.Tensor:
    """Pixel-integrated, normalised Gaussian kernels, one per row of ``sigmas``.

    Each pixel holds the integral of the Gaussian over that pixel (error functions) and each
    kernel is cut at ``ceil(truncate * sigma)`` pixels from the centre (at least 1) along each
    axis, as :func:`asirp.psf.gaussian_psf` does: the two agree, and a kernel does not depend on
    the window it is placed in (which is set by the widest kernel of a batch).

    Parameters
    ----------
    sigmas : torch.Tensor
        ``(M, 2)`` standard deviations along rows and columns, pixels, > 0.
    radius : (int, int)
        Half-size of the window along rows and columns, pixels.
    truncate : float or None
        Cut-off in standard deviations; ``None`` fills the whole window.

    Returns
    -------
    torch.Tensor
        ``(M, 2 * radius[0] + 1, 2 * radius[1] + 1)``, float32, each summing to 1.
    """
    profiles = []
    for axis in (0, 1):
        sigma = sigmas[:, axis : axis + 1].double()
        offsets = torch.arange(-radius[axis], radius[axis] + 1, dtype=torch.float64)
        edges = torch.cat([offsets - 0.5, offsets[-1:] + 0.5])
        weights = torch.diff(0.5 * torch.special.erf(edges[None, :] / (math.sqrt(2.0) * sigma)))
        if truncate is not None:
            reach = torch.ceil(truncate * sigma).clamp_min(1.0)
            weights = torch.where(offsets.abs()[None, :] <= reach, weights, 0.0)
        profiles.append(weights / weights.sum(dim=1, keepdim=True))
    kernels = profiles[0][:, :, None] * profiles[1][:, None, :]
    return (kernels / kernels.sum(dim=(-2, -1), keepdim=True)).to(torch.float32)


def kernel_radius(sigma: float, limit: int) -> int:
    """Half-size of a Gaussian window, ``ceil(4 sigma)`` (at least 1), at most ``limit``."""
    return int(min(max(1, math.ceil(TRUNCATE * sigma)), max(1, limit)))
