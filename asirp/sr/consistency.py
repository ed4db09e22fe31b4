r"""The consistency check of a super-resolved map: does its measurement reproduce the input.

A learned model can invent detail. Whatever it adds must vanish when the result is measured
again, so every super-resolved map ``x`` is degraded with the forward model
(:func:`asirp.sr.degrade.degrade`: beam blur on the fine grid, area sampling) and compared with the
measured map ``y``:

.. math:: \rho = \frac{\mathrm{rms}\left(y - D_s(g * x)\right)}{\hat\sigma_n}

where :math:`\hat\sigma_n` is the noise standard deviation of ``y`` (Immerkaer's estimate,
:func:`asirp.metrics.noise_sigma`, floored at 0.1 % of the map's range so noise-free data give a
finite figure, and at :data:`LEVEL_FLOOR` of its mean magnitude so a flat map's float32 rounding
does not read as millions of sigmas). A result that explains the data up to the noise has
:math:`\rho \approx 1`; detail that the data contradict, or missing structure, gives larger
values. Results with :math:`\rho` above the tolerance are flagged: ``metrics["consistent"]``
is false and a :class:`ConsistencyWarning` is issued.

Reported in ``Restoration.metrics`` (averaged over a stack; ``consistent`` is true only if every
map passed):

``consistency_residual``
    :math:`\rho` (dimensionless; noise units).
``consistency_relative``
    :math:`\|y - D_s(g * x)\| / \|y\|`, the residual relative to the data.
``consistent``
    ``True`` when :math:`\rho` is at most the tolerance.

A second check asks whether the input has structure to super-resolve at all
(:func:`structure_figures`): its variance less the noise variance (Poisson, the mean, for
integer counts; else Immerkaer's estimate squared) over the noise variance. A map of noise
reads about 0; a map whose structure is not above the noise (at most :data:`STRUCTURE_MIN`)
gets a caution, since a network then enlarges noise, not detail:

``structure_to_noise``
    The ratio (dimensionless).
``structure_above_noise``
    ``True`` when it exceeds :data:`STRUCTURE_MIN`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from asirp.iteration import is_integer_counts
from asirp.metrics import noise_sigma
from asirp.sr.degrade import degrade

DEFAULT_TOLERANCE = 1.5
"""Default largest consistency residual (in noise standard deviations) accepted."""

NOISE_FLOOR = 1e-3
"""Smallest noise level assumed, as a fraction of the map's 0.5-99.5 percentile range."""

LEVEL_FLOOR = 1e-5
"""Smallest noise level assumed, as a fraction of the map's mean magnitude: some hundred float32
roundings (a flat map has no range, and its super-resolution reproduces it to rounding)."""


STRUCTURE_MIN = 1.0
"""A map's structure variance (its variance less the noise variance) must exceed this multiple
of the noise variance: the structure's standard deviation above the noise's."""


def structure_figures(measured: torch.Tensor) -> list[dict[str, float | bool]]:
    """Whether each measured map has structure above its noise.

    Parameters
    ----------
    measured : torch.Tensor
        ``(B, H, W)`` input maps.

    Returns
    -------
    list of dict
        Per map: ``structure_to_noise`` (variance less noise variance, over the noise
        variance) and ``structure_above_noise`` (it exceeds :data:`STRUCTURE_MIN`).
    """
    data = measured.detach().cpu().numpy().astype(np.float64)
    figures: list[dict[str, float | bool]] = []
    for image in data:
        if is_integer_counts(image):  # Poisson counts: the variance of the noise is the mean
            noise_variance = float(np.mean(image))
        else:
            noise_variance = noise_sigma(image) ** 2
        noise_variance = max(noise_variance, 1e-12 * max(float(np.var(image)), 1e-30))
        # a structure variance cannot be negative: a map of noise reads 0, not a sampling error
        ratio = max(0.0, (float(np.var(image)) - noise_variance) / noise_variance)
        figures.append(
            {"structure_to_noise": ratio, "structure_above_noise": bool(ratio > STRUCTURE_MIN)}
        )
    return figures


class ConsistencyWarning(UserWarning):
    """A super-resolved result that its own input does not support (possible invented detail)."""


def consistency_figures(
    measured: torch.Tensor,
    fine: torch.Tensor,
    sigma_px: float | tuple[float, float],
    scale: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[dict[str, float | bool]]:
    """Consistency figures of each super-resolved map of a stack.

    Parameters
    ----------
    measured : torch.Tensor
        ``(B, H, W)`` input maps.
    fine : torch.Tensor
        ``(B, s H, s W)`` super-resolved maps, same intensity scale.
    sigma_px : float or (float, float)
        Beam standard deviation in measured pixels used by the forward model, or
        ``(sigma_rows, sigma_cols)`` for an anisotropic one.
    scale : int
        Upscaling factor ``s``.
    tolerance : float
        Largest accepted ``consistency_residual``.

    Returns
    -------
    list of dict
        Per map: ``consistency_residual``, ``consistency_relative``, ``consistent``.
    """
    if isinstance(sigma_px, tuple):
        predicted = degrade(fine.float(), sigma_px[0], scale, sigma_cols_px=sigma_px[1])
    else:
        predicted = degrade(fine.float(), sigma_px, scale)
    residual = (measured.float() - predicted).detach().cpu().numpy().astype(np.float64)
    data = measured.detach().cpu().numpy().astype(np.float64)
    figures: list[dict[str, float | bool]] = []
    for difference, image in zip(residual, data, strict=True):
        low, high = np.percentile(image, [0.5, 99.5])
        level = LEVEL_FLOOR * float(np.mean(np.abs(image)))
        noise = max(noise_sigma(image), NOISE_FLOOR * (high - low), level, 1e-12)
        rms = float(np.sqrt(np.mean(difference**2)))
        norm = float(np.linalg.norm(image))
        rho = rms / noise
        figures.append(
            {
                "consistency_residual": rho,
                "consistency_relative": float(np.linalg.norm(difference)) / norm if norm else 0.0,
                "consistent": bool(rho <= tolerance),
            }
        )
    return figures


def warn_if_inconsistent(
    method: str, figures: list[dict[str, float | bool]], tolerance: float, first_index: int = 0
) -> None:
    """Issue one :class:`ConsistencyWarning` naming the maps that failed the check."""
    failed = [
        (first_index + index, float(f["consistency_residual"]))
        for index, f in enumerate(figures)
        if not f["consistent"]
    ]
    if not failed:
        return
    listed = ", ".join(f"#{index} ({rho:.2f})" for index, rho in failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    warnings.warn(
        f"{method}: {len(failed)} super-resolved map(s) do not reproduce their input within the "
        f"noise (consistency residual above {tolerance:g} noise sigmas: {listed}{more}); the "
        "model may have invented or lost detail, or the PSF is wrong",
        ConsistencyWarning,
        stacklevel=3,
    )
