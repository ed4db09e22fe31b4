"""``asirp agent``: run the rescan agent, review its proposals, draw a campaign.

Loaded whenever ``asirp`` builds its parser, so it imports nothing heavy; the handlers import
tiled, the queue-server API and the agent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

TILED_HELP = "the tiled server the RE Manager's worker writes to (API key: $TILED_API_KEY)"


def register(subcommands: Any) -> None:
    """Add ``agent`` (``run``, ``proposals``, ``accept``, ``edit``, ``reject``, ``figure``)."""
    parser = subcommands.add_parser(
        "agent",
        help="the rescan agent of a bluesky-queueserver campaign: proposals from coarse maps "
        "in tiled, reviewed by an operator (or accepted within limits), run by the queue",
    )
    actions = parser.add_subparsers(dest="agent_action", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--tiled", required=True, metavar="URI", help=TILED_HELP)
        sub.add_argument("--campaign", required=True, help="campaign name")

    run = actions.add_parser("run", help="run the agent until stopped (Ctrl-C, SIGTERM)")
    common(run)
    run.add_argument(
        "--queue-server",
        default=os.environ.get("ASIRP_QSERVER_ADDR", "tcp://127.0.0.1:60615"),
        metavar="ADDR",
        help="the RE Manager's 0MQ control address ($ASIRP_QSERVER_ADDR, tcp://127.0.0.1:60615)",
    )
    run.add_argument("--mode", choices=("approval", "automatic"), default="approval")
    run.add_argument("--budget-s", type=float, default=600.0, help="automatic: s per sample")
    run.add_argument("--max-items", type=int, default=20, help="automatic: most rescans")
    run.add_argument("--target-resolution-um", type=float, default=20.0, metavar="UM")
    run.add_argument("--max-per-map", type=int, default=10, help="most proposals per coarse map")
    run.add_argument(
        "--actuators",
        nargs=2,
        default=("sample_x", "sample_y"),
        metavar=("X", "Y"),
        help="the profile's fast and slow stage motors (sample_x sample_y)",
    )
    run.add_argument(
        "--sensors", nargs="+", default=("xrf", "i0"), help="the profile's detectors (xrf i0)"
    )
    run.add_argument("--poll-s", type=float, default=1.0, help="seconds between polls")
    run.add_argument("--user", default="asirp agent", help="the items' submitter")
    run.add_argument("--user-group", default="primary", help="the submitter's user group")
    run.add_argument(
        "--no-autostart", action="store_true", help="leave the queue's autostart as it is"
    )
    run.set_defaults(handler=_run)

    listing = actions.add_parser("proposals", help="the campaign's proposals and their states")
    common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_proposals)

    for action in ("accept", "edit", "reject"):
        sub = actions.add_parser(action, help=f"{action} pending proposal(s)")
        common(sub)
        sub.add_argument("ids", nargs="*", help="proposal ids")
        sub.add_argument("--operator", default=os.environ.get("USER") or "operator")
        sub.add_argument("--why", default="", help="reason (recorded)")
        if action == "accept":
            sub.add_argument("--all", action="store_true", help="every pending proposal")
        if action == "edit":
            sub.add_argument("--x-range", nargs=2, type=float, metavar=("X0", "X1"))
            sub.add_argument("--y-range", nargs=2, type=float, metavar=("Y0", "Y1"))
            sub.add_argument("--step-um", type=float)
        sub.set_defaults(handler=_review, action=action)

    figure = actions.add_parser("figure", help="draw the campaign: maps, proposals, rescans")
    common(figure)
    figure.add_argument("-o", "--output", default="campaign.png", help="PNG file (new)")
    figure.add_argument("--overwrite", action="store_true", help="replace an existing file")
    figure.set_defaults(handler=_figure)


def _catalog(uri: str) -> Any:
    from callbacks.tiled_server import connect

    try:
        return connect(uri)
    except Exception as error:
        raise SystemExit(
            f"asirp agent: cannot connect to the tiled server {uri.split('?')[0]}: "
            f"{type(error).__name__}"
        ) from None


def _run(args: argparse.Namespace) -> int:
    from bluesky_queueserver_api.zmq import REManagerAPI

    from control_room.agent.agent import Limits, RescanAgent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "bluesky_queueserver_api", "bluesky_queueserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        limits = Limits(budget_s_per_sample=args.budget_s, max_items=args.max_items)
    except ValueError as error:
        raise SystemExit(f"asirp agent: {error}") from None
    catalog = _catalog(args.tiled)
    manager = REManagerAPI(zmq_control_addr=args.queue_server, timeout_recv=10.0)
    manager.user, manager.user_group = args.user, args.user_group
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        agent = RescanAgent(
            catalog,
            manager,
            campaign=args.campaign,
            mode=args.mode,
            limits=limits,
            target_resolution_um=args.target_resolution_um,
            max_per_map=args.max_per_map,
            actuators=tuple(args.actuators),
            sensors=tuple(args.sensors),
            autostart=not args.no_autostart,
        )
        agent.start()
        print(f"agent of campaign {args.campaign!r} running ({args.mode} mode)", flush=True)
        ended = agent.run(poll_s=args.poll_s, stop=stop)
    except (ValueError, RuntimeError, manager.RequestTimeoutError) as error:
        print(f"asirp agent: {error}", file=sys.stderr)
        return 2
    finally:
        manager.close()
    print(f"agent ended: {ended}", flush=True)
    return 0


def _proposals(args: argparse.Namespace) -> int:
    from control_room.agent.reviews import proposals_table

    table = proposals_table(_catalog(args.tiled), args.campaign)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    if not table:
        print(f"no proposals in campaign {args.campaign!r}")
    for row in table:
        (x0, x1), (y0, y1) = row["x_range_um"], row["y_range_um"]
        print(
            f"{row['id']:<16} {row['state']:<10} x {x0:g}..{x1:g} µm, y {y0:g}..{y1:g} µm, "
            f"step {row['step_um']:g} µm, ~{row['estimated_s'] or 0:.0f} s  {row['why']}"
        )
    return 0


def _review(args: argparse.Namespace) -> int:
    from control_room.agent.reviews import ReviewError, proposals_table, review

    catalog = _catalog(args.tiled)
    ids = list(args.ids)
    if getattr(args, "all", False):
        ids += [r["id"] for r in proposals_table(catalog, args.campaign) if r["state"] == "pending"]
    if not ids:
        print("asirp agent: name the proposal(s) (or --all)", file=sys.stderr)
        return 2
    failed = 0
    for ident in dict.fromkeys(ids):
        try:
            uid = review(
                catalog,
                args.campaign,
                ident,
                args.action,
                operator=args.operator,
                x_range_um=getattr(args, "x_range", None),
                y_range_um=getattr(args, "y_range", None),
                step_um=getattr(args, "step_um", None),
                reason=args.why,
            )
        except ReviewError as error:
            print(f"asirp agent: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{ident}: {args.action}ed (record {uid})")
    return 1 if failed else 0


def _figure(args: argparse.Namespace) -> int:
    from control_room.agent.figure import draw_campaign

    try:
        path = draw_campaign(
            _catalog(args.tiled), args.campaign, args.output, overwrite=args.overwrite
        )
    except (FileExistsError, LookupError) as error:
        print(f"asirp agent: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0
