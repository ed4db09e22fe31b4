"""Measured automatic method selection: the ``method="auto"`` of :func:`asirp.restore`.

No single method wins on every kind of data, and at a beamline nobody has the ground truth. The
selector therefore *measures*: it splits the data into two parts with independent noise,
restores each with every candidate that fits, predicts the other part through the forward
model, and keeps the candidate whose predictions are best (:mod:`asirp.selection.score`). The
same score picks iteration counts and regularisers, the input itself is a candidate (so the
choice is never worse than doing nothing, by the score's own judgement), candidates that do not
fit a latency budget are skipped, and an operator can pin a method (:mod:`asirp.selection.policy`).

Modules
-------
:mod:`~asirp.selection.selector`
    :func:`select`: the steps and the budgeted loop.
:mod:`~asirp.selection.context`
    What the caller says about the data; the modes; the kind of scan.
:mod:`~asirp.selection.report`
    :class:`Selection`, every candidate's entry, the reasons in plain words.
:mod:`~asirp.selection.trials`
    A candidate restores the parts of a split and predicts the other part.
:mod:`~asirp.selection.shortcuts`
    Choices without scoring: pinned or remembered, or the rule prior.
:mod:`~asirp.selection.measure`
    Timing every candidate once (a warm-up for live use).
:mod:`~asirp.selection.prior`
    The rule prior (what ``auto`` did before it measured).
:mod:`~asirp.selection.policy`
    The policy file: pinned and remembered choices.
:mod:`~asirp.selection.splitting`
    Binomial thinning, data fission, two measurements.
:mod:`~asirp.selection.score`
    The score and its assumptions.
:mod:`~asirp.selection.candidates`
    Which methods and settings are tried.
:mod:`~asirp.selection.costs`
    Measured and estimated run times.
"""

from asirp.selection.candidates import (
    CHEAP_GRIDS,
    IDENTITY,
    THOROUGH_GRIDS,
    Candidate,
)
from asirp.selection.context import SelectionContext, make_context, scan_kind
from asirp.selection.costs import COSTS, CostModel
from asirp.selection.measure import measure_costs
from asirp.selection.report import CandidateScore, Selection
from asirp.selection.selector import select, select_stack

__all__ = [
    "CHEAP_GRIDS",
    "COSTS",
    "IDENTITY",
    "THOROUGH_GRIDS",
    "Candidate",
    "CandidateScore",
    "CostModel",
    "Selection",
    "SelectionContext",
    "make_context",
    "measure_costs",
    "scan_kind",
    "select",
    "select_stack",
]
