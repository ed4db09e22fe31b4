"""Cost measurement: time every candidate of a mode once, as a warm-up for live use.

:func:`measure_costs` fills the cost cache (:data:`asirp.selection.costs.COSTS`) so that a first
budgeted selection prices candidates by measurement instead of by prior; ``asirp.restore(...,
method="auto", budget_ms=...)`` calls it on the first budgeted call at a map size.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from asirp.backend import resolve_device, to_tensor
from asirp.metrics import summary
from asirp.psf import resolve_psf
from asirp.selection.candidates import fitting_candidates
from asirp.selection.context import CHEAP_REGION_PX, MODES, THOROUGH_REGION_PX
from asirp.selection.costs import COSTS, OVERHEAD
from asirp.selection.trials import run_candidate


def measure_costs(
    shape: tuple[int, int],
    *,
    psf: Any = None,
    psf_sigma_px: Any = None,
    beam_fwhm_um: Any = None,
    pixel_um: Any = None,
    mode: str = "cheap",
    scale: int = 1,
    device: str | torch.device = "auto",
    seed: int = 0,
) -> dict[str, float]:
    """Time every candidate of ``mode`` once and cache the costs (a warm-up for live use).

    Each candidate restores a synthetic Poisson map of ``shape`` (blobs on a background, 100
    counts) and a pair of maps of the mode's scoring region, as selection and restoration will,
    after one untimed run; the times go to the cost cache, so that a first budgeted selection
    prices candidates by measurement instead of by prior.

    Parameters
    ----------
    shape : (int, int)
        Map size, px.
    psf, psf_sigma_px, beam_fwhm_um, pixel_um
        The PSF, as for :func:`select`.
    mode : {"cheap", "thorough"}
        Whose candidates to time.
    scale : int
        Output scale.
    device : str or torch.device
        Where to run.
    seed : int
        Seed of the synthetic map.

    Returns
    -------
    dict of str to float
        Candidate label -> ms per map of ``shape``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    rows, cols = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    mean = np.full((rows, cols), 10.0)
    for _ in range(20):
        cy, cx, width = rng.uniform(0, rows), rng.uniform(0, cols), rng.uniform(2, 8)
        mean += 90.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    stack = rng.poisson(mean)[None].astype(np.float32)
    resolved = resolve_psf(
        stack.shape,
        psf=psf,
        psf_sigma_px=psf_sigma_px,
        beam_fwhm_um=beam_fwhm_um,
        pixel_um=pixel_um,
    )
    compute = resolve_device(device)
    psf_tensor = to_tensor(resolved.array, compute) if resolved is not None else None
    candidates, _ = fitting_candidates(
        scale=scale, has_psf=resolved is not None, psf_known=True, mode=mode, fixed={}
    )
    side = CHEAP_REGION_PX if mode == "cheap" else THOROUGH_REGION_PX
    region = stack[:, : min(rows, side), : min(cols, side)]
    pair = to_tensor(np.concatenate([region, region]) / 2, compute)
    full = to_tensor(stack, compute)
    measured = {}
    for candidate in candidates:
        # An untimed run first: first calls pay one-time costs (compilation, FFT plans).
        run_candidate(candidate, pair, psf_tensor, compute, lambda: 1.0, seed, scale, 1.0, None)
        for data in (pair, full):
            start = time.perf_counter()
            run_candidate(candidate, data, psf_tensor, compute, lambda: 1.0, seed, scale, 1.0, None)
            elapsed = 1e3 * (time.perf_counter() - start)
            COSTS.record(candidate, data[0].numel(), elapsed / data.shape[0], compute)
        measured[candidate.label] = elapsed
    kernel = resolved.array if resolved is not None else None
    for _ in range(2):  # the quality figures restore() computes; the first call is untimed
        start = time.perf_counter()
        summary(stack[0], stack[0], kernel)
        elapsed = 1e3 * (time.perf_counter() - start)
    COSTS.record(OVERHEAD, rows * cols, elapsed, compute)
    measured[OVERHEAD.method] = elapsed
    return measured
