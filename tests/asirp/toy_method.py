"""A toy restoration method in one file: the worked example of ``CONTRIBUTING.md``.

Unsharp masking, :math:`x = y + a\\,(y - h * y)`: the detail the blur removed, added back once.
Everything the engine needs is here: the parameters, the settings the measured ``auto`` tries,
the cost before any measurement, the forward model the selector predicts with, and the typed
public function. ``tests/asirp/test_method_recipe.py`` loads this file and checks that the
method shows up everywhere; a built-in method is the same module under ``asirp/methods/``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from asirp import restore
from asirp.registry import (
    CostPrior,
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    SelectorGrid,
    no_grad,
    register_method,
)


def blur_same(images: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Maps ``(B, H, W)`` blurred by ``psf`` ``(h, w)``, zero outside the maps, same size."""
    return F.conv2d(images[:, None], psf.flip(-2, -1)[None, None], padding="same")[:, 0]


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Unsharp masking on ``(B, H, W)`` float32 maps."""
    assert problem.psf is not None  # guaranteed by needs_psf
    data = problem.data
    image = data + params["amount"] * (data - blur_same(data, problem.psf))
    return MethodOutput(image.clamp_min(0.0), problem.psf)


def forward(estimate: torch.Tensor, psf: torch.Tensor | None, scale: int) -> torch.Tensor:
    """The measurement an estimate predicts: the same zero-padded blur (scale 1)."""
    return estimate if psf is None else blur_same(estimate, psf)


SPEC = register_method(
    MethodSpec(
        name="toy_unsharp",
        family="non-blind",
        needs_psf=True,
        scale=1,
        summary="toy unsharp masking (the worked example of CONTRIBUTING.md)",
        parameters=(
            Parameter("amount", float, 0.5, "detail added back", minimum=0.0, maximum=5.0),
        ),
        run=run,
        selector_grid=SelectorGrid(thorough=({}, {"amount": 1.0}), cheap=({},)),
        cost_prior=CostPrior(passes=2.0),
        forward_model=forward,
    )
)


def toy_unsharp(
    image: ArrayLike, psf: ArrayLike, *, amount: float = 0.5, device: str = "auto"
) -> np.ndarray:
    """Unsharp masking: add back the detail the blur removed.

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype; never modified.
    psf : array_like, shape (h, w)
        Point spread function: odd sides, non-negative, normalised to sum 1.
    amount : float
        Share of the detail the blur removed that is added back.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    numpy.ndarray of float32, shape of ``image``
        The sharpened map(s).
    """
    return restore(image, SPEC.name, psf=psf, device=device, amount=amount).image
