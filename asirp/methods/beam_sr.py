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

**Test-time adaptation** (``adapt_iterations`` > 0; ``auto``'s thorough mode runs 400): before
super-resolving a map, a copy of the network is fine-tuned on that map's own pairs, as ``zssr``
trains its network from scratch (:mod:`asirp.sr.internal`: crops of the map degraded by the
given beam, with noise like the map's, the network told each crop's beam). The trained prior
is the start (meta-transfer in the sense of Soh et al. 2020), the map's own structure the
correction: on content unlike the training family (text, fibres, a cell) this gained 0.7-2.2 dB.
It stops by iterations and scores only (early stopping on held-back crops, the consistency
guard), never the clock, and keeps the shipped weights when no score improved on them; each
map gets its own copy, and the shipped network is never changed.

The weights ship in ``asirp/models/`` with their model card (``MODEL_CARD.md``). Every result is
degraded again with the forward model, with the same anisotropic beam, and compared with the
input (:mod:`asirp.sr.consistency`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
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
from asirp.sr.internal import BeamModel, train_internal
from asirp.sr.models import count_parameters
from asirp.sr.runner import (
    COMMON_PARAMETERS,
    SELF_ENSEMBLE,
    SPLIT_GUARD,
    LoadedNetwork,
    beam_axes,
    check_scale,
    check_tiling,
    finish,
    network_facts,
    network_for,
    per_map_networks,
    resolve_beam,
    run_with_weights,
    weights_file,
)
from asirp.sr.weights import build_from_weights, load_weights

WEIGHTS = Parameter(
    "weights",
    str,
    None,
    "weights file (.safetensors from 'asirp train beam_sr'; None = the shipped ones)",
)


ADAPT_ITERATIONS = Parameter(
    "adapt_iterations",
    int,
    0,
    "test-time adaptation: most iterations fine-tuning a copy of the network on the map's own "
    "pairs, stopped earlier by its scores (asirp.sr.internal; 0 = none)",
    minimum=0,
    maximum=100_000,
)
ADAPT_LEARNING_RATE = Parameter(
    "adapt_learning_rate",
    float,
    1e-4,
    "initial Adam learning rate of the test-time adaptation",
    minimum=1e-7,
    maximum=1e-2,
)

ADAPTED_IN_AUTO = 400
"""``adapt_iterations`` of ``auto``'s thorough candidate at x2 (about 15 s per 128 x 128 map on
two CPU cores). At x4 ``auto`` does not adapt: on the held-out set's 64 x 64 px maps the sons
are 16 x 16 px, and adaptation lost 0.6-1.8 dB on three maps (the cell, coins, gravel)."""

ADAPT_SETTINGS = {"crop": 64, "batch": 8, "eval_every": 25, "patience": 4, "noise": True}
"""The adaptation's other training settings (:func:`asirp.sr.internal.train_internal`): those of
``zssr``'s defaults."""


def load_network(path: str, scale: int) -> LoadedNetwork:
    """Build the ``beam_sr`` network stored in a weight file."""
    loaded = load_weights(path)
    network = build_from_weights(loaded, "beam_sr", scale)
    config = loaded.metadata.get("config", {})
    description = f"BeamFCASRNet x{scale} {config}, {count_parameters(network)} parameters"
    return LoadedNetwork(network, 1, 1, str(path), description, told_the_beam=True)


def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Super-resolve ``(B, H, W)`` maps to ``(B, s H, s W)``, telling the network the beam."""
    if int(params["adapt_iterations"]) == 0:
        return run_with_weights("beam_sr", load_network, problem, params)
    return run_adapted(problem, params)


def run_adapted(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """Each map super-resolved by its own copy of the network, fine-tuned on the map first."""
    scale = check_scale(params, "beam_sr")
    check_tiling(params, problem.device, "beam_sr")
    loaded = network_for(
        load_network, weights_file("beam_sr", params, scale), scale, problem.device
    )
    beam = resolve_beam(problem, anisotropic=True)
    axes = beam_axes(beam)
    settings = {
        **ADAPT_SETTINGS,
        "iterations": int(params["adapt_iterations"]),
        "learning_rate": float(params["adapt_learning_rate"]),
    }
    batch = problem.data.shape[0]
    networks, outputs, facts = [], [], []

    apply = per_map_networks(networks, scale, params, problem, beams=axes)

    for index in range(batch):
        network = copy.deepcopy(loaded.network).float()  # the shipped network stays as it is
        for parameter in network.parameters():
            parameter.requires_grad_(True)
        rows, cols = axes[index]
        network, found = train_internal(
            network,
            problem.data[index],
            BeamModel(rows, cols, told=True),
            scale,
            settings,
            problem,
            problem.seed,
        )
        networks.append(network)
        problem.progress((index + 0.9) / batch)
        outputs.append(apply(index, problem.data[index][None])[0])
        facts.append(found)
        problem.progress((index + 1) / batch)
    info = {
        **network_facts(loaded, problem, params),
        "adapted_to_the_map": [fact["improved"] for fact in facts],
        "adapt_iterations_run": [fact["iterations_run"] for fact in facts],
        "adapt_stopped_by": [fact["stopped_by"] for fact in facts],
    }
    return finish("beam_sr", problem, params, torch.stack(outputs), beam, info, guard=apply)


SPEC = register_method(
    MethodSpec(
        name="beam_sr",
        family="super-resolution",
        needs_psf=True,
        scale=2,
        summary="FCA network told the beam (rows and columns sigma), trained over a beam family",
        parameters=(
            *COMMON_PARAMETERS,
            WEIGHTS,
            SELF_ENSEMBLE,
            SPLIT_GUARD,
            ADAPT_ITERATIONS,
            ADAPT_LEARNING_RATE,
        ),
        run=run,
        # final maps get the self-ensemble and, at x2, the adaptation to the map; live
        # updates keep the single pass of the shipped network (8x cheaper, no training)
        selector_grid=SelectorGrid(
            thorough=({"self_ensemble": True, "adapt_iterations": ADAPTED_IN_AUTO},),
            cheap=({},),
            thorough_at_scale={4: ({"self_ensemble": True},)},
        ),
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
    adapt_iterations: int = 0,
    adapt_learning_rate: float = 0.0001,
    seed: int = 0,
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
        adapt_iterations=adapt_iterations,
        adapt_learning_rate=adapt_learning_rate,
        seed=seed,
    ).image
