"""The ``asirp gui`` sub-command (to be written), via ``asirp.commands``.

Loaded whenever ``asirp`` builds its parser, so it imports nothing heavy: Qt is imported by the
handler.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subcommands: Any) -> None:
    """Add ``gui`` to the ``asirp`` sub-commands."""
    parser = subcommands.add_parser("gui", help="the operator panel (Qt)")
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> None:
    raise NotImplementedError("asirp gui is not written yet")
