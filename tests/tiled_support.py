"""A real tiled server in a child process, for system tests (loopback, a free port).

The child runs :class:`callbacks.tiled_server.EmbeddedTiledServer` (tiled's own
``SimpleTiledServer``: a SQL catalog and file storage in a folder) until it is terminated; the
API key reaches it through its environment, never its command line.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.asirp_device.conftest import free_port
from tests.qserver_support import (
    child,
    manager_api,
    open_environment,
    re_manager,
    redis_server,
    wait_for,
)

TILED_START_TIMEOUT_S = 60.0

_SERVE = """
import os, signal, threading
from callbacks.tiled_server import EmbeddedTiledServer
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
server = EmbeddedTiledServer(os.environ["TEST_TILED_DIR"], api_key=os.environ["TEST_TILED_KEY"],
                             port=int(os.environ["TEST_TILED_PORT"]))
print("tiled ready", flush=True)
done.wait()
server.close()
"""


@contextlib.contextmanager
def tiled_server(folder: Path) -> Iterator[tuple[str, str]]:
    """A tiled server for this block only; yields ``(uri, api_key)``.

    ``uri`` is ``http://127.0.0.1:PORT/api/v1`` without the key.
    """
    port, key = free_port(), secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "TEST_TILED_DIR": str(folder / "data"),
        "TEST_TILED_KEY": key,
        "TEST_TILED_PORT": str(port),
    }
    log = folder / "tiled.log"
    uri = f"http://127.0.0.1:{port}/api/v1"
    with child([sys.executable, "-c", _SERVE], log, folder, env) as process:

        def answers() -> bool:
            try:
                return httpx.get(f"{uri}/", timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        wait_for(answers, process, TILED_START_TIMEOUT_S, "tiled server", log)
        yield uri, key


@contextlib.contextmanager
def campaign_stack(folder: Path, *, timeout_s: float = 10.0) -> Iterator[tuple[str, str, str, Any]]:
    """tiled, redis and an RE Manager whose worker writes to that tiled, environment open.

    Yields
    ------
    (tiled_uri, api_key, zmq_control_addr, api)
        ``api`` is a ``REManagerAPI`` client (user group ``primary``, ``timeout_s`` replies).
    """
    with (
        tiled_server(folder / "tiled") as (uri, key),
        redis_server(folder) as redis_addr,
        re_manager(
            redis_addr, folder, env={"ASIRP_TILED_URI": uri, "ASIRP_TILED_API_KEY": key}
        ) as control,
        manager_api(control, timeout_s=timeout_s) as api,
    ):
        open_environment(api)
        yield uri, key, control, api
