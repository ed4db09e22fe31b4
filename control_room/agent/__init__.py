"""The rescan agent of a bluesky-queueserver campaign (bluesky-adaptive 1.0's protocols).

A coarse map queued as :func:`~control_room.queue_plans.coarse_map` is written to tiled with its
live restoration by the RE Manager's worker. The agent (:class:`RescanAgent`, ``asirp agent
run``) reads both back, proposes rescans of what the map shows (:class:`RoiOptimizer`, the
spatial-feedback rules), records what it saw, proposed and why as a run in tiled, and, once a
proposal is accepted (by an operator with ``asirp agent accept``/``edit``/``reject``, or by
itself within a budget in automatic mode), submits a
:func:`~control_room.queue_plans.roi_rescans` item. Its state is what tiled holds, so a
restarted agent submits nothing twice.

This package imports bluesky, tiled and the queue-server API lazily: importing it (as the
``asirp`` command does to register ``asirp agent``) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Ledger": "control_room.agent.ledger",
    "Limits": "control_room.agent.agent",
    "RescanAgent": "control_room.agent.agent",
    "ReviewError": "control_room.agent.reviews",
    "RoiOptimizer": "control_room.agent.optimizer",
    "TiledEvaluation": "control_room.agent.evaluation",
    "proposal_id": "control_room.agent.optimizer",
    "proposals_table": "control_room.agent.reviews",
    "review": "control_room.agent.reviews",
    "stopped_by_person": "control_room.agent.agent",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'control_room.agent' has no attribute {name!r}")
    return getattr(import_module(module), name)
