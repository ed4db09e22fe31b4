"""The budgeted loop of :func:`select` and :func:`select_stack` (told in :mod:`asirp.selection`)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from asirp.backend import resolve_device, to_tensor
from asirp.iteration import check_counts_gain, estimate_counts_gain
from asirp.psf import resolve_psf
from asirp.registry import RestorationCancelled
from asirp.selection.candidates import IDENTITY, Candidate, fitting_candidates
from asirp.selection.context import (
    CHEAP_REGION_PX,
    THOROUGH_REGION_PX,
    SelectionContext,
    alpha_floor,
    emphasis_for,
    how_to_split,
    identity_margin_db,
    make_context,
    scan_kind,
)
from asirp.selection.costs import COSTS, OVERHEAD
from asirp.selection.policy import Policy, PolicyEntry
from asirp.selection.prior import SR_PRIOR_METHOD, choose_method, keeps_sr_prior
from asirp.selection.report import CandidateScore, Selection, explain_choice
from asirp.selection.score import band_alpha, band_weights, frc_resolution_px, gain_over_input_db
from asirp.selection.shortcuts import as_policy, policy_fits, policy_selection, rule_selection
from asirp.selection.splitting import DataSplit, binomial_split, fission_split, measurement_split
from asirp.selection.trials import Trial, score_candidate
from asirp.sr.guard import INVENTED_NOTE
from asirp.validation import as_image_stack, check_seed

MIN_INTERIOR_PX = 16
"""Smallest scored interior (map side less a PSF radius at each edge), px."""


THOROUGH_SPLITS = 2
"""Independent splits averaged in the thorough mode (one in the cheap mode)."""


SECOND_SPLIT_LIMIT_MS = 2000.0
"""With a budget, the thorough mode's second split is skipped for candidates that took longer
than this, ms (without one, only a method's ``SelectorGrid.max_splits`` limits the splits)."""


BUDGET_RESERVE = 0.1
"""Fraction of the budget kept as a margin, on top of the measured (or prior) cost of the work
:func:`asirp.restore` does around the method (checks, quality figures)."""


BUDGET_RESERVE_MS = 3.0
"""Smallest reserve, ms."""


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
    counts_gain: float | None = None,
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
    counts_gain : float, optional
        Values per detected count (``1 / I0`` of a map divided by its monitor): the binomial
        split thins counts of that size (default: estimated from the noise).
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
    gain = check_counts_gain(counts_gain)
    if gain is not None:
        context = replace(context, counts_gain=gain)
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
    data: np.ndarray,
    second: np.ndarray | None,
    kind: str,
    rng: np.random.Generator,
    counts_gain: float | None = None,
) -> DataSplit:
    if kind == "measurements":
        assert second is not None
        return measurement_split(data, second)
    if kind == "fission":
        return fission_split(data, rng)
    gain = counts_gain if counts_gain is not None else estimate_counts_gain(data)
    return binomial_split(data, rng, gain)


def _mean(values: list[np.ndarray]) -> float:
    return float(np.mean(np.concatenate([np.atleast_1d(v) for v in values])))


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
    trials: dict[Candidate, Trial] = field(default_factory=dict)
    reserve: float = 0.0
    below_margin: list[Candidate] = field(default_factory=list)
    kept_prior: Candidate | None = None
    invented: list[Candidate] = field(default_factory=list)

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
        spec = candidate.spec()
        limit = spec.selector_grid.max_splits if spec is not None else None
        try:
            trial = score_candidate(
                candidate,
                self.splits[:limit] if limit else self.splits,
                psf=self.psf,
                device=self.device,
                seed=self.seed,
                scale=self.context.scale,
                margin=self.margin,
                weights=self.weights,
                cancel=self.cancel,
                # only a budget may cut the second split by time: without one the choice
                # must not depend on the clock (the same data and seed, the same choice)
                second_split_limit_ms=(
                    SECOND_SPLIT_LIMIT_MS if self.context.budget_ms is not None else math.inf
                ),
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

    def prior_first(self, scored: list[Candidate]) -> list[Candidate]:
        """``scored`` with the super-resolution prior first when it keeps its place.

        At ``scale > 1`` the prior (:data:`asirp.selection.prior.SR_PRIOR_METHOD`) goes first
        when it beats the input and the best-scored candidate's estimated gain is within
        :data:`asirp.selection.prior.SR_PRIOR_MARGIN_DB` of its own
        (:func:`asirp.selection.prior.keeps_sr_prior`); it is recorded in ``kept_prior``.
        """
        entries = self.entries
        if self.context.scale == 1 or not scored:
            return scored
        prior = next((c for c in scored if c.method == SR_PRIOR_METHOD), None)
        best = scored[0]
        if prior is None or prior == best or best.method == IDENTITY:
            return scored
        if not keeps_sr_prior(entries[prior].gain_db, entries[best].gain_db):
            return scored
        self.kept_prior = prior
        return [prior, *(c for c in scored if c != prior)]

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
        margin_db = identity_margin_db(self.context)
        for candidate in self.prior_first(scored):
            gain = entries[candidate].gain_db
            if candidate.method != IDENTITY and gain is not None and gain < margin_db:
                self.below_margin.append(candidate)
                continue
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
        # the guard's flag is a caution, not a veto: detail a right prior restores is flagged
        # too (on the held-out grains the flagged networks were 3-5 dB above bicubic)
        self.invented = [
            c for c in scored if c.method != IDENTITY and INVENTED_NOTE in entries[c].note
        ]
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
        modality=context.modality,
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
            if entry is not None and (entry.method == IDENTITY or policy_fits(entry, candidates)):
                return policy_selection(
                    entry, source, context, fixed, seed=seed, started=started, extra=extra
                )

    split_kind, split_why = how_to_split(stack, context)
    margin = max(context.psf.shape) // 2 if context.psf is not None else 1
    side = CHEAP_REGION_PX if context.mode == "cheap" else THOROUGH_REGION_PX
    indices, (top, left, rows, cols) = _region(stack, side, context.mode)
    interior = (rows - 2 * margin, cols - 2 * margin)
    if min(interior) < MIN_INTERIOR_PX:
        if context.psf is None:
            raise ValueError(
                f"the map ({stack.shape[1]}x{stack.shape[2]} px) is too small to score candidates"
            )
        return rule_selection(
            stack,
            context,
            fixed,
            f"the map is too small to score candidates on a split: {rows}x{cols} px less a "
            f"PSF radius of {margin} px at each edge leaves {max(interior[0], 0)}x"
            f"{max(interior[1], 0)} px, less than the {MIN_INTERIOR_PX} px per side needed",
            seed=seed,
            started=started,
            extra=extra,
        )

    window = (slice(None), slice(top, top + rows), slice(left, left + cols))
    data = stack[indices][window]
    second = context.second[indices][window] if context.second is not None else None
    rng = np.random.default_rng(seed)
    n_splits = 1 if (context.mode == "cheap" or split_kind == "measurements") else THOROUGH_SPLITS
    splits = [
        _make_split(data, second, split_kind, rng, context.counts_gain) for _ in range(n_splits)
    ]
    alpha = max(band_alpha(data), alpha_floor(context))
    scoring = _Scoring(
        context=context,
        splits=splits,
        psf=to_tensor(context.psf, device) if context.psf is not None else None,
        weights=band_weights(
            context.psf, interior, context.scale, device, alpha, emphasis_for(context)
        ),
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
    reason = explain_choice(
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
        scoring.below_margin,
        identity_margin_db(context),
        scoring.invented,
        scoring.kept_prior,
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
