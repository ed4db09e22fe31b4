"""The tiled catalog of the RE Manager's worker, from its environment.

The queue server's worker is a child of ``start-re-manager`` and inherits its environment, so the
beamline gives it the catalog the way tiled's own clients are given one:

``ASIRP_TILED_URI``
    The tiled server, e.g. ``http://tiled.beamline:8000/api/v1``. Unset: the worker writes no
    runs to tiled, and plans that need a catalog (:func:`control_room.queue_plans.coarse_map`)
    refuse to start.
``ASIRP_TILED_API_KEY``
    Its API key (else the URI's ``api_key=`` parameter, or ``TILED_API_KEY``). It is read, never
    logged or printed.
"""

from __future__ import annotations

import functools
import os
from typing import Any

TILED_URI_ENV = "ASIRP_TILED_URI"
TILED_API_KEY_ENV = "ASIRP_TILED_API_KEY"


@functools.cache
def worker_catalog() -> Any | None:
    """The catalog named by ``ASIRP_TILED_URI`` (one client per process), or ``None``.

    Raises
    ------
    ConnectionError
        The variable is set but the server does not answer (one clear error when the worker
        environment opens, not a silent loss of every run).
    """
    uri = os.environ.get(TILED_URI_ENV, "").strip()
    if not uri:
        return None
    from callbacks.tiled_server import connect

    try:
        return connect(uri, api_key=os.environ.get(TILED_API_KEY_ENV) or None)
    except Exception as error:
        where = uri.split("?")[0]  # never the api_key= parameter
        raise ConnectionError(
            f"cannot connect to the tiled server {where} ({TILED_URI_ENV}): {type(error).__name__}"
        ) from None


def close_worker_catalog() -> None:
    """Close the process's catalog client (if one was made) and forget it."""
    if worker_catalog.cache_info().currsize:
        try:
            catalog = worker_catalog()
        except ConnectionError:
            catalog = None
        if catalog is not None:
            catalog.context.close()
    worker_catalog.cache_clear()
