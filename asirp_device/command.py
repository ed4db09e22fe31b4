"""The ``asirp serve`` sub-command, added to the core CLI through the ``asirp.commands`` group.

This module is loaded every time ``asirp`` builds its parser, so it imports nothing heavy: Tango
is imported by the handler, when ``asirp serve`` actually runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from asirp_device import DEFAULT_DEVICE_NAME, DEFAULT_INSTANCE, SERVER_NAME

DEFAULT_DB_PORT = 10000
"""TCP port of the embedded Tango database (the usual Tango port)."""


def register(subcommands: Any) -> None:
    """Add ``serve`` to the ``asirp`` sub-commands.

    Parameters
    ----------
    subcommands : argparse._SubParsersAction
        The sub-parser collection of the ``asirp`` parser.
    """
    parser = subcommands.add_parser(
        "serve",
        help="run the ASIRP Tango device (with its own sqlite Tango database unless TANGO_HOST "
        "is set)",
        description=(
            "Run the ASIRP Tango device server. Without TANGO_HOST, start an sqlite Tango "
            "database (pytango's databaseds) first, register the device in it and run the "
            "server; with TANGO_HOST, register in that database and run the server. Ctrl-C or "
            "SIGTERM stops everything that was started (on Linux the children die with this "
            "process even when it is killed). The registration adds or updates only this "
            "device, never deleting other entries; a second 'asirp serve' on the same database "
            "file is refused (exit status 2)."
        ),
    )
    parser.add_argument(
        "--device",
        default=DEFAULT_DEVICE_NAME,
        help=f"Tango device name domain/family/member (default {DEFAULT_DEVICE_NAME})",
    )
    parser.add_argument(
        "--instance",
        default=DEFAULT_INSTANCE,
        help=f"server instance, as in '{SERVER_NAME} <instance>' (default {DEFAULT_INSTANCE})",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder that LoadImage and SaveResult are confined to (default: the current "
        "folder with the embedded database; with TANGO_HOST, the DataRoot already set)",
    )
    parser.add_argument(
        "--db-file",
        default=None,
        help="sqlite file of the embedded database (default "
        "$XDG_STATE_HOME/asirp/tango_database.db, else ~/.local/state/asirp/...)",
    )
    parser.add_argument(
        "--db-port",
        type=int,
        default=DEFAULT_DB_PORT,
        help=f"TCP port of the embedded database (default {DEFAULT_DB_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface the embedded database and the device server listen on (default "
        "127.0.0.1, also with TANGO_HOST; give the beamline interface, or 0.0.0.0 for every "
        "interface, to let other machines reach the device)",
    )
    parser.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a device property, repeatable (for example DefaultMethod=wiener, or LiveField=xrf_Cu "
        "and LiveNormalize=i0 for StartLive)",
    )
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from asirp_device.embedded import parse_properties, serve

    return serve(
        device_name=args.device,
        instance=args.instance,
        data_root=args.data_root,
        db_file=args.db_file,
        db_port=args.db_port,
        host=args.host,
        properties=parse_properties(args.property),
    )
