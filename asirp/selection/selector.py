"""The adaptive selector: score the candidates that fit the data, keep the best, say why.

:func:`select` (and ``asirp.restore(..., method="auto")``) works in five steps:

1. **Policy.** A method pinned for the modality, or a choice remembered for this kind of scan
   (:mod:`asirp.policy`), is used at once, without scoring.
2. **Candidates.** The registered methods that fit (scale, PSF, blind or not, the caller's fixed
   parameters), each with a small grid of settings, and the input itself
   (:mod:`asirp.selection.candidates`).
3. **Split.** The data are split into two independent parts: binomial thinning for counts,
   Gaussian data fission for data that are not counts, or the caller's second measurement
   (:mod:`asirp.selection.splitting`), on a region of the map (the whole map in the thorough
   mode up to 256 x 256, the most structured 96 x 96 window in the cheap mode) and on up to three
   maps of a stack.
4. **Score.** Each candidate restores both parts; each restoration predicts the other part
   through the forward model and the weighted prediction error plus the out-of-band variance
   estimates its object-domain error (:mod:`asirp.selection.score`). Candidates whose estimated
   cost does not fit the latency budget are skipped (:mod:`asirp.selection.costs`).
5. **Choose.** The lowest score wins among the candidates whose full-size restoration still fits
   the budget. The :class:`Selection` lists every candidate with its score, cost and status, and
   the reasons in plain words.

Modes: ``"thorough"`` (the default without a budget; every grid setting, two independent splits)
for final results, ``"cheap"`` (the default with a budget; a short grid, one split, a small
region) for live updates. Both are seeded (``seed``): the same data, context and seed give the
same choice, except that with a budget the set of candidates scored depends on measured times
(the selection records which were).

Maps too small to score (less than :data:`MIN_INTERIOR_PX` pixels per side once a PSF radius is
left out at each edge) get the rule of :func:`asirp.auto.choose_method`, which also orders the
candidates in the cheap mode.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from asirp.backend import resolve_device, to_numpy, to_tensor
from asirp.iteration import estimate_counts_gain
from asirp.policy import MODALITIES, Policy, PolicyEntry
from asirp.psf import ResolvedPSF, psf_sigma_px, resolve_psf
from asirp.registry import MethodOutput, Problem, RestorationCancelled
from asirp.selection.candidates import (
    IDENTITY,
    Candidate,
    fitting_candidates,
    forward_model_for,
)
from asirp.selection.costs import COSTS, OVERHEAD
from asirp.selection.score import (
    EXTRAPOLATION,
    PartScores,
    band_alpha,
    band_weights,
    frc_resolution_px,
    gain_over_input_db,
    score_parts,
)
from asirp.selection.splitting import (
    DataSplit,
    binomial_split,
    fission_split,
    measurement_split,
)
from asirp.validation import as_image_stack, check_seed

MODES = ("cheap", "thorough")
CHEAP_REGION_PX = 96
"""Side of the region scored in the cheap mode, px."""
THOROUGH_REGION_PX = 256
"""Side of the region scored in the thorough mode, px."""
MIN_INTERIOR_PX = 16
"""Smallest scored interior (map side less a PSF radius at each edge), px."""
THOROUGH_SPLITS = 2
"""Independent splits averaged in the thorough mode (one in the cheap mode)."""
SECOND_SPLIT_LIMIT_MS = 2000.0
"""The thorough mode's second split is skipped for candidates that took longer than this, ms."""
NEGATIVE_FRACTION_LIMIT = 0.01
"""More negative pixels than this fraction: the data are not counts."""
BUDGET_RESERVE = 0.1
"""Fraction of the budget kept as a margin, on top of the measured (or prior) cost of the work
:func:`asirp.restore` does around the method (checks, quality figures)."""
BUDGET_RESERVE_MS = 3.0
"""Smallest reserve, ms."""


@dataclass(frozen=True)
class SelectionContext:
    """What the caller tells the selector about the data (validated by :func:`make_context`).

    Attributes
    ----------
    modality : {"xrf_map", "tomo_projection", "image"}
        Kind of data: µ-XRF maps are counts (binomial split); flat-fielded tomography
        projections are not (data fission); ``"image"`` decides from the data.
    psf_known : bool
        Whether the PSF is the true one (``False``: a guess; blind methods are candidates).
    second : numpy.ndarray or None
        An independent second measurement ``(B, H, W)``, float32 (used for the split).
    budget_ms : float or None
        Latency budget for selection plus restoration, ms.
    mode : {"cheap", "thorough"}
        How much to try.
    scale : int
        Output scale (1: deconvolution; 2 or 4: super-resolution).
    names : tuple of str or None
        Methods the caller allows (``None``: every fitting one).
    psf : numpy.ndarray or None
        The PSF on the input grid, ``(h, w)``, sum 1.
    psf_description : dict
        Where it came from (beam FWHM and pixel size in µm, sigma, file...).
    """

    modality: str = "image"
    psf_known: bool = True
    second: np.ndarray | None = None
    budget_ms: float | None = None
    mode: str = "thorough"
    scale: int = 1
    names: tuple[str, ...] | None = None
    psf: np.ndarray | None = None
    psf_description: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary (the second measurement by its shape only)."""
        return {
            "modality": self.modality,
            "psf_known": self.psf_known,
            "psf": self.psf_description,
            "second_measurement": list(self.second.shape) if self.second is not None else None,
            "budget_ms": self.budget_ms,
            "mode": self.mode,
            "scale": self.scale,
            "candidates": list(self.names) if self.names is not None else None,
        }


def make_context(
    stack: np.ndarray,
    resolved_psf: ResolvedPSF | None,
    *,
    modality: str = "image",
    psf_known: bool | None = None,
    second: Any = None,
    budget_ms: float | None = None,
    mode: str | None = None,
    scale: int = 1,
    candidates: Any = None,
) -> SelectionContext:
    """Check the caller's context and build a :class:`SelectionContext`.

    Parameters
    ----------
    stack : numpy.ndarray
        The data ``(B, H, W)``.
    resolved_psf : ResolvedPSF or None
        The PSF (:func:`asirp.psf.resolve_psf` checked its description: a negative beam FWHM or
        pixel size is refused there).
    modality, psf_known, second, budget_ms, mode, scale, candidates
        See :func:`select`.

    Raises
    ------
    ValueError
        Unknown modality or mode, a second measurement of another shape, a budget <= 0, a
        scale < 1, an unknown candidate name.
    TypeError
        Values of the wrong type.
    """
    if not isinstance(modality, str) or modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; allowed: {', '.join(MODALITIES)}")
    if psf_known is None:
        psf_known = resolved_psf is not None
    if not isinstance(psf_known, bool | np.bool_):
        raise TypeError(f"psf_known must be true or false, got {psf_known!r}")
    second_stack = None
    if second is not None:
        second_stack, _ = as_image_stack(second, "second measurement")
        if second_stack.shape != stack.shape:
            raise ValueError(
                f"the second measurement has shape {np.shape(second)}, but the image has shape "
                f"{stack.shape if stack.shape[0] > 1 else stack.shape[1:]}; they must match"
            )
    if budget_ms is not None:
        if isinstance(budget_ms, bool) or not isinstance(budget_ms, int | float | np.number):
            raise TypeError(f"budget_ms must be a number of milliseconds, got {budget_ms!r}")
        if not math.isfinite(float(budget_ms)) or budget_ms <= 0:
            raise ValueError(f"budget_ms must be finite and > 0 (ms), got {budget_ms!r}")
        budget_ms = float(budget_ms)
    if mode is None:
        mode = "cheap" if budget_ms is not None else "thorough"
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    names = None
    if candidates is not None:
        from asirp.registry import get_method

        if isinstance(candidates, str):
            candidates = (candidates,)
        names = tuple(str(name) for name in candidates)
        for name in names:
            if name != IDENTITY:
                get_method(name)
    return SelectionContext(
        modality=modality,
        psf_known=bool(psf_known),
        second=second_stack,
        budget_ms=budget_ms,
        mode=mode,
        scale=int(scale),
        names=names,
        psf=resolved_psf.array if resolved_psf is not None else None,
        psf_description=resolved_psf.description if resolved_psf is not None else {},
    )


@dataclass
class CandidateScore:
    """One candidate in a :class:`Selection`.

    Attributes
    ----------
    method : str
        Method name (``"identity"``: the input unchanged).
    params : dict
        Its parameters.
    label : str
        ``method(name=value, ...)``.
    status : {"chosen", "scored", "skipped", "failed"}
        What happened to it.
    score : float or None
        The no-reference score (lower is better; :mod:`asirp.selection.score`), data units
        squared; ``None`` if not scored.
    rank : int or None
        1 for the lowest score.
    gain_db : float or None
        Estimated error reduction over the unrestored input, dB (from the scores).
    deviance : float or None
        Mean Poisson deviance per pixel of its predictions (binomial splits).
    frc_resolution_px : float or None
        FRC (1/7) resolution of its two restorations, input pixels (``None``: not computed or
        not reached).
    cost_ms : float or None
        Estimated time of its restoration of the full data, ms.
    cost_source : str
        ``"measured"``, ``"scaled"`` or ``"prior"`` (see :mod:`asirp.selection.costs`).
    scoring_ms : float
        Time spent scoring it, ms.
    note : str
        Why it was skipped or failed, or warnings it raised.
    """

    method: str
    params: dict[str, Any]
    label: str
    status: str = "skipped"
    score: float | None = None
    rank: int | None = None
    gain_db: float | None = None
    deviance: float | None = None
    frc_resolution_px: float | None = None
    cost_ms: float | None = None
    cost_source: str = ""
    scoring_ms: float = 0.0
    note: str = ""


@dataclass
class Selection:
    """The result of :func:`select`.

    Attributes
    ----------
    method : str
        The chosen method (``"identity"``: leave the data as they are).
    params : dict
        Its parameters (the caller's fixed ones included).
    reason : str
        Why, in plain words.
    candidates : list of CandidateScore
        Every candidate: scored ones by rank, then skipped and failed ones.
    elapsed_s : float
        Time the selection took, s.
    mode : {"cheap", "thorough"}
        The mode used.
    seed : int
        Seed of the random split.
    source : {"scored", "pinned", "remembered", "rule"}
        How the choice was made.
    context : dict
        The context and the split, JSON-serialisable.
    """

    method: str
    params: dict[str, Any]
    reason: str
    candidates: list[CandidateScore]
    elapsed_s: float
    mode: str
    seed: int
    source: str
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def ranking(self) -> list[CandidateScore]:
        """The scored candidates, best first."""
        return [c for c in self.candidates if c.score is not None]

    @property
    def chosen(self) -> CandidateScore | None:
        """The chosen candidate's entry, when it was scored."""
        return next((c for c in self.candidates if c.status == "chosen"), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (``NaN`` becomes ``None``)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {key: clean(item) for key, item in value.items()}
            if isinstance(value, list | tuple):
                return [clean(item) for item in value]
            return value

        return clean(
            {
                "method": self.method,
                "params": self.params,
                "reason": self.reason,
                "source": self.source,
                "mode": self.mode,
                "seed": self.seed,
                "elapsed_s": round(self.elapsed_s, 6),
                "context": self.context,
                "candidates": [asdict(candidate) for candidate in self.candidates],
            }
        )


def select(
    image: Any,
    *,
    psf: Any = None,
    beam_fwhm_um: Any = None,
    pixel_um: Any = None,
    psf_sigma_px: Any = None,
    modality: str = "image",
    psf_known: bool | None = None,
    second: Any = None,
    budget_ms: float | None = None,
    mode: str | None = None,
    scale: int = 1,
    candidates: Any = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    policy: Policy | str | Any = None,
    remember: bool = True,
    cancel: threading.Event | None = None,
    **params: Any,
) -> Selection:
    """Choose a restoration method for ``image`` by a measured, no-reference score.

    Parameters
    ----------
    image : array_like
        Measured map ``(H, W)`` or stack ``(B, H, W)``.
    psf, beam_fwhm_um, pixel_um, psf_sigma_px
        The PSF, as for :func:`asirp.restore` (beam FWHM and scan step in µm, sigma in px, an
        array or a file).
    modality : {"image", "xrf_map", "tomo_projection"}
        Kind of data; decides how the data are split (see :class:`SelectionContext`).
    psf_known : bool, optional
        Whether the PSF is the true one; default: true when a PSF is described. ``False`` adds
        blind methods, which start from the given PSF as a guess.
    second : array_like, optional
        An independent second measurement of the same shape (another detector element): the
        score then compares restorations of one with the other, with no random split.
    budget_ms : float, optional
        Latency budget for selection plus restoration, ms; candidates whose estimated cost does
        not fit are skipped.
    mode : {"cheap", "thorough"}, optional
        Default: ``"cheap"`` with a budget, else ``"thorough"``.
    scale : int
        Output scale: 1 (deconvolution) or a super-resolution factor.
    candidates : sequence of str, optional
        Restrict the candidates to these methods (``"identity"`` is always one).
    seed : int
        Seed of the random split.
    device : str or torch.device
        Where candidates run (as :func:`asirp.restore`).
    policy : asirp.policy.Policy or path, optional
        Pinned and remembered choices; ``None`` uses none.
    remember : bool
        Store a scored choice in ``policy`` for scans of the same kind.
    cancel : threading.Event, optional
        Set it to stop (:class:`asirp.RestorationCancelled`).
    **params
        Method parameters to fix for every candidate (candidates without them are left out).

    Returns
    -------
    Selection
        The choice, the ranked candidates with scores and costs, the reasons and the time.

    Raises
    ------
    ValueError
        Bad image, bad context (negative FWHM, unknown modality, a second measurement of
        another shape, ...), or no PSF when every candidate needs one.
    TypeError
        Values of the wrong type.
    """
    started = time.perf_counter()
    stack, _ = as_image_stack(image)
    check_seed(seed)
    resolved_psf = resolve_psf(
        stack.shape,
        psf=psf,
        beam_fwhm_um=beam_fwhm_um,
        pixel_um=pixel_um,
        psf_sigma_px=psf_sigma_px,
    )
    context = make_context(
        stack,
        resolved_psf,
        modality=modality,
        psf_known=psf_known,
        second=second,
        budget_ms=budget_ms,
        mode=mode,
        scale=scale,
        candidates=candidates,
    )
    return select_stack(
        stack,
        context,
        params,
        seed=int(seed),
        device=resolve_device(device),
        policy=policy,
        remember=remember,
        cancel=cancel,
        started=started,
    )


def as_policy(policy: Any) -> Policy | None:
    """A :class:`~asirp.policy.Policy` from a policy, a path, or ``None``."""
    if policy is None or isinstance(policy, Policy):
        return policy
    import os

    if isinstance(policy, str | os.PathLike):
        return Policy.load(policy)
    raise TypeError(f"policy must be an asirp.policy.Policy or a file path, got {policy!r}")


def _split_kind(stack: np.ndarray, context: SelectionContext) -> tuple[str, str]:
    if context.second is not None:
        return "measurements", "a second independent measurement was given"
    if context.modality == "tomo_projection":
        return "fission", "tomography projections after flat-field are not counts"
    negative = float(np.mean(stack < 0))
    if negative > NEGATIVE_FRACTION_LIMIT:
        return "fission", f"{100 * negative:.1f} % of the pixels are negative (not counts)"
    return "binomial", "the data are non-negative counts"


def scan_kind(stack: np.ndarray, context: SelectionContext) -> str:
    """Key of "the same kind of scan" for remembered choices.

    Modality, scale, PSF sigma (to 0.25 px), count level (half decades of the mean), map shape
    and split kind.
    """
    if context.psf is not None:
        sigma = float(np.sqrt(np.prod(psf_sigma_px(context.psf))))
        blur = f"{round(4 * sigma) / 4:g}px"
    else:
        blur = "none"
    mean = float(np.mean(np.abs(stack)))
    level = f"1e{round(2 * math.log10(mean)) / 2:g}" if mean > 0 else "0"
    kind, _ = _split_kind(stack, context)
    shape = "x".join(str(n) for n in stack.shape[1:])
    return (
        f"{context.modality}|scale={context.scale}|psf={blur}|counts={level}|shape={shape}"
        f"|split={kind}"
    )


def _region(stack: np.ndarray, side: int, mode: str) -> tuple[list[int], tuple[int, int, int, int]]:
    """Maps of a stack and the window ``(top, left, rows, cols)`` to score."""
    count = stack.shape[0]
    if mode == "cheap":
        indices = [count // 2]
    else:
        indices = sorted({int(i) for i in np.linspace(0, count - 1, min(count, 3)).round()})
    rows, cols = stack.shape[1:]
    height, width = min(rows, side), min(cols, side)
    if (height, width) == (rows, cols):
        return indices, (0, 0, rows, cols)
    mean = stack[indices].mean(axis=0)
    best, window = -1.0, (0, 0)
    for top in np.linspace(0, rows - height, 3).astype(int):
        for left in np.linspace(0, cols - width, 3).astype(int):
            spread = float(np.var(mean[top : top + height, left : left + width]))
            if spread > best:
                best, window = spread, (int(top), int(left))
    return indices, (window[0], window[1], height, width)


def _make_split(
    data: np.ndarray, second: np.ndarray | None, kind: str, rng: np.random.Generator
) -> DataSplit:
    if kind == "measurements":
        assert second is not None
        return measurement_split(data, second)
    if kind == "fission":
        return fission_split(data, rng)
    return binomial_split(data, rng, estimate_counts_gain(data))


def _upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    if scale == 1:
        return images.clone()
    return F.interpolate(images[:, None], scale_factor=scale, mode="bicubic", align_corners=False)[
        :, 0
    ]


def _run(
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
        return MethodOutput(_upsample(data, scale), None), []
    spec = candidate.spec()
    assert spec is not None
    params = candidate.params
    if "background" in params:
        params["background"] = float(params["background"]) * background_factor
    resolved = spec.resolve_params(params)
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
    from asirp.backend import fast_fft_shape
    from asirp.blur import psf_to_otf

    rows, cols = images.shape[-2:]
    grid = fast_fft_shape((rows + psf.shape[-2] - 1, cols + psf.shape[-1] - 1))
    spectrum = torch.fft.rfft2(images, s=grid) * psf_to_otf(psf, grid)
    return torch.fft.irfft2(spectrum, s=grid)[..., :rows, :cols]


def _forward(
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
    try:
        from asirp.sr.degrade import degrade, sigma_from_psf
    except ImportError:  # pragma: no cover - the super-resolution package ships with the core
        pooled = F.avg_pool2d(estimate[:, None], scale)[:, 0]
        return pooled if psf is None else linear_blur(pooled, psf)
    if psf is not None:
        sigma = sigma_from_psf(psf)
    elif output_psf is not None:
        sigma = sigma_from_psf(output_psf) / scale
    else:
        return F.avg_pool2d(estimate[:, None], scale)[:, 0]
    return degrade(estimate, sigma, scale)


@dataclass
class _Trial:
    """Scores of one candidate over the splits, and its restorations of the first split."""

    scores: list[PartScores] = field(default_factory=list)
    pair: tuple[np.ndarray, np.ndarray] | None = None
    ms: float = 0.0
    notes: list[str] = field(default_factory=list)


def _score_candidate(
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
) -> _Trial:
    trial = _Trial()
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
        output, caught = _run(candidate, data, psf, device, gain, seed, scale, factor, cancel)
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
                ratio.view(-1, 1, 1) * _forward(candidate, first, psf_first, psf, scale)
                + background
            )
            predicted_first = (
                _forward(candidate, second, psf_second, psf, scale) / ratio.view(-1, 1, 1)
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
    return trial


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
        _run(candidate, pair, psf_tensor, compute, lambda: 1.0, seed, scale, 1.0, None)
        for data in (pair, full):
            start = time.perf_counter()
            _run(candidate, data, psf_tensor, compute, lambda: 1.0, seed, scale, 1.0, None)
            elapsed = 1e3 * (time.perf_counter() - start)
            COSTS.record(candidate, data[0].numel(), elapsed / data.shape[0], compute)
        measured[candidate.label] = elapsed
    from asirp.metrics import summary

    kernel = resolved.array if resolved is not None else None
    for _ in range(2):  # the quality figures restore() computes; the first call is untimed
        start = time.perf_counter()
        summary(stack[0], stack[0], kernel)
        elapsed = 1e3 * (time.perf_counter() - start)
    COSTS.record(OVERHEAD, rows * cols, elapsed, compute)
    measured[OVERHEAD.method] = elapsed
    return measured


def _mean(values: list[np.ndarray]) -> float:
    return float(np.mean(np.concatenate([np.atleast_1d(v) for v in values])))


def _rule_selection(
    stack: np.ndarray,
    context: SelectionContext,
    fixed: dict[str, Any],
    why: str,
    *,
    seed: int,
    started: float,
    extra: dict[str, Any],
) -> Selection:
    from asirp.auto import choose_method

    rule = choose_method(stack, context.psf is not None)
    return Selection(
        rule.method,
        {**rule.params, **fixed},
        f"{rule.reason} ({why})",
        [],
        time.perf_counter() - started,
        context.mode,
        seed,
        "rule",
        {**context.describe(), **extra},
    )


def _policy_selection(
    entry: PolicyEntry,
    source: str,
    context: SelectionContext,
    fixed: dict[str, Any],
    *,
    seed: int,
    started: float,
    extra: dict[str, Any],
) -> Selection:
    if source == "pinned":
        why = f"pinned by the operator for {context.modality}"
    else:
        why = "remembered from an earlier selection on a scan of the same kind"
    when = f" on {entry.date}" if entry.date else ""
    note = f": {entry.note}" if entry.note else ""
    params = {**entry.params, **fixed} if entry.method != IDENTITY else {}
    return Selection(
        entry.method,
        params,
        f"{why}{when}{note}",
        [],
        time.perf_counter() - started,
        context.mode,
        seed,
        source,
        {**context.describe(), **extra},
    )


def _fits(entry: PolicyEntry, candidates: list[Candidate]) -> bool:
    return any(candidate.method == entry.method for candidate in candidates)


@dataclass
class _Scoring:
    """One scored selection in progress: the split, the weights, the candidates and the budget."""

    context: SelectionContext
    splits: list[DataSplit]
    psf: torch.Tensor | None
    weights: Any
    margin: int
    device: torch.device
    seed: int
    cancel: threading.Event | None
    started: float
    full_pixels: int
    region_pixels: int
    batch: int
    maps: int
    entries: dict[Candidate, CandidateScore]
    trials: dict[Candidate, _Trial] = field(default_factory=dict)
    reserve: float = 0.0

    def __post_init__(self) -> None:
        for candidate in self.entries:
            self.update_cost(candidate)
        budget = self.context.budget_ms
        if budget is not None:
            overhead, _ = COSTS.estimate(OVERHEAD, self.full_pixels, self.device)
            self.reserve = max(BUDGET_RESERVE_MS, BUDGET_RESERVE * budget) + overhead * self.batch

    def update_cost(self, candidate: Candidate) -> None:
        """The estimated cost of restoring the data with ``candidate`` (ms)."""
        per_image, source = COSTS.estimate(candidate, self.full_pixels, self.device)
        entry = self.entries[candidate]
        entry.cost_ms, entry.cost_source = per_image * self.batch, source

    def scoring_estimate(self, candidate: Candidate) -> float:
        """The estimated cost of scoring ``candidate`` (ms): both parts of every split."""
        per_image, _ = COSTS.estimate(candidate, self.region_pixels, self.device)
        return per_image * 2 * self.maps * len(self.splits)

    def elapsed_ms(self) -> float:
        """Time since the caller's work began, ms."""
        return 1e3 * (time.perf_counter() - self.started)

    def order(self, stack: np.ndarray) -> list[Candidate]:
        """The input first, then the rule's choice (the cheap mode's prior), then by cost."""
        from asirp.auto import choose_method

        prior = choose_method(stack, True) if self.context.psf is not None else None

        def is_prior(candidate: Candidate) -> bool:
            return (
                prior is not None
                and candidate.method == prior.method
                and all(candidate.params.get(k) == v for k, v in prior.params.items())
            )

        return sorted(
            self.entries,
            key=lambda c: (c.method != IDENTITY, not is_prior(c), self.scoring_estimate(c)),
        )

    def fits(self, candidate: Candidate) -> bool:
        """Whether scoring and then restoring with ``candidate`` fits what is left of the budget."""
        budget = self.context.budget_ms
        if budget is None or candidate.method == IDENTITY:
            return True
        entry = self.entries[candidate]
        elapsed = self.elapsed_ms()
        needed = self.scoring_estimate(candidate) + (entry.cost_ms or 0.0)
        if elapsed + needed + self.reserve <= budget:
            return True
        entry.note = (
            f"estimated cost {needed:.0f} ms (scoring and restoring) exceeds the "
            f"{budget - elapsed - self.reserve:.0f} ms left of the {budget:.0f} ms budget"
        )
        return False

    def score(self, candidate: Candidate) -> None:
        """Score ``candidate`` on the splits (a failure is recorded, not raised)."""
        entry = self.entries[candidate]
        start = time.perf_counter()
        try:
            trial = _score_candidate(
                candidate,
                self.splits,
                psf=self.psf,
                device=self.device,
                seed=self.seed,
                scale=self.context.scale,
                margin=self.margin,
                weights=self.weights,
                cancel=self.cancel,
                second_split_limit_ms=SECOND_SPLIT_LIMIT_MS,
            )
        except RestorationCancelled:
            raise
        except (ValueError, TypeError, RuntimeError) as error:
            entry.status, entry.note = "failed", f"{type(error).__name__}: {error}"
            entry.scoring_ms = 1e3 * (time.perf_counter() - start)
            return
        entry.scoring_ms = 1e3 * (time.perf_counter() - start)
        self.trials[candidate] = trial
        entry.status = "scored"
        entry.score = _mean([s.total for s in trial.scores])
        if trial.scores[0].deviance is not None:
            entry.deviance = _mean([s.deviance for s in trial.scores if s.deviance is not None])
        if trial.notes:
            entry.note = "; ".join(trial.notes)
        self.update_cost(candidate)

    def choose(self) -> tuple[list[Candidate], Candidate, list[Candidate]]:
        """Rank the scored candidates and pick the best whose restoration fits the budget.

        Returns
        -------
        scored : list of Candidate
            Best first.
        chosen : Candidate
            The choice (the input when nothing else fits).
        passed_over : list of Candidate
            Better-scored candidates that would not finish within the budget.
        """
        entries, budget = self.entries, self.context.budget_ms
        scored = sorted(self.trials, key=lambda c: entries[c].score or 0.0)
        for rank, candidate in enumerate(scored, start=1):
            entries[candidate].rank = rank
        identity = next(c for c in entries if c.method == IDENTITY)
        if identity in self.trials:
            noise = _mean([s.noise for s in self.trials[identity].scores])
            input_score = entries[identity].score or 0.0
            for candidate in scored:
                score = entries[candidate].score or 0.0
                entries[candidate].gain_db = gain_over_input_db(score, input_score, noise)
        elapsed = self.elapsed_ms()
        chosen, passed_over = identity, []
        for candidate in scored:
            cost = entries[candidate].cost_ms or 0.0
            if (
                budget is None
                or candidate.method == IDENTITY
                or elapsed + cost + self.reserve <= budget
            ):
                chosen = candidate
                break
            passed_over.append(candidate)
        entries[chosen].status = "chosen"
        for candidate in scored if self.context.mode == "thorough" else [chosen]:
            pair = self.trials[candidate].pair if candidate in self.trials else None
            if pair is not None:
                resolution = frc_resolution_px(pair[0], pair[1], self.context.scale)
                entries[candidate].frc_resolution_px = (
                    resolution if math.isfinite(resolution) else None
                )
        return scored, chosen, passed_over


def select_stack(
    stack: np.ndarray,
    context: SelectionContext,
    fixed: dict[str, Any],
    *,
    seed: int = 0,
    device: torch.device | None = None,
    policy: Any = None,
    remember: bool = True,
    cancel: threading.Event | None = None,
    started: float | None = None,
) -> Selection:
    """:func:`select` on a checked stack ``(B, H, W)`` float32 and a built context.

    ``started`` (a :func:`time.perf_counter` value) is when the caller's work began: the
    budget counts from there. See :func:`select` for the rest.
    """
    started = time.perf_counter() if started is None else started
    device = device if device is not None else torch.device("cpu")
    policy = as_policy(policy)
    kind_key = scan_kind(stack, context)
    extra: dict[str, Any] = {"scan_kind": kind_key}
    candidates, excluded = fitting_candidates(
        scale=context.scale,
        has_psf=context.psf is not None,
        psf_known=context.psf_known,
        mode=context.mode,
        fixed=fixed,
        names=context.names,
    )
    if len(candidates) == 1 and context.psf is None and context.scale == 1:
        raise ValueError(
            "method='auto' needs the PSF: give beam_fwhm_um and pixel_um (µm), psf_sigma_px, "
            "or a psf array/file; or choose method='blind_richardson_lucy' with an initial guess"
        )
    if policy is not None:
        if policy.costs:
            COSTS.update(policy.costs)
        for source, entry in (
            ("pinned", policy.pinned(context.modality)),
            ("remembered", policy.remembered(kind_key)),
        ):
            if entry is not None and (entry.method == IDENTITY or _fits(entry, candidates)):
                return _policy_selection(
                    entry, source, context, fixed, seed=seed, started=started, extra=extra
                )

    split_kind, split_why = _split_kind(stack, context)
    margin = max(context.psf.shape) // 2 if context.psf is not None else 1
    side = CHEAP_REGION_PX if context.mode == "cheap" else THOROUGH_REGION_PX
    indices, (top, left, rows, cols) = _region(stack, side, context.mode)
    interior = (rows - 2 * margin, cols - 2 * margin)
    if min(interior) < MIN_INTERIOR_PX:
        if context.psf is None:
            raise ValueError(
                f"the map ({stack.shape[1]}x{stack.shape[2]} px) is too small to score candidates"
            )
        return _rule_selection(
            stack,
            context,
            fixed,
            f"the map is too small to score candidates on a split: {rows}x{cols} px less a "
            f"PSF radius of {margin} px at each edge leaves less than {MIN_INTERIOR_PX} px",
            seed=seed,
            started=started,
            extra=extra,
        )

    window = (slice(None), slice(top, top + rows), slice(left, left + cols))
    data = stack[indices][window]
    second = context.second[indices][window] if context.second is not None else None
    rng = np.random.default_rng(seed)
    n_splits = 1 if (context.mode == "cheap" or split_kind == "measurements") else THOROUGH_SPLITS
    splits = [_make_split(data, second, split_kind, rng) for _ in range(n_splits)]
    alpha = band_alpha(data)
    scoring = _Scoring(
        context=context,
        splits=splits,
        psf=to_tensor(context.psf, device) if context.psf is not None else None,
        weights=band_weights(context.psf, interior, context.scale, device, alpha),
        margin=margin,
        device=device,
        seed=seed,
        cancel=cancel,
        started=started,
        full_pixels=stack.shape[1] * stack.shape[2],
        region_pixels=rows * cols,
        batch=stack.shape[0],
        maps=len(indices),
        entries={c: CandidateScore(c.method, c.params, c.label) for c in candidates},
    )
    for candidate in scoring.order(stack):
        if cancel is not None and cancel.is_set():
            raise RestorationCancelled("selection was cancelled")
        if scoring.fits(candidate):
            scoring.score(candidate)
    scored, chosen, passed_over = scoring.choose()
    entries, trials, budget = scoring.entries, scoring.trials, context.budget_ms

    split_description = splits[0].description
    extra.update(
        {
            "split": split_kind,
            "split_reason": split_why,
            "splits": n_splits,
            "region": [top, left, rows, cols],
            "maps_scored": indices,
            "margin_px": margin,
            "band_alpha": alpha,
            "excluded": excluded,
        }
    )
    reason = _reason(
        entries,
        chosen,
        scored,
        passed_over,
        split_description,
        split_why,
        (rows, cols),
        budget,
        seed,
        n_splits,
    )
    ordered = [entries[c] for c in scored] + [entries[c] for c in candidates if c not in trials]
    selection = Selection(
        chosen.method,
        chosen.params if chosen.method != IDENTITY else {},
        reason,
        ordered,
        time.perf_counter() - started,
        context.mode,
        seed,
        "scored",
        {**context.describe(), **extra},
    )
    if policy is not None:
        policy.costs = COSTS.to_dict()
        if remember:
            policy.remember(
                kind_key,
                PolicyEntry(
                    selection.method,
                    selection.params,
                    reason,
                    score=entries[chosen].score,
                ),
            )
        else:
            policy.save()
    return selection


def _reason(
    entries: dict[Candidate, CandidateScore],
    chosen: Candidate,
    scored: list[Candidate],
    passed_over: list[Candidate],
    split_description: str,
    split_why: str,
    region: tuple[int, int],
    budget: float | None,
    seed: int,
    n_splits: int,
) -> str:
    """The plain-words account of a scored selection."""
    winner = entries[chosen]
    words = [
        f"Scored {len(scored)} of {len(entries)} candidates on a {region[0]}x{region[1]} px "
        f"region ({n_splits} split{'s' if n_splits > 1 else ''}, seed {seed}): each restored "
        f"one part of the data and predicted the other. Split: {split_description}, since "
        f"{split_why}."
    ]
    if chosen.method == IDENTITY and winner.score is not None and scored[0] == chosen:
        words.append("No candidate predicted the held-out data better than the input itself.")
    elif winner.score is not None:
        words.append(f"{winner.label} predicted best")
        runner_up = next((entries[c] for c in scored if c != chosen), None)
        if runner_up is not None and runner_up.score:
            below = 100 * (1 - winner.score / runner_up.score)
            digits = 1 if abs(below) < 10 else 0
            words[-1] += f" (score {below:.{digits}f} % below the runner-up {runner_up.label})"
        if winner.gain_db is not None and chosen.method != IDENTITY:
            words[-1] += f"; its estimated error is {winner.gain_db:.1f} dB below the input's"
        words[-1] += "."
    if passed_over:
        names = ", ".join(entries[c].label for c in passed_over)
        words.append(f"Better-scored {names} would not finish within the budget.")
    skipped = [e.label for e in entries.values() if e.status == "skipped" and e.note]
    if skipped and budget is not None:
        words.append(f"Not scored within the {budget:.0f} ms budget: {', '.join(skipped)}.")
    failed = [e.label for e in entries.values() if e.status == "failed"]
    if failed:
        words.append(f"Failed on this data: {', '.join(failed)}.")
    if chosen.method == IDENTITY and winner.score is None:
        words.append("Nothing else fit the budget, so the data are left as they are.")
    return " ".join(words)
