"""The ``asirp control-room`` sub-command (the README's main command), via ``asirp.commands``.

Loaded whenever ``asirp`` builds its parser, so it imports nothing heavy: the loop (Tango,
bluesky, tiled, the simulator) is imported by the handler.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subcommands: Any) -> None:
    """Add ``control-room`` to the ``asirp`` sub-commands.

    Parameters
    ----------
    subcommands : argparse._SubParsersAction
        The sub-parser collection of the ``asirp`` parser.
    """
    parser = subcommands.add_parser(
        "control-room",
        help="run the whole loop on the embedded default: Tango device, simulated beamline, "
        "RunEngine, tiled, adaptive ROI rescans of the clustered tissue, and a report (the "
        "restored and the raw map's decisions side by side)",
    )
    parser.add_argument("-o", "--output", default="out/demo", help="report folder (out/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated sample")
    parser.add_argument("--element", default="Se", help="element map driving the rescans (Se)")
    parser.add_argument("--method", default="richardson_lucy", help="restoration method")
    parser.add_argument(
        "--coarse-step",
        type=float,
        default=None,
        metavar="UM",
        help="coarse step, µm (default: half the 50 µm beam)",
    )
    parser.add_argument(
        "--no-tango",
        action="store_true",
        help="restore in-process with the live callback instead of the Tango device",
    )
    parser.add_argument(
        "--temporal",
        action="store_true",
        help="temporal feedback instead: a temperature ramp over a powder sample with a hidden "
        "phase transition, analysed live, which slows down when a change is detected",
    )
    parser.add_argument(
        "--kind",
        default="splitting",
        choices=("splitting", "new_phase", "none"),
        help="with --temporal: the hidden event (splitting)",
    )
    parser.add_argument(
        "--frame-side",
        type=int,
        default=1024,
        choices=(256, 512, 1024),
        help="with --temporal: detector side, px (1024: one megapixel)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.temporal:
        return _run_temporal(args)
    from control_room.loop import run_control_room

    summary = run_control_room(
        args.output,
        seed=args.seed,
        element=args.element,
        method=args.method,
        coarse_step_um=args.coarse_step,
        use_tango=not args.no_tango,
    )
    print(Path(args.output, "summary.md").read_text(encoding="utf-8"))
    print(json.dumps({"run_uids": summary["run_uids"]}))
    return 0


def _run_temporal(args: argparse.Namespace) -> int:
    from control_room.temporal import run_temporal_demo

    summary = run_temporal_demo(
        args.output,
        seed=args.seed,
        kind=args.kind,
        side_px=args.frame_side,
        use_tango=not args.no_tango,
    )
    print(Path(args.output, "temporal_summary.md").read_text(encoding="utf-8"))
    print(json.dumps({"raw_uid": summary["raw_uid"], "derived_uid": summary["derived_uid"]}))
    return 0
