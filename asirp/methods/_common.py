"""Pieces shared by the method modules: data preparation and initial estimates."""

from __future__ import annotations

import torch

from asirp.blur import BlurOperator


def non_negative(data: torch.Tensor) -> torch.Tensor:
    """Counts for the Poisson methods: negative values (from dark subtraction) are set to zero.

    Returns ``data`` itself when it has no negative value (one read instead of a copy), else a
    clamped copy; the caller must not modify the result in place.
    """
    if data.numel() and float(data.min()) >= 0.0:
        return data
    return data.clamp_min(0.0)


def smooth_initial_estimate(
    operator: BlurOperator, data: torch.Tensor, normaliser: torch.Tensor
) -> torch.Tensor:
    """A positive starting object: the data spread by the PSF's adjoint, on the object grid.

    Unlike the raw data it has no zero pixels (which multiplicative updates could never leave)
    and it continues smoothly past the edges of the map for ``boundary="extend"``.

    Parameters
    ----------
    operator : BlurOperator
        The blur between object and data grids.
    data : torch.Tensor
        Non-negative maps ``(B, H, W)``.
    normaliser : torch.Tensor
        ``H^T 1`` on the object grid (positive).

    Returns
    -------
    torch.Tensor
        ``(B, *operator.object_shape)``, strictly positive.
    """
    estimate = operator.adjoint(data)  # a fresh array (direct path) or a view (FFT path)
    estimate = estimate.div_(normaliser) if estimate.is_contiguous() else estimate / normaliser
    floor = 1e-3 * data.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return torch.maximum(estimate, floor, out=estimate)


def adjoint_of_ones(operator: BlurOperator, data: torch.Tensor) -> torch.Tensor:
    """``H^T 1`` on the object grid ``(1, *object_shape)``, floored to stay positive.

    Computed from the PSF's partial sums (:meth:`BlurOperator.adjoint_of_ones`), not by FFTs.
    """
    return operator.adjoint_of_ones().to(data.device, data.dtype).clamp_min_(1e-6)
