"""``fca_sr``: DFCAN-style super-resolution with Fourier channel attention, trained by ASIRP.

The network (:class:`asirp.sr.models.FCASRNet`) was trained with ASIRP's own code
(``asirp train fca_sr``, :mod:`asirp.sr.train`) on synthetic X-ray-like maps degraded by Gaussian
beams, area sampling and Poisson noise (:mod:`asirp.sr.data`); it restores the blur and the
sampling together. The weights ship in ``asirp/models/`` with their model card
(``MODEL_CARD.md``: data, loss, the command that reproduces them, held-out figures). Other weights
of the same architecture (written by ``asirp train``) are given with ``weights=FILE``.

Every result is degraded again with the forward model and compared with the input
(:mod:`asirp.sr.consistency`).
"""

from __future__ import annotations

from typing import Any

from asirp.registry import MethodOutput, MethodSpec, Parameter, Problem, register_method
from asirp.sr.models import count_parameters
from asirp.sr.runner import COMMON_PARAMETERS, LoadedNetwork, run_with_weights
from asirp.sr.weights import build_from_weights, load_weights

WEIGHTS = Parameter(
    "weights",
    str,
    None,
    "weights file (.safetensors from 'asirp train fca_sr'; None = the shipped ones)",
)


def load_network(path: str, scale: int) -> LoadedNetwork:
    """Build the ``fca_sr`` network stored in a weight file."""
    loaded = load_weights(path)
    network = build_from_weights(loaded, "fca_sr", scale)
    config = loaded.metadata.get("config", {})
    description = f"FCASRNet x{scale} {config}, {count_parameters(network)} parameters"
    return LoadedNetwork(network, 1, 1, str(path), description)


def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Super-resolve ``(B, H, W)`` maps to ``(B, s H, s W)`` with the trained network."""
    return run_with_weights("fca_sr", load_network, problem, params)


register_method(
    MethodSpec(
        name="fca_sr",
        family="super-resolution",
        needs_psf=False,
        scale=2,
        summary="DFCAN-style CNN (Fourier channel attention) trained on synthetic X-ray maps",
        parameters=(*COMMON_PARAMETERS, WEIGHTS),
        run=run,
    )
)
