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
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
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
