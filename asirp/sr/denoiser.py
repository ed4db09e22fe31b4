r"""A small learned denoiser: the prior that ``rl_sr`` can put inside its physics iteration.

The network does not know any beam, scale or sampling. It only removes noise of a given local
standard deviation from a map in about [0, 1], so it can serve as a prior for any forward model
(plug-and-play; the physics stays in :mod:`asirp.sr.physics_sr`).

Architecture (after Zhang et al., "Learning deep CNN denoiser prior for image restoration",
CVPR 2017, which designed a denoiser for such use): seven 3 x 3 convolutions with dilations
1, 2, 3, 4, 3, 2, 1 (a 33 px receptive field), ReLUs between them, predicting the noise
(residual learning). As in FFDNet (Zhang et al., IEEE TIP 2018), the noise level comes in as a
second input channel, a map: one network covers signal-dependent noise of any level. 32 channels,
about 47,000 parameters (190 kB).

Training (:mod:`asirp.sr.train_denoiser`): content from :func:`asirp.sr.data.random_structure`
(the training generator; never the held-out evaluation set of :mod:`asirp.sr.evalset`), with
Poisson noise at 2 to 20,000 counts per unit intensity.
The shipped weights are ``asirp/models/prior_denoiser.safetensors``; the model card says how
they were made.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

ARCH = "prior_denoiser"
"""The architecture name in the weight file's metadata."""

DEFAULT_CONFIG: dict[str, int] = {"channels": 32}
"""The shipped network's configuration."""

DILATIONS = (1, 2, 3, 4, 3, 2, 1)
"""Dilation of each 3 x 3 convolution."""

MAX_CHANNELS = 256
"""Largest ``channels`` accepted from a weight file's metadata."""

SIGMA_RANGE = (0.0, 1.0)
"""Noise standard deviations the network was trained for, in units of the map's range."""

WEIGHTS_FILE = "prior_denoiser.safetensors"
"""The shipped weights, in ``asirp/models/``."""


class PriorDenoiser(nn.Module):
    """Dilated residual CNN denoiser with a noise-level map input.

    Parameters
    ----------
    channels : int
        Feature channels of the hidden layers.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        inputs = 2
        for index, dilation in enumerate(DILATIONS):
            last = index == len(DILATIONS) - 1
            outputs = 1 if last else channels
            layers.append(nn.Conv2d(inputs, outputs, 3, padding=dilation, dilation=dilation))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            inputs = outputs
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Denoise ``(B, 1, H, W)`` maps given ``(B, 1, H, W)`` noise standard deviations."""
        return noisy - self.body(torch.cat([noisy, sigma], dim=1))


def shipped_path() -> Path:
    """Where the shipped weights lie."""
    return Path(__file__).resolve().parents[1] / "models" / WEIGHTS_FILE


def load_denoiser(path: str | Path | None = None) -> PriorDenoiser:
    """Build the denoiser from a weight file (default: the shipped one), in eval mode.

    The file is read by :func:`asirp.sr.weights.load_weights` (no code from it runs; sizes are
    checked first) and must be ASIRP's ``prior_denoiser`` weights.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    asirp.sr.weights.WeightsArchitectureError
        If it holds other weights or a bad configuration.
    """
    from asirp.sr.weights import (
        FORMAT,
        WeightsArchitectureError,
        WeightsTooLargeError,
        check_state_fits,
        expected_shapes,
        load_state_strict,
        load_weights,
    )

    loaded = load_weights(shipped_path() if path is None else path)
    meta: dict[str, Any] = loaded.metadata
    if meta.get("format") != FORMAT or meta.get("arch") != ARCH:
        raise WeightsArchitectureError(
            f"{loaded.path} does not hold ASIRP's {ARCH!r} weights (arch {meta.get('arch')!r})"
        )
    config = meta.get("config") or dict(DEFAULT_CONFIG)
    channels = config.get("channels") if isinstance(config, dict) else None
    if not isinstance(config, dict) or set(config) != {"channels"}:
        channels = None
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise WeightsArchitectureError(f"{loaded.path}: bad configuration {str(config)[:120]}")
    if channels > MAX_CHANNELS:
        raise WeightsTooLargeError(f"{loaded.path}: {channels} channels; at most {MAX_CHANNELS}")
    what = f"weights in {loaded.path}"
    # shapes first, on the meta device: the real network is built only for weights that fill it
    name, shapes = expected_shapes(lambda: PriorDenoiser(channels))
    check_state_fits(shapes, loaded.state, what, name)
    network = PriorDenoiser(channels)
    load_state_strict(network, loaded.state, what)
    return network.eval()


_cache = threading.local()


def shipped_denoiser(device: torch.device) -> PriorDenoiser:
    """The shipped denoiser on ``device``, loaded once per thread and device."""
    networks: dict[str, PriorDenoiser] | None = getattr(_cache, "networks", None)
    if networks is None:
        networks = _cache.networks = {}
    key = str(device)
    if key not in networks:
        networks[key] = load_denoiser().to(device)
    return networks[key]
