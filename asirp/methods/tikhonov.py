r"""Tikhonov-regularised least squares in closed form, with the weight chosen by GCV.

.. math:: \hat x = \frac{\hat h^*}{|\hat h|^2 + \lambda |\hat L|^2} \, \hat y

with :math:`L` the identity (penalises energy) or the discrete Laplacian (penalises roughness,
keeps smooth gradients). With ``weight=None`` the weight :math:`\lambda` minimises the
generalised cross-validation function (Golub, Heath & Wahba 1979)

.. math:: \mathrm{GCV}(\lambda) = \frac{N \sum_f |(1 - \phi_f) \hat y_f|^2}
          {\left( \sum_f (1 - \phi_f) \right)^2}, \qquad
          \phi_f = \frac{|\hat h_f|^2}{|\hat h_f|^2 + \lambda |\hat L_f|^2},

evaluated on a logarithmic grid (all in the Fourier domain, so it costs little more than one
solve). Input policy as for :mod:`asirp.methods.wiener`.

References
----------
.. [1] A. N. Tikhonov and V. Y. Arsenin, *Solutions of Ill-Posed Problems*, Winston (1977).
.. [2] G. H. Golub, M. Heath and G. Wahba, "Generalized cross-validation as a method for
   choosing a good ridge parameter", Technometrics 21, 215-223 (1979).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from asirp.methods._fourier import laplacian_power, spectral_problem
from asirp.methods._public import Device, DirectBoundary
from asirp.registry import (
    BACKGROUND,
    DIRECT_BOUNDARY,
    POSITIVITY,
    CostPrior,
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    SelectorGrid,
    no_grad,
    register_method,
)
from asirp.restore import restore

GCV_WEIGHTS = torch.logspace(-7, 2, 91)
"""Candidate weights searched by generalised cross-validation."""


def real_spectrum_multiplicity(grid_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """How many full-FFT bins each real-FFT bin stands for (1 or 2), ``(1, N_cols // 2 + 1)``."""
    columns = grid_shape[1] // 2 + 1
    multiplicity = torch.full((1, columns), 2.0, device=device)
    multiplicity[0, 0] = 1.0
    if grid_shape[1] % 2 == 0:
        multiplicity[0, -1] = 1.0
    return multiplicity


def gcv_weight(
    data_spectrum: torch.Tensor,
    otf_power: torch.Tensor,
    regulariser_power: torch.Tensor,
    multiplicity: torch.Tensor,
) -> torch.Tensor:
    """The weight minimising GCV for each map, shape ``(B,)``.

    Parameters
    ----------
    data_spectrum : torch.Tensor
        ``(B, N_rows, N_cols // 2 + 1)`` real FFT of the data.
    otf_power, regulariser_power : torch.Tensor
        ``|h|^2`` and ``|L|^2`` on the same grid.
    multiplicity : torch.Tensor
        Bin multiplicities of the real FFT (see :func:`real_spectrum_multiplicity`).
    """
    data_power = data_spectrum.abs() ** 2 * multiplicity
    scores = []
    for weight in GCV_WEIGHTS.tolist():
        complement = weight * regulariser_power / (otf_power + weight * regulariser_power)
        residual = (complement**2 * data_power).sum(dim=(-2, -1))
        trace = (complement * multiplicity).sum()
        scores.append(residual / trace.clamp_min(1e-30) ** 2)
    best = torch.stack(scores).argmin(dim=0)
    return GCV_WEIGHTS.to(data_spectrum.device)[best]


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Tikhonov deconvolution of ``(B, H, W)`` maps; see the module notes."""
    assert problem.psf is not None  # guaranteed by needs_psf
    data = problem.data - params["background"]
    spectral = spectral_problem(data, problem.psf, params["boundary"])
    otf_power = spectral.otf.abs() ** 2
    if params["regulariser"] == "laplacian":
        regulariser_power = laplacian_power(spectral.grid_shape, data.device)
    else:
        regulariser_power = torch.ones_like(otf_power)
    if params["weight"] is None:
        multiplicity = real_spectrum_multiplicity(spectral.grid_shape, data.device)
        weight = gcv_weight(spectral.data_spectrum, otf_power, regulariser_power, multiplicity)
    else:
        weight = torch.full((data.shape[0],), params["weight"], device=data.device)
    denominator = otf_power + weight.view(-1, 1, 1) * regulariser_power
    image = spectral.to_image(spectral.data_spectrum * spectral.otf.conj() / denominator)
    if params["positivity"]:
        image = image.clamp_min(0.0)
    problem.progress(1.0)
    return MethodOutput(image, problem.psf, {"weight_used": [float(w) for w in weight.tolist()]})


SPEC = register_method(
    MethodSpec(
        name="tikhonov",
        family="non-blind",
        needs_psf=True,
        scale=1,
        summary="closed-form regularised least squares; weight by generalised cross-validation",
        parameters=(
            Parameter(
                "weight",
                float,
                None,
                "regularisation weight lambda (None = chosen by GCV)",
                minimum=1e-12,
                maximum=1e6,
            ),
            Parameter(
                "regulariser",
                str,
                "laplacian",
                "penalty: 'laplacian' (roughness) or 'identity' (energy)",
                choices=("laplacian", "identity"),
            ),
            POSITIVITY,
            BACKGROUND,
            DIRECT_BOUNDARY,
        ),
        run=run,
        selector_grid=SelectorGrid(thorough=({}, {"regulariser": "identity"}), cheap=({},)),
        cost_prior=CostPrior(passes=16.0),
    )
)


def tikhonov(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    weight: float | None = None,
    regulariser: Literal["laplacian", "identity"] = "laplacian",
    positivity: bool = True,
    background: float = 0.0,
    boundary: DirectBoundary = "reflect",
    device: Device = "auto",
) -> np.ndarray:
    """Tikhonov deconvolution in closed form, weight by GCV (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype; never modified.
    psf : array_like, shape (h, w)
        Point spread function: odd sides, non-negative, normalised to sum 1.
    weight : float, optional
        Regularisation weight lambda (None = chosen by GCV).
    regulariser : {"laplacian", "identity"}
        Penalty: 'laplacian' (roughness) or 'identity' (energy).
    positivity : bool
        Clip negative values of the estimate to zero.
    background : float
        Constant background in the data (counts per pixel).
    boundary : {"reflect", "periodic"}
        Edges: 'reflect' (mirror-extended map) or 'periodic'.
    device : str or torch.device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    numpy.ndarray of float32, shape of ``image``
        The restored map(s), counts.

    See Also
    --------
    asirp.restore : the same run, with metrics and provenance.
    """
    return restore(
        image,
        SPEC.name,
        psf=psf,
        device=device,
        weight=weight,
        regulariser=regulariser,
        positivity=positivity,
        background=background,
        boundary=boundary,
    ).image
