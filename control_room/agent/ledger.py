"""A campaign's state, read back from tiled: what was proposed, reviewed, submitted and ran.

The agent keeps no state of its own that matters: each poll reads the records of
:mod:`control_room.agent.records` and the campaign's rescan runs, so an agent killed at any
point and started again carries on where the records say, and never submits a proposal twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control_room.agent import records
from control_room.queue_plans import RESCAN_ROLE

ACCEPTING = ("accept", "edit")
REVIEW_ACTIONS = ("accept", "edit", "reject")


@dataclass
class Ledger:
    """The records of one campaign (see :meth:`load`).

    Attributes
    ----------
    decisions : dict
        Coarse uid -> the decision record (``proposals``, ``auto_accepted``, ``mode`` ...).
    proposals : dict
        Proposal id -> proposal (as the decision made it).
    decision_of : dict
        Proposal id -> uid of its decision record.
    reviews : dict
        Proposal id -> the latest review record (``action``, ``operator``, ``proposal``).
    submissions : dict
        Proposal id -> submission record (``item_uid``).
    outcomes : dict
        Proposal id -> outcome record (``run_uid``, ``exit_status``).
    rescans : dict
        Proposal id -> ``[(start, stop), ...]`` of its rescan runs in tiled.
    halts : list
        Halt records.
    """

    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    proposals: dict[str, dict[str, Any]] = field(default_factory=dict)
    decision_of: dict[str, str] = field(default_factory=dict)
    reviews: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rescans: dict[str, list[tuple[dict, dict | None]]] = field(default_factory=dict)
    halts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, catalog: Any, campaign: str) -> Ledger:
        """Read every record and rescan run of ``campaign`` from tiled."""
        ledger = cls()
        for decision in records.find_records(catalog, records.DECISION, campaign):
            ledger.decisions.setdefault(decision["coarse_uid"], decision)
            for proposal in decision.get("proposals") or []:
                ledger.proposals.setdefault(proposal["_id"], proposal)
                ledger.decision_of.setdefault(proposal["_id"], decision["uid"])
        for review in records.find_records(catalog, records.REVIEW, campaign):
            ledger.reviews[review["proposal_id"]] = review  # the latest wins
        for submission in records.find_records(catalog, records.SUBMISSION, campaign):
            ledger.submissions.setdefault(submission["proposal_id"], submission)
        for outcome in records.find_records(catalog, records.OUTCOME, campaign):
            ledger.outcomes.setdefault(outcome["proposal_id"], outcome)
        for start, stop in records.find_runs(catalog, campaign, asirp_role=RESCAN_ROLE):
            ledger.rescans.setdefault(start["asirp_proposal_id"], []).append((start, stop))
        ledger.halts = records.find_records(catalog, records.HALT, campaign)
        return ledger

    def state(self, ident: str) -> str:
        """``pending``, ``rejected``, ``accepted``, ``submitted``, ``completed`` or ``failed``."""
        outcome = self.outcomes.get(ident)
        if outcome is not None:
            return "completed" if outcome.get("exit_status") == "success" else "failed"
        if ident in self.submissions or ident in self.rescans:
            return "submitted"
        review = self.reviews.get(ident)
        if review is not None:
            return "rejected" if review["action"] == "reject" else "accepted"
        decision = self.decisions.get(self.proposals[ident]["coarse_uid"], {})
        return "accepted" if ident in (decision.get("auto_accepted") or []) else "pending"

    def approved(self, ident: str) -> dict[str, Any] | None:
        """The proposal to scan (an operator's edit replaces the box), or ``None``."""
        review = self.reviews.get(ident)
        if review is not None:
            return dict(review["proposal"]) if review["action"] in ACCEPTING else None
        decision = self.decisions.get(self.proposals[ident]["coarse_uid"], {})
        return (
            dict(self.proposals[ident]) if ident in (decision.get("auto_accepted") or []) else None
        )
