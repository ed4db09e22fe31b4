"""Where derived runs go: an embedded tiled server writing to a folder, or an existing server.

The embedded server is tiled's own ``tiled.server.SimpleTiledServer``: a catalog (SQLite) and
writable storage (array files and a DuckDB table store) in one folder, served on
``127.0.0.1`` at a free port in a background thread, with a random API key. The same folder
can be served again later (``tiled serve catalog DIR/catalog.db -w DIR/data ...`` or another
:class:`EmbeddedTiledServer`) to read the runs back.

Examples
--------
>>> from callbacks.tiled_server import EmbeddedTiledServer
>>> with EmbeddedTiledServer("asirp-tiled") as server:
...     client = server.client()
...     print(len(client))
0
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

_LOG = logging.getLogger(__name__)

DEFAULT_DIRECTORY = "asirp-tiled"
"""Folder of the embedded server when none is given (relative to the working directory)."""


def connect(uri: str, api_key: str | None = None) -> Any:
    """A client of an existing tiled server.

    Parameters
    ----------
    uri : str
        Server address, e.g. ``http://tiled.beamline:8000/api/v1`` (an ``api_key=`` query
        parameter in the URI also works).
    api_key : str, optional
        API key (else the URI's, or the ``TILED_API_KEY`` environment variable).

    Returns
    -------
    tiled.client.container.Container
    """
    from tiled.client import from_uri

    return from_uri(uri, api_key=api_key)


class EmbeddedTiledServer:
    """A local tiled server writing to a folder, running in a background thread.

    Parameters
    ----------
    directory : str or pathlib.Path
        Folder for the catalog and the data (created if needed; reused if it holds a catalog).
    api_key : str, optional
        API key (default: a random one).
    port : int
        TCP port on 127.0.0.1 (0: a free one).

    Attributes
    ----------
    uri : str
        Address including the API key, for :func:`connect` or other processes.
    api_key : str
    directory : pathlib.Path
    """

    def __init__(
        self,
        directory: str | Path = DEFAULT_DIRECTORY,
        *,
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        from tiled.server import SimpleTiledServer

        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._server = SimpleTiledServer(directory=self.directory, api_key=api_key, port=port)
        self.uri: str = self._server.uri
        self.api_key: str = self._server.api_key
        self.port: int = self._server.port
        self._clients: list[Any] = []
        self.closed = False
        _LOG.info("embedded tiled server at %s, data in %s", self.uri.split("?")[0], self.directory)

    def client(self) -> Any:
        """A new client of this server (closed with the server)."""
        client = connect(self.uri)
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Close the clients made here and stop the server."""
        if self.closed:
            return
        self.closed = True
        for client in self._clients:
            try:
                client.context.close()
            except Exception:  # closing is best effort
                _LOG.debug("closing a tiled client failed", exc_info=True)
        self._clients.clear()
        self._server.close()

    def __enter__(self) -> EmbeddedTiledServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
