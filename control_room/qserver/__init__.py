"""The files ASIRP ships for a bluesky-queueserver RE Manager (``start-re-manager``).

- :data:`STARTUP_MODULE`: the startup module, :mod:`control_room.qserver_profile` (the simulated
  beamline's devices under the names of the panel's rescans, a RunEngine, ``grid_scan`` and
  ``count``).
- :func:`permissions_path`: ``user_group_permissions.yaml``, which allows those plans and
  devices to the group ``primary``.

``python -m control_room.qserver`` prints the permissions file's path (for the
``--user-group-permissions`` option). This package imports nothing heavy: the profile module
builds the beamline when the manager's worker imports it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

STARTUP_MODULE = "control_room.qserver_profile"
"""What ``start-re-manager --startup-module`` takes."""

PERMISSIONS_FILE = "user_group_permissions.yaml"

TOMO_NAMES = ("tomo_det", "rotation", "shutter", "tomo_sample")
"""The queue's names of the profile's tomography devices: camera, rotation stage, shutter,
sample in/out (``tomo_scan(detector, rotation, shutter, sample=...)``)."""


def permissions_path() -> Path:
    """The shipped ``user_group_permissions.yaml`` (package data, found in an installed copy)."""
    return Path(str(resources.files(__name__).joinpath(PERMISSIONS_FILE)))
