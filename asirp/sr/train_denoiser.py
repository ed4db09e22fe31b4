r"""Train the prior denoiser of :mod:`asirp.sr.denoiser`, reproducibly.

``python -m asirp.sr.train_denoiser -o asirp/models/prior_denoiser.safetensors`` made the
shipped weights (the defaults below; the file's metadata records the command, the figures and the
versions). Every step draws fresh maps:

- **content**: :func:`asirp.sr.data.random_structure` (polygons, blobs, lines, textures, meshes,
  tissue with hotspots, stars, tomography projections; emission and absorption contrast), the
  generator the super-resolution networks train on. Nothing from :mod:`asirp.sr.evalset` (the
  held-out set) is used; ``tests/asirp/sr/test_evalset.py`` checks that this module does not
  import it;
- **intensity**: a background of 0-0.3 added and the map rescaled to a peak of 0.5-1, so that
  the denoiser sees the levels a normalised map has;
- **noise**: Poisson, at a count level :math:`n` drawn log-uniformly in :data:`COUNTS_RANGE`
  (counts at intensity 1: from 2, where a map is mostly zeros, to 20,000), plus Gaussian read
  noise of 0-0.01. The network is told the standard deviation of the clean map,
  :math:`\sqrt{x / n}` plus the read noise (clipped to :data:`asirp.sr.denoiser.SIGMA_RANGE`),
  as the plug-and-play iteration tells it the level its forward model expects. Poisson rather
  than Gaussian noise: the maps are counts, and at low counts the conditional mean of a
  Gaussian-trained denoiser is biased on them.

Loss: mean squared error (the figure of merit is PSNR); Adam, cosine schedule, an exponential
moving average of the weights is what is saved. Dihedral symmetry needs no augmentation: the
generators draw every orientation.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from asirp._version import __version__
from asirp.sr.data import random_structure
from asirp.sr.denoiser import ARCH, DEFAULT_CONFIG, SIGMA_RANGE, PriorDenoiser
from asirp.sr.train import moving_average, update_average

STEPS = 4000
BATCH = 16
PATCH = 64
LEARNING_RATE = 2e-3
EMA_DECAY = 0.995
SEED = 11
COUNTS_RANGE = (2.0, 20000.0)
"""Poisson count levels drawn for training (counts at intensity 1), log-uniformly."""


def noisy_batch(
    rng: np.random.Generator, generator: torch.Generator, batch: int, patch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch: ``(noisy, sigma_map, clean)``, each ``(B, 1, patch, patch)``."""
    clean = []
    for _ in range(batch):
        image = random_structure((patch, patch), rng)
        level = rng.uniform(0.0, 0.3)
        peak = rng.uniform(0.5, 1.0)
        clean.append(peak * (level + image) / (level + 1.0))
    truth = torch.from_numpy(np.stack(clean)).float()[:, None]
    # Poisson noise at a count level drawn log-uniformly (counts at intensity 1), plus a little
    # Gaussian read noise; the network is told the Poisson standard deviation of the clean map
    counts = torch.from_numpy(np.exp(rng.uniform(*np.log(COUNTS_RANGE), batch))).float()
    counts = counts.view(-1, 1, 1, 1)
    noisy = torch.poisson(truth * counts, generator=generator) / counts
    read = torch.from_numpy(rng.uniform(0.0, 0.01, batch)).float().view(-1, 1, 1, 1)
    noisy = noisy + read * torch.randn(truth.shape, generator=generator)
    sigma = (truth / counts).sqrt().add(read).clamp(*SIGMA_RANGE)
    return noisy, sigma, truth


def train_denoiser(
    output: str | Path,
    *,
    steps: int = STEPS,
    batch: int = BATCH,
    patch: int = PATCH,
    seed: int = SEED,
    threads: int | None = None,
    log=print,
) -> dict:
    """Train and write the weights; returns the training facts (also in the file's metadata)."""
    from asirp.sr.weights import save_weights

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    network = PriorDenoiser(**DEFAULT_CONFIG).train()
    average = moving_average(network)
    optimiser = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    losses: list[float] = []
    for step in range(1, steps + 1):
        noisy, sigma, truth = noisy_batch(rng, generator, batch, patch)
        loss = F.mse_loss(network(noisy, sigma), truth)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        update_average(average, network, EMA_DECAY)
        losses.append(loss.item())
        if step % 100 == 0 or step == steps:
            recent = float(np.mean(losses[-100:]))
            log(f"step {step}/{steps}  mse {recent:.3e}  {time.perf_counter() - started:.0f} s")
    figures = validation_figures(average, seed + 1)
    log(f"validation (fresh maps): {figures}")
    training = {
        "command": (
            f"python -m asirp.sr.train_denoiser -o {output} --steps {steps} --batch {batch} "
            f"--patch {patch} --seed {seed} --threads {torch.get_num_threads()}"
        ),
        "steps": steps,
        "batch": batch,
        "patch": patch,
        "seed": seed,
        "wall_s": round(time.perf_counter() - started, 1),
        "final_mse": float(np.mean(losses[-max(1, steps // 10) :])),
        "validation_psnr_db": figures,
        "data": "asirp.sr.data.random_structure; Poisson noise at 2-20000 counts, read noise",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "asirp": __version__,
    }
    save_weights(
        average, output, arch=ARCH, scale=1, config=dict(DEFAULT_CONFIG), training=training
    )
    log(f"wrote {output}")
    return training


@torch.no_grad()
def validation_figures(network: PriorDenoiser, seed: int, count: int = 32) -> dict[str, dict]:
    """Mean PSNR (dB, peak 1) of noisy and denoised fresh maps at three Poisson count levels."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    figures = {}
    for level in (30.0, 300.0, 3000.0):
        truth = torch.from_numpy(
            np.stack([random_structure((96, 96), rng) for _ in range(count)])
        ).float()[:, None]
        noisy = torch.poisson(truth * level, generator=generator) / level
        denoised = network(noisy, (truth / level).sqrt())

        def psnr(estimate: torch.Tensor, truth: torch.Tensor = truth) -> float:
            error = ((estimate - truth) ** 2).mean(dim=(1, 2, 3))
            return float((-10 * torch.log10(error)).mean())

        figures[f"counts_{level:g}"] = {
            "noisy": round(psnr(noisy), 2),
            "denoised": round(psnr(denoised), 2),
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m asirp.sr.train_denoiser -o FILE [--steps N ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--patch", type=int, default=PATCH)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if Path(args.output).exists():
        parser.error(f"{args.output} exists; remove it first (weights are never overwritten)")
    train_denoiser(
        args.output,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        seed=args.seed,
        threads=args.threads,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
