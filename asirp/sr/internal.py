r"""Internal learning: a network trained on the input map's own lower-resolution pairs.

What ``zssr`` (a small network from scratch, :mod:`asirp.sr.zssr`) and ``beam_sr``'s test-time
adaptation (the shipped network fine-tuned, :mod:`asirp.methods.beam_sr`) share. For a map
``y`` (Shocher et al. 2018 [1]_; starting from trained weights as in Soh et al. 2020 [2]_):

1. **Pairs from the map.** Random crops of ``y`` ("fathers"), with the eight flips and 90°
   rotations, are degraded by the forward model of :mod:`asirp.sr.degrade` (the beam, of
   ``scale`` times its sigma on the finer grid, then area sampling by ``scale``) into "sons".
   Noise is added to each son so that its noise matches the map's (Immerkaer's estimate, with a
   Poisson-like variance proportional to the intensity when the map is non-negative), less what
   survives of the father's own noise. A network told the beam is given each son's beam, its
   two axes swapped for the transposed crops.
2. **Training.** The network learns son -> father with an L1 loss and Adam. Every
   ``eval_every`` iterations a fixed set of validation pairs (other crops and noise) is scored,
   and so is the network's super-resolution of the map itself (a central crop) through the
   consistency check (:mod:`asirp.sr.consistency`). The learning rate drops tenfold when the
   validation loss stops improving for ``patience`` scores; training stops after two drops
   (early stopping), when the consistency residual rises 20 % above its lowest value (the
   **consistency guard**: what was learned between the coarser scales no longer carries over to
   the map's own scale, which happens on periodic meshes and dot arrays whose structure the sons
   no longer resolve), or at ``iterations``. The weights with the best validation score before
   the stop are kept; ``improved`` says whether any beat the starting network's.

Every rule counts iterations or compares scores, never the clock, so the same map, seed, device
and thread count give the same network, bit for bit. Randomness (crops, turns, noise) comes from
CPU generators seeded with ``seed``, never from torch's global random state. On CUDA, training
runs with cuDNN's deterministic convolutions (:func:`deterministic_kernels`).

References
----------
.. [1] A. Shocher, N. Cohen and M. Irani, "'Zero-shot' super-resolution using deep internal
   learning", CVPR 3118-3126 (2018).
.. [2] J. W. Soh, S. Cho and N. I. Cho, "Meta-transfer learning for zero-shot
   super-resolution", CVPR 3516-3525 (2020).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asirp.backend import to_numpy
from asirp.metrics import noise_sigma
from asirp.registry import Problem
from asirp.sr.consistency import consistency_figures
from asirp.sr.degrade import degrade
from asirp.sr.inference import dihedral, robust_normalisation, upscale
from asirp.sr.models import beam_planes

VALIDATION_PAIRS = 16

GUARD_SIDE = 128
"""Side (input px) of the central crop of the map on which the consistency guard is scored."""

GUARD_FACTOR = 1.2
"""Training stops when the guard's consistency residual exceeds its lowest value by this factor."""

SETTINGS = ("iterations", "crop", "batch", "learning_rate", "eval_every", "patience", "noise")
"""The training settings :func:`train_internal` reads from its ``settings``."""


@dataclass(frozen=True)
class BeamModel:
    """The beam of the pairs' forward model, measured px.

    Attributes
    ----------
    rows, cols : float
        Sigma along the rows and along the columns.
    told : bool
        The network takes the beam as two input planes (:func:`asirp.sr.models.beam_planes`).
    """

    rows: float
    cols: float
    told: bool = False

    @property
    def round(self) -> bool:
        """Whether both axes are equal (the forward model then takes one sigma)."""
        return self.rows == self.cols

    def consistency_model(self) -> float | tuple[float, float]:
        """The beam as :func:`asirp.sr.consistency.consistency_figures` takes it."""
        return self.rows if self.round else (self.rows, self.cols)


def _guard_crop(image: torch.Tensor) -> torch.Tensor:
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
    normalised: torch.Tensor, offset: float, span: float, beam: BeamModel, scale: int
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
    keep = float(_degrade(probe, beam, scale).var())
    return NoiseModel(constant, slope, min(keep, 1.0))


def _degrade(fathers: torch.Tensor, beam: BeamModel, scale: int) -> torch.Tensor:
    """Sons of ``(N, s h, s w)`` fathers under the beam (one sigma for a round beam)."""
    if beam.round:
        return degrade(fathers, beam.rows, scale)
    return degrade(fathers, beam.rows, scale, sigma_cols_px=beam.cols)


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """Deterministic cuDNN convolutions, without autotuning, on CUDA; nothing on the CPU.

    The CPU kernels of the networks' operations (convolutions, ReLU, pixel shuffle, bicubic
    upsampling of an input that needs no gradient, L1 loss, Adam) are deterministic for a given
    thread count. On CUDA the backward passes of cuDNN's convolutions may add with atomics,
    in an order that changes from run to run, unless deterministic algorithms are asked for.
    ``torch.backends.cudnn.flags`` asks for them while the block runs (the flags are
    process-wide, so convolutions of other threads meanwhile are deterministic too, which only
    slows them) and puts the caller's back; torch's ``use_deterministic_algorithms`` would
    instead turn every nondeterministic operation of the caller's code into an error. Not
    checked on a GPU by the tests (none there).
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
    beam: BeamModel,
    scale: int,
    noise: NoiseModel | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (son, father) pairs.

    Returns ``(N, 1, crop/s, crop/s)`` sons (``(N, 3, ...)`` with the beam planes for a network
    told the beam) and ``(N, 1, crop, crop)`` fathers.
    """
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
    if beam.round:
        sons = _degrade(fathers[:, 0], beam, scale)
        axes = [(beam.rows, beam.cols)] * count
    else:  # a transposed crop sees the beam's axes swapped
        axes = [(beam.cols, beam.rows) if turn & 4 else (beam.rows, beam.cols) for turn in turns]
        sigma = torch.tensor(axes, dtype=torch.float64)
        sons = degrade(fathers[:, 0], sigma[:, 0], scale, sigma_cols_px=sigma[:, 1])
    if noise is not None:
        sons = noise.add(sons, generator)
    sons = sons[:, None]
    if beam.told:
        sons = beam_planes(sons, axes)
    return sons, fathers


def train_internal(
    network: nn.Module,
    image: torch.Tensor,
    beam: BeamModel,
    scale: int,
    settings: dict[str, Any],
    problem: Problem,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``network`` on one map's own pairs (see the module notes).

    Parameters
    ----------
    network : torch.nn.Module
        The starting network, on the compute device, trainable (its weights change).
    image : torch.Tensor
        ``(H, W)`` measured map (any intensity scale), on the compute device.
    beam : BeamModel
        Beam of the forward model, measured px, and whether the network is told it.
    scale : int
        Upscaling factor.
    settings : dict
        :data:`SETTINGS`: ``iterations`` (the most), ``crop`` (father side, input px),
        ``batch``, ``learning_rate``, ``eval_every``, ``patience``, ``noise`` (bool).
    problem : Problem
        For cancellation.
    seed : int
        Seed of the crops, turns and noise.

    Returns
    -------
    network : torch.nn.Module
        The same network with the best weights found, in evaluation mode.
    facts : dict
        ``iterations_run``, ``stopped_by`` (``"early_stopping"``, ``"consistency_guard"``,
        ``"iterations"``), ``validation_l1`` (best score, normalised units),
        ``start_validation_l1`` (the starting network's), ``improved`` (some score beat the
        starting network's; otherwise the starting weights are kept) and ``training_s`` (wall
        time, reported only: it stops nothing).

    Raises
    ------
    ValueError
        When the map is smaller than two measured pixels per fine pixel block.
    """
    # Training needs gradients whatever the caller's mode: the selector runs every candidate
    # under torch.no_grad() (asirp.selection.trials), which would otherwise make the loss a
    # constant ("element 0 of tensors does not require grad").
    with deterministic_kernels(problem.device), torch.enable_grad():
        rows, cols = image.shape
        crop = min(int(settings["crop"]), rows, cols) // scale * scale
        if crop < 2 * scale:
            raise ValueError(
                f"training on the map needs at least {2 * scale} px per side, got {(rows, cols)}"
            )
        normalisation = robust_normalisation(image[None])
        normalised = normalisation.apply(image[None])[0].float()
        offset, span = float(normalisation.offset), float(normalisation.scale)
        noise = noise_model(normalised, offset, span, beam, scale) if settings["noise"] else None
        network.train()
        # CPU generators (crop positions, turns, noise), whatever the device: the same stream
        # on every device, and torch.randint takes no CUDA generator for CPU results.
        generator = torch.Generator().manual_seed(seed)
        validation_generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            val_sons, val_fathers = _pairs(
                normalised, VALIDATION_PAIRS, crop, beam, scale, noise, validation_generator
            )
        guard = _guard_crop(image)
        guard_beams = [(beam.rows, beam.cols)] if beam.told else None

        def score() -> tuple[float, float]:
            """Validation L1 (son -> father) and consistency residual on the guard crop."""
            network.eval()
            with torch.no_grad():
                value = float(F.l1_loss(network(val_sons), val_fathers))
                fine = upscale(network, guard, scale, tile=4096, overlap=0, beams=guard_beams)
            figures = consistency_figures(guard, fine, beam.consistency_model(), scale)
            network.train()
            return value, float(figures[0]["consistency_residual"])

        optimiser = torch.optim.Adam(network.parameters(), lr=float(settings["learning_rate"]))
        best, lowest_rho = score()
        facts: dict[str, Any] = {"start_validation_l1": best}
        best_state = copy.deepcopy(network.state_dict())
        stale, drops, iteration, stopped_by = 0, 0, 0, "iterations"
        improved = False  # whether any score beat the starting network
        started = time.perf_counter()
        while iteration < int(settings["iterations"]):  # iterations and scores only: no clock
            problem.check_cancel()
            with torch.no_grad():
                sons, fathers = _pairs(
                    normalised, int(settings["batch"]), crop, beam, scale, noise, generator
                )
            loss = F.l1_loss(network(sons), fathers)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            iteration += 1
            if iteration % int(settings["eval_every"]) == 0:
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
                if stale >= int(settings["patience"]):
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
                "improved": improved,
                "training_s": round(time.perf_counter() - started, 3),
            }
        )
        return network.eval(), facts
