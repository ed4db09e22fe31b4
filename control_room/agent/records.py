"""The agent's decisions, the operator's reviews and the agent's submissions, as runs in tiled.

Each record is a small Bluesky run (start and stop documents, composed with event-model and
written with the same ``TiledWriter`` as every raw run), so it sits in the beamline's catalog
beside the scans it is about, is searched like any run, and outlives the agent. The start
document holds the record:

``asirp_role``
    :data:`DECISION` (what the agent saw, what it proposed, why), :data:`REVIEW` (an operator
    accepted, edited or rejected a proposal), :data:`SUBMISSION` (a proposal became a queue
    item: the item's uid, the idempotency record), :data:`OUTCOME` (a rescan ended: its run and
    exit status) or :data:`HALT` (the agent stopped itself, and why).
``campaign``
    The campaign the record belongs to (every search is within one campaign).

Records are never changed: a proposal's state is the latest record about it, so an agent that
restarts reads its state back from tiled (see :class:`~control_room.agent.ledger.Ledger`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from callbacks.publish import raw_run_writer
from callbacks.tiled_scan import plain_metadata

DECISION = "agent_decision"
REVIEW = "proposal_review"
SUBMISSION = "proposal_submission"
OUTCOME = "rescan_outcome"
HALT = "agent_halt"
ROLES = (DECISION, REVIEW, SUBMISSION, OUTCOME, HALT)

RECORD_PLAN_NAME = "asirp_rescan_agent"
"""``plan_name`` of every record (no motor moved; the run is a document of a decision)."""


def record_documents(
    role: str, campaign: str, content: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The start and stop documents of one record (event-model's ``compose_run``).

    Raises
    ------
    ValueError
        Unknown role, or ``content`` overrides a reserved key.
    """
    from event_model import compose_run

    if role not in ROLES:
        raise ValueError(f"unknown record role {role!r}; one of {ROLES}")
    reserved = {"asirp_role", "campaign", "plan_name", "uid", "time"}
    if reserved & set(content):
        raise ValueError(f"record content may not set {sorted(reserved & set(content))}")
    bundle = compose_run(
        metadata={
            **plain_metadata(dict(content)),
            "asirp_role": role,
            "campaign": campaign,
            "plan_name": RECORD_PLAN_NAME,
        }
    )
    stop = bundle.compose_stop(exit_status="success", time=time.time())
    return dict(bundle.start_doc), dict(stop)


def write_record(catalog: Any, role: str, campaign: str, content: Mapping[str, Any]) -> str:
    """Write one record as a run (start and stop documents) to tiled; its uid.

    Parameters
    ----------
    catalog : tiled.client.container.Container
        The writable catalog of runs.
    role : str
        One of :data:`ROLES`.
    campaign : str
        The campaign.
    content : mapping
        JSON-ready fields of the record (they go into the start document).

    Raises
    ------
    ValueError
        Unknown role, or ``content`` overrides a reserved key.
    Exception
        Whatever tiled raises: a record that is not stored is not taken as made.
    """
    start, stop = record_documents(role, campaign, content)
    writer = raw_run_writer(catalog, batch_size=1)
    writer("start", start)
    writer("stop", stop)
    return start["uid"]


def find_records(catalog: Any, role: str, campaign: str) -> list[dict[str, Any]]:
    """The start documents of a campaign's records of one role, oldest first."""
    return [start for start, _ in find_runs(catalog, campaign, asirp_role=role)]


def find_runs(catalog: Any, campaign: str, **keys: Any) -> list[tuple[dict, dict | None]]:
    """``(start, stop)`` documents of the campaign's runs whose start has ``keys``, oldest first.

    ``stop`` is ``None`` while a run is open.
    """
    from tiled.queries import Key

    results = catalog.search(Key("start.campaign") == campaign)
    for name, value in keys.items():
        results = results.search(Key(f"start.{name}") == value)
    found = []
    for run in results.values():
        metadata = plain_metadata(run.metadata)
        found.append((metadata["start"], metadata.get("stop") or None))
    found.sort(key=lambda pair: pair[0].get("time", 0.0))
    return found
