"""Settings of the restoration component and the checks of every value a client sends.

:class:`Settings` says how the next restoration runs; the ``validate_*`` functions check one
setting each (with a message a beamline user can act on), :func:`parse_parameters` reads the
method parameters, :func:`engine_call` turns settings into the arguments of
:func:`asirp.restore`, and :func:`validate_map` checks a 2-D map. Nothing here holds state or
touches files (a ``weights`` file is opened by :mod:`asirp_device.files`), and nothing imports
Tango.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.backend import resolve_device
from asirp.registry import available_methods, get_method
from asirp.validation import as_image_stack

AUTO_CONTEXT_KEYS = ("modality", "psf_known", "budget_ms", "mode", "candidates")
"""Keys of the device's parameters that reach the selector when ``auto_select`` is on (see
:mod:`asirp.auto`); the others are method parameters for when it is off."""

MAX_SIDE_PX = 4096
"""Largest map side the device accepts, px (a float32 4096 x 4096 map is 64 MiB on the wire)."""

MAX_ITERATIONS = 100_000
"""Largest iteration cap, as in the engine's registry."""


@dataclass(frozen=True)
class Settings:
    """How the next restoration runs.

    Attributes
    ----------
    method : str
        A method of :func:`asirp.available_methods`, used unless ``auto_select``.
    auto_select : bool
        Let the engine choose (``method="auto"``, see :mod:`asirp.auto`); ``iterations`` and
        ``parameters`` are then not used.
    iterations : int
        Iteration cap for iterative methods (1 to 100000); methods without iterations ignore it.
    beam_fwhm_um : float
        Beam full width at half maximum, µm (isotropic Gaussian PSF).
    pixel_um : float
        Scan step (pixel size), µm.
    parameters : dict or str
        Other keyword parameters of ``method`` (``asirp methods`` lists them), JSON values; JSON
        object text is accepted and parsed by the component (which always holds a dict).
    compute_device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``, as :func:`asirp.restore`'s ``device``.
    """

    method: str = "richardson_lucy"
    auto_select: bool = False
    iterations: int = 100
    beam_fwhm_um: float = 50.0
    pixel_um: float = 10.0
    parameters: Mapping[str, Any] | str = field(default_factory=dict)
    compute_device: str = "auto"


def validate_method(method: Any) -> str:
    """Return ``method`` if it names a registered method, else raise a clear error."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {method!r}")
    known = available_methods()
    if method not in known:
        raise ValueError(
            f"unknown method {method!r}; available: {', '.join(known)} "
            "(set auto_select to let ASIRP choose)"
        )
    return method


def validate_iterations(iterations: Any) -> int:
    """Return ``iterations`` as an int in 1..100000, else raise a clear error."""
    if isinstance(iterations, bool) or not isinstance(iterations, int | np.integer):
        raise TypeError(f"iterations must be an integer, got {iterations!r}")
    if not 1 <= int(iterations) <= MAX_ITERATIONS:
        raise ValueError(
            f"iterations must be between 1 and {MAX_ITERATIONS} (the iteration cap of "
            f"iterative methods), got {int(iterations)}"
        )
    return int(iterations)


def validate_length_um(value: Any, name: str) -> float:
    """Return a finite length > 0 in µm as a float, else raise a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number of µm, got {value!r}")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be a finite length > 0 in µm, got {value!r}")
    return float(value)


def validate_compute_device(device: Any) -> str:
    """Return ``device`` if the engine can compute there now, else raise a clear error."""
    resolve_device(device)
    return str(device)


def validate_flag(value: Any) -> bool:
    """Return ``value`` as a bool if it is one (``auto_select``), else raise a clear error."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"auto_select must be true or false, got {value!r}")
    return bool(value)


def parse_parameters(parameters: Mapping[str, Any] | str) -> dict[str, Any]:
    """Turn a mapping or a JSON object text into the method-parameter dict.

    Parameters
    ----------
    parameters : Mapping or str
        The parameters, or their JSON object text (at most ``MAX_PARAMETERS_CHARS``
        characters, nested at most ``MAX_PARAMETERS_DEPTH`` levels).

    Raises
    ------
    ValueError
        For text that is not a JSON object, too long or nested too deeply, or an
        ``iterations`` key (it has its own setting).
    """
    max_chars, max_depth = 64 * 1024, 32  # MAX_PARAMETERS_CHARS, MAX_PARAMETERS_DEPTH
    if isinstance(parameters, str):
        if len(parameters) > max_chars:
            raise ValueError(
                f"parameters_json is {len(parameters)} characters long; at most {max_chars} "
                "are accepted"
            )
        text = parameters.strip() or "{}"
        try:
            parameters = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"parameters must be a JSON object, got {text[:200]!r}: {error}"
            ) from None
        except RecursionError:
            raise ValueError(
                f"parameters_json is nested too deeply (at most {max_depth} levels)"
            ) from None
        pending, depth = [(parameters, 1)], 1
        while pending:  # nesting depth, without recursion
            value, level = pending.pop()
            depth = max(depth, level)
            if depth > max_depth:
                raise ValueError(
                    f"parameters_json is nested too deeply (at most {max_depth} levels)"
                )
            if isinstance(value, dict):
                pending.extend((item, level + 1) for item in value.values())
            elif isinstance(value, list):
                pending.extend((item, level + 1) for item in value)
    if not isinstance(parameters, Mapping):
        raise ValueError(f"parameters must be a JSON object, got {str(parameters)[:200]!r}")
    if "iterations" in parameters:
        raise ValueError("give the iteration cap with the iterations setting, not in parameters")
    return dict(parameters)


WeightsPinner = Callable[[dict[str, Any]], dict[str, Any]]
"""Takes parsed method parameters and returns them with a ``weights`` file opened (pinned) in
the data root (:meth:`asirp_device.files.DataFiles.pin_weights`)."""


def _unpinned(parameters: dict[str, Any]) -> dict[str, Any]:
    return parameters


def validate_settings(settings: Settings, pin_weights: WeightsPinner = _unpinned) -> Settings:
    """Check every field of ``settings`` and return them with parsed parameters.

    Parameters
    ----------
    settings : Settings
        The settings to check (``parameters`` may be JSON object text).
    pin_weights : callable, optional
        Applied to the parsed parameters (opens a ``weights`` file in the data root).

    Returns
    -------
    Settings
        The checked settings; ``parameters`` is a dict.

    Raises
    ------
    ValueError, TypeError
        For an invalid value, or a compute device the engine cannot use now.
    """
    return Settings(
        method=validate_method(settings.method),
        auto_select=bool(settings.auto_select),
        iterations=validate_iterations(settings.iterations),
        beam_fwhm_um=validate_length_um(settings.beam_fwhm_um, "beam_fwhm_um"),
        pixel_um=validate_length_um(settings.pixel_um, "pixel_um"),
        parameters=pin_weights(parse_parameters(settings.parameters)),
        compute_device=validate_compute_device(settings.compute_device),
    )


def validate_overrides(
    overrides: Mapping[str, Any] | None, pin_weights: WeightsPinner = _unpinned
) -> dict[str, Any]:
    """Check the settings one request gives for itself and return them validated.

    Parameters
    ----------
    overrides : mapping, optional
        Any of ``method``, ``auto_select``, ``iterations``, ``beam_fwhm_um``, ``pixel_um``
        (µm) and ``parameters`` (a mapping or JSON object text).
    pin_weights : callable, optional
        Applied to parsed ``parameters`` (opens a ``weights`` file in the data root).

    Returns
    -------
    dict
        The validated values by setting name, for :func:`dataclasses.replace` on
        :class:`Settings`.

    Raises
    ------
    ValueError, TypeError
        For an unknown key or an invalid value.
    """
    validators: dict[str, Callable[[Any], Any]] = {
        "method": validate_method,
        "auto_select": validate_flag,
        "iterations": validate_iterations,
        "beam_fwhm_um": lambda value: validate_length_um(value, "beam_fwhm_um"),
        "pixel_um": lambda value: validate_length_um(value, "pixel_um"),
        "parameters": lambda value: pin_weights(parse_parameters(value)),
    }
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(validators))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(validators)}")
    return {key: validators[key](value) for key, value in overrides.items()}


def engine_call(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The method and keyword arguments that :func:`asirp.restore` gets for ``settings``.

    Parameters are checked against the method's registry entry, so a mismatch (a parameter the
    method does not take, a value out of range) raises here, before any work starts.

    Returns
    -------
    method : str
        ``"auto"`` when ``settings.auto_select``, else ``settings.method``.
    kwargs : dict
        PSF description, compute device, and the method's parameters.
    """
    kwargs: dict[str, Any] = {
        "beam_fwhm_um": settings.beam_fwhm_um,
        "pixel_um": settings.pixel_um,
        "device": settings.compute_device,
    }
    if settings.auto_select:  # only the selection context applies; method parameters wait
        context = {k: v for k, v in settings.parameters.items() if k in AUTO_CONTEXT_KEYS}
        return "auto", {**kwargs, **context}
    spec = get_method(settings.method)
    params = dict(settings.parameters)
    if any(parameter.name == "iterations" for parameter in spec.parameters):
        params["iterations"] = settings.iterations
    spec.resolve_params(params)
    return settings.method, {**kwargs, **params}


def output_scale(settings: Settings) -> int:
    """How many times larger than the input the result of ``settings`` is (1 but for SR)."""
    if settings.auto_select:
        return 1
    spec = get_method(settings.method)
    return int(spec.resolve_params(dict(settings.parameters)).get("scale", spec.scale))


def validate_map(image: Any, name: str = "input_image") -> np.ndarray:
    """Check one 2-D map for the device and return a read-only float32 ``(H, W)`` copy.

    Raises
    ------
    ValueError
        For a stack or any other number of dimensions, NaN/Inf, a side below 4 px or above
        :data:`MAX_SIDE_PX`.
    TypeError
        For non-numeric or complex data.
    """
    if np.ndim(image) == 3:
        raise ValueError(
            f"{name} holds a stack of shape {np.shape(image)}; the device restores one 2-D map "
            "(rows, columns) at a time (use 'asirp restore' for stacks)"
        )
    stack, _ = as_image_stack(image, name)
    if stack.ndim != 3 or stack.shape[0] != 1:
        raise ValueError(f"{name} must be a 2-D map (rows, columns), got shape {np.shape(image)}")
    array = stack[0]
    if max(array.shape) > MAX_SIDE_PX:
        raise ValueError(
            f"{name} of shape {array.shape} is too large: each side may be at most {MAX_SIDE_PX} px"
        )
    array.flags.writeable = False
    return array
