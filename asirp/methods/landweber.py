r"""Projected Landweber iteration: gradient descent on the least-squares misfit, kept positive.

.. math:: x_{k+1} = P_+\left( x_k + \tau \, H^T (y - H x_k - b) \right)

with :math:`P_+` the projection onto non-negative values (when ``positivity`` is on) and step
:math:`0 < \tau < 2 / \|H\|^2 = 2` for a PSF of sum 1. It converges slowly (its iteration count
is its regularisation), never amplifies noise faster than linearly, and accepts data with
negative values (the least-squares model has no positivity of the data).

References
----------
.. [1] L. Landweber, "An iteration formula for Fredholm integral equations of the first kind",
   Am. J. Math. 73, 615-624 (1951).
.. [2] M. Bertero and P. Boccacci, *Introduction to Inverse Problems in Imaging*, IOP (1998),
   ch. 6.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from asirp.blur import BlurOperator
from asirp.iteration import IterationControl
from asirp.methods._common import adjoint_of_ones
from asirp.methods._public import Device, IterativeBoundary, StopRule
from asirp.registry import (
    BACKGROUND,
    ITERATIVE_BOUNDARY,
    POSITIVITY,
    CostPrior,
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    SelectorGrid,
    iterations_parameter,
    no_grad,
    register_method,
    stopping_parameters,
)
from asirp.restore import restore


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Projected Landweber on ``(B, H, W)`` maps; see the module notes."""
    assert problem.psf is not None  # guaranteed by needs_psf
    data = problem.data
    operator = BlurOperator(problem.psf, tuple(data.shape[-2:]), params["boundary"])
    residual_data = data - params["background"]
    estimate = operator.adjoint(residual_data) / adjoint_of_ones(operator, data)
    step_size = params["step"]
    control = IterationControl(problem, params)
    for _ in control:
        prediction = operator.forward(estimate)
        updated = estimate + step_size * operator.adjoint(residual_data - prediction)
        if params["positivity"]:
            updated = updated.clamp_min(0.0)
        estimate = control.step(
            estimate, updated, data.clamp_min(0.0), (prediction + params["background"])
        )
    return MethodOutput(operator.crop(estimate), problem.psf, control.info())


SPEC = register_method(
    MethodSpec(
        name="landweber",
        family="non-blind",
        needs_psf=True,
        scale=1,
        summary="least-squares gradient descent with positivity; slow, robust, linear in noise",
        parameters=(
            iterations_parameter(200),
            *stopping_parameters("discrepancy"),
            Parameter(
                "step",
                float,
                1.5,
                "step size tau (in units of 1/||H||^2)",
                minimum=1e-3,
                maximum=1.99,
            ),
            POSITIVITY,
            BACKGROUND,
            ITERATIVE_BOUNDARY,
        ),
        run=run,
        selector_grid=SelectorGrid(thorough=({},), cheap=()),  # slow: left out of live updates
        cost_prior=CostPrior(passes=4.0, per_iteration=2.0),
    )
)


def landweber(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    iterations: int = 200,
    stop: StopRule = "discrepancy",
    discrepancy: float = 1.0,
    tolerance: float = 0.001,
    step: float = 1.5,
    positivity: bool = True,
    background: float = 0.0,
    boundary: IterativeBoundary = "extend",
    device: Device = "auto",
) -> np.ndarray:
    """Projected Landweber deconvolution: least-squares gradient descent (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype; never modified.
    psf : array_like, shape (h, w)
        Point spread function: odd sides, non-negative, normalised to sum 1.
    iterations : int
        Maximum number of iterations.
    stop : {"discrepancy", "fixed", "stagnation"}
        When to stop: after 'iterations', at the Poisson discrepancy, or on stagnation.
    discrepancy : float
        ``stop='discrepancy'`` target: mean Poisson deviance per pixel (1 = noise level).
    tolerance : float
        ``stop='stagnation'`` threshold: relative change of the estimate per iteration.
    step : float
        Step size tau (in units of 1/||H||^2).
    positivity : bool
        Clip negative values of the estimate to zero.
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
        step=step,
        positivity=positivity,
        background=background,
        boundary=boundary,
    ).image
