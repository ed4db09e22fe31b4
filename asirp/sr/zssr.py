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
cuDNN's deterministic convolutions (:func:`_deterministic_kernels`).

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

import contextlib
import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asirp.backend import to_numpy
from asirp.metrics import noise_sigma
from asirp.registry import MethodOutput, Parameter, Problem
from asirp.sr.consistency import consistency_figures
from asirp.sr.degrade import degrade
from asirp.sr.inference import dihedral, robust_normalisation, upscale
from asirp.sr.models import ZSSRNet
from asirp.sr.runner import (
    COMMON_PARAMETERS,
    SELF_ENSEMBLE,
    SPLIT_GUARD,
    check_scale,
    check_tiling,
    finish,
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

VALIDATION_PAIRS = 16

GUARD_SIDE = 128
"""Side (input px) of the central crop of the map on which the consistency guard is scored."""

GUARD_FACTOR = 1.2
"""Training stops when the guard's consistency residual exceeds its lowest value by this factor."""


def _guard_crop(image: torch.Tensor, scale: int) -> torch.Tensor:
    """The central ``GUARD_SIDE`` square of a ``(H, W)`` map (or all of it), ``(1, h, w)``."""
    rows, cols = image.shape
    side_rows, side_cols = min(rows, GUARD_SIDE), min(cols, GUARD_SIDE)
    top, left = (rows - side_rows) // 2, (cols - side_cols) // 2
    return image[None, top : top + side_rows, left : left + side_cols]


@dataclass
class NoiseModel:
    """Noise to add to sons (normalised units): ``variance = a + b * value``, minus what survives.

    Attributes
    ----------
    constant, slope : float
        Variance model of the input's noise.
    keep : float
        Fraction of a father's noise variance that survives the degradation.
    """

    constant: float
    slope: float
    keep: float

    def add(self, sons: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sons with noise added, same shape."""
        variance = (self.constant + self.slope * sons).clamp_min(0.0) * (1.0 - self.keep)
        noise = torch.randn(sons.shape, generator=generator).to(sons.device)
        return sons + noise * variance.sqrt()


def noise_model(
    normalised: torch.Tensor, offset: float, span: float, sigma: float, scale: int
) -> NoiseModel:
    """The noise model of a normalised map ``(H, W)`` (see the module notes)."""
    level = float(noise_sigma(to_numpy(normalised)))
    mean = float(normalised.mean())
    raw_mean = mean * span + offset
    poisson_like = float(normalised.min()) * span + offset >= -3.0 * level * span and raw_mean > 0
    if poisson_like:
        # var(v) = level^2 * raw(v) / raw_mean with raw(v) = v * span + offset
        slope = level**2 * span / raw_mean
        constant = level**2 * offset / raw_mean
    else:
        slope, constant = 0.0, level**2
    probe = torch.randn((1, 64 * scale, 64 * scale), generator=torch.Generator().manual_seed(0))
    keep = float(degrade(probe, sigma, scale).var())
    return NoiseModel(constant, slope, min(keep, 1.0))


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


@contextlib.contextmanager
def _deterministic_kernels(device: torch.device) -> Iterator[None]:
    """Deterministic cuDNN convolutions, without autotuning, on CUDA; nothing on the CPU.

    The CPU kernels of the network's operations (convolutions, ReLU, pixel shuffle, bicubic
    upsampling of an input that needs no gradient, L1 loss, Adam) are deterministic for a given
    thread count. On CUDA the backward passes of cuDNN's convolutions may add with atomics,
    in an order that changes from run to run, unless deterministic algorithms are asked for.
    ``torch.backends.cudnn.flags`` asks for them while the block runs (the flags are
    process-wide, so convolutions of other threads meanwhile are deterministic too, which only
    slows them) and puts the caller's back; torch's ``use_deterministic_algorithms`` would
    instead turn every nondeterministic operation of the caller's code into an error. Not
    checked on a GPU by the tests (none there): ``tests/asirp/test_replay.py`` replays on the
    CPU.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(
        enabled=True, benchmark=False, deterministic=True, allow_tf32=cudnn.allow_tf32
    ):
        yield


def _pairs(
    image: torch.Tensor,
    count: int,
    crop: int,
    sigma: float,
    scale: int,
    noise: NoiseModel | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (son, father) pairs: ``(N, 1, crop/s, crop/s)`` and ``(N, 1, crop, crop)``."""
    rows, cols = image.shape
    tops = torch.randint(0, rows - crop + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, cols - crop + 1, (count,), generator=generator).tolist()
    turns = torch.randint(0, 8, (count,), generator=generator).tolist()
    fathers = torch.stack(
        [
            dihedral(image[None, None, top : top + crop, left : left + crop], turn)[0]
            for top, left, turn in zip(tops, lefts, turns, strict=True)
        ]
    )
    sons = degrade(fathers[:, 0], sigma, scale)
    if noise is not None:
        sons = noise.add(sons, generator)
    return sons[:, None], fathers


def train_zssr(
    image: torch.Tensor,
    sigma: float,
    scale: int,
    params: dict[str, Any],
    problem: Problem,
    seed: int,
) -> tuple[ZSSRNet, dict[str, Any]]:
    """Train the image-specific network on one map.

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
    # Training needs gradients whatever the caller's mode: the selector runs every candidate
    # under torch.no_grad() (asirp.selection.trials), which would otherwise make the loss a
    # constant ("element 0 of tensors does not require grad").
    with _deterministic_kernels(problem.device), torch.enable_grad():
        return _train(image, sigma, scale, params, problem, seed)


def _train(
    image: torch.Tensor,
    sigma: float,
    scale: int,
    params: dict[str, Any],
    problem: Problem,
    seed: int,
) -> tuple[ZSSRNet, dict[str, Any]]:
    """:func:`train_zssr`'s work (see there)."""
    device = problem.device
    rows, cols = image.shape
    crop = min(int(params["crop"]), rows, cols) // scale * scale
    if crop < 2 * scale:
        raise ValueError(f"zssr needs maps of at least {2 * scale} px per side, got {(rows, cols)}")
    normalisation = robust_normalisation(image[None])
    normalised = normalisation.apply(image[None])[0].float()
    noise = (
        noise_model(
            normalised, float(normalisation.offset), float(normalisation.scale), sigma, scale
        )
        if params["noise"]
        else None
    )
    network = seeded_network(scale, int(params["channels"]), int(params["depth"]), seed)
    network.to(device).train()
    # CPU generators (crop positions, turns, noise), whatever the device: the same stream
    # on every device, and torch.randint takes no CUDA generator for CPU results.
    generator = torch.Generator().manual_seed(seed)
    validation_generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        val_sons, val_fathers = _pairs(
            normalised, VALIDATION_PAIRS, crop, sigma, scale, noise, validation_generator
        )

    guard = _guard_crop(image, scale)

    def score() -> tuple[float, float]:
        """Validation L1 (son -> father) and consistency residual on the guard crop."""
        network.eval()
        with torch.no_grad():
            value = float(F.l1_loss(network(val_sons), val_fathers))
            fine = upscale(network, guard, scale, tile=4096, overlap=0)
        rho = float(consistency_figures(guard, fine, sigma, scale)[0]["consistency_residual"])
        network.train()
        return value, rho

    rate = float(params["learning_rate"])
    optimiser = torch.optim.Adam(network.parameters(), lr=rate)
    best, lowest_rho = score()
    facts: dict[str, Any] = {"bicubic_validation_l1": best}
    best_state = copy.deepcopy(network.state_dict())
    stale, drops, iteration, stopped_by = 0, 0, 0, "iterations"
    improved = False  # whether any score beat the untrained network (bicubic interpolation)
    started = time.perf_counter()
    while iteration < int(params["iterations"]):  # iterations and scores only: no clock
        problem.check_cancel()
        with torch.no_grad():
            sons, fathers = _pairs(
                normalised, int(params["batch"]), crop, sigma, scale, noise, generator
            )
        loss = F.l1_loss(network(sons), fathers)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        iteration += 1
        if iteration % int(params["eval_every"]) == 0:
            value, rho = score()
            if rho > GUARD_FACTOR * lowest_rho and rho > 1.0:
                # The network's output stopped explaining the map itself: what it learned
                # between the coarser scales does not carry over to this one.
                stopped_by = "consistency_guard"
                break
            lowest_rho = min(lowest_rho, rho)
            if value < best * (1.0 - 1e-3):
                best, stale, improved = value, 0, True
                best_state = copy.deepcopy(network.state_dict())
            else:
                stale += 1
            if stale >= int(params["patience"]):
                drops, stale = drops + 1, 0
                if drops > 2:
                    stopped_by = "early_stopping"
                    break
                for group in optimiser.param_groups:
                    group["lr"] *= 0.1
    network.load_state_dict(best_state)
    facts.update(
        {
            "iterations_run": iteration,
            "stopped_by": stopped_by,
            "validation_l1": best,
            "fell_back_to_bicubic": not improved,
            "training_s": round(time.perf_counter() - started, 3),
        }
    )
    return network.eval(), facts


FALLBACK_CAUTION = (
    "zssr fell back to bicubic interpolation{maps}: its training never improved on the "
    "untrained network (which is bicubic interpolation) on held-back crops, so the finer map is "
    "an interpolation, not a super-resolution (params['zssr_fell_back_to_bicubic'])"
)
"""The caution of a map on which training found nothing (:meth:`asirp.Restoration.cautions`)."""


def run(problem: Problem, params: dict[str, Any]) -> MethodOutput:
    """ZSSR on each map of ``(B, H, W)``: train on the map, then super-resolve it."""
    scale = check_scale(params, "zssr")
    tile, overlap = check_tiling(params, problem.device, "zssr")
    beam = resolve_beam(problem)
    batch = problem.data.shape[0]
    outputs, facts, networks = [], [], []
    for index in range(batch):
        image = problem.data[index]
        network, found = train_zssr(
            image, beam.sigma_px[index], scale, params, problem, problem.seed
        )
        problem.progress((index + 0.9) / batch)
        fine = upscale(
            network,
            image[None],
            scale,
            tile=tile,
            overlap=overlap,
            batch=1,
            half=bool(params["half"]),
            self_ensemble=bool(params["self_ensemble"]),
            cancel=problem.cancel,
        )
        outputs.append(fine[0])
        facts.append(found)
        networks.append(network)
        problem.progress((index + 1) / batch)
    info = {key: [fact[key] for fact in facts] for key in facts[0]}
    # never a silent bicubic: say so in the facts and in the result's cautions
    fell_back = info.pop("fell_back_to_bicubic")
    info["zssr_fell_back_to_bicubic"] = fell_back
    if any(fell_back):
        maps = "" if batch == 1 else f" on {sum(fell_back)} of {batch} maps"
        info["method_cautions"] = [FALLBACK_CAUTION.format(maps=maps)]

    def halves(index: int, pair: torch.Tensor) -> torch.Tensor:
        """Map ``index``'s network, trained once on the full map, on two halves of it."""
        return upscale(
            networks[index],
            pair,
            scale,
            tile=tile,
            overlap=overlap,
            batch=1,
            half=bool(params["half"]),
            self_ensemble=bool(params["self_ensemble"]),
            cancel=problem.cancel,
        )

    return finish("zssr", problem, params, torch.stack(outputs), beam, info, guard=halves)
