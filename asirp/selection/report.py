"""What a selection reports: every candidate's entry, the :class:`Selection`, and the reasons.

:class:`Selection` is what :func:`asirp.select` returns and what ``asirp.restore(method="auto")``
records (``params["selection"]``, through :meth:`Selection.to_dict`); :func:`explain_choice`
writes the plain-words account of a scored selection (``params["auto_reason"]``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from asirp.selection.candidates import IDENTITY, Candidate
from asirp.selection.prior import SR_PRIOR_MARGIN_DB


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


def explain_choice(
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
    below_margin: list[Candidate] | None = None,
    margin_db: float = 0.0,
    invented: list[Candidate] | None = None,
    kept_prior: Candidate | None = None,
) -> str:
    """The plain-words account of a scored selection.

    ``below_margin`` are better-scored candidates passed over because their estimated gain
    over the input is below ``margin_db`` (dB), best first. ``invented`` are the scored
    super-resolution candidates the split-data guard flagged
    (:data:`asirp.sr.guard.INVENTED_NOTE` in their note): when the winner is one of them, the
    account cautions that its detail is the method's prior's, not the data's (the score judges
    predictions of the measured data, which such detail does not change), and names the
    best-scored candidate without the flag. ``kept_prior`` is the super-resolution prior when
    it was kept although another candidate scored better (within the prior's margin,
    :func:`asirp.selection.prior.keeps_sr_prior`).
    """
    winner = entries[chosen]
    words = [
        f"Scored {len(scored)} of {len(entries)} candidates on a {region[0]}x{region[1]} px "
        f"region ({n_splits} split{'s' if n_splits > 1 else ''}, seed {seed}): each restored "
        f"one part of the data and predicted the other. Split: {split_description}, since "
        f"{split_why}."
    ]
    if below_margin:
        best = entries[below_margin[0]]
        others = len(below_margin) - 1
        words.append(
            f"{best.label} predicted best, but its estimated gain over the input "
            f"({best.gain_db:+.2f} dB) is below the {margin_db:g} dB margin this modality "
            "requires"
            + (f" (as for {others} other candidate{'s' if others > 1 else ''})" if others else "")
            + "."
        )
        if chosen.method == IDENTITY:
            words.append("The data are left as they are.")
        elif winner.gain_db is not None:
            words.append(
                f"{winner.label} is the best-scored candidate above it (estimated error "
                f"{winner.gain_db:.1f} dB below the input's)."
            )
    elif chosen.method == IDENTITY and winner.score is not None and scored[0] == chosen:
        words.append("No candidate predicted the held-out data better than the input itself.")
    elif kept_prior is not None and chosen == kept_prior and winner.gain_db is not None:
        best = entries[scored[0]]
        words.append(
            f"{winner.label}, the super-resolution prior (the best single method on the "
            f"training-side held-out maps), is kept: its estimated error is {winner.gain_db:.1f} "
            f"dB below the input's, and the best-scored {best.label} estimated only "
            f"{(best.gain_db or 0.0) - winner.gain_db:.2f} dB more, within the "
            f"{SR_PRIOR_MARGIN_DB:g} dB a split score cannot resolve at scale > 1 (it judges "
            "predictions of the measured data, which detail finer than the data hardly "
            "changes)."
        )
    elif winner.score is not None:
        words.append(f"{winner.label} predicted best (score {winner.score:.4g})")
        runner_up = next((entries[c] for c in scored if c != chosen), None)
        if runner_up is not None and runner_up.score:
            below = 100 * (1 - winner.score / runner_up.score)
            digits = 1 if abs(below) < 10 else 0
            words[-1] = words[-1][:-1] + (
                f", {below:.{digits}f} % below the runner-up {runner_up.label})"
            )
        if winner.gain_db is not None and chosen.method != IDENTITY:
            words[-1] += f"; its estimated error is {winner.gain_db:.1f} dB below the input's"
        words[-1] += "."
    if invented and chosen in invented:
        clean = [entries[c].label for c in scored if c not in invented and c != chosen]
        words.append(
            f"Caution: the split-data guard found {winner.label}'s detail prior-driven (its "
            "restorations of the two parts agree on detail finer than the parts themselves "
            "agree on): real where the method's prior fits the sample, invented where it does "
            "not; the score cannot tell"
            + (f". Best-scored without that flag: {clean[0]}." if clean else ".")
        )
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
