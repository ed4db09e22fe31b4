"""What every super-resolution method shares: parameters, the PSF on the measured grid, the check.

A super-resolution method (family ``"super-resolution"``) receives measured maps ``(B, H, W)``
and returns ``(B, s H, s W)`` with ``s`` = its ``scale`` parameter (2 or 4), in the same intensity
units. Its PSF is optional: given (as for every ASIRP method, on the *measured* grid), it sets the
beam of the forward model (:func:`asirp.sr.degrade.sigma_from_psf`); otherwise the beam sigma is
estimated from each map (:func:`asirp.sr.degrade.estimate_blur_sigma`). The returned PSF is the
fine-grid Gaussian of the forward model, ``(h, w)`` or ``(B, h, w)``.

Each result is checked against its input, and each input for structure above its noise
(:mod:`asirp.sr.consistency`); the figures go to
``Restoration.metrics`` and the beam used, its source and the tiling to ``Restoration.params``.
The networks (``fca_sr``, ``rrdb_sr``, ``zssr``) also take :data:`SPLIT_GUARD`: two independent
halves of each map are super-resolved too, and detail on which they agree past the data's own
agreement is flagged as invented (:mod:`asirp.sr.guard`; figures in ``Restoration.metrics``,
what ran in ``params["split_guard_status"]``, sentences in ``params["method_cautions"]``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asirp.backend import to_numpy, to_tensor
from asirp.psf import gaussian_psf
from asirp.registry import MethodOutput, Parameter, Problem
from asirp.sr.consistency import (
    DEFAULT_TOLERANCE,
    consistency_figures,
    structure_figures,
    warn_if_inconsistent,
)
from asirp.sr.degrade import estimate_blur_sigma, sigma_axes_from_psf
from asirp.sr.guard import MAX_GUARD_PIXELS, MIN_GUARD_SIDE, GuardFigures, guard_map
from asirp.sr.inference import upscale
from asirp.sr.weights import shipped_weights_path

SCALES = (2, 4)

SCALE = Parameter("scale", int, 2, "upscaling factor: 2 or 4", minimum=2, maximum=4)
TILE = Parameter(
    "tile",
    int,
    None,
    "largest tile side for tiled inference, input px (None: 256 on the CPU, 1024 on CUDA)",
    minimum=16,
    maximum=8192,
)
OVERLAP = Parameter("overlap", int, 16, "overlap between tiles, input px", minimum=0, maximum=256)
HALF = Parameter("half", bool, True, "float16 on CUDA GPUs (ignored on the CPU)")
TOLERANCE = Parameter(
    "consistency_tolerance",
    float,
    DEFAULT_TOLERANCE,
    "largest consistency residual accepted, in noise sigmas (see asirp.sr.consistency)",
    minimum=0.1,
    maximum=1000.0,
)
COMMON_PARAMETERS = (SCALE, TILE, OVERLAP, HALF, TOLERANCE)
"""Parameters every super-resolution method takes."""

SPLIT_GUARD = Parameter(
    "split_guard",
    bool,
    True,
    "super-resolve two independent halves of each map too and flag detail they agree on past "
    f"the data (asirp.sr.guard; maps over {MAX_GUARD_PIXELS} px are skipped)",
)
"""The hallucination guard's switch, taken by the networks (it triples their inference)."""

SELF_ENSEMBLE = Parameter(
    "self_ensemble",
    bool,
    False,
    "average the network over the 8 flips and quarter-turns of each map (geometric "
    "self-ensemble: 8x the inference; asirp.sr.inference)",
)
"""The networks' self-ensemble switch (``auto``'s thorough mode turns it on)."""

HalvesSuperResolver = Callable[[int, torch.Tensor], torch.Tensor]
"""``super_resolve(index, halves (2, H, W)) -> (2, s H, s W)``: the method as it ran on map
``index`` of the problem (for ``zssr``, that map's network)."""


def check_scale(params: dict[str, Any], method: str) -> int:
    """The ``scale`` parameter, which must be 2 or 4."""
    scale = int(params["scale"])
    if scale not in SCALES:
        raise ValueError(f"parameter 'scale' of method {method!r} is {scale}; allowed: 2 or 4")
    return scale


def tile_size(params: dict[str, Any], device: torch.device) -> int:
    """The ``tile`` parameter, or its automatic value for the device."""
    if params["tile"] is not None:
        return int(params["tile"])
    return 1024 if device.type == "cuda" else 256


def check_tiling(params: dict[str, Any], device: torch.device, method: str) -> tuple[int, int]:
    """The tile side and overlap, checked together before any work starts.

    Neighbouring tiles share ``overlap`` input pixels on each side, so a tile must be more than
    twice the overlap: ``0 <= overlap < tile / 2``.

    Parameters
    ----------
    params : dict
        Resolved parameters (``tile``, ``overlap``).
    device : torch.device
        Where the network runs (sets the automatic tile side).
    method : str
        Method name, for the message.

    Returns
    -------
    tile, overlap : int
        Input pixels.

    Raises
    ------
    ValueError
        When ``overlap`` is not below half the tile side.
    """
    tile = tile_size(params, device)
    overlap = int(params["overlap"])
    if not 0 <= overlap < tile / 2:
        automatic = "" if params["tile"] is not None else f" (the automatic tile on {device.type})"
        raise ValueError(
            f"parameters 'tile' and 'overlap' of method {method!r}: the overlap ({overlap} px) "
            f"must be at least 0 and less than half the tile ({tile} px{automatic}), i.e. "
            f"0 <= overlap <= {(tile - 1) // 2}; lower the overlap or raise the tile"
        )
    return tile, overlap


@dataclass
class Beam:
    """The beam of the forward model for each map of a problem.

    Attributes
    ----------
    sigma_px : list of float
        Beam sigma of each map, measured pixels (for an anisotropic beam, the geometric mean of
        its two axes: what the networks and zssr model).
    source : str
        ``"given"`` (from the PSF passed to :func:`asirp.restore`) or ``"estimated"``.
    axes_px : list of (float, float), optional
        ``(sigma_rows, sigma_cols)`` of each map's beam, measured pixels, for methods whose
        forward model is anisotropic (``rl_sr``); the consistency check then uses them too.
    """

    sigma_px: list[float]
    source: str
    axes_px: list[tuple[float, float]] | None = None

    @classmethod
    def given(cls, rows: float, cols: float, count: int, anisotropic: bool = True) -> Beam:
        """A given beam of sigma ``rows`` x ``cols`` (measured px) for ``count`` maps.

        Its ``sigma_px`` is the geometric mean of the axes; ``axes_px`` keeps them when they
        differ and ``anisotropic`` is set (for methods that model both).
        """
        axes = [(rows, cols)] * count if anisotropic and rows != cols else None
        return cls([math.sqrt(rows * cols)] * count, "given", axes_px=axes)

    def model(self, index: int) -> float | tuple[float, float]:
        """Map ``index``'s beam as the forward model uses it: one sigma or the two axes."""
        if self.axes_px is None:
            return self.sigma_px[index]
        rows, cols = self.axes_px[index]
        return rows if rows == cols else (rows, cols)


def resolve_beam(problem: Problem, anisotropic: bool = False) -> Beam:
    """The beam sigma: from the given PSF, or estimated from each map's spectrum.

    With ``anisotropic``, a given PSF's two axes are kept (``Beam.axes_px``, for methods that
    model them); an estimated beam is round.
    """
    if problem.psf is not None:
        rows, cols = sigma_axes_from_psf(problem.psf)
        return Beam.given(rows, cols, problem.data.shape[0], anisotropic)
    return Beam([estimate_blur_sigma(image) for image in to_numpy(problem.data)], "estimated")


def beam_axes(beam: Beam) -> list[tuple[float, float]]:
    """Each map's ``(sigma_rows, sigma_cols)``, measured px (a round beam twice)."""
    models = [beam.model(index) for index in range(len(beam.sigma_px))]
    return [(m, m) if isinstance(m, float) else m for m in models]


def fine_psf(beam: Beam, scale: int, device: torch.device) -> torch.Tensor:
    """The forward model's fine-grid PSF: ``(h, w)`` when shared, else ``(B, h, w)``."""
    sigmas = beam_axes(beam)
    if len(set(sigmas)) == 1:
        rows, cols = sigmas[0]
        return to_tensor(gaussian_psf((rows * scale, cols * scale)), device)
    kernels = [gaussian_psf((rows * scale, cols * scale)) for rows, cols in sigmas]
    height = max(kernel.shape[0] for kernel in kernels)
    width = max(kernel.shape[1] for kernel in kernels)
    padded = [
        np.pad(k, (((height - k.shape[0]) // 2,) * 2, ((width - k.shape[1]) // 2,) * 2))
        for k in kernels
    ]
    return to_tensor(np.stack(padded), device)


def finish(
    method: str,
    problem: Problem,
    params: dict[str, Any],
    fine: torch.Tensor,
    beam: Beam,
    info: dict[str, Any],
    guard: HalvesSuperResolver | None = None,
) -> MethodOutput:
    """Check a super-resolved stack against its input and package the method's output.

    Parameters
    ----------
    method : str
        Method name (for the warning).
    problem : Problem
        The problem solved (its ``data`` are the measured maps).
    params : dict
        The resolved parameters (``scale``, ``consistency_tolerance``).
    fine : torch.Tensor
        ``(B, s H, s W)`` result.
    beam : Beam
        Beam of the forward model.
    info : dict
        Method facts for ``Restoration.params``.
    guard : callable, optional
        How the method super-resolves two halves of a map, for the split-data guard
        (:func:`run_guard`), which runs when ``params`` has ``split_guard``.

    Returns
    -------
    MethodOutput
        The result, the fine-grid PSF, the facts and the per-map consistency figures.
    """
    scale = int(params["scale"])
    tolerance = float(params["consistency_tolerance"])
    figures = []
    for index in range(len(beam.sigma_px)):
        figures += consistency_figures(
            problem.data[index : index + 1],
            fine[index : index + 1],
            beam.model(index),
            scale,
            tolerance,
        )
    warn_if_inconsistent(method, figures, tolerance)
    # is there structure above the noise to super-resolve? (a caution, not a warning)
    for figure, structure in zip(figures, structure_figures(problem.data), strict=True):
        figure.update(structure)
    guard_facts: dict[str, Any] = {}
    if guard is not None and "split_guard" in params:
        guarded, guard_facts = run_guard(method, problem, params, scale, guard)
        for figure, verdict in zip(figures, guarded or [None] * len(figures), strict=True):
            if verdict is not None:  # no figures when it did not run: every map alike
                figure.update(verdict.metrics())
    metrics = {key: [figure[key] for figure in figures] for key in figures[0]}
    notes = [*info.get("method_cautions", []), *guard_facts.pop("method_cautions", [])]
    facts = {
        **info,
        **guard_facts,
        **({"method_cautions": notes} if notes else {}),
        "beam_sigma_px": [round(s, 4) for s in beam.sigma_px],
        **(
            {"beam_axes_px": [[round(a, 4) for a in pair] for pair in beam.axes_px]}
            if beam.axes_px is not None
            else {}
        ),
        "beam_source": beam.source,
        "forward_model": "gaussian beam on the fine grid, then area sampling (asirp.sr.degrade)",
    }
    return MethodOutput(fine.float(), fine_psf(beam, scale, problem.device), facts, metrics=metrics)


def run_guard(
    method: str,
    problem: Problem,
    params: dict[str, Any],
    scale: int,
    super_resolve: HalvesSuperResolver,
) -> tuple[list[GuardFigures], dict[str, Any]]:
    """The split-data guard (:mod:`asirp.sr.guard`) on every map of a problem, when it applies.

    Parameters
    ----------
    method : str
        Method name (for the sentences).
    problem : Problem
        The measured maps ``(B, H, W)`` and the seed of the splits.
    params : dict
        Resolved parameters (``split_guard``).
    scale : int
        Upscaling factor.
    super_resolve : callable
        ``(index, halves (2, H, W)) -> (2, s H, s W)``.

    Returns
    -------
    figures : list of GuardFigures
        One per map; empty when the guard did not run.
    facts : dict
        ``split_guard_status`` (what ran, or why not) and ``method_cautions`` (sentences for
        :meth:`asirp.Restoration.cautions`, when any).
    """
    batch, rows, cols = problem.data.shape
    if not params["split_guard"]:
        return [], {"split_guard_status": "disabled (split_guard=False)"}
    if rows * cols > MAX_GUARD_PIXELS:
        return [], {
            "split_guard_status": f"skipped: {rows}x{cols} px maps exceed the guard's limit of "
            f"{MAX_GUARD_PIXELS} px (it triples the inference; split_guard=False to say so)"
        }
    if min(rows, cols) < MIN_GUARD_SIDE:
        return [], {
            "split_guard_status": f"skipped: {rows}x{cols} px maps are too small for an FRC"
        }
    figures = []
    for index in range(batch):
        problem.check_cancel()
        figures.append(
            guard_map(
                problem.data[index],
                lambda halves, index=index: super_resolve(index, halves),
                scale,
                problem.seed,  # as zssr: a map gets the same split alone or in a stack
            )
        )
    facts: dict[str, Any] = {"split_guard_status": f"ran ({figures[0].split} split)"}
    notes = guard_cautions(method, figures)
    if notes:
        facts["method_cautions"] = notes
    return figures, facts


def guard_cautions(method: str, figures: list[GuardFigures]) -> list[str]:
    """The guard's sentences for :meth:`asirp.Restoration.cautions` (none when all is well)."""
    notes = []

    def share(flagged: list[GuardFigures]) -> str:
        return "" if len(figures) == 1 else f" on {len(flagged)} of {len(figures)} maps"

    invented = [figure for figure in figures if figure.invented_detail]
    if invented:
        worst = min(invented, key=lambda f: f.split_agreement_resolution_px / f.data_resolution_px)
        notes.append(
            f"{method} invented detail{share(invented)}: its super-resolutions of two "
            "independent halves of the data agree down to "
            f"{worst.split_agreement_resolution_px:.2g} px, finer than the halves themselves "
            f"({worst.data_resolution_px:.2g} px); that detail comes from the method's prior, "
            "not from the data (split-data guard)"
        )
    noisy = [figure for figure in figures if figure.noise_dominated]
    if noisy:
        notes.append(
            f"the input is noise-dominated{share(noisy)}: two independent halves of the data "
            "agree at no spatial frequency beyond chance, so any detail in "
            f"{method}'s finer map is the method's (split-data guard)"
        )
    return notes


def per_map_networks(
    networks: list[nn.Module],
    scale: int,
    params: dict[str, Any],
    problem: Problem,
    beams: list[tuple[float, float]] | None = None,
) -> HalvesSuperResolver:
    """``apply(index, maps)``: map ``index``'s own network on ``(N, H, W)`` maps, tiled.

    For methods that train a network per map (``zssr``, ``beam_sr`` adapted): the map itself,
    or its two halves for the split-data guard. ``beams``: each map's ``(sigma_rows,
    sigma_cols)`` for networks told the beam.
    """
    tile, overlap = check_tiling(params, problem.device, "super-resolution")

    def apply(index: int, maps: torch.Tensor) -> torch.Tensor:
        return upscale(
            networks[index],
            maps,
            scale,
            tile=tile,
            overlap=overlap,
            batch=1,
            half=bool(params["half"]),
            self_ensemble=bool(params["self_ensemble"]),
            beams=None if beams is None else [beams[index]] * maps.shape[0],
            cancel=problem.cancel,
        )

    return apply


@dataclass
class LoadedNetwork:
    """A network ready for inference and how to feed it.

    Attributes
    ----------
    network : torch.nn.Module
        In evaluation mode, on the target device.
    channels : int
        Image channels it takes (3 for RGB models).
    multiple : int
        Input sides must be multiples of this.
    source : str
        Where the weights came from (file path).
    description : str
        Architecture and size, for the record.
    told_the_beam : bool
        The network takes the beam's two sigmas as input planes (``beam_sr``).
    """

    network: nn.Module
    channels: int
    multiple: int
    source: str
    description: str
    told_the_beam: bool = False


@lru_cache(maxsize=8)
def _cached_network(
    loader: Callable[[str, int], LoadedNetwork], path: str, scale: int, device: str, stamp: float
) -> LoadedNetwork:
    loaded = loader(path, scale)
    loaded.network.to(torch.device(device))
    for parameter in loaded.network.parameters():
        parameter.requires_grad_(False)
    return loaded


def network_for(
    loader: Callable[[str, int], LoadedNetwork], path: Path, scale: int, device: torch.device
) -> LoadedNetwork:
    """Load (or reuse) the network in a weight file for a device; reloads if the file changed."""
    return _cached_network(loader, str(path), scale, str(device), path.stat().st_mtime)


def run_with_weights(
    method: str,
    loader: Callable[[str, int], LoadedNetwork],
    problem: Problem,
    params: dict[str, Any],
) -> MethodOutput:
    """Run a trained method: its ``weights`` file (or the shipped one for the scale) and network.

    Parameters
    ----------
    method : str
        Method name (``fca_sr``, ``rrdb_sr``), also the architecture of its shipped weights.
    loader : callable
        ``loader(path, scale) -> LoadedNetwork`` for the method's architecture.
    problem : Problem
        Measured maps, optional PSF, device, hooks.
    params : dict
        Resolved parameters (:data:`COMMON_PARAMETERS` and ``weights``).

    Returns
    -------
    MethodOutput
        See :func:`run_pretrained`.

    Raises
    ------
    ValueError
        When the weights file does not exist.
    """
    scale = check_scale(params, method)
    check_tiling(params, problem.device, method)
    loaded = network_for(loader, weights_file(method, params, scale), scale, problem.device)
    return run_pretrained(method, problem, params, loaded)


def weights_file(method: str, params: dict[str, Any], scale: int) -> Path:
    """The ``weights`` parameter's file, or the method's shipped one for the scale.

    Raises
    ------
    ValueError
        When the file does not exist.
    """
    path = Path(params["weights"]) if params["weights"] else shipped_weights_path(method, scale)
    if not path.is_file():
        raise ValueError(f"weights file {path} not found")
    return path


def network_facts(
    loaded: LoadedNetwork, problem: Problem, params: dict[str, Any]
) -> dict[str, Any]:
    """What a trained network's result records: its weights, architecture and precision."""
    on_gpu = problem.device.type == "cuda"
    info = {
        "weights": loaded.source,
        "network": loaded.description,
        "precision": "float16" if on_gpu and params["half"] else "float32",
    }
    if loaded.told_the_beam:
        info["beam_given_to_network"] = "sigma along rows and columns, measured px"
    return info


def run_pretrained(
    method: str,
    problem: Problem,
    params: dict[str, Any],
    loaded: LoadedNetwork,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> MethodOutput:
    """Super-resolve a problem with a trained network, then check the result.

    Parameters
    ----------
    method : str
        Method name.
    problem : Problem
        Measured maps, optional PSF, device, hooks.
    params : dict
        Resolved parameters (the common ones of :data:`COMMON_PARAMETERS`).
    loaded : LoadedNetwork
        The network.
    progress, cancel
        Override the problem's hooks (defaults: the problem's).

    Returns
    -------
    MethodOutput
        See :func:`finish`.
    """
    scale = check_scale(params, method)
    tile, overlap = check_tiling(params, problem.device, method)
    beam = resolve_beam(problem, anisotropic=loaded.told_the_beam)
    axes = beam_axes(beam) if loaded.told_the_beam else None
    on_gpu = problem.device.type == "cuda"

    def network(
        maps: torch.Tensor,
        report: Callable[[float], None] | None = None,
        beams: list[tuple[float, float]] | None = axes,
    ) -> torch.Tensor:
        """The network, tiled, on maps ``(B, H, W)``: the data, or a map's two halves."""
        return upscale(
            loaded.network,
            maps,
            scale,
            tile=tile,
            overlap=overlap,
            batch=16 if on_gpu else 1,
            half=bool(params["half"]),
            channels=loaded.channels,
            multiple=loaded.multiple,
            self_ensemble=bool(params["self_ensemble"]),
            beams=beams,
            progress=report,
            cancel=cancel or problem.cancel,
        )

    fine = network(problem.data, progress or problem.progress)
    info = network_facts(loaded, problem, params)

    def halves(index: int, pair: torch.Tensor) -> torch.Tensor:
        return network(pair, beams=None if axes is None else [axes[index]] * 2)

    return finish(method, problem, params, fine, beam, info, guard=halves)
