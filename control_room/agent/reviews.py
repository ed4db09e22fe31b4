"""The operator's side of approval mode: list proposals, accept, edit or reject each.

A review is a record in tiled (:data:`~control_room.agent.records.REVIEW`): who decided what on
which proposal, and the box to scan (an edit replaces the agent's). The agent reads it at its
next poll and submits what was accepted. A review of a proposal that is already in the queue,
or already reviewed, is refused: what runs is what was on record when it was submitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bluesky_plans.arguments import positive_number, range_um
from control_room.agent import records
from control_room.agent.ledger import REVIEW_ACTIONS, Ledger
from control_room.queue_plans import check_suggestion


class ReviewError(ValueError):
    """A review that cannot be made (unknown proposal, already decided, bad box)."""


def proposals_table(catalog: Any, campaign: str) -> list[dict[str, Any]]:
    """Every proposal of the campaign with its state, oldest decision first."""
    ledger = Ledger.load(catalog, campaign)
    table = []
    for ident, proposal in ledger.proposals.items():
        scanned = ledger.approved(ident) or proposal
        table.append(
            {
                "id": ident,
                "state": ledger.state(ident),
                "sample": proposal.get("sample"),
                "x_range_um": scanned["x_range_um"],
                "y_range_um": scanned["y_range_um"],
                "step_um": scanned["step_um"],
                "estimated_s": proposal.get("estimated_s"),
                "score": proposal.get("score"),
                "why": proposal.get("why"),
                "coarse_uid": proposal.get("coarse_uid"),
            }
        )
    return table


def review(
    catalog: Any,
    campaign: str,
    ident: str,
    action: str,
    *,
    operator: str,
    x_range_um: Sequence[float] | None = None,
    y_range_um: Sequence[float] | None = None,
    step_um: float | None = None,
    reason: str = "",
) -> str:
    """Record an operator's decision on one pending proposal; the review record's uid.

    Parameters
    ----------
    catalog : tiled.client.container.Container
        The campaign's catalog.
    campaign : str
        The campaign.
    ident : str
        The proposal's id.
    action : {"accept", "edit", "reject"}
        ``edit`` accepts the proposal with the box (and step) given here.
    operator : str
        Who decides (recorded).
    x_range_um, y_range_um : [float, float], optional
        With ``edit``: the box to scan instead, µm.
    step_um : float, optional
        With ``edit``: the step instead, µm.
    reason : str
        Why (recorded).

    Raises
    ------
    ReviewError
        Unknown proposal or action, a proposal that is not pending, or an edit without a valid
        box.
    """
    if action not in REVIEW_ACTIONS:
        raise ReviewError(f"action must be one of {REVIEW_ACTIONS}, got {action!r}")
    if not isinstance(operator, str) or not operator.strip():
        raise ReviewError("a review needs the operator's name")
    ledger = Ledger.load(catalog, campaign)
    if ident not in ledger.proposals:
        raise ReviewError(f"no proposal {ident!r} in campaign {campaign!r}")
    state = ledger.state(ident)
    if state != "pending":
        raise ReviewError(f"proposal {ident} is {state}, not pending")
    proposal = dict(ledger.proposals[ident])
    if action == "edit":
        if x_range_um is None and y_range_um is None and step_um is None:
            raise ReviewError("an edit needs a new x range, y range or step")
        try:  # the edited box is held to the check the plan makes before it moves
            if x_range_um is not None:
                proposal["x_range_um"] = list(range_um("x_range_um", x_range_um))
            if y_range_um is not None:
                proposal["y_range_um"] = list(range_um("y_range_um", y_range_um))
            if step_um is not None:
                proposal["step_um"] = positive_number("step_um", step_um)
            check_suggestion(proposal)
        except ValueError as error:
            raise ReviewError(str(error)) from None
        proposal["edited_by"] = operator
    return records.write_record(
        catalog,
        records.REVIEW,
        campaign,
        {
            "proposal_id": ident,
            "action": action,
            "operator": operator,
            "reason": reason,
            "proposal": proposal,
        },
    )
