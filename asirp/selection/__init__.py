"""Measured automatic method selection: the ``method="auto"`` of :func:`asirp.restore`.

No single method wins on every kind of data, and at a beamline nobody has the ground truth. The
selector therefore *measures*: it splits the data into two parts with independent noise,
restores each with every candidate that fits, predicts the other part through the forward
model, and keeps the candidate whose predictions are best (:mod:`asirp.selection.score`). The
same score picks iteration counts and regularisers, the input itself is a candidate (so the
choice is never worse than doing nothing, by the score's own judgement), candidates that do not
fit a latency budget are skipped, and an operator can pin a method (:mod:`asirp.policy`).

Modules
-------
:mod:`~asirp.selection.selector`
    :func:`select`, :class:`Selection`, the steps and the modes.
:mod:`~asirp.selection.splitting`
    Binomial thinning, data fission, two measurements.
:mod:`~asirp.selection.score`
    The score and its assumptions.
:mod:`~asirp.selection.candidates`
    Which methods and settings are tried; forward models of new methods.
:mod:`~asirp.selection.costs`
    Measured and estimated run times.
"""

from asirp.selection.candidates import (
    CHEAP_GRIDS,
    IDENTITY,
    THOROUGH_GRIDS,
    Candidate,
    register_forward_model,
)
from asirp.selection.costs import COSTS, CostModel
from asirp.selection.selector import (
    CandidateScore,
    Selection,
    SelectionContext,
    make_context,
    measure_costs,
    scan_kind,
    select,
    select_stack,
)

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
    "register_forward_model",
    "scan_kind",
    "select",
    "select_stack",
]
