r"""Richardson-Lucy deconvolution for Poisson counts, with total variation and acceleration.

The maximum-likelihood estimate for Poisson data :math:`y \sim \mathcal{P}(Hx + b)` is found by
the multiplicative iteration (Richardson 1972, Lucy 1974)

.. math:: x_{k+1} = \frac{x_k}{H^T 1 - \lambda \, \mathrm{div}(\nabla x_k / |\nabla x_k|)}
          \; H^T \frac{y}{H x_k + b}

with the optional total-variation term of weight :math:`\lambda` (Dey et al. 2006) that damps
noise in flat regions while keeping edges. The estimate stays non-negative. Biggs-Andrews vector
extrapolation (1997) predicts each step from the last two and typically halves the number of
iterations needed for the same likelihood.

Input policy: the data are counts. Negative values (after a dark subtraction) are set to zero
before iterating, and a known constant background ``b`` (counts per pixel) is part of the
forward model instead of being subtracted.

References
----------
.. [1] W. H. Richardson, "Bayesian-based iterative method of image restoration", JOSA 62,
   55-59 (1972); L. B. Lucy, AJ 79, 745-754 (1974).
.. [2] D. S. C. Biggs and M. Andrews, "Acceleration of iterative image restoration
   algorithms", Applied Optics 36, 1766-1775 (1997).
.. [3] N. Dey et al., "Richardson-Lucy algorithm with total variation regularization for 3D
   confocal microscope deconvolution", Microsc. Res. Tech. 69, 260-266 (2006).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from asirp.iteration import IterationControl
from asirp.methods._common import (
    WorkArrays,
    cached_operator,
    non_negative,
    smooth_initial_estimate,
    work_arrays,
)
from asirp.methods._public import Device, IterativeBoundary, StopRule
from asirp.registry import (
    BACKGROUND,
    ITERATIVE_BOUNDARY,
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
from asirp.separable import use_torch_threads

MAX_EXTRAPOLATION = 0.99
"""Upper bound of the Biggs-Andrews extrapolation factor (it must stay below 1)."""


def total_variation_divergence(image: torch.Tensor, epsilon: float) -> torch.Tensor:
    r"""Divergence of the normalised gradient, :math:`\mathrm{div}(\nabla x / |\nabla x|)`.

    Forward differences for the gradient, backward differences for the divergence, so the
    operator is the negative adjoint of the gradient (a discrete curvature).

    Parameters
    ----------
    image : torch.Tensor
        ``(B, H, W)``.
    epsilon : float
        Smoothing of :math:`|\nabla x|` (same unit as ``image``).

    Returns
    -------
    torch.Tensor
        ``(B, H, W)``, dimensionless.
    """
    grad_y = torch.zeros_like(image)
    grad_x = torch.zeros_like(image)
    grad_y[..., :-1, :] = image[..., 1:, :] - image[..., :-1, :]
    grad_x[..., :, :-1] = image[..., :, 1:] - image[..., :, :-1]
    magnitude = torch.sqrt(grad_y**2 + grad_x**2 + epsilon**2)
    unit_y, unit_x = grad_y / magnitude, grad_x / magnitude
    divergence = unit_y.clone()
    divergence[..., 1:, :] -= unit_y[..., :-1, :]
    divergence += unit_x
    divergence[..., :, 1:] -= unit_x[..., :, :-1]
    return divergence


def _compiled(*tensors: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels apply: contiguous float32 CPU tensors."""
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors
    )


def extrapolate(
    estimate: torch.Tensor,
    previous: torch.Tensor,
    alpha: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Biggs-Andrews prediction ``max(x_k + alpha (x_k - x_{k-1}), 0)``.

    One pass of a compiled kernel on the CPU (torch's parallel operations between the blur
    kernels would leave their threads spinning on the same cores), two torch operations else.

    Parameters
    ----------
    estimate, previous : torch.Tensor
        ``x_k`` and ``x_{k-1}``, ``(B, H_o, W_o)``.
    alpha : torch.Tensor
        Extrapolation factor per image, ``(B, 1, 1)``, in ``[0, 1)``.
    out : torch.Tensor, optional
        Where to write the result (not ``estimate`` or ``previous``).

    Returns
    -------
    torch.Tensor
        ``(B, H_o, W_o)``, non-negative.
    """
    if out is None:
        out = torch.empty_like(estimate)
    if estimate.ndim == 3 and _compiled(estimate, previous, out):
        from asirp import _kernels  # lazy: numba, about 0.9 s to import (see asirp.metrics)

        use_torch_threads()
        factor = alpha.detach().reshape(-1).to("cpu", torch.float32).numpy()
        _kernels.extrapolate(estimate.numpy(), previous.numpy(), factor, out.numpy())
        return out
    return torch.lerp(previous, estimate, 1.0 + alpha, out=out).clamp_min_(0.0)


class _Buffers:
    """Object-grid work arrays reused across iterations (and calls, through ``pool``).

    A fresh megapixel array costs its page faults on every allocation; the loop's arrays go back
    to the pool once nothing refers to them any more.
    """

    def __init__(self, like: torch.Tensor, pool: WorkArrays):
        self.like = like
        self.pool = pool
        self.free: list[torch.Tensor] = []
        self.issued: list[torch.Tensor] = []

    def take(self) -> torch.Tensor:
        if self.free:
            return self.free.pop()
        tensor = self.pool.take(tuple(self.like.shape), self.like)
        self.issued.append(tensor)
        return tensor

    def recycle(self, done: list[torch.Tensor | None], live: list[torch.Tensor | None]) -> None:
        """Return the arrays of ``done`` that are not in ``live`` (by identity) to the pool."""
        kept = {id(t) for t in live if t is not None} | {id(t) for t in self.free}
        for tensor in done:
            if tensor is not None and id(tensor) not in kept and tensor.shape == self.like.shape:
                self.free.append(tensor)
                kept.add(id(tensor))


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Richardson-Lucy on ``(B, H, W)`` counts; see the module notes."""
    assert problem.psf is not None  # guaranteed by needs_psf
    data = non_negative(problem.data)
    background = params["background"]
    operator, normaliser = cached_operator(problem.psf, tuple(data.shape[-2:]), params["boundary"])
    pool = work_arrays()
    estimate = pool.take((data.shape[0], *operator.object_shape), data)
    if params["initial"] == "flat":
        mean = data.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        estimate.copy_(mean.expand(-1, *operator.object_shape))
    else:
        estimate = smooth_initial_estimate(operator, data, normaliser, out=estimate)
    tv_weight = params["tv_weight"]
    tv_epsilon = 1e-3 * float(data.mean().clamp_min(1e-12)) if tv_weight > 0 else 0.0
    accelerate = params["acceleration"]

    control = IterationControl(problem, params)
    buffers = _Buffers(estimate, pool)
    buffers.issued.append(estimate)  # from the pool: back to it unless it is the result
    prediction, ratio = pool.take(tuple(data.shape), data), pool.take(tuple(data.shape), data)
    previous: torch.Tensor | None = None
    step: torch.Tensor | None = None
    previous_step: torch.Tensor | None = None
    previous_energy: torch.Tensor | None = None
    alpha = torch.zeros((data.shape[0], 1, 1), dtype=data.dtype, device=data.device)
    for _ in control:
        point_alpha = alpha  # the factor that makes this iteration's point (0: none)
        if accelerate and previous is not None:
            point = extrapolate(estimate, previous, alpha, out=buffers.take())
        else:
            point = estimate
        operator.poisson_ratio(point, data, background, out=(prediction, ratio))
        denominator = normaliser
        if tv_weight > 0:
            curvature = total_variation_divergence(point, tv_epsilon)
            denominator = (normaliser - tv_weight * curvature).clamp_min(0.1 * normaliser)
        updated = buffers.take()
        if accelerate:  # the update, its step and the step's products in one pass
            if step is None:  # `step` is the spare step array
                step = buffers.take()
            sums = operator.multiplicative_update(
                ratio, point, denominator, updated, step, previous_step
            )
            energy = sums[:, 0]
            if previous_step is not None and previous_energy is not None:
                factor = sums[:, 1] / previous_energy.clamp_min(1e-30)
                alpha = factor.clamp(0.0, MAX_EXTRAPOLATION).to(data.device, data.dtype)
                alpha = alpha.view(-1, 1, 1)
            previous_step, step, previous_energy = step, previous_step, energy
        else:
            operator.multiplicative_adjoint(ratio, point, denominator, out=updated)
        accepted = control.step(
            point, updated, data, prediction, extrapolation=point_alpha if accelerate else None
        )
        older = previous
        if accelerate:
            previous = estimate
        buffers.recycle([point, updated, estimate, older], live=[accepted, previous])
        estimate = accepted
        if not bool(control.active.all()):  # stopped images stay where they stopped
            alpha = alpha * control.active.view(-1, 1, 1)
    # every work array goes back to the thread's pool but the result's (a view of it escapes)
    pool.give([*buffers.issued, *buffers.free, prediction, ratio], keep_out=[estimate])
    return MethodOutput(operator.crop(estimate), problem.psf, control.info())


SPEC = register_method(
    MethodSpec(
        name="richardson_lucy",
        family="non-blind",
        needs_psf=True,
        scale=1,
        summary="Poisson maximum likelihood (multiplicative, stays non-negative); TV optional",
        parameters=(
            iterations_parameter(100),
            *stopping_parameters("discrepancy"),
            Parameter(
                "acceleration", bool, True, "Biggs-Andrews vector extrapolation of the iterates"
            ),
            Parameter(
                "tv_weight",
                float,
                0.0,
                "total-variation weight (dimensionless; 0 = off, 0.002-0.02 typical)",
                minimum=0.0,
                maximum=0.5,
            ),
            BACKGROUND,
            ITERATIVE_BOUNDARY,
            Parameter(
                "initial",
                str,
                "smooth",
                "starting estimate: 'smooth' (PSF-spread data) or 'flat' (data mean)",
                choices=("smooth", "flat"),
            ),
        ),
        run=run,
        selector_grid=SelectorGrid(
            thorough=(
                {},
                *({"stop": "fixed", "iterations": count} for count in (5, 10, 20, 40, 80)),
                {"stop": "fixed", "iterations": 20, "tv_weight": 0.01},
            ),
            cheap=({}, {"stop": "fixed", "iterations": 10}),
        ),
        cost_prior=CostPrior(passes=4.0, per_iteration=2.5, slower_with=(("tv_weight", 1.4),)),
    )
)


def richardson_lucy(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    iterations: int = 100,
    stop: StopRule = "discrepancy",
    discrepancy: float = 1.0,
    tolerance: float = 0.001,
    acceleration: bool = True,
    tv_weight: float = 0.0,
    background: float = 0.0,
    boundary: IterativeBoundary = "extend",
    initial: Literal["smooth", "flat"] = "smooth",
    device: Device = "auto",
) -> np.ndarray:
    """Richardson-Lucy deconvolution of Poisson counts (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype (negative values are set to zero); never modified.
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
    acceleration : bool
        Biggs-Andrews vector extrapolation of the iterates.
    tv_weight : float
        Total-variation weight (dimensionless; 0 = off, 0.002-0.02 typical).
    background : float
        Constant background in the data (counts per pixel).
    boundary : {"extend", "zero", "periodic"}
        Edges: 'extend' (unknown object past the map), 'zero' or 'periodic'.
    initial : {"smooth", "flat"}
        Starting estimate: 'smooth' (PSF-spread data) or 'flat' (data mean).
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
        acceleration=acceleration,
        tv_weight=tv_weight,
        background=background,
        boundary=boundary,
        initial=initial,
    ).image
