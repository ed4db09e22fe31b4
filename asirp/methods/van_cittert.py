r"""Van Cittert iteration: repeated re-blurring of the residual, optionally kept positive.

.. math:: x_{k+1} = x_k + \beta \, (y - H x_k - b), \qquad
          x_0 = \frac{H^T (y - b)}{H^T 1}

After :math:`k` iterations the filter applied to the data is :math:`1 - (1 - \beta \hat h)^k`,
which tends to the inverse filter: few iterations sharpen, many amplify noise. It converges only
where :math:`|1 - \beta \hat h| < 1`, true for Gaussian beams (real, positive transfer function)
with :math:`0 < \beta < 2`. With ``positivity`` on it is Jansson's constrained variant.

The start is the PSF-spread data rather than the data itself, so the first iterations restore
the signal before they reach the noise (the discrepancy stop then ends them). With
``boundary="extend"`` the residual is only defined on the measured map, so the object past the
edges keeps its initial value.

References
----------
.. [1] P. H. van Cittert, "Zum Einfluß der Spaltbreite auf die Intensitätsverteilung in
   Spektrallinien II", Z. Physik 69, 298-308 (1931).
.. [2] P. A. Jansson, *Deconvolution of Images and Spectra*, Academic Press (1997), ch. 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn.functional as F
from numpy.typing import ArrayLike

from asirp.blur import BlurOperator
from asirp.iteration import IterationControl
from asirp.methods._common import adjoint_of_ones
from asirp.methods._public import Device, IterativeBoundary, StopRule
from asirp.registry import (
    BACKGROUND,
    ITERATIVE_BOUNDARY,
    CostPrior,
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    iterations_parameter,
    no_grad,
    register_method,
    stopping_parameters,
)
from asirp.restore import restore


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Van Cittert on ``(B, H, W)`` maps; see the module notes."""
    assert problem.psf is not None  # guaranteed by needs_psf
    data = problem.data - params["background"]
    operator = BlurOperator(problem.psf, tuple(data.shape[-2:]), params["boundary"])
    estimate = operator.adjoint(data) / adjoint_of_ones(operator, data)
    top, left = operator.offset
    bottom = operator.object_shape[0] - operator.data_shape[0] - top
    right = operator.object_shape[1] - operator.data_shape[1] - left
    relaxation = params["relaxation"]
    control = IterationControl(problem, params)
    for _ in control:
        prediction = operator.forward(estimate)
        residual = F.pad(data - prediction, (left, right, top, bottom))
        updated = estimate + relaxation * residual
        if params["positivity"]:
            updated = updated.clamp_min(0.0)
        estimate = control.step(
            estimate,
            updated,
            problem.data.clamp_min(0.0),
            prediction + params["background"],
        )
    return MethodOutput(operator.crop(estimate), problem.psf, control.info())


SPEC = register_method(
    MethodSpec(
        name="van_cittert",
        family="non-blind",
        needs_psf=True,
        scale=1,
        summary="re-blurred residual added back (Jansson with positivity); fast, noise-sensitive",
        parameters=(
            iterations_parameter(3),
            *stopping_parameters("fixed"),
            Parameter(
                "relaxation", float, 1.0, "relaxation factor beta", minimum=1e-3, maximum=1.99
            ),
            Parameter("positivity", bool, True, "clip negative values (Jansson's variant)"),
            BACKGROUND,
            ITERATIVE_BOUNDARY,
        ),
        run=run,
        cost_prior=CostPrior(passes=4.0, per_iteration=2.0),
    )
)


def van_cittert(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    iterations: int = 3,
    stop: StopRule = "fixed",
    discrepancy: float = 1.0,
    tolerance: float = 0.001,
    relaxation: float = 1.0,
    positivity: bool = True,
    background: float = 0.0,
    boundary: IterativeBoundary = "extend",
    device: Device = "auto",
) -> np.ndarray:
    """Van Cittert deconvolution, Jansson's positive variant (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype; never modified.
    psf : array_like, shape (h, w)
        Point spread function: odd sides, non-negative, normalised to sum 1.
    iterations : int
        Maximum number of iterations.
    stop : {"fixed", "discrepancy", "stagnation"}
        When to stop: after 'iterations', at the Poisson discrepancy, or on stagnation.
    discrepancy : float
        ``stop='discrepancy'`` target: mean Poisson deviance per pixel (1 = noise level).
    tolerance : float
        ``stop='stagnation'`` threshold: relative change of the estimate per iteration.
    relaxation : float
        Relaxation factor beta.
    positivity : bool
        Clip negative values (Jansson's variant).
    background : float
        Constant background in the data (counts per pixel).
    boundary : {"extend", "zero", "periodic"}
        Edges: 'extend' (unknown object past the map), 'zero' or 'periodic'.
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
        iterations=iterations,
        stop=stop,
        discrepancy=discrepancy,
        tolerance=tolerance,
        relaxation=relaxation,
        positivity=positivity,
        background=background,
        boundary=boundary,
    ).image
