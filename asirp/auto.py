"""``method="auto"`` of :func:`asirp.restore`: choose (see :mod:`asirp.selection`), then run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from asirp.backend import resolve_device
from asirp.psf import ResolvedPSF
from asirp.registry import MethodOutput, MethodSpec, method_specs
from asirp.selection import COSTS, Candidate, make_context, measure_costs, select_stack
from asirp.selection.costs import OVERHEAD

CONTEXT_KEYS = (
    "modality",
    "psf_known",
    "second",
    "budget_ms",
    "mode",
    "scale",
    "candidates",
    "policy",
    "remember",
)
"""Keywords of :func:`asirp.restore` that describe the selection context, not a method."""


@dataclass
class AutoResult:
    """What :func:`asirp.restore` needs from an automatic choice.

    Attributes
    ----------
    method : str
        The method to run.
    params : dict
        Its parameters.
    spec : MethodSpec or None
        The spec to run when it is not in the registry (the identity: no restoration).
    record : dict
        Entries for ``Restoration.params`` (``auto_reason``, ``selection``; for a choice made
        without scoring, ``auto_unscored`` (the check that failed) and ``ignored_parameters``
        (the context it does not honour, :func:`asirp.selection.shortcuts.ignored_context`)).
    metrics : dict of str to float
        Entries for ``Restoration.metrics`` (``selection_s`` and, when scored,
        ``selection_score`` and ``selection_gain_db``).
    observe : callable
        ``observe(run_ms, overhead_ms)``: the measured time of the restoration and of the work
        around it (quality figures), for the cost cache.
    runner_up : (str, dict) or None
        The best-scored candidate of another method (never the identity), with its parameters:
        what runs when the choice's result on the full data is plain interpolation.
    """

    method: str
    params: dict[str, Any]
    spec: Any
    record: dict[str, Any]
    metrics: dict[str, float]
    observe: Callable[[float, float], None]
    runner_up: tuple[str, dict[str, Any]] | None = None


def identity_spec(scale: int = 1) -> Any:
    """An unregistered method spec that returns its input (bicubically upsampled for scale > 1).

    It is what "no restoration" runs as when the selector judges the input best; it is not in
    the registry, so ``available_methods()`` never lists it.
    """

    def run(problem: Any, params: dict[str, Any]) -> MethodOutput:
        data = problem.data
        if scale > 1:
            data = F.interpolate(
                data[:, None], scale_factor=scale, mode="bicubic", align_corners=False
            )[:, 0]
        return MethodOutput(data.clone(), problem.psf, {"restoration": "none (the input)"})

    return MethodSpec("identity", "non-blind", False, scale, (), run, "the input, unchanged")


def resolve_auto(
    stack: np.ndarray,
    resolved_psf: ResolvedPSF | None,
    params: dict[str, Any],
    *,
    seed: int,
    device: str | torch.device,
    cancel: threading.Event | None = None,
    started: float | None = None,
    counts_gain: float | None = None,
) -> AutoResult:
    """Choose the method for ``asirp.restore(..., method="auto", **params)``.

    Parameters
    ----------
    stack : numpy.ndarray
        The checked maps ``(B, H, W)``.
    resolved_psf : ResolvedPSF or None
        The PSF.
    params : dict
        :func:`asirp.restore`'s keywords: the context (:data:`CONTEXT_KEYS`) and method
        parameters to fix.
    seed : int
        Seed of the split.
    device : str or torch.device
        Compute device.
    cancel : threading.Event, optional
        Stops the selection.
    started : float, optional
        :func:`time.perf_counter` when the restoration began (the budget counts from there).
    counts_gain : float, optional
        The caller's values per detected count (checked by :func:`asirp.restore`): the split
        thins counts of that size instead of estimating it.

    Returns
    -------
    AutoResult
        The method, parameters and records.
    """
    context_args = {key: params[key] for key in CONTEXT_KEYS if key in params}
    fixed = {key: value for key, value in params.items() if key not in CONTEXT_KEYS}
    known = {parameter.name for spec in method_specs() for parameter in spec.parameters}
    unknown = sorted(set(fixed) - known)
    if unknown:
        raise ValueError(
            f"no parameter {unknown[0]!r} in any method (method='auto'); selection context "
            f"keys are {sorted(CONTEXT_KEYS)}"
        )
    remember = context_args.pop("remember", True)
    policy = context_args.pop("policy", None)
    if not isinstance(remember, bool):
        raise TypeError(f"remember must be true or false, got {remember!r}")
    context = make_context(stack, resolved_psf, **context_args)
    if counts_gain is not None:
        context = replace(context, counts_gain=float(counts_gain))
    compute = resolve_device(device)
    pixels = int(stack.shape[1] * stack.shape[2])
    measured_s = None
    if context.budget_ms is not None and COSTS.estimate(OVERHEAD, pixels, compute)[1] != "measured":
        # A first budgeted call at this size: time the candidates first (and pay the process's
        # one-time costs, kernels and FFT plans) outside the budget, which then prices them
        # by measurement instead of by prior; later calls find the costs cached.
        measuring = time.perf_counter()
        measure_costs(
            tuple(stack.shape[1:]),
            psf=None if resolved_psf is None else resolved_psf.array,
            mode=context.mode,
            scale=context.scale,
            device=compute,
            seed=seed,
        )
        measured_s = time.perf_counter() - measuring
        started = time.perf_counter()
    selection = select_stack(
        stack,
        context,
        fixed,
        seed=seed,
        device=compute,
        policy=policy,
        remember=remember,
        cancel=cancel,
        started=started if started is not None else time.perf_counter(),
    )
    spec = identity_spec(context.scale) if selection.method == "identity" else None
    metrics = {"selection_s": float(selection.elapsed_s)}
    if measured_s is not None:
        metrics["cost_measurement_s"] = float(measured_s)
    chosen = selection.chosen
    if chosen is not None and chosen.score is not None:
        metrics["selection_score"] = float(chosen.score)
        if chosen.gain_db is not None:
            metrics["selection_gain_db"] = float(chosen.gain_db)
    candidate = Candidate.make(selection.method, selection.params)
    batch = int(stack.shape[0])

    def observe(run_ms: float, overhead_ms: float) -> None:
        COSTS.record(candidate, pixels, run_ms / batch, compute)
        COSTS.record(OVERHEAD, pixels, overhead_ms / batch, compute)

    record: dict[str, Any] = {"auto_reason": selection.reason, "selection": selection.to_dict()}
    # facts for Restoration.cautions(): a choice made without scoring, and what it ignores
    unscored = selection.context.get("unscored_reason")
    if selection.source == "rule" and isinstance(unscored, str):
        record["auto_unscored"] = unscored
    ignored = selection.context.get("ignored_parameters")
    if ignored:
        record["ignored_parameters"] = ignored
    others = [
        scored
        for scored in selection.ranking
        if scored.method not in (selection.method, "identity")
    ]
    runner_up = (others[0].method, dict(others[0].params)) if others else None
    return AutoResult(
        selection.method, dict(selection.params), spec, record, metrics, observe, runner_up
    )
