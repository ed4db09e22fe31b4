"""Registering the ASIRP device in a Tango database, touching nothing else.

One job: reaching a Tango database quickly or saying why not (:func:`connect_database`), and
adding the device to server ``ASIRP/<instance>`` there (:func:`register_device`), for
``asirp serve`` (:mod:`asirp_device.embedded`, which re-exports these names) and the control
room. :func:`register_device` adds or updates only the named device; it never deletes or moves
another entry, and refuses a name that belongs to another server.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

import tango

from asirp_device import SERVER_NAME
from asirp_device.processes import EmbeddedStartError

_DEVICE_NAME = re.compile(r"^[^/\s]+/[^/\s]+/[^/\s]+$")


DATABASE_TIMEOUT_S = 5.0
"""How long reaching a Tango database (TCP connect, then its first answer) may take, s."""


class DatabaseUnreachable(EmbeddedStartError):
    """Nothing answers as a Tango database at ``TANGO_HOST``."""


def _split_tango_host(tango_host: str) -> tuple[str, int]:
    host, _, port = tango_host.split(",")[0].strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TANGO_HOST must be host:port, got {tango_host!r}")
    return host, int(port)


def devfailed_text(error: tango.DevFailed) -> str:
    """The first description of a ``DevFailed``, on one line."""
    description = error.args[0].desc if error.args else str(error)
    return " ".join(str(description).split())


def connect_database(tango_host: str, timeout_s: float = DATABASE_TIMEOUT_S) -> tango.Database:
    """A client of the Tango database at ``tango_host`` (``host:port[,host:port...]``).

    Each ``host:port`` is first tried with a plain TCP connection (at most ``timeout_s`` s), so
    an unreachable database is reported quickly instead of through omniORB's retries; the first
    one that answers as a Tango database is returned.

    Raises
    ------
    ValueError
        For a ``tango_host`` that is not ``host:port``.
    DatabaseUnreachable
        When no database answers; the message names ``tango_host`` and why.
    """
    entries = [entry.strip() for entry in tango_host.split(",") if entry.strip()]
    if not entries:
        raise ValueError(f"TANGO_HOST must be host:port, got {tango_host!r}")
    problems: list[str] = []
    for entry in entries:
        host, port = _split_tango_host(entry)
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except OSError as error:
            problems.append(f"{host}:{port}: {error.strerror or error}")
            continue
        try:
            database = tango.Database(host, port)
            database.set_timeout_millis(int(1000 * timeout_s))
            database.get_info()
        except tango.DevFailed as error:
            problems.append(f"{host}:{port}: {devfailed_text(error)}")
            continue
        return database
    raise DatabaseUnreachable(
        f"cannot reach the Tango database at {tango_host} ({'; '.join(problems)}); check that "
        "TANGO_HOST names a running database, or unset it to start an embedded one"
    )


def register_device(
    tango_host: str,
    device_name: str,
    instance: str,
    properties: Mapping[str, str] | None = None,
) -> list[str]:
    """Add ``device_name`` (class ``ASIRP``) to server ``ASIRP/<instance>``, touching nothing else.

    Only this device's entry is written (when it is missing), with the server's admin device
    ``dserver/ASIRP/<instance>`` if the database did not create it; ``properties`` are written
    to this device (existing ones not named stay as they are). No device or server is ever
    deleted or moved, so this is safe against a facility database: other devices of the same
    server stay registered and are served with it.

    Returns
    -------
    list of str
        The other devices of ``ASIRP/<instance>`` (they start with the server too).

    Raises
    ------
    ValueError
        For a malformed name or instance, or a device name that the database gives to another
        server or class (it is not moved: choose another ``--device``).
    DatabaseUnreachable
        When the database does not answer.
    """
    if not _DEVICE_NAME.match(device_name):
        raise ValueError(f"device name must be domain/family/member, got {device_name!r}")
    if not instance or "/" in instance:
        raise ValueError(f"instance must be a non-empty name without '/', got {instance!r}")
    database = connect_database(tango_host)
    server = f"{SERVER_NAME}/{instance}"
    try:
        existing = database.get_device_info(device_name)
    except tango.DevFailed as error:
        if not error.args or error.args[0].reason != "DB_DeviceNotDefined":
            raise
        existing = None
    if existing is not None and (
        existing.ds_full_name.lower() != server.lower() or existing.class_name != SERVER_NAME
    ):
        raise ValueError(
            f"device {device_name} is registered in the Tango database at {tango_host} for "
            f"server {existing.ds_full_name} (class {existing.class_name}); asirp serve does "
            "not move it: choose another --device (or the --instance it belongs to)"
        )
    if existing is None:
        info = tango.DbDevInfo()
        info.name = device_name
        info._class = SERVER_NAME
        info.server = server
        database.add_device(info)
    if not list(database.get_device_name(server, "DServer").value_string):
        admin = tango.DbDevInfo()
        admin.name = f"dserver/{server}"
        admin._class = "DServer"
        admin.server = server
        database.add_device(admin)
    if properties:
        database.put_device_property(device_name, {k: [v] for k, v in properties.items()})
    served = database.get_device_name(server, SERVER_NAME).value_string
    return sorted(name for name in served if name.lower() != device_name.lower())
