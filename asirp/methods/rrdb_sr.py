"""``rrdb_sr``: ESRGAN-style RRDB super-resolution; ASIRP's small network or your (Real-)ESRGAN.

By default a small RRDBNet trained by ASIRP (``asirp train rrdb_sr``, like ``fca_sr``) runs. Its
layer layout and parameter names are Real-ESRGAN's, so published Real-ESRGAN and ESRGAN weights
(x2 or x4, ``.pth`` or ``.safetensors``) load directly with ``weights=FILE``
(:mod:`asirp.sr.esrgan`); the single-channel map is repeated to RGB for them and the three output
channels averaged back. Intensities keep their physical scale through a reversible normalisation
(:mod:`asirp.sr.inference`). Files are read without executing code (:mod:`asirp.sr.weights`).

With the optional spandrel package installed, other architectures that it recognises load too;
ASIRP never needs it (it imports torchvision, which has no CPU build for the pinned torch).

Models trained on photographs (Real-ESRGAN) invent textures: watch the consistency check
(:mod:`asirp.sr.consistency`), which every result goes through.
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
from asirp.sr.esrgan import load_with_spandrel, rrdb_from_state
from asirp.sr.models import count_parameters
from asirp.sr.runner import (
    COMMON_PARAMETERS,
    SELF_ENSEMBLE,
    SPLIT_GUARD,
    LoadedNetwork,
    run_with_weights,
)
from asirp.sr.weights import (
    FORMAT,
    WeightsArchitectureError,
    build_from_weights,
    load_weights,
)

WEIGHTS = Parameter(
    "weights",
    str,
    None,
    "weights file: ASIRP's, or Real-ESRGAN/ESRGAN .pth/.safetensors (None = the shipped ones)",
)

SPANDREL_MULTIPLE = 8
"""Side multiple used for architectures loaded through spandrel (windowed transformers)."""


def load_network(path: str, scale: int) -> LoadedNetwork:
    """Build the RRDBNet (or, with spandrel, another architecture) stored in a weight file."""
    loaded = load_weights(path)
    if loaded.metadata.get("format") == FORMAT:
        network = build_from_weights(loaded, "rrdb_sr", scale)
        config = loaded.metadata.get("config", {})
        channels = int(config.get("num_in_ch", 1))
    else:
        try:
            network = rrdb_from_state(loaded.state, scale, f"weights in {path}")
        except WeightsArchitectureError as error:
            if "not an ESRGAN/Real-ESRGAN RRDBNet" not in str(error):
                raise
            try:
                network, channels = load_with_spandrel(loaded.state, scale, f"weights in {path}")
            except WeightsArchitectureError as fallback:
                raise WeightsArchitectureError(f"{error}; {fallback}") from None
            description = f"{type(network).__name__} x{scale} (spandrel)"
            return LoadedNetwork(network, channels, SPANDREL_MULTIPLE, str(path), description)
        channels = network.conv_first.in_channels // network.fold**2
    description = (
        f"RRDBNet x{scale}: {network.conv_first.out_channels} features, {len(network.body)} "
        f"blocks, {channels} channel(s), {count_parameters(network)} parameters"
    )
    return LoadedNetwork(network, channels, network.fold, str(path), description)


def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Super-resolve ``(B, H, W)`` maps to ``(B, s H, s W)`` with an RRDBNet."""
    return run_with_weights("rrdb_sr", load_network, problem, params)


SPEC = register_method(
    MethodSpec(
        name="rrdb_sr",
        family="super-resolution",
        needs_psf=False,
        scale=2,
        summary="ESRGAN-style RRDBNet (ASIRP-trained; loads Real-ESRGAN/ESRGAN weights too)",
        parameters=(*COMMON_PARAMETERS, WEIGHTS, SELF_ENSEMBLE, SPLIT_GUARD),
        # final maps get the self-ensemble; live updates keep the single pass (8x cheaper)
        selector_grid=SelectorGrid(thorough=({"self_ensemble": True},), cheap=({},)),
        run=run,
    )
)


def rrdb_sr(
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
    """Super-resolution by an ESRGAN-style RRDBNet (see the module notes).

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
        Weights file: ASIRP's, or Real-ESRGAN/ESRGAN .pth/.safetensors (None = the shipped
        ones).
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
