"""The ``asirp replay`` command (to be written: re-run a result from its provenance)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add ``replay`` to the ``asirp`` sub-commands."""
    parser = commands.add_parser("replay", help="re-run a result file from its provenance")
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> None:
    raise NotImplementedError("replay is not written yet")
