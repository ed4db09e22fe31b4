"""Selections made without scoring: a pinned or remembered policy entry, or the rule prior.

:func:`policy_selection` uses a method pinned for the modality or remembered for the kind of
scan (:mod:`asirp.selection.policy`); :func:`rule_selection` applies the rule prior
(:func:`asirp.selection.prior.choose_method`) to maps too small to score. Both say what of the
caller's context their choice does not honour (:func:`ignored_context`).
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


def ignored_context(
    context: SelectionContext, method: str, params: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """What the caller asked of ``auto`` that a choice made without scoring does not honour.

    A scored choice is always among the candidates that fit the context; a rule prior's choice
    or a policy entry need not be: it may run at another scale than the one asked for, take as
    known a PSF the caller called a guess, lie outside the allowed candidates, and it uses no
    second measurement.

    Parameters
    ----------
    context : SelectionContext
        What the caller said.
    method : str
        The method chosen (``"identity"``: the input, at the scale asked for).
    params : dict
        Its parameters.

    Returns
    -------
    dict
        Parameter name -> ``{"given": value, "why": sentence}``; empty when all were honoured.
    """
    ignored: dict[str, dict[str, Any]] = {}
    if context.second is not None:
        ignored["second"] = {
            "given": f"an array of shape {list(context.second.shape)}",
            "why": "nothing was scored, so the second measurement was not used",
        }
    if method == IDENTITY:
        return ignored
    spec = Candidate.make(method).spec()
    assert spec is not None
    ran_scale = int(params.get("scale", spec.scale))
    if ran_scale != context.scale:
        ignored["scale"] = {
            "given": context.scale,
            "why": f"{method} restores at scale {ran_scale}",
        }
    if not context.psf_known and spec.family != "blind":
        ignored["psf_known"] = {
            "given": False,
            "why": f"{method} takes the PSF as known and does not estimate it",
        }
    if context.names is not None and method not in context.names:
        ignored["candidates"] = {
            "given": list(context.names),
            "why": f"{method} is not among them",
        }
    return ignored


def describe_ignored(ignored: dict[str, dict[str, Any]]) -> str:
    """``"; ignored: scale=2 (why), ..."`` for a reason, or ``""``."""
    if not ignored:
        return ""
    parts = [f"{name}={entry['given']!r} ({entry['why']})" for name, entry in ignored.items()]
    return f"; ignored: {', '.join(parts)}"


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
    """The rule prior's choice (maps too small to score); ``why`` says which check failed.

    The reason says what ran (the rule's own reason first), why it was not scored, and what
    the choice ignores (:func:`ignored_context`); the context records ``unscored_reason`` and
    ``ignored_parameters`` for :meth:`asirp.Restoration.cautions`.
    """
    rule = choose_method(stack, context.psf is not None)
    params = {**rule.params, **fixed}
    ignored = ignored_context(context, rule.method, params)
    reason = f"{rule.reason} (not scored: {why}; the rule prior chose instead)"
    return Selection(
        rule.method,
        params,
        reason + describe_ignored(ignored),
        [],
        time.perf_counter() - started,
        context.mode,
        seed,
        "rule",
        {
            **context.describe(),
            **extra,
            "unscored_reason": why,
            "ignored_parameters": ignored,
        },
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
    ignored = ignored_context(context, entry.method, params)
    return Selection(
        entry.method,
        params,
        f"{why}{when}{note}{describe_ignored(ignored)}",
        [],
        time.perf_counter() - started,
        context.mode,
        seed,
        source,
        {**context.describe(), **extra, "ignored_parameters": ignored},
    )


def policy_fits(entry: PolicyEntry, candidates: list[Candidate]) -> bool:
    """Whether a policy entry's method is among the fitting candidates."""
    return any(candidate.method == entry.method for candidate in candidates)
