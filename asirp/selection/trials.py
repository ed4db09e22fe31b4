"""Trial runs: one candidate restores the parts of a split, and each part predicts the other.

:func:`run_candidate` runs a candidate on a batch of parts (recording its warnings);
:func:`predicted_measurement` is the noise-free measurement a restoration predicts through the
forward model (blur with the returned PSF at scale 1, :mod:`asirp.sr.degrade` above);
:func:`score_candidate` does both on every split and scores the predictions
(:mod:`asirp.selection.score`), timing each run for the cost cache. For super-resolution it
also asks the split-data guard (:mod:`asirp.sr.guard`) of the first split's two restorations,
which are the guard's two halves already (the methods' own guard is off in trials: it would
split the parts again).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from asirp.backend import fast_fft_shape, to_numpy, to_tensor
from asirp.blur import psf_to_otf
from asirp.iteration import estimate_counts_gain
from asirp.registry import MethodOutput, Problem
from asirp.selection.candidates import IDENTITY, Candidate, forward_model_for
from asirp.selection.costs import COSTS
from asirp.selection.score import EXTRAPOLATION, PartScores, score_parts
from asirp.selection.splitting import DataSplit
from asirp.sr.degrade import degrade, sigma_from_psf
from asirp.sr.guard import INVENTED_NOTE, guard_figures


def upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The input as a candidate: a copy, bicubically upsampled for ``scale > 1``."""
    if scale == 1:
        return images.clone()
    return F.interpolate(images[:, None], scale_factor=scale, mode="bicubic", align_corners=False)[
        :, 0
    ]


def run_candidate(
    candidate: Candidate,
    data: torch.Tensor,
    psf: torch.Tensor | None,
    device: torch.device,
    gain: Callable[[], float],
    seed: int,
    scale: int,
    background_factor: float,
    cancel: threading.Event | None,
) -> tuple[MethodOutput, list[str]]:
    """Run one candidate on a batch of parts; return its output and any warnings' text."""
    if candidate.method == IDENTITY:
        return MethodOutput(upsample(data, scale), None), []
    spec = candidate.spec()
    assert spec is not None
    params = candidate.params
    if "background" in params:
        params["background"] = float(params["background"]) * background_factor
    resolved = spec.resolve_params(params)
    if "split_guard" in resolved:  # the trial's two parts are the guard's halves already
        resolved["split_guard"] = False
    problem = Problem(
        data=data,
        psf=psf,
        device=device,
        counts_gain=gain() if resolved.get("stop") == "discrepancy" else 1.0,
        seed=seed,
        cancel=cancel,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            output = spec.run(problem, resolved)
    return output, sorted({str(warning.message) for warning in caught})


def linear_blur(images: torch.Tensor, psf: torch.Tensor) -> torch.Tensor:
    """Linear convolution ``(B, H, W)`` with a centred PSF ``(h, w)`` or ``(B, h, w)``, same shape.

    Zero outside the maps (the selector never scores the border, where this is wrong). FFTs on
    a grid large enough that nothing wraps around.
    """
    rows, cols = images.shape[-2:]
    grid = fast_fft_shape((rows + psf.shape[-2] - 1, cols + psf.shape[-1] - 1))
    spectrum = torch.fft.rfft2(images, s=grid) * psf_to_otf(psf, grid)
    return torch.fft.irfft2(spectrum, s=grid)[..., :rows, :cols]


def predicted_measurement(
    candidate: Candidate,
    estimate: torch.Tensor,
    output_psf: torch.Tensor | None,
    psf: torch.Tensor | None,
    scale: int,
) -> torch.Tensor:
    """The measurement a restoration predicts (noise-free), ``(B, H, W)``."""
    own = forward_model_for(candidate.method)
    if own is not None:
        return own(estimate, psf, scale)
    if scale == 1:
        kernel = output_psf if output_psf is not None else psf
        return estimate if kernel is None else linear_blur(estimate, kernel)
    if psf is not None:
        sigma = sigma_from_psf(psf)
    elif output_psf is not None:
        sigma = sigma_from_psf(output_psf) / scale
    else:
        return F.avg_pool2d(estimate[:, None], scale)[:, 0]
    return degrade(estimate, sigma, scale)


@dataclass
class Trial:
    """Scores of one candidate over the splits, and its restorations of the first split."""

    scores: list[PartScores] = field(default_factory=list)
    pair: tuple[np.ndarray, np.ndarray] | None = None
    ms: float = 0.0
    notes: list[str] = field(default_factory=list)


def score_candidate(
    candidate: Candidate,
    splits: list[DataSplit],
    *,
    psf: torch.Tensor | None,
    device: torch.device,
    seed: int,
    scale: int,
    margin: int,
    weights: Any,
    cancel: threading.Event | None,
    second_split_limit_ms: float,
) -> Trial:
    """Score ``candidate`` on every split (one only once it took ``second_split_limit_ms``)."""
    trial = Trial()
    for index, split in enumerate(splits):
        if index and trial.ms > second_split_limit_ms:
            trial.notes.append("one split only (slow)")
            break
        count = split.first.shape[0]
        data = to_tensor(np.concatenate([split.first, split.second]), device)
        factor = 0.5 if split.kind == "binomial" else 1.0

        def gain(split: DataSplit = split) -> float:
            if split.kind != "binomial" and split.part_gain is None:  # as restore() does
                split.part_gain = estimate_counts_gain(np.concatenate([split.first, split.second]))
            return split.gain if split.kind == "binomial" else float(split.part_gain or 1.0)

        start = time.perf_counter()
        output, caught = run_candidate(
            candidate, data, psf, device, gain, seed, scale, factor, cancel
        )
        elapsed = 1e3 * (time.perf_counter() - start)
        trial.ms += elapsed
        COSTS.record(candidate, split.first[0].size, elapsed / (2 * count), device)
        trial.notes.extend(caught)
        estimate = output.image
        first, second = estimate[:count], estimate[count:]
        out_psf = output.psf if candidate.method != IDENTITY and scale == 1 else None
        psf_first = psf_second = out_psf
        if out_psf is not None and out_psf.ndim == 3:
            psf_first, psf_second = out_psf[:count], out_psf[count:]
        ratio = torch.as_tensor(split.ratio, dtype=torch.float32, device=device)
        background = float(candidate.params.get("background", 0.0)) * factor
        if candidate.method == IDENTITY:
            background = 0.0
        with torch.no_grad():
            predicted_second = (
                ratio.view(-1, 1, 1)
                * predicted_measurement(candidate, first, psf_first, psf, scale)
                + background
            )
            predicted_first = (
                predicted_measurement(candidate, second, psf_second, psf, scale)
                / ratio.view(-1, 1, 1)
                + background
            )
            parts = (data[:count], data[count:])
            trial.scores.append(
                score_parts(
                    parts,
                    (predicted_first, predicted_second),
                    (first, second),
                    ratio,
                    weights,
                    margin,
                    scale,
                    split.noise_variance,
                    split.gain if split.kind == "binomial" else None,
                    0.0 if split.kind == "measurements" else EXTRAPOLATION,
                )
            )
        if trial.pair is None:
            trial.pair = (
                to_numpy(first[0]),
                to_numpy(second[0]) / float(split.ratio[0]),
            )
            if scale > 1 and candidate.method != IDENTITY:
                verdict = guard_figures(
                    *trial.pair, split.first[0], split.second[0], scale, split.kind
                )
                if verdict.invented_detail:
                    trial.notes.append(
                        f"{INVENTED_NOTE}: its restorations of the two parts agree down to "
                        f"{verdict.split_agreement_resolution_px:.2g} px, the parts themselves "
                        f"to {verdict.data_resolution_px:.2g} px"
                    )
    return trial
