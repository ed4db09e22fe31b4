"""Training ASIRP's super-resolution networks on synthetic X-ray-like data (``asirp train``).

Data
    A pool of fine-grid structures (:func:`asirp.sr.data.random_structure`: meshes, tissue,
    Siemens stars, polygons, lines, blobs, textures, tomography projections), a few of which are
    replaced by new ones at every step. Each batch takes pool maps under a random flip/rotation
    and measures them with :func:`asirp.sr.data.make_pairs` (random beam sigma, count level and
    background; area sampling; Poisson noise), so no two batches are alike.
Loss
    L1 between the network's output and the noise-free fine-grid truth, both in the normalised
    units of the measured map (:func:`asirp.sr.inference.robust_normalisation`, the same
    normalisation inference uses).
Optimisation
    Adam (betas 0.9, 0.99), a linear warm-up over the first 3 % of the steps then cosine decay to
    1/50 of the rate, gradient-norm clipping at 1, and an exponential moving average of the
    weights (decay 0.995) that is what gets saved (as Real-ESRGAN's ``params_ema``).
Result
    A ``.safetensors`` file (:func:`asirp.sr.weights.save_weights`) whose metadata hold the
    architecture, its configuration, the exact command, the settings, the wall time and the
    held-out figures (PSNR of the network and of bicubic interpolation on
    :func:`asirp.sr.data.heldout_set`).

Runs on a CUDA GPU when one is present (``device="auto"``), with the larger ``cuda`` preset;
on the CPU the ``cpu`` preset is smaller (fewer steps, smaller batches). Training is
reproducible for a given seed, device and thread count.
"""

from __future__ import annotations

import copy
import math
import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asirp._version import __version__
from asirp.backend import resolve_device
from asirp.metrics import psnr
from asirp.sr.data import heldout_set, make_pairs, random_structure
from asirp.sr.inference import dihedral, robust_normalisation, upscale
from asirp.sr.models import (
    DEFAULT_CONFIGS,
    BeamFCASRNet,
    beam_planes,
    bicubic_upsample,
    build_network,
    count_parameters,
)
from asirp.sr.weights import save_weights

TRAINABLE = ("fca_sr", "beam_sr", "rrdb_sr")
"""Architectures ``asirp train`` makes weights for (``zssr`` trains at restoration time)."""

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"steps": 1500, "batch": 16, "patch": 96, "pool": 384},
    "cuda": {"steps": 30000, "batch": 32, "patch": 128, "pool": 4096},
}
"""Default training sizes per device kind (``patch`` in fine pixels)."""

EMA_DECAY = 0.995
WARMUP_FRACTION = 0.03
FINAL_RATE_FRACTION = 1.0 / 50.0
REFRESH_PER_STEP = 1


@dataclass
class TrainSettings:
    """Everything that defines a training run.

    Attributes
    ----------
    arch : {"fca_sr", "beam_sr", "rrdb_sr"}
        Architecture (``beam_sr`` is told the beam and trains over anisotropic ones).
    scale : int
        Upscaling factor, 2 or 4.
    output : str
        The ``.safetensors`` file to write.
    steps, batch, patch, pool : int, optional
        Optimiser steps, maps per batch, fine-grid patch side (px; a multiple of ``2 scale``) and
        structure pool size; ``None`` takes the device's preset (:data:`PRESETS`).
    learning_rate : float
        Peak Adam learning rate.
    seed : int
        Seed of the data, the initial weights and the noise.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    threads : int, optional
        CPU threads for torch (``None``: torch's default).
    time_limit_s : float, optional
        Stop (and save) after this much wall time.
    config : dict, optional
        Network configuration (default :data:`asirp.sr.models.DEFAULT_CONFIGS`).
    log_every : int
        Steps between progress lines.
    """

    arch: str
    scale: int
    output: str
    steps: int | None = None
    batch: int | None = None
    patch: int | None = None
    pool: int | None = None
    learning_rate: float = 2e-3
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    time_limit_s: float | None = None
    config: dict[str, Any] | None = None
    log_every: int = 50

    def command(self) -> str:
        """The ``asirp train`` command line that reproduces these settings."""
        words = ["asirp", "train", self.arch, "--scale", str(self.scale), "-o", self.output]
        for name in ("steps", "batch", "patch", "pool", "learning_rate", "seed", "threads"):
            value = getattr(self, name)
            if value is not None:
                words += [f"--{name.replace('_', '-')}", str(value)]
        words += ["--device", self.device]
        if self.time_limit_s is not None:
            words += ["--time-limit-s", f"{self.time_limit_s:g}"]
        return shlex.join(words)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    path : pathlib.Path
        The weights written.
    steps_run : int
        Optimiser steps done.
    wall_s : float
        Wall time, s.
    final_loss : float
        Mean training loss over the last 10 % of the steps.
    heldout : dict
        Per held-out map: ``psnr_bicubic`` and ``psnr`` (dB).
    parameters : int
        Trainable parameters of the network.
    """

    path: Path
    steps_run: int
    wall_s: float
    final_loss: float
    heldout: dict[str, dict[str, float]] = field(default_factory=dict)
    parameters: int = 0


def moving_average(network: nn.Module) -> nn.Module:
    """A frozen copy of ``network`` (eval mode) to hold the exponential moving average."""
    average = copy.deepcopy(network).eval()
    for parameter in average.parameters():
        parameter.requires_grad_(False)
    return average


@torch.no_grad()
def update_average(average: nn.Module, network: nn.Module, decay: float = EMA_DECAY) -> None:
    """``average <- decay average + (1 - decay) network``, parameter by parameter."""
    for mean, current in zip(average.parameters(), network.parameters(), strict=True):
        mean.lerp_(current, 1.0 - decay)


def _dihedral(images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Each map of ``(B, H, W)`` turned by its own code (:func:`asirp.sr.inference.dihedral`)."""
    return torch.stack(
        [dihedral(image, code) for image, code in zip(images, codes.tolist(), strict=True)]
    )


def evaluate_heldout(
    network: torch.nn.Module, scale: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """PSNR (dB) of a network and of bicubic interpolation on the held-out set."""
    figures = {}
    multiple = getattr(network, "fold", 1)
    for image in heldout_set(scale):
        measured = torch.from_numpy(image.measured).to(device)[None]
        beams = [(image.sigma_px, image.sigma_px)] if isinstance(network, BeamFCASRNet) else None
        fine = upscale(
            network, measured, scale, tile=512, overlap=16, multiple=multiple, beams=beams
        )
        bicubic = bicubic_upsample(measured[None].cpu(), scale)[0, 0]
        figures[image.name] = {
            "psnr_bicubic": round(psnr(image.truth, bicubic.numpy()), 3),
            "psnr": round(psnr(image.truth, fine[0].cpu().numpy()), 3),
        }
    return figures


def train(settings: TrainSettings, log: Callable[[str], None] = print) -> TrainResult:
    """Train a network and write its weights; see the module notes.

    Parameters
    ----------
    settings : TrainSettings
        What to train and how.
    log : callable
        Receives progress lines.

    Returns
    -------
    TrainResult
        Where the weights went, and the figures.

    Raises
    ------
    ValueError
        For an unknown architecture, a scale other than 2 or 4, a bad patch size or output.
    """
    if settings.arch not in TRAINABLE:
        raise ValueError(f"can train {', '.join(TRAINABLE)}, not {settings.arch!r}")
    if settings.scale not in (2, 4):
        raise ValueError(f"scale must be 2 or 4, got {settings.scale}")
    if not settings.output.endswith(".safetensors"):
        raise ValueError(f"the output must be a .safetensors file, got {settings.output!r}")
    device = resolve_device(settings.device)
    preset = PRESETS["cuda" if device.type == "cuda" else "cpu"]
    steps = settings.steps or preset["steps"]
    batch = settings.batch or preset["batch"]
    patch = settings.patch or preset["patch"]
    pool_size = max(settings.pool or preset["pool"], batch)
    if patch % (2 * settings.scale) or patch < 8 * settings.scale:
        raise ValueError(
            f"patch must be a multiple of {2 * settings.scale} and >= {8 * settings.scale}"
        )
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    config = dict(settings.config or DEFAULT_CONFIGS[settings.arch])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        network = build_network(settings.arch, settings.scale, config)
    network.to(device).train()
    average = moving_average(network)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99))
    warmup = max(1, int(WARMUP_FRACTION * steps))

    def rate_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return FINAL_RATE_FRACTION + (1 - FINAL_RATE_FRACTION) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, rate_factor)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    started = time.perf_counter()
    log(
        f"training {settings.arch} x{settings.scale} ({count_parameters(network)} parameters) on "
        f"{device}: {steps} steps, batch {batch}, patch {patch} px, pool {pool_size}; "
        f"torch threads {torch.get_num_threads()}"
    )
    pool = torch.from_numpy(
        np.stack([random_structure((patch, patch), rng) for _ in range(pool_size)])
    ).float()
    log(f"structure pool ready in {time.perf_counter() - started:.1f} s")
    told_the_beam = settings.arch == "beam_sr"  # conditioned: trained over anisotropic beams
    losses: list[float] = []
    step = 0
    while step < steps:
        if (
            settings.time_limit_s is not None
            and time.perf_counter() - started > settings.time_limit_s
        ):
            log(f"time limit reached after {step} steps")
            break
        for _ in range(REFRESH_PER_STEP):
            pool[int(rng.integers(pool_size))] = torch.from_numpy(
                random_structure((patch, patch), rng)
            )
        index = torch.from_numpy(rng.integers(0, pool_size, batch))
        structures = _dihedral(pool[index], torch.from_numpy(rng.integers(0, 8, batch))).to(device)
        pairs = make_pairs(structures, settings.scale, generator, anisotropic=told_the_beam)
        normalisation = robust_normalisation(pairs.measured)
        inputs = normalisation.apply(pairs.measured)[:, None]
        if told_the_beam:
            inputs = beam_planes(inputs, pairs.sigma_axes_px)
        targets = normalisation.apply(pairs.truth)[:, None]
        loss = F.l1_loss(network(inputs), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        update_average(average, network)
        losses.append(loss.item())
        step += 1
        if step % settings.log_every == 0 or step == steps:
            recent = float(np.mean(losses[-settings.log_every :]))
            log(
                f"step {step}/{steps}  loss {recent:.5f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                f"{time.perf_counter() - started:.0f} s"
            )
    wall = time.perf_counter() - started
    heldout = evaluate_heldout(average, settings.scale, device)
    for name, figures in heldout.items():
        log(
            f"held-out {name}: bicubic {figures['psnr_bicubic']:.2f} dB, "
            f"{settings.arch} {figures['psnr']:.2f} dB"
        )
    tail = losses[-max(1, len(losses) // 10) :]
    training = {
        "command": settings.command(),
        "settings": {
            **asdict(settings),
            "steps": steps,
            "batch": batch,
            "patch": patch,
            "pool": pool_size,
        },
        "steps_run": step,
        "wall_s": round(wall, 1),
        "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "loss": "L1 on normalised intensities (asirp.sr.inference.robust_normalisation)",
        "data": "asirp.sr.data.random_structure, make_pairs (Gaussian beam, area, Poisson"
        + (", anisotropic beam family, beam given to the network)" if told_the_beam else ")"),
        "heldout_psnr_db": heldout,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "asirp": __version__,
    }
    path = save_weights(
        average,
        settings.output,
        arch=settings.arch,
        scale=settings.scale,
        config=config,
        training=training,
    )
    log(f"wrote {path} after {step} steps in {wall:.0f} s")
    return TrainResult(path, step, wall, training["final_loss"], heldout, count_parameters(network))
