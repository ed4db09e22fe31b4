"""The ``asirp gui`` sub-command, via ``asirp.commands``.

Loaded whenever ``asirp`` builds its parser, so it imports nothing heavy: Qt is imported by the
handler. ``--queue-server`` (or ``$ASIRP_QSERVER_ADDR``) sends ROI rescans to a
bluesky-queueserver RE Manager (:class:`asirp_gui.rescan.QueueServerSender`); without it the panel
shows each plan item in its message area.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

QUEUE_SERVER_ENV = "ASIRP_QSERVER_ADDR"
"""Environment variable of the RE Manager's zmq control address (``--queue-server``'s default)."""


def register(subcommands: Any) -> None:
    """Add ``gui`` to the ``asirp`` sub-commands."""
    parser = subcommands.add_parser(
        "gui",
        help="the operator panel (Qt): live device maps and the offline map tool",
        description="The ASIRP operator panel: a Live tab on an ASIRP Tango device and an "
        "Offline tab that makes, restores and exports element maps from raw scan files.",
    )
    parser.add_argument("--device", help="Tango device to connect to at start")
    parser.add_argument(
        "--settings", help="settings file (INI; default $ASIRP_GUI_SETTINGS or per-user)"
    )
    parser.add_argument(
        "--queue-server",
        metavar="tcp://HOST:PORT",
        default=os.environ.get(QUEUE_SERVER_ENV) or None,
        help="zmq control address of a bluesky-queueserver RE Manager: ROI rescans are added to "
        f"its queue (default ${QUEUE_SERVER_ENV}; without one, the plan item is only shown); "
        "an encrypted manager's public key comes from $QSERVER_ZMQ_PUBLIC_KEY",
    )
    parser.add_argument(
        "--screenshot",
        metavar="FILE.png",
        help="render each tab with example data to FILE_offline.png, FILE_live.png and "
        "FILE_results.png, then exit",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing screenshot files"
    )
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> None:
    if args.screenshot:
        from asirp_gui.screenshot import screenshot_paths

        screenshot_paths(args.screenshot)  # a bad name fails before Qt starts
        # no display is needed to render images
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sender = None
    if args.queue_server:
        from asirp_gui.rescan import QueueServerSender

        sender = QueueServerSender(args.queue_server)  # a malformed address fails before Qt
    from qtpy.QtWidgets import QApplication

    from asirp_gui.app import MainWindow
    from asirp_gui.settings import open_settings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(open_settings(args.settings), sender)
    if args.screenshot:
        from asirp_gui.screenshot import render_screenshots

        try:
            for path in render_screenshots(window, args.screenshot, overwrite=args.overwrite):
                print(path)
        finally:
            window.close()
        return
    window.show()
    if args.device:
        window.live.connect_device(args.device)
    app.exec_()
