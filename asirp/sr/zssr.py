r"""Zero-shot super-resolution (ZSSR): a small CNN trained on the input map itself.

For each map ``y`` (Shocher et al. 2018):

1. **Pairs from the map.** Random crops of ``y`` ("fathers"), with the eight flips and 90°
   rotations, are degraded by the forward model of :mod:`asirp.sr.degrade` (the beam, of
   ``scale`` times its sigma on the finer grid, then area sampling by ``scale``) into "sons". The
   beam is the given PSF's (:func:`asirp.sr.degrade.sigma_from_psf`) or estimated from the map
   (:func:`asirp.sr.degrade.estimate_blur_sigma`). Noise is added to each son so that its noise
   matches the map's (Immerkaer's estimate, with a Poisson-like variance proportional to the
   intensity when the map is non-negative), less what survives of the father's own noise.
2. **Training.** :class:`asirp.sr.models.ZSSRNet` (starting as bicubic interpolation: its last
   layer is zero) learns son -> father with an L1 loss and Adam. Every ``eval_every``
   iterations a fixed set of validation pairs (other crops and noise) is scored, and so is the
   network's super-resolution of the map itself (a central crop) through the consistency check
   (:mod:`asirp.sr.consistency`). The learning rate drops tenfold when the validation loss
   stops improving for ``patience`` scores; training stops after two drops (early stopping),
   when the consistency residual rises 20 % above its lowest value (the **consistency guard**:
   what was learned between the coarser scales no longer carries over to the map's own scale,
   which happens on periodic meshes whose structure the sons no longer resolve), or at
   ``iterations``. The weights with the best validation score before the stop are kept. When
   no score beat the untrained network's, that is bicubic interpolation, and the result says
   so (``params["zssr_fell_back_to_bicubic"]`` and a caution), never silently.
   Every rule counts iterations or compares scores, never the clock, so the same map, seed,
   device and thread count give the same network and the same result, bit for bit (the
   wall-clock budget that this replaced stopped four runs of one map after 246 to 1125
   iterations, results up to 63 counts apart). The engine adapts its thread count to the load
   (:mod:`asirp.threads`), which changes the last bits; ``asirp replay`` pins the recorded
   count. On the held-out maps of :func:`asirp.sr.data.heldout_set` (128 x 128, x2, default
   parameters, true PSF, as ``bench/bench_sr.py --table`` runs them) the rules stopped after
   150 (mesh, consistency guard) to 1000 (seed-like tissue, early stopping) iterations.
3. **Super-resolution.** The trained network is applied to ``y`` itself (tiled, see
   :mod:`asirp.sr.inference`).

Each map of a stack gets its own network and its own iterations. Randomness (initial weights,
crops, noise) comes from CPU generators seeded with the ``seed`` of :func:`asirp.restore`, the
same for every map, never from torch's global random state (another thread may use it), so a
map gives the same result alone or in a stack, and in any thread. On CUDA, training runs with
cuDNN's deterministic convolutions (:func:`asirp.sr.internal.deterministic_kernels`).
The pairs and the training loop are :mod:`asirp.sr.internal`'s, shared with ``beam_sr``'s
test-time adaptation.

Differences from the original: the network works on the measured grid with a pixel-shuffle
output (``scale^2`` times cheaper than ZSSR's on the bicubic-upsampled grid), the degradation is
the beam + area model instead of a bicubic kernel, and the test-time self-ensemble (the eight
flips and quarter-turns, averaged) is optional (``self_ensemble``, on in ``auto``'s thorough
mode).

References
----------
.. [1] A. Shocher, N. Cohen and M. Irani, "'Zero-shot' super-resolution using deep internal
   learning", CVPR 3118-3126 (2018).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from asirp.registry import MethodOutput, Parameter, Problem
from asirp.sr.internal import SETTINGS, BeamModel, train_internal
from asirp.sr.models import ZSSRNet
from asirp.sr.runner import (
    COMMON_PARAMETERS,
    SELF_ENSEMBLE,
    SPLIT_GUARD,
    check_scale,
    check_tiling,
    finish,
    per_map_networks,
    resolve_beam,
)

PARAMETERS = (
    *COMMON_PARAMETERS,
    Parameter("iterations", int, 2000, "largest number of training iterations per map", 1, 100_000),
    Parameter("crop", int, 64, "training crop side (father), input px", minimum=8, maximum=1024),
    Parameter("batch", int, 8, "crops per training iteration", minimum=1, maximum=256),
    Parameter("learning_rate", float, 1e-3, "initial Adam learning rate", minimum=1e-6, maximum=1),
    Parameter("channels", int, 32, "feature channels of the CNN", minimum=4, maximum=256),
    Parameter("depth", int, 6, "convolutions of the CNN", minimum=2, maximum=32),
    Parameter("eval_every", int, 25, "iterations between validation scores", minimum=1),
    Parameter("patience", int, 4, "scores without improvement before the rate drops", minimum=1),
    Parameter("noise", bool, True, "add noise matching the input's to the training inputs"),
    SELF_ENSEMBLE,
    SPLIT_GUARD,
)
"""Parameters of the ``zssr`` method."""


def seeded_network(scale: int, channels: int, depth: int, seed: int) -> ZSSRNet:
    """A new :class:`ZSSRNet` on the CPU, initialised from a generator seeded with ``seed``.

    The weights are drawn as torch's default initialisation of ``nn.Conv2d`` draws them (Kaiming
    uniform weights, uniform biases within ``1 / sqrt(fan_in)``), in layer order, but from a
    generator of this call: torch's global random state is neither read nor changed, so two
    restorations in two threads cannot disturb each other. The last layer is then set to zero,
    so the untrained network is bicubic interpolation.
    """
    with torch.device("meta"):  # no global random draws: the weights are drawn below
        network = ZSSRNet(scale, channels, depth)
    network = network.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        last = network.layers[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return network


def train_zssr(
    image: torch.Tensor,
    sigma: float,
    scale: int,
    params: dict[str, Any],
    problem: Problem,
    seed: int,
) -> tuple[ZSSRNet, dict[str, Any]]:
    """Train the image-specific network on one map (:func:`asirp.sr.internal.train_internal`).

    Parameters
    ----------
    image : torch.Tensor
        ``(H, W)`` measured map (any intensity scale), on the compute device.
    sigma : float
        Beam sigma, measured pixels.
    scale : int
        Upscaling factor.
    params : dict
        The method's resolved parameters.
    problem : Problem
        For cancellation and the device.
    seed : int
        Seed of the weights, crops and noise.

    Returns
    -------
    network : ZSSRNet
        The best network found, in evaluation mode.
    facts : dict
        ``iterations_run``, ``stopped_by`` (``"early_stopping"``, ``"consistency_guard"``,
        ``"iterations"``), ``validation_l1`` (best score, normalised units),
        ``bicubic_validation_l1`` (the untrained network's), ``fell_back_to_bicubic`` (no
        validation score improved on the untrained network's, so the kept network is the
        untrained one: bicubic interpolation) and ``training_s`` (wall time, reported only: it
        stops nothing).
    """
    rows, cols = image.shape
    if min(int(params["crop"]), rows, cols) // scale * scale < 2 * scale:
        raise ValueError(f"zssr needs maps of at least {2 * scale} px per side, got {(rows, cols)}")
    network = seeded_network(scale, int(params["channels"]), int(params["depth"]), seed)
    network.to(problem.device)
    settings = {key: params[key] for key in SETTINGS}
    network, found = train_internal(
        network, image, BeamModel(sigma, sigma), scale, settings, problem, seed
    )
    facts = {
        "bicubic_validation_l1": found["start_validation_l1"],
        "iterations_run": found["iterations_run"],
        "stopped_by": found["stopped_by"],
        "validation_l1": found["validation_l1"],
        "fell_back_to_bicubic": not found["improved"],
        "training_s": found["training_s"],
    }
    return network, facts


FALLBACK_CAUTION = (
    "zssr fell back to bicubic interpolation{maps}: its training never improved on the "
    "untrained network (which is bicubic interpolation) on held-back crops, so the finer map is "
    "an interpolation, not a super-resolution (params['zssr_fell_back_to_bicubic'])"
)
"""The caution of a map on which training found nothing (:meth:`asirp.Restoration.cautions`)."""


def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """ZSSR on each map of ``(B, H, W)``: train on the map, then super-resolve it."""
    scale = check_scale(params, "zssr")
    check_tiling(params, problem.device, "zssr")  # before any training
    beam = resolve_beam(problem)
    batch = problem.data.shape[0]
    outputs, facts, networks = [], [], []
    apply = per_map_networks(networks, scale, params, problem)
    for index in range(batch):
        image = problem.data[index]
        network, found = train_zssr(
            image, beam.sigma_px[index], scale, params, problem, problem.seed
        )
        networks.append(network)
        problem.progress((index + 0.9) / batch)
        outputs.append(apply(index, image[None])[0])
        facts.append(found)
        problem.progress((index + 1) / batch)
    info = {key: [fact[key] for fact in facts] for key in facts[0]}
    # never a silent bicubic: say so in the facts and in the result's cautions
    fell_back = info.pop("fell_back_to_bicubic")
    info["zssr_fell_back_to_bicubic"] = fell_back
    if any(fell_back):
        maps = "" if batch == 1 else f" on {sum(fell_back)} of {batch} maps"
        info["method_cautions"] = [FALLBACK_CAUTION.format(maps=maps)]

    return finish("zssr", problem, params, torch.stack(outputs), beam, info, guard=apply)
