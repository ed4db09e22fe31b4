r"""``rl_sr``: Richardson-Lucy super-resolution with the known beam and scan step.

The measured map ``y`` (Poisson counts, ``(H, W)``) is modelled as the fine map ``x``
(``(s H, s W)``) blurred by the beam on the fine grid and averaged over each measured pixel,
:math:`y \sim \mathcal{P}(A x + b)` with :math:`A = D_s G` (:mod:`asirp.sr.degrade`, the model
that makes the training pairs and checks every super-resolved result). Its maximum-likelihood
estimate is found by the Richardson-Lucy (EM) iteration for that operator,

.. math:: x_{k+1} = \frac{x_k}{A^T 1 - \lambda\,\mathrm{div}(\nabla x_k / |\nabla x_k|) / s^2}
          \; A^T \frac{y}{A x_k + b},

with :math:`G` the beam on the fine grid as given, anisotropic included (its sigmas along the
rows and the columns, :func:`asirp.sr.degrade.sigma_axes_from_psf`: focusing optics rarely make
a round beam, and modelling a 1.2 x 0.6 px beam by its geometric mean cost 0.4-1.5 dB at
1,000 counts on random structures, nothing at 150), :math:`A^T = G^T U_s / s^2` (the adjoint
of the block mean is replicate-and-divide;
:mod:`asirp.sr.physics_sr`), the optional total-variation term of
:mod:`asirp.methods.richardson_lucy` (weight :math:`\lambda`, the same meaning as there) and
Biggs-Andrews acceleration. It starts from the data replicated over each block and spread by the
beam's adjoint (``initial="smooth"``, :math:`G^T U_s y / G^T U_s 1`) or from their bicubic
upsampling (both floored at :data:`START_FLOOR` of the map's mean). The smooth start is the
default: on the held-out maps of :func:`asirp.sr.data.heldout_set` (200 counts) it is as good on
sharp objects and 2.5 to 6 dB better on smooth ones, where the bicubic start already fits the
data to the noise but keeps the noise. It stops by Richardson-Lucy's rules (:mod:`asirp.iteration`):
by default the Poisson discrepancy with its continuation, whose degrees of freedom come from the
measured-grid PSF equivalent to :math:`s^2 A A^T` (:func:`asirp.sr.physics_sr.equivalent_psf`);
on those maps the iterate it returns is within 0.35 dB of the best of a fixed-count sweep. It
counts iterations, never the clock; the result is bit-identical for 1 and 2 threads.

With ``prior_weight > 0`` a learned prior joins the iteration (:class:`LearnedPrior`: the
small denoiser of :mod:`asirp.sr.denoiser` in plug-and-play stages; the physics stays in the
forward model). It is **experimental**: it paid on sharp structure of the tuning maps at hundreds of
counts and more, but lost on smooth or low-count maps there and on the held-out set on average
(-0.26 dB at x2, worst -7.3 dB; the model card's figures), so it is off by default and not among
``auto``'s candidates; the split-data guard (:mod:`asirp.sr.guard`) checks its results.

Without it, unlike the networks (``fca_sr``, ``rrdb_sr``), nothing was learned: the beam must be
known (``needs_psf``) and the result fits the measurement as the noise allows, so it is
consistent by construction. What it cannot recover (detail the beam wipes out) it leaves smooth.
Measured against the truth (PSNR, x2, 256² fine maps of
:func:`asirp.sr.data.heldout_structures`): it beats bicubic by 1.4 to 6.4 dB on the held-out
set. On maps degraded as in the networks' training (sigma 0.75 px, 200 counts) the networks win,
by 2.4 to 4 dB on sharp objects (mesh, star; with ``tv_weight=0.02``) and 0.1 to 0.9 dB on
smooth ones (seed, projection); with the beam outside their training range (sigma 1.5 px) or at
2000 counts and more, ``rl_sr`` was ahead on every map tried (mesh, star, seed), by 0.8 to 7 dB
(``tv_weight=0.02`` on the sharp ones).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from asirp.iteration import IterationControl
from asirp.methods._common import WorkArrays, non_negative, work_arrays
from asirp.methods._public import Device, StopRule
from asirp.methods.richardson_lucy import (
    MAX_EXTRAPOLATION,
    extrapolate,
    total_variation_divergence,
)
from asirp.registry import (
    BACKGROUND,
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
from asirp.sr.degrade import sigma_axes_from_psf
from asirp.sr.physics_sr import SuperResolutionOperator, axes_of, equivalent_psf
from asirp.sr.runner import SCALE, SPLIT_GUARD, TOLERANCE, Beam, check_scale, finish

PRIOR_STAGES = 8
"""Stages of the iteration with the learned prior (one denoiser call each)."""

PRIOR_INNER = 4
"""Richardson-Lucy steps per stage, towards the data and the stage's denoised anchor."""

PRIOR_START = 4.0
"""Noise-map factor of the first stage (the last one's is 1)."""

OPERATOR_CACHE_SIZE = 4
"""Operators kept per thread by :func:`cached_operator` (most recently used first)."""

_cache = threading.local()

START_FLOOR = 1e-3
"""Smallest starting value, as a fraction of each map's mean: a multiplicative update never
leaves a zero pixel."""


def cached_operator(
    sigma_px: float | tuple[float, float],
    scale: int,
    data_shape: tuple[int, int],
    device: torch.device,
) -> tuple[SuperResolutionOperator, torch.Tensor]:
    """The operator and its equivalent PSF, reused for the same beam, scale, shape and device.

    A beamline super-resolves map after map of one size with one beam; the operator's
    :math:`s^2 A^T 1` (a back-projection of the fine grid) and the equivalent PSF are made once.
    Per thread (an operator keeps work arrays, from the thread's pool), at most
    :data:`OPERATOR_CACHE_SIZE` entries.
    """
    entries: OrderedDict | None = getattr(_cache, "entries", None)
    if entries is None:
        entries = _cache.entries = OrderedDict()
    key = (axes_of(sigma_px), int(scale), tuple(data_shape), str(device))
    found = entries.get(key)
    if found is not None:
        entries.move_to_end(key)
        return found
    operator = SuperResolutionOperator(sigma_px, scale, data_shape, device, pool=work_arrays())
    operator.backproject_ones()
    entry = (operator, equivalent_psf(operator))
    entries[key] = entry
    while len(entries) > OPERATOR_CACHE_SIZE:
        entries.popitem(last=False)
    return entry


def initial_estimate(
    operator: SuperResolutionOperator, data: torch.Tensor, initial: str
) -> torch.Tensor:
    """A positive fine-grid start, ``(B, sH, sW)``.

    ``"bicubic"``: the bicubic upsampling (half-pixel centres, the grid of area sampling);
    ``"smooth"``: :math:`G^T U_s y / G^T U_s 1`, the data replicated and spread by the beam.
    Both are floored at :data:`START_FLOOR` of each map's mean.
    """
    from asirp.sr.models import bicubic_upsample  # lazy: the network module is not needed

    if initial == "bicubic":
        start = bicubic_upsample(data[:, None], operator.scale)[:, 0]
    else:
        start = operator.backproject(data) / operator.backproject_ones()
    floor = START_FLOOR * data.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return torch.maximum(start, floor).contiguous()


class LearnedPrior:
    r"""The learned denoiser of :mod:`asirp.sr.denoiser` as a prior in the Richardson-Lucy loop.

    Plug-and-play by half-quadratic splitting, as in DPIR (Zhang et al., IEEE TPAMI 2022), with
    Poisson data. Each of :data:`PRIOR_STAGES` stages denoises the iterate once, to an anchor
    :math:`z = D(x; \kappa_k \sigma(x))`, then takes :data:`PRIOR_INNER` split-gradient
    Richardson-Lucy steps (Lantéri et al., Inverse Problems 2001) on the Poisson likelihood plus
    :math:`\|x - z\|^2 / 2\tau^2`:

    .. math:: x \leftarrow \frac{x \, G^T U_s \frac{y}{A x + b} + w_k z}{G^T U_s 1 + w_k},
              \qquad w_k = \mu / \kappa_k^2 .

    :math:`\sigma(x) = s \sqrt{x} / c` is the standard deviation the measurement's Poisson noise
    has on the fine grid (a fine pixel gets :math:`1 / s^2` of a measured pixel's counts), in
    units of the map's intensity scale ``c`` (its 99.5th percentile); with the prior's variance
    :math:`\tau^2 = \kappa^2 \mu^{-1} s^2 x` the proximal term's gradient is what makes the
    update this convex mix of the Richardson-Lucy step and the anchor. :math:`\kappa_k` falls
    geometrically from :data:`PRIOR_START` to 1: early anchors are strong denoisings held
    loosely, the last ones light denoisings held firmly. The denoiser runs
    :data:`PRIOR_STAGES` times, not once per step: applied over and over, a learned denoiser
    drifts (regularisation by denoising with it diverged on maps of 2,000 counts and more).

    The physics (beam, anisotropy, scale, area sampling, background) stays in the forward
    model; the network only knows what X-ray-like maps look like. ``mu`` is the
    ``prior_weight`` parameter.
    """

    def __init__(self, network: torch.nn.Module, scale: torch.Tensor, upscale: int, weight: float):
        self.network = network
        self.scale = scale  # (B, 1, 1) intensity scale c
        self.upscale = upscale
        self.weight = weight

    @classmethod
    def for_data(cls, data: torch.Tensor, upscale: int, weight: float) -> LearnedPrior:
        """The prior for ``(B, H, W)`` counts, with the shipped denoiser on their device."""
        from asirp.sr.denoiser import shipped_denoiser

        flat = data.reshape(data.shape[0], -1).double()
        scale = torch.quantile(flat, 0.995, dim=1).clamp_min(1.0).to(data.dtype)
        network = shipped_denoiser(data.device)
        return cls(network, scale.view(-1, 1, 1), upscale, weight)

    def denoise(self, estimate: torch.Tensor, level: float = 1.0) -> torch.Tensor:
        """:math:`D(x)` for ``(B, sH, sW)`` fine maps, in their unit, non-negative.

        ``level`` multiplies the noise map the network is told (1: the measurement's).
        """
        from asirp.sr.denoiser import SIGMA_RANGE

        normalised = (estimate / self.scale)[:, None]
        sigma = (level * self.upscale * estimate.clamp_min(0.0).sqrt() / self.scale)[:, None]
        sigma = sigma.clamp(*SIGMA_RANGE).to(normalised.dtype)
        weights_dtype = next(self.network.parameters()).dtype
        with torch.no_grad():
            denoised = self.network(normalised.to(weights_dtype), sigma.to(weights_dtype))
        return (denoised[:, 0].to(estimate.dtype) * self.scale).clamp_min_(0.0)

    def levels(self) -> list[float]:
        """The noise-map factors of the stages: geometric from :data:`PRIOR_START` to 1."""
        stages = PRIOR_STAGES
        return [PRIOR_START ** (1 - k / (stages - 1)) for k in range(stages)]

    def run(
        self,
        operator: SuperResolutionOperator,
        data: torch.Tensor,
        estimate: torch.Tensor,
        background: float,
    ) -> torch.Tensor:
        """The staged iteration from ``estimate``; returns the last iterate ``(B, sH, sW)``."""
        normaliser = operator.backproject_ones()
        for level in self.levels():
            anchor = self.denoise(estimate, level)
            mix = self.weight / level**2
            for _ in range(PRIOR_INNER):
                _, ratio = operator.prediction_and_ratio(estimate, data, background)
                spread = operator.blur_adjoint(ratio)
                estimate = (spread.mul_(estimate) + mix * anchor) / (normaliser + mix)
        return estimate

    def facts(self) -> dict[str, Any]:
        """What the result records about the prior."""
        return {
            "kind": "learned denoiser (plug-and-play, half-quadratic splitting)",
            "weights": "asirp/models/prior_denoiser.safetensors",
            "prior_weight": self.weight,
            "intensity_scale": [round(float(c), 4) for c in self.scale.flatten()],
        }


class _Buffers:
    """Fine-grid arrays of the loop, reused across iterations and calls (through ``pool``).

    A fresh array of a 2048² fine grid costs some 16 ms of page faults; the loop's arrays go
    back to the pool once nothing refers to them any more.
    """

    def __init__(self, like: torch.Tensor, pool: WorkArrays):
        self.like = like
        self.pool = pool
        self.free: list[torch.Tensor] = []
        self.issued: list[torch.Tensor] = [like]

    def take(self) -> torch.Tensor:
        if self.free:
            return self.free.pop()
        tensor = self.pool.take(tuple(self.like.shape), self.like)
        self.issued.append(tensor)
        return tensor

    def recycle(self, done: list[torch.Tensor | None], live: list[torch.Tensor | None]) -> None:
        """Make the arrays of ``done`` that this object issued and ``live`` lacks free again."""
        issued = {id(t) for t in self.issued}
        kept = {id(t) for t in live if t is not None} | {id(t) for t in self.free}
        for tensor in done:
            if tensor is not None and id(tensor) in issued and id(tensor) not in kept:
                self.free.append(tensor)
                kept.add(id(tensor))


@no_grad
def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Richardson-Lucy super-resolution of ``(B, H, W)`` counts to ``(B, sH, sW)``."""
    assert problem.psf is not None  # guaranteed by needs_psf
    scale = check_scale(params, "rl_sr")
    data = non_negative(problem.data)
    rows, cols = sigma_axes_from_psf(problem.psf)
    # the beam as given, anisotropic included (KB optics focus the two axes differently)
    beam_model = rows if rows == cols else (rows, cols)
    pool = work_arrays()
    operator, stand_in_psf = cached_operator(beam_model, scale, tuple(data.shape[-2:]), data.device)
    normaliser = operator.backproject_ones()  # s^2 A^T 1, about 1
    background = float(params["background"])
    tv_weight = float(params["tv_weight"])
    prior_weight = float(params["prior_weight"])
    if prior_weight > 0 and tv_weight > 0:
        raise ValueError(
            "rl_sr takes one prior: tv_weight or prior_weight (the learned denoiser), not both"
        )
    prior = LearnedPrior.for_data(data, scale, prior_weight) if prior_weight > 0 else None
    tv_epsilon = 1e-3 * float(data.mean().clamp_min(1e-12)) if tv_weight > 0 else 0.0
    accelerate = bool(params["acceleration"])

    if prior is not None:
        operator.release()

        def staged(maps: torch.Tensor, level: float, learned: LearnedPrior) -> torch.Tensor:
            """The staged iteration with the learned prior on ``(B, H, W)`` counts."""
            own, _ = cached_operator(beam_model, scale, tuple(maps.shape[-2:]), maps.device)
            start = initial_estimate(own, maps, params["initial"])
            fine = learned.run(own, maps, start, level)
            own.release()
            return fine

        def halves(index: int, parts: torch.Tensor) -> torch.Tensor:
            """The same staged iteration on two independent halves of map ``index``."""
            parts = non_negative(parts)
            # the halves may hold a fraction of the counts (thinning): so does the background
            fraction = float(parts.mean() / data[index].mean().clamp_min(1e-12))
            learned = LearnedPrior.for_data(parts, scale, prior_weight)
            return staged(parts, background * fraction, learned)

        info = {
            "iterations_run": PRIOR_STAGES * PRIOR_INNER,
            "stopped_by": "prior_schedule",
            "initial": params["initial"],
            "prior": prior.facts(),
        }
        estimate = staged(data, background, prior)
        beam = Beam.given(rows, cols, data.shape[0])
        return finish("rl_sr", problem, params, estimate, beam, info, guard=halves)
    estimate = initial_estimate(operator, data, params["initial"])
    # the stopping rule's linearisation sees the one-grid PSF of the same iteration
    stand_in = replace(problem, psf=stand_in_psf)
    control = IterationControl(stand_in, params, continuation=True)
    buffers = _Buffers(estimate, pool)
    previous: torch.Tensor | None = None
    previous_step: torch.Tensor | None = None
    previous_energy: torch.Tensor | None = None
    alpha = torch.zeros((data.shape[0], 1, 1), dtype=data.dtype, device=data.device)
    for _ in control:
        point_alpha = alpha  # the factor that made this iteration's point (0: none)
        if accelerate and previous is not None:
            point = extrapolate(estimate, previous, alpha, out=buffers.take())
        else:
            point = estimate
        prediction, ratio = operator.prediction_and_ratio(point, data, background)
        denominator = normaliser
        if tv_weight > 0 and operator.compiles(point):
            denominator = operator.tv_denominator(point, tv_weight, tv_epsilon)
        elif tv_weight > 0:
            curvature = total_variation_divergence(point, tv_epsilon)
            denominator = (normaliser - tv_weight * curvature).clamp_min(0.1 * normaliser)
        updated, step, sums = operator.multiplicative_update(
            ratio,
            point,
            denominator,
            previous_step if accelerate else None,
            out=(buffers.take(), buffers.take()),
        )
        older_step = previous_step
        if accelerate:
            if previous_step is not None and previous_energy is not None:
                factor = sums[:, 1] / previous_energy.clamp_min(1e-30)
                alpha = factor.clamp(0.0, MAX_EXTRAPOLATION).to(data.device, data.dtype)
                alpha = alpha.view(-1, 1, 1)
            previous_step, previous_energy = step, sums[:, 0]
        accepted = control.step(
            point, updated, data, prediction, extrapolation=point_alpha if accelerate else None
        )
        older = previous
        if accelerate:
            previous = estimate
        buffers.recycle(
            [point, updated, step, estimate, older, older_step],
            live=[accepted, previous, previous_step],
        )
        estimate = accepted
        if not bool(control.active.all()):  # stopped maps stay where they stopped
            alpha = alpha * control.active.view(-1, 1, 1)
    operator.release()
    pool.give([*buffers.issued, *buffers.free], keep_out=[estimate])
    beam = Beam.given(rows, cols, data.shape[0])
    info = {**control.info(), "initial": params["initial"]}
    return finish("rl_sr", problem, params, estimate, beam, info)


SPEC = register_method(
    MethodSpec(
        name="rl_sr",
        family="super-resolution",
        needs_psf=True,
        scale=2,
        summary="Richardson-Lucy super-resolution: Poisson ML for the known beam and area sampling",
        parameters=(
            SCALE,
            iterations_parameter(200),
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
            Parameter(
                "prior_weight",
                float,
                0.0,
                "experimental: weight of the learned denoiser prior (dimensionless; 0 = off; "
                "it lost 0.26 dB on average on the held-out set, see the model card)",
                minimum=0.0,
                maximum=100.0,
            ),
            BACKGROUND,
            Parameter(
                "initial",
                str,
                "smooth",
                "starting estimate: 'smooth' (beam-spread data) or 'bicubic' (upsampled data)",
                choices=("smooth", "bicubic"),
            ),
            TOLERANCE,
            SPLIT_GUARD,
        ),
        run=run,
        selector_grid=SelectorGrid(
            # TV pays on sharp objects at high counts (+2 to +6 dB at 0.02 on meshes and stars
            # from 2000 counts up), costs up to 2.7 dB on smooth ones: the selector decides
            # not the learned prior: on the tuning maps it added +0.05 dB to auto's mean for 20
            # times the cost, and on the held-out set it won a 0.8 % score tie it should have
            # lost (text: -0.6 dB against zssr); it is there for users who ask for it
            thorough=({}, {"tv_weight": 0.005}, {"tv_weight": 0.02}),
            cheap=({},),
        ),
        # per iteration: a blur and its adjoint on the fine grid (s^2 times the measured map);
        # with the learned prior, 8 network passes over the fine grid (about 0.6 s against
        # 0.03 s for a 192 x 192 map, x2)
        cost_prior=CostPrior(
            passes=8.0,
            per_iteration=8.0,
            slower_with=(("tv_weight", 1.3), ("prior_weight", 20.0)),
        ),
    )
)


def rl_sr(
    image: ArrayLike,
    psf: ArrayLike,
    *,
    scale: int = 2,
    iterations: int = 200,
    stop: StopRule = "discrepancy",
    discrepancy: float = 1.0,
    tolerance: float = 0.001,
    acceleration: bool = True,
    tv_weight: float = 0.0,
    prior_weight: float = 0.0,
    background: float = 0.0,
    initial: Literal["smooth", "bicubic"] = "smooth",
    consistency_tolerance: float = 1.5,
    split_guard: bool = True,
    device: Device = "auto",
) -> np.ndarray:
    """Richardson-Lucy super-resolution with the known beam (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured counts, any real dtype (negative values are set to zero); never modified.
    psf : array_like, shape (h, w)
        The beam on the measured grid (odd sides, non-negative); its Gaussian equivalent
        (:func:`asirp.sr.degrade.sigma_from_psf`) is the forward model's beam.
    scale : int
        Upscaling factor: 2 or 4.
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
    prior_weight : float
        Weight of the learned denoiser prior (:class:`LearnedPrior`; dimensionless; 0 = off).
        Not together with ``tv_weight``.
    background : float
        Constant background in the data (counts per measured pixel).
    initial : {"smooth", "bicubic"}
        Starting estimate: 'smooth' (beam-spread data) or 'bicubic' (upsampled data).
    consistency_tolerance : float
        Largest consistency residual accepted, in noise sigmas (see asirp.sr.consistency).
    split_guard : bool
        With the learned prior: super-resolve two independent halves of each map too and flag
        detail they agree on past the data (:mod:`asirp.sr.guard`).
    device : str or torch.device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    numpy.ndarray of float32, shape (H * scale, W * scale) or (B, H * scale, W * scale)
        The super-resolved map(s), counts per measured-pixel area, on the finer grid.

    See Also
    --------
    asirp.restore : the same run, with metrics and provenance.
    """
    return restore(
        image,
        SPEC.name,
        psf=psf,
        device=device,
        scale=scale,
        iterations=iterations,
        stop=stop,
        discrepancy=discrepancy,
        tolerance=tolerance,
        acceleration=acceleration,
        tv_weight=tv_weight,
        prior_weight=prior_weight,
        background=background,
        initial=initial,
        consistency_tolerance=consistency_tolerance,
        split_guard=split_guard,
    ).image
