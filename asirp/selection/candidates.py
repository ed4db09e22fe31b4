"""The candidates the selector considers: registered methods with parameter grids, and the input.

Every method in the registry is a candidate when it fits the data and the context:

- its output scale can be the one asked for (``MethodSpec.scale``, or its ``scale`` parameter
  for super-resolution methods);
- it needs a PSF only when one is described;
- blind methods only when the PSF is *not* known (``psf_known=False``: the given PSF is a guess);
- it accepts every method parameter the caller fixed (``asirp.restore(..., method="auto",
  iterations=50)`` keeps only methods with ``iterations``).

Each method is tried with the small grid of settings its spec brings
(:attr:`asirp.registry.MethodSpec.selector_grid`: one for the thorough mode, one for the cheap
mode), so the score also picks iteration counts and regularisers; a method that brings none is
tried with its defaults. ``identity``
(the input itself, bicubically upsampled for ``scale > 1``) is always a candidate, so the
selector cannot return something its own score judges worse than the input.

The selector predicts a measurement from a restoration by "blur with the returned PSF" (scale 1)
or "blur on the fine grid, then area sampling" (:mod:`asirp.sr.degrade`, scale > 1), unless a
method's spec brings its own forward model (:func:`forward_model_for`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from asirp.registry import ForwardModel, MethodSpec, get_method, method_specs

IDENTITY = "identity"
"""Name of the no-restoration candidate (the measured map as it is)."""


def forward_model_for(method: str) -> ForwardModel | None:
    """The forward model a method's spec brings (``MethodSpec.forward_model``), or ``None``."""
    return None if method == IDENTITY else get_method(method).forward_model


@dataclass(frozen=True)
class Candidate:
    """One method with one setting.

    Attributes
    ----------
    method : str
        Registered method name, or ``"identity"``.
    settings : str
        The parameters as sorted JSON (hashable; see :attr:`params`).
    """

    method: str
    settings: str = "{}"

    @classmethod
    def make(cls, method: str, params: dict[str, Any] | None = None) -> Candidate:
        """Build a candidate from a method name and its parameters."""
        return cls(method, json.dumps(params or {}, sort_keys=True))

    @property
    def params(self) -> dict[str, Any]:
        """The parameters given to the method (its defaults fill the rest)."""
        return json.loads(self.settings)

    @property
    def label(self) -> str:
        """``method(name=value, ...)`` for tables and reasons."""
        params = self.params
        if not params:
            return self.method
        inner = ", ".join(f"{key}={value}" for key, value in params.items())
        return f"{self.method}({inner})"

    def spec(self) -> MethodSpec | None:
        """The method's registry record (``None`` for the identity)."""
        return None if self.method == IDENTITY else get_method(self.method)


def _output_scale(spec: MethodSpec, scale: int) -> dict[str, Any] | None:
    """Parameters that make ``spec`` produce ``scale``, or ``None`` when it cannot."""
    names = {parameter.name for parameter in spec.parameters}
    if "scale" in names:
        try:
            spec.parameter("scale").validate(scale, spec.name)
        except (TypeError, ValueError):
            return None
        return {"scale": scale}
    return {} if spec.scale == scale else None


LEFT_OUT_FOR_MODALITY: dict[str, dict[str, tuple[str, str]]] = {
    "tomo_projection": {
        "wiener": (
            "nsr",
            "its noise-to-signal ratio is estimated from ring-averaged spectra, which a "
            "sinogram's anisotropic spectrum (the row PSF blurs one axis) misleads, and on a "
            "split part (twice the noise) it tunes itself to another filter than the one "
            "applied to the data, so the score cannot judge it (measured: 2 to 3.5 dB worse "
            "reconstructions than none, chosen on one evaluation phantom and on the tooth); "
            "give nsr to make it a candidate",
        ),
    },
}
"""Methods left out of ``auto`` for a modality unless the caller fixes the named parameter."""


def fitting_candidates(
    *,
    scale: int,
    has_psf: bool,
    psf_known: bool,
    mode: str,
    fixed: dict[str, Any],
    names: tuple[str, ...] | None = None,
    modality: str = "image",
) -> tuple[list[Candidate], dict[str, str]]:
    """The candidates that fit the data and the context, and why the others do not.

    Parameters
    ----------
    scale : int
        Output scale asked for.
    has_psf : bool
        Whether a PSF is described.
    psf_known : bool
        Whether it is the true PSF (``False``: a guess, blind methods are considered).
    mode : {"cheap", "thorough"}
        Which grids to use.
    fixed : dict
        Method parameters the caller fixed; candidates must accept them all.
    names : tuple of str, optional
        Restrict to these methods (``"identity"`` is always kept).
    modality : str
        The data's modality: methods the score cannot judge on it are left out
        (:data:`LEFT_OUT_FOR_MODALITY`).

    Returns
    -------
    candidates : list of Candidate
        Identity first, then every fitting method's settings (registry order).
    excluded : dict of str to str
        Method name -> why it is not a candidate.
    """
    candidates = [Candidate.make(IDENTITY)]
    excluded: dict[str, str] = {}
    for spec in method_specs():
        if names is not None and spec.name not in names:
            continue
        scale_params = _output_scale(spec, scale)
        if scale_params is None:
            excluded[spec.name] = f"does not produce scale {scale}"
            continue
        if spec.needs_psf and not has_psf:
            excluded[spec.name] = "needs a PSF"
            continue
        left_out = LEFT_OUT_FOR_MODALITY.get(modality, {}).get(spec.name)
        if left_out is not None and left_out[0] not in fixed:
            excluded[spec.name] = f"left out for {modality}: {left_out[1]}"
            continue
        if spec.family == "blind" and psf_known:
            excluded[spec.name] = "the PSF is known (blind estimation is for a guessed PSF)"
            continue
        accepted = {parameter.name for parameter in spec.parameters}
        missing = sorted(set(fixed) - accepted)
        if missing:
            excluded[spec.name] = f"does not take {', '.join(missing)}"
            continue
        grid = spec.selector_grid.settings(mode, scale)
        if not grid:
            excluded[spec.name] = f"left out of the {mode} mode (slow)"
            continue
        spec.resolve_params({**scale_params, **fixed})  # the caller's values: errors are theirs
        seen: set[Candidate] = set()
        for setting in grid:
            candidate = Candidate.make(spec.name, {**setting, **scale_params, **fixed})
            if candidate in seen:
                continue
            try:
                spec.resolve_params(candidate.params)
            except (TypeError, ValueError) as error:  # a grid entry the method no longer takes
                excluded[candidate.label] = str(error)
                continue
            seen.add(candidate)
            candidates.append(candidate)
    return candidates, excluded
