"""The rescan agent's campaign with real processes on loopback.

redis, an RE Manager with the shipped profile (its worker writes every run to tiled), a tiled
server and the agent (``asirp agent run``) each run in a child process; an API client queues the
coarse map, the operator reviews with ``asirp agent accept``/``edit``/``reject``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from bluesky_queueserver_api import BPlan

from callbacks.tiled_server import connect
from control_room.agent import records
from control_room.agent.ledger import Ledger
from tests.asirp_device.conftest import free_port
from tests.qserver_support import (
    child,
    console_script,
    manager_api,
    open_environment,
    re_manager,
    redis_server,
)
from tests.tiled_support import campaign_stack, tiled_server

pytestmark = pytest.mark.timeout(600)

WAIT_S = 120.0
COARSE = (["xrf", "i0"], "sample_x", "sample_y", [-250.0, 250.0], [-250.0, 250.0], 50.0)


class Beamline:
    """The running processes, and clients of them."""

    def __init__(self, folder: Path, tiled_uri: str, api_key: str, control: str, api) -> None:
        self.folder, self.tiled_uri, self.api_key = folder, tiled_uri, api_key
        self.control, self.api = control, api
        self.catalog = connect(tiled_uri, api_key=api_key)

    def asirp(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """``asirp agent ...`` as an operator types it, against this tiled."""
        env = {**os.environ, "TILED_API_KEY": self.api_key}
        done = subprocess.run(
            [str(console_script("asirp")), "agent", *argv, "--tiled", self.tiled_uri],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def agent(self, campaign: str, *options: str):
        """``asirp agent run`` as a child process (a context manager; stopped by PID)."""
        argv = [
            str(console_script("asirp")), "agent", "run", "--tiled", self.tiled_uri,
            "--campaign", campaign, "--queue-server", self.control, "--poll-s", "0.5",
            "--target-resolution-um", "25", *options,
        ]  # fmt: skip
        log = self.folder / f"agent-{campaign}-{time.monotonic_ns()}.log"
        return child(argv, log, self.folder, {"TILED_API_KEY": self.api_key})

    def ledger(self, campaign: str) -> Ledger:
        return Ledger.load(self.catalog, campaign)

    def queue_coarse_map(self, campaign: str) -> str:
        item = BPlan(
            "coarse_map", *COARSE, element="Se", beam_fwhm_um=50.0, sample="tissue",
            campaign=campaign,
        )  # fmt: skip
        return self.api.item_add(item)["item"]["item_uid"]

    def history(self, name: str) -> list[dict]:
        return [item for item in self.api.history_get()["items"] if item["name"] == name]


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def beamline(tmp_path_factory) -> Iterator[Beamline]:
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    folder = tmp_path_factory.mktemp("campaign")
    with campaign_stack(folder) as (uri, key, control, api):
        running = Beamline(folder, uri, key, control, api)
        try:
            yield running
        finally:
            running.catalog.context.close()
    after = {c.pid for c in psutil.Process().children(recursive=True)}
    assert after <= before, "a server or the agent was left running"


def _columns(proposal: dict) -> set[float]:
    """The x positions (µm) a rescan of ``proposal`` moves to."""
    x0, x1 = proposal["x_range_um"]
    step = proposal["step_um"]
    return {round(x0 + k * step, 6) for k in range(int((x1 - x0) / step + 1e-9) + 1)}


def test_approval_mode_runs_nothing_until_the_operator_reviews(beamline):
    campaign = "approval"
    with beamline.agent(campaign, "--mode", "approval") as agent_process:
        beamline.queue_coarse_map(campaign)
        ledger = wait_until(
            lambda: (led := beamline.ledger(campaign)).decisions and led, "the agent's decision"
        )
        (decision,) = ledger.decisions.values()
        proposals = decision["proposals"]
        assert len(proposals) >= 3, decision["why"]
        assert decision["saw"]["map_used"] in ("restored", "raw")
        assert decision["derived_uid"], "the agent read the coarse map's restoration from tiled"
        assert all(p["why"] and p["estimated_s"] > 0 for p in proposals)

        # approval mode: nothing is queued or run before a review
        time.sleep(3.0)
        assert beamline.history("roi_rescans") == []
        assert beamline.api.queue_get()["items"] == []
        listed = beamline.asirp("proposals", "--campaign", campaign).stdout
        assert all(f"{p['_id']}" in listed and "pending" in listed for p in proposals)

        # one rejected, one edited, and one whose stage will stall (a motor fault)
        rejected, edited, faulty = proposals[:3]
        x0, x1 = edited["x_range_um"]
        new_x = [x0 - 25.0, x1]
        edited_box = {**edited, "x_range_um": new_x}
        others = set().union(*(_columns(p) for p in (*proposals, edited_box) if p is not faulty))
        stall = next(x for x in sorted(_columns(faulty)) if x not in others)
        beamline.api.script_upload(f"beamline.x.fault_zone_um = ({stall} - 1e-6, {stall} + 1e-6)\n")
        wait_until(lambda: beamline.api.status()["manager_state"] == "idle", "the script")
        beamline.asirp("reject", rejected["_id"], "--campaign", campaign, "--why", "known")
        beamline.asirp(
            "edit", edited["_id"], "--campaign", campaign, "--x-range", *map(str, new_x),
            "--operator", "beamline scientist",
        )  # fmt: skip
        beamline.asirp("accept", "--all", "--campaign", campaign)
        again = beamline.asirp("reject", faulty["_id"], "--campaign", campaign, check=False)
        assert again.returncode == 1
        assert "not pending" in again.stderr

        ran = [p["_id"] for p in proposals if p is not rejected]
        ledger = wait_until(
            lambda: all(i in (led := beamline.ledger(campaign)).outcomes for i in ran) and led,
            "every accepted rescan's outcome",
        )
        assert agent_process.poll() is None  # the failed rescan did not stop the agent
    # the fault stayed local: its run failed and was recorded; every other rescan completed
    assert ledger.outcomes[faulty["_id"]]["exit_status"] == "fail"
    assert "device=x" in ledger.outcomes[faulty["_id"]]["reason"]  # the stalled stage
    assert all(ledger.outcomes[i]["exit_status"] == "success" for i in ran if i != faulty["_id"])
    assert rejected["_id"] not in ledger.rescans
    assert all(len(ledger.rescans[i]) == 1 for i in ran)  # each ran once
    items = beamline.history("roi_rescans")
    assert len(items) == len(ran)
    assert all(item["result"]["exit_status"] == "completed" for item in items)  # queue went on

    # each fine run links to the coarse run, its derived run and the decision (and the review)
    decision_uid = ledger.decision_of[edited["_id"]]
    for ident in ran:
        ((start, _),) = ledger.rescans[ident]
        assert start["coarse_uid"] == decision["coarse_uid"]
        assert start["derived_uid"] == decision["derived_uid"]
        assert start["decision_uid"] == decision_uid
        assert start["review_uid"] == ledger.reviews[ident]["uid"]
        assert start["asirp_proposal_id"] == ident
    ((edited_start, _),) = ledger.rescans[edited["_id"]]
    assert edited_start["proposal"]["x_range_um"] == new_x
    assert ledger.reviews[edited["_id"]]["operator"] == "beamline scientist"
    coarse = beamline.catalog[decision["coarse_uid"]].metadata["start"]
    assert coarse["asirp_role"] == "coarse_map"
    derived = beamline.catalog[decision["derived_uid"]].metadata["start"]
    assert derived["parent_uid"] == decision["coarse_uid"]

    figure = beamline.folder / "campaign.png"
    beamline.asirp("figure", "--campaign", campaign, "-o", str(figure))
    assert figure.stat().st_size > 10_000
    refused = beamline.asirp("figure", "--campaign", campaign, "-o", str(figure), check=False)
    assert refused.returncode == 1
    assert "exists" in refused.stderr


def test_a_killed_agent_restarts_and_every_proposal_runs_once(beamline):
    campaign = "automatic"
    beamline.api.script_upload("beamline.x.fault_zone_um = None\n")
    with beamline.agent(campaign, "--mode", "automatic", "--max-items", "3") as first:
        beamline.queue_coarse_map(campaign)
        ledger = wait_until(
            lambda: (led := beamline.ledger(campaign)).submissions and led, "a first submission"
        )
        first.send_signal(signal.SIGKILL)  # mid-campaign, no clean-up
        first.wait(30)
    (decision,) = ledger.decisions.values()
    accepted = decision["auto_accepted"]
    assert len(accepted) == 3  # --max-items
    assert len(decision["proposals"]) > 3
    assert all("items are used" in why for why in decision["held"].values())
    with beamline.agent(campaign, "--mode", "automatic", "--max-items", "3") as second:
        ledger = wait_until(
            lambda: all(i in (led := beamline.ledger(campaign)).outcomes for i in accepted) and led,
            "every accepted proposal's outcome after the restart",
        )
        # a person turns autostart off: the agent halts itself and says why
        beamline.api.queue_autostart(False)
        assert second.wait(60) == 0
    assert len(ledger.decisions) == 1  # the restarted agent did not decide again
    for ident in accepted:
        assert len(ledger.rescans[ident]) == 1, ident
        assert ledger.outcomes[ident]["exit_status"] == "success"
    items = [
        s["_id"]
        for item in beamline.history("roi_rescans")
        for s in item["kwargs"]["suggestions"]
        if item["kwargs"]["md"].get("campaign") == campaign
    ]
    assert sorted(items) == sorted(accepted)  # once each
    assert set(ledger.proposals) - set(accepted) == set(decision["held"])
    halts = records.find_records(beamline.catalog, records.HALT, campaign)
    assert [h["reason"] for h in halts] == [
        "queue autostart was turned off (the queue was stopped, or an item failed)"
    ]


def test_an_item_added_just_before_the_agent_died_is_not_added_again(beamline):
    from control_room.agent import RescanAgent

    campaign = "crash-window"
    proposal = {
        "_id": "p-crash-0", "x_range_um": [0.0, 20.0], "y_range_um": [0.0, 20.0],
        "step_um": 10.0, "coarse_uid": "crash-coarse", "sample": "s", "score": 1.0,
        "estimated_s": 1.0, "why": "test",
    }  # fmt: skip
    records.write_record(
        beamline.catalog, records.DECISION, campaign,
        {"coarse_uid": "crash-coarse", "derived_uid": None, "proposals": [proposal],
         "auto_accepted": ["p-crash-0"], "mode": "automatic"},
    )  # fmt: skip
    # the dead agent's item: in the queue (not started), never recorded
    beamline.api.queue_autostart(False)
    wait_until(lambda: beamline.api.status()["manager_state"] == "idle", "an idle manager")
    added = beamline.api.item_add(
        BPlan("roi_rescans", suggestions=[proposal], actuators=["sample_x", "sample_y"],
              sensors=["xrf", "i0"], md={"campaign": campaign})
    )["item"]["item_uid"]  # fmt: skip
    agent = RescanAgent(
        beamline.catalog, beamline.api, campaign=campaign, mode="automatic", autostart=False
    )
    agent.start()
    assert agent.step() == [f"p-crash-0: found in the queue as item {added}"]
    beamline.api.queue_autostart(True)  # now the item runs
    ledger = wait_until(
        lambda: (
            agent.step() is not None
            and "p-crash-0" in (led := beamline.ledger(campaign)).outcomes
            and led
        ),
        "its outcome",
    )
    for _ in range(3):
        agent.step()  # more polls add nothing
    assert ledger.submissions["p-crash-0"]["item_uid"] == added
    assert len(ledger.rescans["p-crash-0"]) == 1
    items = [
        item for item in beamline.history("roi_rescans")
        if item["kwargs"]["suggestions"][0]["_id"] == "p-crash-0"
    ]  # fmt: skip
    assert [item["item_uid"] for item in items] == [added]
    assert beamline.api.queue_get()["items"] == []


def test_a_restarted_manager_keeps_the_agents_items_and_runs_each_once(tmp_path):
    campaign = "manager-restart"
    control_port = free_port()
    prefix = f"asirp_restart_{control_port}"
    with contextlib.ExitStack() as stack:
        uri, key = stack.enter_context(tiled_server(tmp_path / "tiled"))
        redis_addr = stack.enter_context(redis_server(tmp_path))
        env = {"ASIRP_TILED_URI": uri, "ASIRP_TILED_API_KEY": key}

        def manager():  # the same port and the same redis keys each time
            return re_manager(
                redis_addr, tmp_path, env=env, control_port=control_port, redis_prefix=prefix
            )

        with manager() as control, manager_api(control) as api:
            open_environment(api)
            line = Beamline(tmp_path, uri, key, control, api)
            stack.callback(line.catalog.context.close)
            agent = stack.enter_context(
                line.agent(campaign, "--mode", "automatic", "--max-items", "3", "--no-autostart")
            )
            line.queue_coarse_map(campaign)
            api.queue_start()
            wait_until(lambda: len(line.ledger(campaign).submissions) == 3, "three submissions")
            queued = [item["item_uid"] for item in api.queue_get()["items"]]
            assert len(queued) == 3  # waiting: the queue was not started again
        # the manager is gone; the agent keeps polling (and failing) without losing anything
        time.sleep(3.0)
        assert agent.poll() is None
        with manager() as control, manager_api(control) as api:
            open_environment(api)
            assert [item["item_uid"] for item in api.queue_get()["items"]] == queued
            api.queue_start()
            ledger = wait_until(
                lambda: len((led := line.ledger(campaign)).outcomes) == 3 and led,
                "the three rescans after the restart",
            )
            time.sleep(2.0)  # a few more polls: nothing is submitted again
            assert api.queue_get()["items"] == []
            history = [i for i in api.history_get()["items"] if i["name"] == "roi_rescans"]
            assert agent.poll() is None
    assert len(history) == 3
    assert all(len(runs) == 1 for runs in ledger.rescans.values())
    assert all(o["exit_status"] == "success" for o in ledger.outcomes.values())
