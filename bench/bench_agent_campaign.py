"""What the rescan agent's route through the queue costs, side by side with the in-process item.

A standalone script (not a test). It starts a tiled server, redis and an RE Manager with the
shipped profile (each a child process on loopback, as the system test does; the manager's worker
writes every run to tiled) and, per round, runs the same spatial-feedback job twice on the
simulated clustered tissue, one after the other so both see the same machine:

peer: ``adaptive_rescan``
    one queue item: the coarse map, its live restoration in the worker, the regions and the
    fine rescans, all inside the item (no agent, no operator, no record).
agent: ``coarse_map`` + the agent
    a ``coarse_map`` item, then the agent (automatic mode, in this process, polling every
    ``--poll-s``) reads the coarse map and its restoration back from tiled, records its decision,
    submits one ``roi_rescans`` item per proposal and records each outcome.

Figures per round, then their medians over ``--repeats`` rounds and the agent/peer ratio of
the medians: ``total_s``, wall-clock from adding the first item until the last rescan has ended
(the peer: its item in the history; the agent: the last outcome record;
:func:`time.perf_counter`); ``decision_gap_s``, from the coarse run's stop document to the first
rescan's start document (what the route between them costs: the restoration, and for the agent
tiled, its poll, its decision record and a new queue item); ``s_per_rescan``, from the first
rescan's start to the last one's stop, per rescan (one queue item each for the agent); and
``rescans``. The agent's ``decision_latency_s`` is from the coarse run's stop to its decision
record. The simulated detector's noise differs from scan to scan, so the regions found (and
the number of rescans) differ between rounds and routes. Both decide
with the same rules (``bluesky_plans.presets``); the peer rescans within a third of a full fine
scan (its default budget), the agent within ``--max-items``.

How to run
----------
From the repository root::

    .venv/bin/python bench/bench_agent_campaign.py                 # 3 rounds
    .venv/bin/python bench/bench_agent_campaign.py --repeats 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' process helpers start the servers

from bluesky_queueserver_api import BPlan  # noqa: E402

from callbacks.tiled_server import connect  # noqa: E402
from control_room.agent import Ledger, Limits, RescanAgent  # noqa: E402
from tests.tiled_support import campaign_stack  # noqa: E402

REGION = (["xrf", "i0"], "sample_x", "sample_y", [-500.0, 500.0], [-500.0, 500.0], 50.0)
COMMON = {"element": "Se", "beam_fwhm_um": 50.0}
TARGET_UM = 25.0


def _wait(condition, timeout_s: float = 300.0, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(poll_s)
    return value


def _phases(catalog, coarse_uid: str, fine_uids: list[str]) -> dict:
    """Gap from the coarse run's stop to the first rescan's start, and s per rescan (tiled)."""
    coarse_stop = float(catalog[coarse_uid].metadata["stop"]["time"])
    starts = [float(catalog[uid].metadata["start"]["time"]) for uid in fine_uids]
    stops = [float(catalog[uid].metadata["stop"]["time"]) for uid in fine_uids]
    return {
        "decision_gap_s": min(starts) - coarse_stop if starts else None,
        "s_per_rescan": (max(stops) - min(starts)) / len(fine_uids) if fine_uids else None,
    }


def _peer(api, catalog) -> dict:
    before = api.status()["items_in_history"]
    start = time.perf_counter()
    api.item_add(BPlan("adaptive_rescan", *REGION, target_resolution_um=TARGET_UM, **COMMON))
    _wait(
        lambda: (
            api.status()["items_in_history"] > before and api.status()["manager_state"] == "idle"
        )
    )
    elapsed = time.perf_counter() - start
    done = api.history_get()["items"][-1]["result"]
    coarse, *fine = done["run_uids"]
    return {
        "s": elapsed,
        "rescans": len(fine),
        "exit_status": done["exit_status"],
        **_phases(catalog, coarse, fine),
    }


def _agent(api, catalog, campaign: str, poll_s: float, max_items: int) -> dict:
    agent = RescanAgent(
        catalog, api, campaign=campaign, mode="automatic", target_resolution_um=TARGET_UM,
        limits=Limits(budget_s_per_sample=1e6, max_items=max_items),
    )  # fmt: skip
    agent.start()
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, kwargs={"poll_s": poll_s, "stop": stop})
    start = time.perf_counter()
    api.item_add(BPlan("coarse_map", *REGION, sample="tissue", campaign=campaign, **COMMON))
    thread.start()
    try:
        ledger = _wait(
            lambda: (
                (led := Ledger.load(catalog, campaign)).decisions
                and all(
                    i in led.outcomes for d in led.decisions.values() for i in d["auto_accepted"]
                )
                and led
            )
        )
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        thread.join(60)
    (decision,) = ledger.decisions.values()
    coarse_stop = catalog[decision["coarse_uid"]].metadata["stop"]["time"]
    fine = [o["run_uid"] for o in ledger.outcomes.values() if o.get("run_uid")]
    return {
        "s": elapsed,
        "rescans": len(decision["auto_accepted"]),
        "proposals": len(decision["proposals"]),
        "decision_latency_s": float(decision["time"]) - float(coarse_stop),
        "outcomes": sorted({o["exit_status"] for o in ledger.outcomes.values()}),
        **_phases(catalog, decision["coarse_uid"], fine),
    }


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll-s", type=float, default=0.5, help="the agent's poll period")
    parser.add_argument("--max-items", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="asirp-bench-agent-") as folder:
        folder = Path(folder)
        with campaign_stack(folder, timeout_s=30.0) as (uri, key, _, api):
            api.queue_autostart(True)  # items run as they are added, as the agent has it
            catalog = connect(uri, api_key=key)
            try:
                _peer(api, catalog)  # warm-up: the worker's first restoration loads the engine
                for round_index in range(args.repeats):
                    peer = _peer(api, catalog)
                    agent = _agent(
                        api, catalog, f"bench-{round_index}", args.poll_s, args.max_items
                    )
                    rounds.append({"peer": peer, "agent": agent})
                    if not args.json:
                        print(
                            f"round {round_index}: peer {peer['s']:.1f} s "
                            f"({peer['rescans']} rescans), agent {agent['s']:.1f} s "
                            f"({agent['rescans']} rescans, decision "
                            f"{agent['decision_latency_s']:.1f} s after the coarse run)"
                        )
            finally:
                catalog.context.close()

    def both(key: str) -> dict:
        peer = [r["peer"][key] for r in rounds if r["peer"][key] is not None]
        agent = [r["agent"][key] for r in rounds if r["agent"][key] is not None]
        return {
            "peer": _summary(peer),
            "agent": _summary(agent),
            "agent_over_peer": statistics.median(agent) / statistics.median(peer),
        }

    figures = {
        "rounds": rounds,
        "total_s": both("s"),
        "decision_gap_s": both("decision_gap_s"),
        "s_per_rescan": both("s_per_rescan"),
        "rescans": both("rescans"),
        "agent_decision_latency_s": _summary([r["agent"]["decision_latency_s"] for r in rounds]),
        "poll_s": args.poll_s,
        "region_um": [REGION[3], REGION[4]],
        "coarse_step_um": REGION[5],
    }
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        for key in ("total_s", "decision_gap_s", "s_per_rescan", "rescans"):
            entry = figures[key]
            print(
                f"{key}: peer {entry['peer']['median']:.2f}, agent "
                f"{entry['agent']['median']:.2f} (medians; agent/peer "
                f"{entry['agent_over_peer']:.2f})"
            )
        latency = figures["agent_decision_latency_s"]["median"]
        print(f"the agent's decision {latency:.1f} s after the coarse run (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
