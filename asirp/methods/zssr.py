"""``zssr``: zero-shot super-resolution, a CNN trained on the input map itself at restoration time.

No trained weights: each map teaches a small network how its own lower-resolution version maps
back to it (the beam and area-sampling forward model, with noise like the map's), and the
network then super-resolves the map. Bounded by ``iterations`` per map, with early stopping on
held-back crops and a consistency guard, never by the clock: reproducible, bit for bit, for a given
``seed``, device and thread count. See :mod:`asirp.sr.zssr`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from asirp.methods._public import Device
from asirp.registry import MethodSpec, SelectorGrid, register_method
from asirp.restore import restore
from asirp.sr.zssr import PARAMETERS, run

SPEC = register_method(
    MethodSpec(
        name="zssr",
        family="super-resolution",
        needs_psf=False,
        scale=2,
        summary="zero-shot SR: a small CNN trained on the map itself (iteration-bounded, seeded)",
        parameters=PARAMETERS,
        run=run,
        batchable=True,
        # trains a network per map: out of live updates, one split in the thorough mode,
        # with the self-ensemble (its cost is small next to the training)
        selector_grid=SelectorGrid(thorough=({"self_ensemble": True},), cheap=(), max_splits=1),
    )
)


def zssr(
    image: ArrayLike,
    *,
    scale: int = 2,
    tile: int | None = None,
    overlap: int = 16,
    half: bool = True,
    consistency_tolerance: float = 1.5,
    iterations: int = 2000,
    crop: int = 64,
    batch: int = 8,
    learning_rate: float = 0.001,
    channels: int = 32,
    depth: int = 6,
    eval_every: int = 25,
    patience: int = 4,
    noise: bool = True,
    self_ensemble: bool = False,
    split_guard: bool = True,
    seed: int = 0,
    device: Device = "auto",
) -> np.ndarray:
    """Zero-shot super-resolution: a small CNN trained on the map itself.

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
    iterations : int
        Largest number of training iterations per map.
    crop : int
        Training crop side (father), input px.
    batch : int
        Crops per training iteration.
    learning_rate : float
        Initial Adam learning rate.
    channels : int
        Feature channels of the CNN.
    depth : int
        Convolutions of the CNN.
    eval_every : int
        Iterations between validation scores.
    patience : int
        Scores without improvement before the rate drops.
    noise : bool
        Add noise matching the input's to the training inputs.
    self_ensemble : bool
        Average the network over the 8 flips and quarter-turns of each map (geometric
        self-ensemble: 8x the inference; asirp.sr.inference).
    split_guard : bool
        Super-resolve two independent halves of each map too and flag detail they agree on
        past the data (asirp.sr.guard; maps over 262144 px are skipped).
    seed : int
        Seed of the method's randomness (the same seed gives the same result).
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
        seed=seed,
        scale=scale,
        tile=tile,
        overlap=overlap,
        half=half,
        consistency_tolerance=consistency_tolerance,
        iterations=iterations,
        crop=crop,
        batch=batch,
        learning_rate=learning_rate,
        channels=channels,
        depth=depth,
        eval_every=eval_every,
        patience=patience,
        noise=noise,
        self_ensemble=self_ensemble,
        split_guard=split_guard,
    ).image
