"""Selections made without scoring: a pinned or remembered policy entry, or the rule prior.

:func:`policy_selection` uses a method pinned for the modality or remembered for the kind of
scan (:mod:`asirp.selection.policy`); :func:`rule_selection` applies the rule prior
(:func:`asirp.selection.prior.choose_method`) to maps too small to score.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from asirp.selection.candidates import IDENTITY, Candidate
from asirp.selection.context import SelectionContext
from asirp.selection.policy import Policy, PolicyEntry
from asirp.selection.prior import choose_method
from asirp.selection.report import Selection


def as_policy(policy: Any) -> Policy | None:
    """A :class:`~asirp.policy.Policy` from a policy, a path, or ``None``."""
    if policy is None or isinstance(policy, Policy):
        return policy
    if isinstance(policy, str | os.PathLike):
        return Policy.load(policy)
    raise TypeError(f"policy must be an asirp.policy.Policy or a file path, got {policy!r}")


def rule_selection(
    stack: np.ndarray,
    context: SelectionContext,
    fixed: dict[str, Any],
    why: str,
    *,
    seed: int,
    started: float,
    extra: dict[str, Any],
) -> Selection:
    """The rule prior's choice (maps too small to score); ``why`` says why it decides."""
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


def policy_selection(
    entry: PolicyEntry,
    source: str,
    context: SelectionContext,
    fixed: dict[str, Any],
    *,
    seed: int,
    started: float,
    extra: dict[str, Any],
) -> Selection:
    """The choice ``entry`` pinned (``source="pinned"``) or remembered, without scoring."""
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


def policy_fits(entry: PolicyEntry, candidates: list[Candidate]) -> bool:
    """Whether a policy entry's method is among the fitting candidates."""
    return any(candidate.method == entry.method for candidate in candidates)
