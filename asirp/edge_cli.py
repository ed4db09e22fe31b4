"""The ``asirp psf-from-edge`` command (to be written: the beam from a knife-edge scan)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add ``psf-from-edge`` to the ``asirp`` sub-commands."""
    parser = commands.add_parser("psf-from-edge", help="beam FWHM from a knife-edge scan")
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> None:
    raise NotImplementedError("psf-from-edge is not written yet")
