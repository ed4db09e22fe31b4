"""The rescan agent: coarse maps in tiled -> proposals -> (operator) -> queue server items.

Built on bluesky-adaptive 1.0's queue-server problem: a ``QueueserverOptimizationProblem`` binds
the optimizer (:class:`~control_room.agent.optimizer.RoiOptimizer`), the evaluation function
(:class:`~control_room.agent.evaluation.TiledEvaluation`), the devices by name and the
acquisition plan :func:`~control_room.queue_plans.roi_rescans`, whose items are submitted with
``bluesky-queueserver-api``. The loop is the agent's own rather than bluesky-adaptive's
(experimental) ``QueueserverOptimizationRunner``, because that runner stops at the first failed
acquisition, has no operator between suggestion and submission, and listens to a pickled 0MQ
document stream; this one polls tiled, where every run already is.

Each :meth:`RescanAgent.step`:

1. stops the agent (a :data:`~control_room.agent.records.HALT` record) when a person paused the
   run engine, asked the queue to stop, or autostart went off;
2. decides on every coarse map of the campaign that ended and has no decision yet (a
   :data:`~control_room.agent.records.DECISION` record: what it saw, what it proposes, why; in
   automatic mode also which proposals fit the limits);
3. submits each accepted proposal that is not yet in the queue, its history or tiled, and
   records the item (:data:`~control_room.agent.records.SUBMISSION`);
4. records how each rescan ended (:data:`~control_room.agent.records.OUTCOME`); a failed one is
   told to the optimizer and the agent goes on.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bluesky_adaptive.protocols import QueueserverOptimizationProblem
from bluesky_queueserver_api import BPlan

from control_room.agent import records
from control_room.agent.evaluation import TiledEvaluation
from control_room.agent.ledger import Ledger
from control_room.agent.optimizer import RoiOptimizer
from control_room.queue_plans import COARSE_ROLE

_LOG = logging.getLogger(__name__)

MODES = ("approval", "automatic")
ACQUISITION_PLAN = "roi_rescans"


@dataclass(frozen=True)
class Limits:
    """What the automatic mode may spend without an operator.

    Attributes
    ----------
    budget_s_per_sample : float
        Estimated rescan beam time per sample, s.
    max_items : int
        Most rescans accepted in the campaign.
    """

    budget_s_per_sample: float = 600.0
    max_items: int = 20

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget_s_per_sample) and self.budget_s_per_sample >= 0):
            raise ValueError(f"budget_s_per_sample must be >= 0 s, got {self.budget_s_per_sample}")
        if isinstance(self.max_items, bool) or not 0 <= int(self.max_items) <= 10_000:
            raise ValueError(f"max_items must be an integer in 0-10000, got {self.max_items!r}")


def stopped_by_person(status: Mapping | None, autostart: bool) -> str:
    """Why the queue is stopped by someone else ("" when it is not)."""
    if not status:
        return ""
    if status.get("manager_state") == "paused":
        return "the run engine is paused"
    if status.get("queue_stop_pending"):
        return "a queue stop is pending"
    if autostart and not status.get("queue_autostart_enabled", True):
        return "queue autostart was turned off (the queue was stopped, or an item failed)"
    return ""


class RescanAgent:
    """Proposes, and (once accepted) submits, rescans of a campaign's coarse maps.

    Parameters
    ----------
    catalog : tiled.client.container.Container
        The catalog the RE Manager's worker writes runs to (``ASIRP_TILED_URI``).
    manager : bluesky_queueserver_api.zmq.REManagerAPI
        Client of the RE Manager (its ``user`` and ``user_group`` are the items' submitter).
    campaign : str
        The campaign: coarse maps queued with ``coarse_map(..., campaign=...)``.
    mode : {"approval", "automatic"}
        ``approval``: every proposal waits for an operator (``asirp agent review``).
        ``automatic``: proposals within ``limits`` are accepted by the agent.
    limits : Limits
        The automatic mode's budget per sample and most items.
    target_resolution_um : float
        Smallest feature the rescans must resolve, µm.
    actuators, sensors : sequence of str
        Names of the fast and slow stage motors, and of the detectors, in the profile.
    max_per_map : int
        Most proposals per coarse map.
    derived_wait_s : float
        How long after a coarse map ends to wait for its restoration in tiled before deciding on
        the raw map, s.
    autostart : bool
        Turn the queue's autostart on when the agent starts (accepted items then run), and halt
        when it is found off.
    """

    def __init__(
        self,
        catalog: Any,
        manager: Any,
        *,
        campaign: str,
        mode: str = "approval",
        limits: Limits | None = None,
        target_resolution_um: float = 20.0,
        actuators: tuple[str, str] = ("sample_x", "sample_y"),
        sensors: tuple[str, ...] = ("xrf", "i0"),
        max_per_map: int = 10,
        derived_wait_s: float = 180.0,
        autostart: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(campaign, str) or not 0 < len(campaign) <= 200:
            raise ValueError(f"campaign must be a name of 1-200 characters, got {campaign!r}")
        self.catalog = catalog
        self.manager = manager
        self.campaign = campaign
        self.mode = mode
        self.limits = limits or Limits()
        self.derived_wait_s = float(derived_wait_s)
        self.autostart = bool(autostart)
        self.problem = QueueserverOptimizationProblem(
            optimizer=RoiOptimizer(
                target_resolution_um=target_resolution_um, max_per_map=max_per_map
            ),
            actuators=list(actuators),
            sensors=list(sensors),
            evaluation_function=TiledEvaluation(catalog),
            acquisition_plan=ACQUISITION_PLAN,
        )
        self.halted = ""
        self.started = False

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the manager, turn autostart on, and take back the campaign's earlier proposals.

        Raises
        ------
        RuntimeError
            The worker environment is not open, or it offers no ``roi_rescans`` plan.
        """
        status = self.manager.status()
        if not status.get("worker_environment_exists"):
            raise RuntimeError("the RE Manager's worker environment is not open")
        allowed = self.manager.plans_allowed()["plans_allowed"]
        if ACQUISITION_PLAN not in allowed:
            raise RuntimeError(f"the RE Manager does not allow the plan {ACQUISITION_PLAN!r}")
        if self.autostart:
            self.manager.queue_autostart(True)
        ledger = Ledger.load(self.catalog, self.campaign)
        optimizer = self.problem.optimizer
        for proposal in ledger.proposals.values():
            optimizer.remember(proposal)
        for ident, outcome in ledger.outcomes.items():
            optimizer.ingest([{**outcome, "_id": ident, "kind": "rescan"}])
            if outcome.get("exit_status") != "success":
                optimizer.register_failures([{"_id": ident}])
        self.started = True
        _LOG.info(
            "agent of campaign %r (%s mode): %d proposal(s) on record",
            self.campaign,
            self.mode,
            len(ledger.proposals),
        )

    def run(
        self, poll_s: float = 1.0, stop: threading.Event | None = None, max_s: float | None = None
    ) -> str:
        """Step until halted, ``stop`` is set or ``max_s`` passed; why it ended.

        A step that fails (tiled or the manager unreachable) is logged and tried again at the
        next poll: the agent's own trouble never touches the queue.
        """
        if not self.started:
            self.start()
        stop = stop or threading.Event()
        deadline = None if max_s is None else time.monotonic() + max_s
        while not stop.is_set():
            try:
                for event in self.step():
                    _LOG.info("%s", event)
            except Exception as error:  # tiled or the manager away: one line, then retry
                _LOG.warning(
                    "agent step failed (%s: %s); trying again in %g s",
                    type(error).__name__,
                    " ".join(str(error).split())[:300],
                    poll_s,
                )
                _LOG.debug("the failed step", exc_info=True)
            if self.halted:
                return f"halted: {self.halted}"
            if deadline is not None and time.monotonic() > deadline:
                return "time limit"
            stop.wait(poll_s)
        return "stopped"

    def step(self) -> list[str]:
        """One poll (see the module's description); what happened, one line each."""
        if self.halted:
            return []
        why = stopped_by_person(self.manager.status(), self.autostart)
        if why:
            records.write_record(self.catalog, records.HALT, self.campaign, {"reason": why})
            self.halted = why
            return [f"halted: {why}"]
        events, ledger = self._decide(Ledger.load(self.catalog, self.campaign))
        # the queue and its (growing) history are read only when a proposal needs them
        items = functools.cache(self._queue_items)
        events += self._submit(ledger, items)
        events += self._record_outcomes(ledger, items)
        return events

    # -- 2. decisions ----------------------------------------------------------------------------
    def _decide(self, ledger: Ledger) -> tuple[list[str], Ledger]:
        """Decide on each new coarse map; the events and the ledger as it now stands."""
        events = []
        for start, stop in records.find_runs(self.catalog, self.campaign, asirp_role=COARSE_ROLE):
            uid = start["uid"]
            if uid in ledger.decisions or stop is None:
                continue
            if stop.get("exit_status") != "success":
                content = self._decision(
                    start, None, [], f"coarse run ended {stop.get('exit_status')}"
                )
            else:
                try:
                    (observation,) = self.problem.evaluation_function(uid, [])
                except LookupError:
                    continue  # the restoration is still being written
                waited = time.time() - float(stop.get("time", 0.0))
                if observation["derived_uid"] is None and waited < self.derived_wait_s:
                    continue  # its restoration may still come
                self.problem.optimizer.ingest([observation])
                proposals = self.problem.optimizer.suggest()
                content = self._decision(start, observation, proposals, "")
                if self.mode == "automatic":
                    content["auto_accepted"], content["held"] = self._within_limits(
                        ledger, proposals
                    )
            decision_uid = records.write_record(
                self.catalog, records.DECISION, self.campaign, content
            )
            events.append(
                f"decision {decision_uid} on coarse map {uid}: {len(content['proposals'])} "
                f"proposal(s), {len(content['auto_accepted'])} accepted automatically"
            )
            ledger = Ledger.load(self.catalog, self.campaign)  # the next decision counts this one
        return events, ledger

    def _decision(self, start, observation, proposals, why: str) -> dict[str, Any]:
        saw: dict[str, Any] = {"exit_status": "success" if observation else why}
        if observation is not None:
            decision = self.problem.optimizer.last_decision
            saw = {
                "map_shape": list(observation["raw"].shape),
                "method": observation["method"],
                "restoration_reason": observation["reason"] or None,
                **decision,
            }
            why = (
                f"{len(proposals)} region(s) found on the {decision['map_used']} map of "
                f"{start.get('element')} with the '{decision['strategy']}' rules, best signal per "
                f"second of rescan first, at a {decision['fine_step_um']:g} µm step"
            )
        return {
            "coarse_uid": start["uid"],
            "derived_uid": observation["derived_uid"] if observation else None,
            "sample": start.get("sample"),
            "element": start.get("element"),
            "mode": self.mode,
            "saw": saw,
            "why": why,
            "proposals": proposals,
            "auto_accepted": [],
            "held": {},
            "limits": {
                "budget_s_per_sample": self.limits.budget_s_per_sample,
                "max_items": self.limits.max_items,
            },
        }

    def _within_limits(self, ledger: Ledger, proposals) -> tuple[list[str], dict[str, str]]:
        """Ids of the proposals the automatic mode accepts, and why the others wait."""
        accepted = [i for i in ledger.proposals if ledger.approved(i) is not None]
        spent: dict[Any, float] = {}
        for ident in accepted:
            sample = ledger.proposals[ident].get("sample")
            spent[sample] = spent.get(sample, 0.0) + float(ledger.proposals[ident]["estimated_s"])
        count, chosen, held = len(accepted), [], {}
        for proposal in proposals:
            sample, cost = proposal.get("sample"), float(proposal["estimated_s"])
            if count >= self.limits.max_items:
                held[proposal["_id"]] = f"the campaign's {self.limits.max_items} items are used"
            elif spent.get(sample, 0.0) + cost > self.limits.budget_s_per_sample:
                held[proposal["_id"]] = (
                    f"over the sample's budget ({spent.get(sample, 0.0):.0f} + {cost:.0f} s > "
                    f"{self.limits.budget_s_per_sample:g} s)"
                )
            else:
                chosen.append(proposal["_id"])
                spent[sample] = spent.get(sample, 0.0) + cost
                count += 1
        return chosen, held

    # -- 3. submissions --------------------------------------------------------------------------
    def _queue_items(self) -> dict[str, dict[str, Any]]:
        """Proposal id -> the queue's (running included) or the history's item that carries it."""
        found: dict[str, dict[str, Any]] = {}
        queue = self.manager.queue_get()
        running = [queue["running_item"]] if queue.get("running_item") else []
        # the queue first: a failed item is in both, and its history entry has the result
        for items in (queue.get("items", []), running, self.manager.history_get().get("items", [])):
            for item in items:
                if item.get("name") != ACQUISITION_PLAN:
                    continue
                for suggestion in (item.get("kwargs") or {}).get("suggestions") or []:
                    if isinstance(suggestion, dict) and "_id" in suggestion:
                        found[str(suggestion["_id"])] = item
        return found

    def _submit(self, ledger: Ledger, items: Callable[[], dict[str, dict]]) -> list[str]:
        events = []
        for ident in ledger.proposals:
            proposal = ledger.approved(ident)
            if proposal is None or ident in ledger.submissions or ident in ledger.rescans:
                continue
            if ident in items():  # submitted before a restart, not yet recorded
                item_uid = items()[ident].get("item_uid")
                events.append(f"{ident}: found in the queue as item {item_uid}")
            else:
                review = ledger.reviews.get(ident)
                item = BPlan(
                    ACQUISITION_PLAN,
                    suggestions=[proposal],
                    actuators=list(self.problem.actuators),
                    sensors=list(self.problem.sensors),
                    md={
                        "campaign": self.campaign,
                        "coarse_uid": proposal["coarse_uid"],
                        "derived_uid": ledger.decisions[proposal["coarse_uid"]].get("derived_uid"),
                        "decision_uid": ledger.decision_of[ident],
                        "review_uid": review["uid"] if review else None,
                        "agent_mode": self.mode,
                    },
                )
                try:
                    item_uid = self.manager.item_add(item)["item"]["item_uid"]
                except self.manager.RequestFailedError as error:
                    # refused by the manager (permissions, arguments): final, not retried
                    events.append(self._refused(ident, str(error)))
                    continue
                events.append(f"{ident}: submitted as item {item_uid}")
            records.write_record(
                self.catalog,
                records.SUBMISSION,
                self.campaign,
                {"proposal_id": ident, "item_uid": item_uid, "proposal": proposal},
            )
        return events

    def _refused(self, ident: str, why: str) -> str:
        content = {
            "proposal_id": ident,
            "run_uid": None,
            "exit_status": "refused",
            "reason": " ".join(why.split())[:2000],
            "counts": None,
            "runs": 0,
        }
        self.problem.optimizer.register_failures([{"_id": ident}])
        records.write_record(self.catalog, records.OUTCOME, self.campaign, content)
        return f"{ident}: the manager refused the item: {content['reason']}"

    # -- 4. outcomes -----------------------------------------------------------------------------
    def _record_outcomes(self, ledger: Ledger, items: Callable[[], dict[str, dict]]) -> list[str]:
        events = []
        optimizer = self.problem.optimizer
        for ident in list(ledger.submissions) + [
            i for i in ledger.rescans if i not in ledger.submissions
        ]:
            if ident in ledger.outcomes or ident not in ledger.proposals:
                continue
            proposal = ledger.approved(ident) or ledger.proposals[ident]
            finished = [(s, st) for s, st in ledger.rescans.get(ident, []) if st is not None]
            if finished:
                start, _ = finished[-1]
                (outcome,) = self.problem.evaluation_function(start["uid"], [proposal])
                content = {
                    "proposal_id": ident,
                    "run_uid": start["uid"],
                    "exit_status": outcome["exit_status"],
                    "reason": outcome["reason"],
                    "counts": outcome["counts"],
                    "runs": len(ledger.rescans[ident]),
                }
            else:  # an item that ended without a run (refused by the plan's own checks)
                result = (items().get(ident) or {}).get("result") or {}
                if not result or result.get("exit_status") == "completed" or result.get("run_uids"):
                    continue
                content = {
                    "proposal_id": ident,
                    "run_uid": None,
                    "exit_status": str(result.get("exit_status")),
                    "reason": str(result.get("msg") or "")[:2000],
                    "counts": None,
                    "runs": 0,
                }
            optimizer.ingest([{**content, "_id": ident, "kind": "rescan"}])
            if content["exit_status"] != "success":
                optimizer.register_failures([{"_id": ident}])
            records.write_record(self.catalog, records.OUTCOME, self.campaign, content)
            events.append(f"{ident}: rescan ended {content['exit_status']}")
        return events
