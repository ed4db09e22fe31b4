"""The method registry: what each restoration method is, needs and accepts.

A method is one module in :mod:`asirp.methods` that calls :func:`register_method` with a
:class:`MethodSpec`. The spec carries everything the rest of the engine needs to know about the
method: its parameters (defaults and valid ranges: they validate user input and make the CLI's
help), the settings the measured ``auto`` tries (:class:`SelectorGrid`), its cost before any
measurement (:class:`CostPrior`) and, when it is not a plain blur, how a restoration predicts
the measurement (``forward_model``). :func:`asirp.restore` does the rest (input checks, PSF,
device, batching, metrics), so a method only implements the mathematics on float32 tensors.
The recipe for adding one is in ``CONTRIBUTING.md``.

This module imports no method: it is a leaf of the engine. The package ``asirp`` imports
:mod:`asirp.methods` (through :mod:`asirp._builtin`), which registers the built-in methods, so
they are registered whichever ``asirp`` module is imported first.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

Family = Literal["non-blind", "blind", "super-resolution"]
FAMILIES: tuple[str, ...] = ("non-blind", "blind", "super-resolution")


class RestorationCancelled(RuntimeError):
    """Raised inside a method when the caller's cancel event is set (an operator's Abort)."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of a method, with its default and what values are valid.

    Attributes
    ----------
    name : str
        Keyword name in :func:`asirp.restore` (snake_case).
    kind : type
        ``int``, ``float``, ``bool`` or ``str``.
    default : Any
        Value used when the caller gives none; ``None`` means "chosen automatically".
    doc : str
        One line for the CLI's table and help, with units.
    minimum, maximum : float, optional
        Inclusive bounds for numbers.
    choices : tuple of str, optional
        Allowed values for strings.
    """

    name: str
    kind: type
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def validate(self, value: Any, method: str) -> Any:
        """Return ``value`` converted to this parameter's kind, or raise a clear error."""
        where = f"parameter {self.name!r} of method {method!r}"
        if value is None:
            if self.default is None:
                return None
            raise ValueError(f"{where} may not be None")
        if self.kind is bool:
            if isinstance(value, bool | np.bool_):
                return bool(value)
            raise TypeError(f"{where} must be true or false, got {value!r}")
        if self.kind is str:
            if not isinstance(value, str):
                raise TypeError(f"{where} must be a string, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{where} is {value!r}; allowed: {', '.join(self.choices)}")
            return value
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
            raise TypeError(f"{where} must be a number, got {value!r}")
        if self.kind is int:
            if isinstance(value, float | np.floating) and not float(value).is_integer():
                raise TypeError(f"{where} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{where} must be finite, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{where} is {value!r}; it must be >= {self.minimum:g} ({self.doc})")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{where} is {value!r}; it must be <= {self.maximum:g} ({self.doc})")
        return value

    def describe_range(self) -> str:
        """Human-readable valid range, for tables and help."""
        if self.choices is not None:
            return "|".join(self.choices)
        if self.kind is str:
            return "text"
        if self.kind is bool:
            return "true|false"
        low = "-inf" if self.minimum is None else f"{self.minimum:g}"
        high = "inf" if self.maximum is None else f"{self.maximum:g}"
        return f"[{low}, {high}]"


@dataclass
class Problem:
    """What a method receives: the data on the compute device, the PSF and run-time hooks.

    Attributes
    ----------
    data : torch.Tensor
        Shape ``(B, H, W)``, float32 maps (counts), on ``device``.
    psf : torch.Tensor or None
        Shape ``(h, w)``, float32, sum 1, on ``device``; ``None`` for methods that need none.
    device : torch.device
        Where to compute.
    counts_gain : float
        Detector counts per photon-like event (1 for raw counts): the Poisson scale used by the
        discrepancy principle (see :mod:`asirp.iteration`).
    seed : int
        Seed for any randomness (methods never use global random state).
    progress : callable
        ``progress(fraction)`` with ``fraction`` in [0, 1] of this problem's work.
    cancel : threading.Event or None
        When set, the method raises :class:`RestorationCancelled` at its next iteration.
    """

    data: torch.Tensor
    psf: torch.Tensor | None
    device: torch.device
    counts_gain: float = 1.0
    seed: int = 0
    progress: Callable[[float], None] = lambda fraction: None
    cancel: threading.Event | None = None

    def check_cancel(self) -> None:
        """Raise :class:`RestorationCancelled` if the caller asked to stop."""
        if self.cancel is not None and self.cancel.is_set():
            raise RestorationCancelled("restoration was cancelled")


@dataclass
class MethodOutput:
    """What a method returns.

    Attributes
    ----------
    image : torch.Tensor
        Restored maps ``(B, H * scale, W * scale)``, float32.
    psf : torch.Tensor or None
        The PSF used, or the one estimated (``(B, h, w)`` or ``(h, w)``) by a blind method.
    info : dict
        JSON-serialisable facts to add to ``Restoration.params`` (for example
        ``iterations_run`` or an automatically chosen regularisation weight).
    metrics : dict of str to list
        Figures the method computed itself, one value per map of the batch (for example the
        consistency check of super-resolution); merged into ``Restoration.metrics``.
    """

    image: torch.Tensor
    psf: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[Any]] = field(default_factory=dict)


ForwardModel = Callable[[torch.Tensor, "torch.Tensor | None", int], torch.Tensor]
"""``forward(estimate (B, sH, sW), psf on the input grid or None, scale) -> (B, H, W)``: the
measurement a restoration predicts, noise-free (:attr:`MethodSpec.forward_model`)."""


@dataclass(frozen=True)
class SelectorGrid:
    """The settings the measured ``auto`` tries for one method (:mod:`asirp.selection`).

    Each setting is a dict of parameters (``{}`` = the method's defaults), so the selector's
    score also picks iteration counts and regularisers.

    Attributes
    ----------
    thorough : tuple of dict
        Settings tried in the thorough mode (final maps).
    cheap : tuple of dict, optional
        Settings tried in the cheap mode (live updates); ``()`` leaves a slow method out of it,
        ``None`` (the default) tries the thorough settings.
    max_splits : int, optional
        Splits a candidate of this method is scored on at most (``None``: as many as the
        mode uses). A method that trains on each map (zssr) declares 1, so the thorough mode's
        cost stays bounded by a rule that never depends on the clock.
    thorough_at_scale : dict of int to tuple of dict, optional
        Thorough settings that replace ``thorough`` at one output scale (a setting measured to
        pay at x2 and to lose at x4).
    """

    thorough: tuple[dict[str, Any], ...] = ({},)
    cheap: tuple[dict[str, Any], ...] | None = None
    max_splits: int | None = None
    thorough_at_scale: dict[int, tuple[dict[str, Any], ...]] | None = None

    def settings(self, mode: str, scale: int = 1) -> tuple[dict[str, Any], ...]:
        """The settings of ``mode`` (``"cheap"`` or ``"thorough"``) at an output ``scale``."""
        if mode == "cheap" and self.cheap is not None:
            return self.cheap
        if self.thorough_at_scale is not None and scale in self.thorough_at_scale:
            return self.thorough_at_scale[scale]
        return self.thorough


@dataclass(frozen=True)
class CostPrior:
    """What one run of a method costs before anything was measured, in FFT pairs.

    The unit is one forward and inverse FFT of the map's size, which the selector times on the
    device (:mod:`asirp.selection.costs`); measured run times replace the prior as soon as
    there are any.

    Attributes
    ----------
    passes : float
        Cost of one run; for iterative methods, the set-up before the first iteration.
    per_iteration : float
        Cost of one iteration (0 for methods without iterations). A method with a per-iteration
        cost needs an ``iterations`` parameter; with an adaptive ``stop`` the selector assumes
        a bounded number of iterations.
    slower_with : tuple of (str, float)
        ``(parameter, factor)``: the per-iteration cost times ``factor`` when the parameter is
        set (true or non-zero), for example a total-variation term.
    """

    passes: float
    per_iteration: float = 0.0
    slower_with: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class MethodSpec:
    """Registration record of one restoration method.

    Attributes
    ----------
    name : str
        snake_case name used by ``asirp.restore(method=...)``.
    family : {"non-blind", "blind", "super-resolution"}
        Kind of method.
    needs_psf : bool
        Whether a PSF must be given (for blind methods: as the initial guess).
    scale : int
        Output size / input size (1 for deconvolution); methods with a ``scale`` parameter
        (super-resolution) use that instead, and this is its default.
    parameters : tuple of Parameter
        Every accepted parameter with its default and range.
    run : callable
        ``run(problem, params) -> MethodOutput`` on ``(B, H, W)`` tensors.
    summary : str
        One line describing the method.
    batchable : bool
        Whether a stack may be split into chunks along the batch axis (true for methods that
        treat each image on its own).
    selector_grid : SelectorGrid
        The settings the measured ``auto`` tries (default: the method's defaults alone, in
        both modes).
    cost_prior : CostPrior or None
        Cost before any measurement; ``None``: the selector's conservative prior for unknown
        methods (networks, new methods).
    forward_model : callable or None
        How a restoration predicts the measurement (:data:`ForwardModel`); ``None``: blur with
        the returned PSF (scale 1), or blur on the fine grid then area sampling (scale > 1).
    """

    name: str
    family: Family
    needs_psf: bool
    scale: int
    parameters: tuple[Parameter, ...]
    run: Callable[[Problem, dict[str, Any]], MethodOutput]
    summary: str
    batchable: bool = True
    selector_grid: SelectorGrid = field(default_factory=SelectorGrid, compare=False)
    cost_prior: CostPrior | None = field(default=None, compare=False)
    forward_model: ForwardModel | None = field(default=None, compare=False)

    def parameter(self, name: str) -> Parameter:
        """Return the parameter called ``name``."""
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate the caller's parameters and fill in defaults.

        Raises
        ------
        ValueError
            For a parameter this method does not have (the message lists those it has), or a
            value out of range.
        TypeError
            For a value of the wrong type.
        """
        known = {parameter.name: parameter for parameter in self.parameters}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are: {', '.join(known) or '(none)'}"
            )
        return {
            name: parameter.validate(given.get(name, parameter.default), self.name)
            for name, parameter in known.items()
        }


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry (called once by each method module)."""
    if spec.family not in FAMILIES:
        raise ValueError(f"unknown family {spec.family!r} for {spec.name!r}; allowed: {FAMILIES}")
    if spec.name in _REGISTRY or spec.name == "auto":
        raise ValueError(f"a method named {spec.name!r} is already registered")
    if spec.scale < 1:
        raise ValueError(f"scale of {spec.name!r} must be >= 1")
    names = {parameter.name for parameter in spec.parameters}
    if spec.cost_prior is not None and spec.cost_prior.per_iteration and "iterations" not in names:
        raise ValueError(f"{spec.name!r} has a per-iteration cost but no 'iterations' parameter")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> MethodSpec:
    """Remove a method from the registry and return its spec (for tests and plug-ins).

    Raises
    ------
    ValueError
        If no method has that name.
    """
    spec = get_method(name)
    del _REGISTRY[name]
    return spec


def get_method(name: str) -> MethodSpec:
    """Return the spec of a registered method.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If no method has that name (the message lists the available ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {name!r}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; available: auto, {', '.join(available_methods())}"
        ) from None


def available_methods(family: str | None = None) -> list[str]:
    """Names of the registered methods, sorted, optionally of one family."""
    return sorted(
        name for name, spec in _REGISTRY.items() if family is None or spec.family == family
    )


def method_specs() -> list[MethodSpec]:
    """All registered method specs, sorted by family then name."""
    order = {family: index for index, family in enumerate(FAMILIES)}
    return sorted(_REGISTRY.values(), key=lambda spec: (order[spec.family], spec.name))


# Parameters that several methods share, defined once so their meaning stays the same.
def iterations_parameter(default: int, doc: str = "maximum number of iterations") -> Parameter:
    """The iteration-count parameter with a method-specific default."""
    return Parameter("iterations", int, default, doc, minimum=1, maximum=100_000)


STOP_RULES = ("fixed", "discrepancy", "stagnation")
DISCREPANCY = Parameter(
    "discrepancy",
    float,
    1.0,
    "stop='discrepancy' target: mean Poisson deviance per pixel (1 = noise level)",
    minimum=0.05,
    maximum=100.0,
)
TOLERANCE = Parameter(
    "tolerance",
    float,
    1e-3,
    "stop='stagnation' threshold: relative change of the estimate per iteration",
    minimum=1e-8,
    maximum=0.5,
)
BACKGROUND = Parameter(
    "background", float, 0.0, "constant background in the data (counts per pixel)", minimum=0.0
)
ITERATIVE_BOUNDARY = Parameter(
    "boundary",
    str,
    "extend",
    "edges: 'extend' (unknown object past the map), 'zero' or 'periodic'",
    choices=("extend", "zero", "periodic"),
)
DIRECT_BOUNDARY = Parameter(
    "boundary",
    str,
    "reflect",
    "edges: 'reflect' (mirror-extended map) or 'periodic'",
    choices=("reflect", "periodic"),
)
POSITIVITY = Parameter("positivity", bool, True, "clip negative values of the estimate to zero")


def stopping_parameters(default_stop: str) -> tuple[Parameter, ...]:
    """The iteration-control parameters every iterative method accepts."""
    stop = Parameter(
        "stop",
        str,
        default_stop,
        "when to stop: after 'iterations', at the Poisson discrepancy, or on stagnation",
        choices=STOP_RULES,
    )
    return (stop, DISCREPANCY, TOLERANCE)


def no_grad(function: Callable[..., MethodOutput]) -> Callable[..., MethodOutput]:
    """Run a method without autograd bookkeeping (methods never need gradients)."""
    return torch.no_grad()(function)
