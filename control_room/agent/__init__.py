"""The rescan agent of a bluesky-queueserver campaign (bluesky-adaptive 1.0's protocols).

A coarse map queued as :func:`~control_room.queue_plans.coarse_map` is written to tiled with its
live restoration by the RE Manager's worker. The agent (:class:`RescanAgent`, ``asirp agent
run``) reads both back, proposes rescans of what the map shows (:class:`RoiOptimizer`, the
spatial-feedback rules), records what it saw, proposed and why as a run in tiled, and, once a
proposal is accepted (by an operator with ``asirp agent accept``/``edit``/``reject``, or by
itself within a budget in automatic mode), submits a
:func:`~control_room.queue_plans.roi_rescans` item. Its state is what tiled holds, so a
restarted agent submits nothing twice.
"""

from control_room.agent.agent import Limits, RescanAgent, stopped_by_person
from control_room.agent.evaluation import TiledEvaluation
from control_room.agent.ledger import Ledger
from control_room.agent.optimizer import RoiOptimizer, proposal_id
from control_room.agent.review import ReviewError, proposals_table, review

__all__ = [
    "Ledger",
    "Limits",
    "RescanAgent",
    "ReviewError",
    "RoiOptimizer",
    "TiledEvaluation",
    "proposal_id",
    "proposals_table",
    "review",
    "stopped_by_person",
]
