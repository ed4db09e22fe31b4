"""``beam_sr``: the Fourier channel attention network told the beam, trained over a family of beams.

:class:`asirp.sr.models.BeamFCASRNet` is ``fca_sr``'s network with two more input planes: the
beam's sigma along the rows and along the columns, in measured pixels. It was trained with
ASIRP's own code (``asirp train beam_sr``, :mod:`asirp.sr.train`) over a wide family of
degradations (:mod:`asirp.sr.data`, ``anisotropic=True``): round and elongated Gaussian beams of
0.15-1.6 measured px, peaks of 5-20,000 counts, backgrounds up to half the peak, area sampling
and Poisson noise. So the one network uses the beam it is given, as focusing optics make it
(rarely round), instead of guessing the blur from the map as ``fca_sr`` does. It needs the PSF
(any shape: its second moments along the rows and the columns give the two sigmas,
:func:`asirp.sr.degrade.sigma_axes_from_psf`); without one, use ``fca_sr``.

The weights ship in ``asirp/models/`` with their model card (``MODEL_CARD.md``). Every result is
degraded again with the forward model, with the same anisotropic beam, and compared with the
input (:mod:`asirp.sr.consistency`).
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
    "weights file (.safetensors from 'asirp train beam_sr'; None = the shipped ones)",
)


def load_network(path: str, scale: int) -> LoadedNetwork:
    """Build the ``beam_sr`` network stored in a weight file."""
    loaded = load_weights(path)
    network = build_from_weights(loaded, "beam_sr", scale)
    config = loaded.metadata.get("config", {})
    description = f"BeamFCASRNet x{scale} {config}, {count_parameters(network)} parameters"
    return LoadedNetwork(network, 1, 1, str(path), description, told_the_beam=True)


def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Super-resolve ``(B, H, W)`` maps to ``(B, s H, s W)``, telling the network the beam."""
    return run_with_weights("beam_sr", load_network, problem, params)


SPEC = register_method(
    MethodSpec(
        name="beam_sr",
        family="super-resolution",
        needs_psf=True,
        scale=2,
        summary="FCA network told the beam (rows and columns sigma), trained over a beam family",
        parameters=(*COMMON_PARAMETERS, WEIGHTS, SELF_ENSEMBLE, SPLIT_GUARD),
        run=run,
        # final maps get the self-ensemble; live updates keep the single pass (8x cheaper)
        selector_grid=SelectorGrid(thorough=({"self_ensemble": True},), cheap=({},)),
    )
)


def beam_sr(
    image: ArrayLike,
    psf: ArrayLike,
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
    """Super-resolution by a beam-conditioned Fourier channel attention CNN (see the module notes).

    Parameters
    ----------
    image : array_like, shape (H, W) or (B, H, W)
        Measured map(s), any real dtype; never modified.
    psf : array_like, shape (h, w)
        The beam on the measured grid (its sigma along the rows and the columns is given to the
        network).
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
        Weights file (.safetensors from 'asirp train beam_sr'; None = the shipped ones).
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
        psf=psf,
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
