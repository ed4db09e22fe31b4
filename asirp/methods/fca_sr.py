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

import numpy as np
from numpy.typing import ArrayLike

from asirp.methods._public import Device
from asirp.registry import (
    MethodOutput,
    MethodSpec,
    Parameter,
    Problem,
    SelectorGrid,
    register_method,
)
from asirp.restore import restore
from asirp.sr.models import count_parameters
from asirp.sr.runner import (
    COMMON_PARAMETERS,
    SELF_ENSEMBLE,
    SPLIT_GUARD,
    LoadedNetwork,
    run_with_weights,
)
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


SPEC = register_method(
    MethodSpec(
        name="fca_sr",
        family="super-resolution",
        needs_psf=False,
        scale=2,
        summary="DFCAN-style CNN (Fourier channel attention) trained on synthetic X-ray maps",
        parameters=(*COMMON_PARAMETERS, WEIGHTS, SELF_ENSEMBLE, SPLIT_GUARD),
        # final maps get the self-ensemble; live updates keep the single pass (8x cheaper)
        selector_grid=SelectorGrid(thorough=({"self_ensemble": True},), cheap=({},)),
        run=run,
    )
)


def fca_sr(
    image: ArrayLike,
    *,
    scale: int = 2,
    tile: int | None = None,
    overlap: int = 16,
    half: bool = True,
    consistency_tolerance: float = 1.5,
    weights: str | None = None,
    self_ensemble: bool = False,
    split_guard: bool = True,
    device: Device = "auto",
) -> np.ndarray:
    """Super-resolution by a Fourier channel attention CNN (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured map(s), any real dtype; never modified.
    scale : int
        Upscaling factor: 2 or 4.
    tile : int, optional
        Largest tile side for tiled inference, input px (None: 256 on the CPU, 1024 on CUDA).
    overlap : int
        Overlap between tiles, input px.
    half : bool
        Float16 on CUDA GPUs (ignored on the CPU).
    consistency_tolerance : float
        Largest consistency residual accepted, in noise sigmas (see asirp.sr.consistency).
    weights : str, optional
        Weights file (.safetensors from 'asirp train fca_sr'; None = the shipped ones).
    self_ensemble : bool
        Average the network over the 8 flips and quarter-turns of each map (geometric
        self-ensemble: 8x the inference; asirp.sr.inference).
    split_guard : bool
        Super-resolve two independent halves of each map too and flag detail they agree on
        past the data (asirp.sr.guard; maps over 262144 px are skipped).
    device : str or torch.device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    numpy.ndarray of float32, shape (H * scale, W * scale) or (B, H * scale, W * scale)
        The super-resolved map(s), on the finer grid.

    See Also
    --------
    asirp.restore : the same run, with metrics and provenance.
    """
    return restore(
        image,
        SPEC.name,
        device=device,
        scale=scale,
        tile=tile,
        overlap=overlap,
        half=half,
        consistency_tolerance=consistency_tolerance,
        weights=weights,
        self_ensemble=self_ensemble,
        split_guard=split_guard,
    ).image
