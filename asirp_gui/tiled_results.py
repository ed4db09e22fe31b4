"""Past restorations read back from tiled: list the derived runs, summarise them, read their maps.

The operator panel's "Results" tab (:mod:`asirp_gui.results_browser`) calls these functions in
worker threads; none of them touches Qt, so they are tested on their own. The schema read here
is the one :mod:`callbacks.publish` writes: a derived run's start document carries the
provenance (``method``, ``parent_uid``, ``map``, ``psf``, ...), its stream ``restored`` holds
``restored_map`` and ``input_map`` (one event per published restoration, ``final`` on the
last) with their cell centres in µm, and its stop document the outcome.

Everything read is data from a server: sizes are checked from the array structure before an
array is read (:data:`MAX_MAP_PIXELS`), listings are capped (:data:`MAX_RUNS`), and metadata
of any shape gives text, never an exception from a summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from callbacks.address import (
    SECRET_QUERY_KEYS,
    RedactingFilter,
    redact,
    redact_uri,
    uri_secrets,
)
from callbacks.publish import DERIVED_PLAN_NAME, DERIVED_STREAM
from callbacks.tiled_scan import plain_metadata

API_KEY_ENV = "TILED_API_KEY"
"""Environment variable holding the tiled API key (as ``asirp live`` and tiled itself read it)."""

MAX_RUNS = 200
"""Most derived runs listed (the newest ones)."""

MAX_MAP_PIXELS = 4096 * 4096
"""Largest map read, in pixels (64 MiB as float32); a larger one is refused with a message."""

CONNECT_TIMEOUT_S = 5.0
"""Time to open a TCP connection to the server, s (a server that is down fails this fast)."""

READ_TIMEOUT_S = 20.0
"""Time to wait for one reply of the server, s."""

COLUMNS = ("Time", "Raw scan", "Map", "Method", "Scan shape", "Outcome")
"""Columns of a summary row (:meth:`ResultSummary.row`)."""


# -- addresses ---------------------------------------------------------------------------------
def check_uri(uri: str) -> tuple[str, int]:
    """Check a tiled URI and return its host and port.

    Parameters
    ----------
    uri : str
        E.g. ``"http://tiled.beamline:8000/api/v1"``.

    Returns
    -------
    host : str
    port : int
        The URI's port, else 80 (http) or 443 (https).

    Raises
    ------
    ValueError
        If it is not an ``http://`` or ``https://`` address with a host (the message shows the
        URI with its secrets replaced by ``***``).
    """
    usage = f"give the tiled server as http://HOST:PORT/api/v1; got {redact_uri(uri)!r}"
    try:
        parts = urlsplit(uri.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"malformed tiled URI: {usage}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a tiled URI: {usage}")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def storable_uri(uri: str) -> str:
    """``uri`` without its secrets (password, ``api_key=``): what may be saved in settings."""
    parts = urlsplit(uri.strip())
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [
            (key, value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if key.lower() not in SECRET_QUERY_KEYS
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)
"""Loggers of the HTTP libraries under tiled's client (httpx logs URLs, httpcore headers)."""

_HTTP_LOG_FILTER = RedactingFilter([])
"""Removes the keys used here from httpx's records (it logs request URLs, with their query)."""


def _hide_in_http_logs(secrets: Sequence[str]) -> None:
    """Redact ``secrets`` in whatever the HTTP libraries log, wherever it is written."""
    known = _HTTP_LOG_FILTER.secrets
    known.extend(sorted({s for s in secrets if s} - set(known)))
    # a logger's filters see only its own records, not its children's: name each one
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _HTTP_LOG_FILTER not in logger.filters:
            logger.addFilter(_HTTP_LOG_FILTER)


def api_key_from_environment() -> str | None:
    """The API key in ``$TILED_API_KEY`` (None when unset or empty)."""
    return os.environ.get(API_KEY_ENV) or None


def open_client(
    uri: str,
    api_key: str | None = None,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> Any:
    """A tiled client of ``uri``, failing fast and in one line when the server is not there.

    A TCP connection is tried first (``connect_timeout_s``): tiled's client retries a refused
    connection for up to 45 s, which an operator should not wait for.

    Parameters
    ----------
    uri : str
        Server address (an ``api_key=`` query parameter works too).
    api_key : str, optional
        API key; default ``$TILED_API_KEY``.
    connect_timeout_s, read_timeout_s : float
        Timeouts, s.

    Returns
    -------
    tiled.client.container.Container

    Raises
    ------
    ValueError
        If ``uri`` is not a tiled URI.
    ConnectionError
        If nothing answers, or the server refuses or fails; the message holds no secret.
    """
    import httpx
    from tiled.client.constructors import from_context
    from tiled.client.context import Context

    host, port = check_uri(uri)
    key = api_key or api_key_from_environment()
    secrets = uri_secrets(uri, key)
    _hide_in_http_logs(secrets)
    shown = redact_uri(uri.strip())
    try:
        with socket.create_connection((host, port), timeout=connect_timeout_s):
            pass
    except OSError as error:
        why = error.strerror or str(error) or type(error).__name__
        raise ConnectionError(f"no tiled server answers at {host}:{port} ({why})") from None
    timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
    context = None
    try:
        # tiled's from_uri, with the context closed when the server fails (no leaked socket)
        context, node_path = Context.from_any_uri(uri.strip(), api_key=key, timeout=timeout)
        client = from_context(context, node_path_parts=node_path)
    except Exception as error:  # httpx, tiled, a server that is not tiled: one line
        if context is not None:
            with contextlib.suppress(Exception):
                context.close()
        text = redact(" ".join(str(error).split()) or "no details", secrets)
        raise ConnectionError(
            f"cannot open tiled at {shown}: {type(error).__name__}: {text}"
        ) from None
    if not hasattr(client, "search"):
        client.context.close()
        raise ConnectionError(f"{shown} is a tiled {type(client).__name__}, not a catalog of runs")
    return client


def close_client(client: Any) -> None:
    """Close a client's connections (best effort: a client of a server gone away is closed too)."""
    with contextlib.suppress(Exception):  # closing is best effort; nothing to tell
        client.context.close()


# -- summaries ---------------------------------------------------------------------------------
def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def describe_source(source: Any) -> str:
    """What a derived run mapped, in a few characters (``"xrf_Cu / i0"``, ``"Fe"``).

    Parameters
    ----------
    source : dict
        The start document's ``map.source`` (:meth:`callbacks.mapping.MapSource.describe`).
    """
    source = _mapping(source)
    kind = source.get("kind")
    if kind == "field":
        fields = source.get("fields")
        what = "+".join(str(f) for f in fields) if isinstance(fields, list) else str(fields)
    elif kind == "element":
        what = str(source.get("element", "?"))
    elif kind == "spectrum":
        channels = source.get("channels")
        span = "-".join(str(c) for c in channels) if isinstance(channels, list) else "?"
        what = f"{source.get('spectrum', '?')}[{span}]"
    else:
        return "—"
    normalize = source.get("normalize")
    return f"{what} / {normalize}" if normalize else what


@dataclass(frozen=True)
class ResultSummary:
    """One derived run as listed: who, when, what, how, and how it ended.

    Attributes
    ----------
    uid : str
        Uid of the derived run.
    time : float or None
        Its start time, s since the epoch.
    raw_uid : str
        Uid of the raw run it restored.
    raw_scan_id : int or None
        Scan id of the raw run.
    source : str
        What was mapped (:func:`describe_source`).
    method : str
        Method that ran.
    shape : tuple of int or None
        Scan shape ``(rows, columns)`` (the restored map is larger when super-resolved).
    outcome : str
        The stop document's ``exit_status`` (``"running"`` without one).
    reason : str
        Why it did not succeed (empty on success).
    failed_restorations : int
        Restoration attempts that raised.
    """

    uid: str
    time: float | None
    raw_uid: str
    raw_scan_id: int | None
    source: str
    method: str
    shape: tuple[int, ...] | None
    outcome: str
    reason: str = ""
    failed_restorations: int = 0

    def row(self) -> tuple[str, ...]:
        """The row's cells, in :data:`COLUMNS` order."""
        when = (
            datetime.fromtimestamp(self.time).strftime("%Y-%m-%d %H:%M:%S")
            if self.time is not None
            else "—"
        )
        scan = f"#{self.raw_scan_id} " if self.raw_scan_id is not None else ""
        shape = " × ".join(str(n) for n in self.shape) if self.shape else "—"
        outcome = self.outcome
        if self.failed_restorations:
            outcome += f", {self.failed_restorations} failed"
        return (when, f"{scan}{self.raw_uid[:8]}", self.source, self.method, shape, outcome)


def summarise(uid: str, metadata: Mapping[str, Any]) -> ResultSummary:
    """The summary of a derived run from its metadata (start and stop documents).

    Parameters
    ----------
    uid : str
        The run's key in the catalog.
    metadata : mapping
        ``run.metadata``: ``{"start": {...}, "stop": {...} or None, ...}``.
    """
    plain = _mapping(plain_metadata(metadata))
    start, stop = _mapping(plain.get("start")), _mapping(plain.get("stop"))
    geometry = _mapping(_mapping(start.get("map")).get("geometry"))
    shape = geometry.get("shape")
    scan_id = start.get("parent_scan_id")
    failed = stop.get("failed_restorations")
    return ResultSummary(
        uid=str(start.get("uid", uid)),
        time=_number(start.get("time")),
        raw_uid=str(start.get("parent_uid", "?")),
        raw_scan_id=scan_id if isinstance(scan_id, int) and not isinstance(scan_id, bool) else None,
        source=describe_source(_mapping(start.get("map")).get("source")),
        method=str(start.get("method", "?")),
        shape=tuple(int(n) for n in shape)
        if isinstance(shape, list) and all(isinstance(n, int) for n in shape)
        else None,
        outcome=str(stop.get("exit_status", "running")) if stop else "running",
        reason=" ".join(str(stop.get("reason", "")).split()),
        failed_restorations=failed if isinstance(failed, int) and failed > 0 else 0,
    )


def list_results(client: Any, limit: int = MAX_RUNS) -> list[ResultSummary]:
    """The newest ``limit`` derived runs of a catalog, newest first.

    Parameters
    ----------
    client : tiled.client.container.Container
        The catalog of runs.
    limit : int
        Most runs listed.

    Returns
    -------
    list of ResultSummary
        Summaries from the runs' metadata only (no array is read).
    """
    from tiled.queries import Key

    found = client.search(Key("start.plan_name") == DERIVED_PLAN_NAME)
    newest_first = found.sort(("start.time", -1))
    summaries = [summarise(key, run.metadata) for key, run in islice(newest_first.items(), limit)]
    # the server sorted already; this keeps the order for a catalog that cannot sort
    return sorted(summaries, key=lambda s: -(s.time or 0.0))


# -- one result ----------------------------------------------------------------------------------
@dataclass
class ResultMaps:
    """The maps and provenance of one derived run, ready to show.

    Attributes
    ----------
    uid : str
        Uid of the derived run.
    raw, restored : numpy.ndarray or None
        ``(H, W)`` and ``(H * s, W * s)`` float32 counts (the normalised raw map that went in,
        and its restoration); None when the run published none.
    raw_extent_um, restored_extent_um : (float, float, float, float) or None
        ``(x0, x1, y0, y1)`` µm, the outer edges of the maps' cells (None without coordinates).
    details : dict
        Provenance, outcome, cautions and figures (JSON-ready).
    note : str
        What the operator should know (a result that is not final, a map not read).
    """

    uid: str
    raw: np.ndarray | None = None
    restored: np.ndarray | None = None
    raw_extent_um: tuple[float, float, float, float] | None = None
    restored_extent_um: tuple[float, float, float, float] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def cautions(self) -> list[str]:
        """The engine's cautions about the restoration shown."""
        return list(self.details.get("cautions", []))


def _edges(centres: np.ndarray) -> tuple[float, float] | None:
    """Outer edges of cells from their centres (signed: decreasing centres give x1 < x0)."""
    centres = np.asarray(centres, dtype=np.float64).ravel()
    if centres.size < 2 or not np.isfinite(centres).all():
        return None
    step = (centres[-1] - centres[0]) / (centres.size - 1)
    if step == 0.0:
        return None
    return float(centres[0] - step / 2), float(centres[-1] + step / 2)


def extent_from_centres(
    y_um: np.ndarray, x_um: np.ndarray
) -> tuple[float, float, float, float] | None:
    """``(x0, x1, y0, y1)`` µm around cells centred at ``y_um`` ``(H,)`` and ``x_um`` ``(W,)``.

    None when an axis has fewer than two cells or no finite, non-zero step.
    """
    x_edges, y_edges = _edges(x_um), _edges(y_um)
    if x_edges is None or y_edges is None:
        return None
    return (*x_edges, *y_edges)


def checked_map(stream: Any, key: str, index: int, max_pixels: int) -> np.ndarray:
    """Event ``index`` of the map field ``key`` ``(time, H, W)``, its size checked first.

    Raises
    ------
    ValueError
        If the field is not a stack of 2-D maps, or one map has more than ``max_pixels``.
    """
    array = stream[key]
    shape = tuple(int(n) for n in array.structure().shape)
    if len(shape) != 3:
        raise ValueError(f"{key} has shape {shape}, not (time, rows, columns)")
    pixels = shape[1] * shape[2]
    if pixels > max_pixels:
        raise ValueError(
            f"{key} is {shape[1]} × {shape[2]} = {pixels} pixels, more than the "
            f"{max_pixels} shown here"
        )
    return np.asarray(array[index], dtype=np.float32)


def _coordinates(stream: Any, keys: tuple[str, str], index: int, shape: tuple[int, ...]) -> Any:
    """The map's extent from its coordinate fields, or None when they are absent or wrong."""
    if not all(key in stream for key in keys):
        return None
    axes = []
    for key, size in zip(keys, shape, strict=True):
        coordinate = stream[key]
        if tuple(coordinate.structure().shape)[1:] != (size,):
            return None
        axes.append(np.asarray(coordinate[index], dtype=np.float64))
    return extent_from_centres(*axes)


def _event_text(stream: Any, key: str, index: int) -> str:
    if key not in stream:
        return ""
    values = stream[key].read()
    return str(values[index]) if len(values) > index else ""


def read_result(client: Any, uid: str, max_pixels: int = MAX_MAP_PIXELS) -> ResultMaps:
    """The final maps of derived run ``uid`` (else its last published ones) and provenance.

    Parameters
    ----------
    client : tiled.client.container.Container
        The catalog of runs.
    uid : str
        Uid of a derived run.
    max_pixels : int
        Largest map read; a larger one is left out with a note.

    Returns
    -------
    ResultMaps
    """
    run = client[uid]
    plain = _mapping(plain_metadata(run.metadata))
    start, stop = _mapping(plain.get("start")), _mapping(plain.get("stop"))
    provenance_keys = (
        "uid",
        "time",
        "parent_uid",
        "parent_scan_id",
        "parent_plan_name",
        "parent_sample",
        "method",
        "method_requested",
        "parameters",
        "parameters_requested",
        "psf",
        "map",
        "live",
        "software",
        "software_version",
    )
    details: dict[str, Any] = {key: start[key] for key in provenance_keys if key in start}
    details["outcome"] = {
        key: stop[key]
        for key in ("exit_status", "reason", "restorations", "failed_restorations")
        if key in stop
    } or {"exit_status": "running (no stop document yet)"}
    result = ResultMaps(uid=uid, details=details)
    if DERIVED_STREAM not in run:
        result.note = "this run holds no restored maps"
        return result
    stream = run[DERIVED_STREAM]
    finals = np.asarray(stream["final"].read(), dtype=bool) if "final" in stream else np.zeros(0)
    if finals.size == 0:
        result.note = "no restoration was published (see the outcome)"
        return result
    if finals.any():
        index = int(np.flatnonzero(finals)[-1])
    else:
        index = finals.size - 1
        result.note = "no final restoration: showing the last partial one"
    cautions = _event_text(stream, "cautions", index)
    details["cautions"] = [line for line in cautions.splitlines() if line.strip()]
    metrics = _event_text(stream, "metrics", index)
    try:
        details["metrics"] = json.loads(metrics) if metrics else {}
    except ValueError:
        details["metrics"] = metrics
    notes = [result.note] if result.note else []
    for key, attribute, axes in (
        ("input_map", "raw", ("y_input_um", "x_input_um")),
        ("restored_map", "restored", ("y_um", "x_um")),
    ):
        if key not in stream:
            notes.append(f"no {key}")
            continue
        try:
            image = checked_map(stream, key, index, max_pixels)
        except ValueError as error:
            notes.append(str(error))
            continue
        setattr(result, attribute, image)
        setattr(result, f"{attribute}_extent_um", _coordinates(stream, axes, index, image.shape))
    result.note = "; ".join(notes)
    return result


def details_text(details: Mapping[str, Any]) -> str:
    """Provenance and outcome as indented JSON (for a read-only text panel)."""
    return json.dumps(plain_metadata(details), indent=2, ensure_ascii=False, default=str)
