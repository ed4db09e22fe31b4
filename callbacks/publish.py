"""Restored maps as derived Bluesky runs, and writing them (and raw runs) to tiled.

Schema of a derived run (one per raw run and :class:`~callbacks.live.LiveRestorer`):

Start document
    ``parent_uid`` (the raw run's uid), ``parent_scan_id``, ``parent_plan_name``,
    ``plan_name`` = ``"asirp_live_restoration"``, ``purpose`` = ``"restoration"``,
    ``software`` = ``"asirp"``, ``software_version``, ``method`` (the one that ran; ``auto``
    resolved), ``method_requested``, ``parameters`` (every parameter incl. defaults, as
    :attr:`asirp.Restoration.params`), ``parameters_requested``, ``psf`` (description: model,
    beam FWHM and pixel in µm, sigma in px, shape), ``map`` (source field(s), normalisation,
    geometry, masking rule) and ``live`` (restore cadence, publication mode).
Stream ``restored`` (one event per published restoration; the last has ``final`` true)
    ``restored_map`` ``(H * s, W * s)`` float32 counts, dims ``("y", "x")`` (NaN for rows not
    yet restored in a partial result), ``input_map`` ``(H, W)`` float32 counts, dims
    ``("y_input", "x_input")`` (the assembled, normalised raw map that went in, NaN where
    unmeasured), their cell centres in µm (units ``"um"``, as the raw files write them):
    ``y_um`` ``(H * s,)`` and ``x_um`` ``(W * s,)`` on dims ``y`` and ``x`` (the finer grid
    of a super-resolved map), ``y_input_um`` and ``x_input_um`` on ``y_input`` and
    ``x_input``; ``final``, ``rows_restored``, ``points_measured``,
    ``method``, ``parameters`` (JSON), ``metrics`` (JSON, everything
    :attr:`asirp.Restoration.metrics` holds), the usual figures as numbers (``contrast_std``,
    ``sharpness``, ``noise_sigma``, ``residual`` and their ``_input`` values; NaN when absent)
    , ``elapsed_s`` and ``cautions`` (:meth:`asirp.Restoration.cautions`, one per line; empty
    when the engine's checks found nothing to distrust).
Stop document
    ``exit_status`` ``"success"`` when the final restoration succeeded (``"abort"`` when it
    succeeded on a raw run that did not end in success, or on a run cut short by shutdown;
    ``"fail"`` when it raised) and ``reason``; ``restorations`` and ``failed_restorations``
    count the attempts.

Finding the derived runs of a raw run is one query: :func:`derived_runs`
(``client.search(Key("start.parent_uid") == raw_uid)``).

Dimension names in tiled: bluesky-tiled-plugins' ``TiledWriter`` (2.0) names the axes of array
fields stored in the run itself ``time, dim_int_1, ...`` whatever the descriptor says (it reads
a data key's ``dims`` only for data in external files). Every writer made here
(:class:`TiledSink`, :func:`raw_run_writer`) therefore writes through :class:`NamedDimsClient`,
which gives those arrays ``("time", *data_key["dims"])``: ``run["restored"]["restored_map"]``
has ``structure().dims == ("time", "y", "x")`` and reads into xarray with named axes.
Coordinates are plain fields of the stream (the writer has no notion of coordinates).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from asirp._version import __version__

if TYPE_CHECKING:
    from callbacks.result import LiveResult

_LOG = logging.getLogger(__name__)

DERIVED_STREAM = "restored"
"""Event stream of a derived run."""

DERIVED_PLAN_NAME = "asirp_live_restoration"
"""``plan_name`` of derived runs."""

LENGTH_UNITS = "um"
"""Units of the map coordinates (the string the raw files, NeXus exports and ``sim`` use)."""

MAP_DIMS = ("y", "x")
"""Dimension names of ``restored_map`` (and of its coordinates ``y_um``, ``x_um``)."""

INPUT_DIMS = ("y_input", "x_input")
"""Dimension names of ``input_map`` (and of ``y_input_um``, ``x_input_um``)."""

METRIC_FIELDS = (
    "contrast_std",
    "contrast_std_input",
    "sharpness",
    "sharpness_input",
    "noise_sigma",
    "noise_sigma_input",
    "residual",
)
"""Figures stored as numeric event fields (every figure is also in the ``metrics`` JSON)."""

Emit = Callable[[str, dict[str, Any]], None]


def _json_safe(value: Any) -> Any:
    """A JSON-serialisable copy (numpy scalars and arrays become Python numbers and lists)."""
    return json.loads(json.dumps(value, default=_to_builtin))


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def map_axes_um(
    geometry: Mapping[str, Any],
    output_shape: Sequence[int],
    *,
    pixel_um: Sequence[float],
    position_scale_um: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of a map (or of its super-resolved version) in µm.

    Parameters
    ----------
    geometry : mapping
        The scan geometry as :meth:`callbacks.geometry.ScanGeometry.as_dict` gives it:
        ``shape`` ``(rows, columns)`` and ``extents`` (first and last pixel centre along each
        axis, motor units).
    output_shape : (int, int)
        Shape of the map the axes are for: the scan's shape, or ``s`` times it for a map
        super-resolved by ``s``.
    pixel_um : (float, float)
        Scan step ``(between lines, along a line)``, µm (used along an axis of one pixel,
        whose extents give no step).
    position_scale_um : float
        µm per motor unit.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``y_um`` ``(output_shape[0],)`` and ``x_um`` ``(output_shape[1],)`` float64, µm, in
        pixel order (decreasing where the scan's extents decrease). A finer grid splits each
        scan pixel into equal cells: with step ``d`` and scale ``s`` the first centre is
        ``first - d / 2 + d / (2 s)``, as :func:`asirp.xrf.export.restored_axes` places them.
    """
    axes = []
    for (first, last), scan_size, out_size, pixel in zip(
        geometry["extents"], geometry["shape"], output_shape, pixel_um, strict=True
    ):
        n_scan, n_out = int(scan_size), int(out_size)
        first_um = float(first) * position_scale_um
        span_um = (float(last) - float(first)) * position_scale_um
        # signed, so that pixel order follows the scan; one pixel has no span: its size
        step_um = span_um / (n_scan - 1) if n_scan > 1 and span_um != 0.0 else float(pixel)
        cell_um = step_um * n_scan / n_out
        axes.append(first_um - step_um / 2 + cell_um / 2 + cell_um * np.arange(n_out))
    return axes[0], axes[1]


def _axis_key(source: str, size: int, dim: str) -> dict[str, Any]:
    return {
        "source": source,
        "dtype": "array",
        "dtype_numpy": "<f8",
        "shape": [size],
        "dims": [dim],
        "units": LENGTH_UNITS,
    }


class DerivedRun:
    """Compose the documents of one derived run with :func:`event_model.compose_run`.

    Parameters
    ----------
    raw_start : mapping
        The raw run's start document.
    provenance : mapping
        Provenance known before any restoration: ``method_requested``,
        ``parameters_requested``, ``psf`` (the planned PSF description), ``map`` and ``live``.
    emit : callable
        ``emit(name, doc)`` receives every document, in order.
    """

    def __init__(
        self, raw_start: Mapping[str, Any], provenance: Mapping[str, Any], emit: Emit
    ) -> None:
        self.raw_start = raw_start
        self.provenance = dict(provenance)
        self._emit = emit
        self._bundle: Any = None
        self._descriptor: Any = None
        self._axes: dict[str, np.ndarray] = {}
        self.restorations = 0
        self.failures = 0
        self.closed = False

    @property
    def uid(self) -> str | None:
        """Uid of the derived run (``None`` until it is opened)."""
        return None if self._bundle is None else self._bundle.start_doc["uid"]

    def _open(self, result: LiveResult) -> None:
        from event_model import compose_run

        restoration = result.restoration
        raw = self.raw_start
        metadata: dict[str, Any] = {
            "plan_name": DERIVED_PLAN_NAME,
            "purpose": "restoration",
            "parent_uid": raw["uid"],
            "software": "asirp",
            "software_version": __version__,
            "method": restoration.method if restoration else self.provenance["method_requested"],
            "method_requested": self.provenance["method_requested"],
            "parameters": restoration.params
            if restoration
            else self.provenance["parameters_requested"],
            "parameters_requested": self.provenance["parameters_requested"],
            "psf": (restoration.psf_description if restoration else None) or self.provenance["psf"],
            "map": self.provenance["map"],
            "live": self.provenance["live"],
        }
        for key in ("scan_id", "plan_name", "sample"):
            if key in raw:
                metadata[f"parent_{key}"] = raw[key]
        self._bundle = compose_run(metadata=_json_safe(metadata))
        self._emit("start", self._bundle.start_doc)
        input_shape = list(result.raw_map.shape)
        output_shape = (
            list(result.restored_map.shape)
            if result.restored_map is not None
            else self.provenance.get("output_shape", input_shape)
        )
        source = f"asirp:{metadata['method']}"
        map_provenance = self.provenance["map"]
        grid = {
            "pixel_um": map_provenance["pixel_um"],
            "position_scale_um": float(map_provenance.get("position_scale_um", 1.0)),
        }
        y_um, x_um = map_axes_um(map_provenance["geometry"], output_shape, **grid)
        y_input_um, x_input_um = map_axes_um(map_provenance["geometry"], input_shape, **grid)
        self._axes = {
            "y_um": y_um,
            "x_um": x_um,
            "y_input_um": y_input_um,
            "x_input_um": x_input_um,
        }
        data_keys: dict[str, dict[str, Any]] = {
            "restored_map": {
                "source": source,
                "dtype": "array",
                "dtype_numpy": "<f4",
                "shape": output_shape,
                "dims": list(MAP_DIMS),
                "units": "counts",
            },
            "input_map": {
                "source": f"raw:{raw['uid']}",
                "dtype": "array",
                "dtype_numpy": "<f4",
                "shape": input_shape,
                "dims": list(INPUT_DIMS),
                "units": "counts",
            },
            "y_um": _axis_key(source, y_um.size, MAP_DIMS[0]),
            "x_um": _axis_key(source, x_um.size, MAP_DIMS[1]),
            "y_input_um": _axis_key(f"raw:{raw['uid']}", y_input_um.size, INPUT_DIMS[0]),
            "x_input_um": _axis_key(f"raw:{raw['uid']}", x_input_um.size, INPUT_DIMS[1]),
            "final": {"source": source, "dtype": "boolean", "shape": []},
            "rows_restored": {"source": source, "dtype": "integer", "shape": []},
            "points_measured": {"source": source, "dtype": "integer", "shape": []},
            "method": {"source": source, "dtype": "string", "shape": []},
            "parameters": {"source": source, "dtype": "string", "shape": []},
            "metrics": {"source": source, "dtype": "string", "shape": []},
            "elapsed_s": {"source": source, "dtype": "number", "shape": [], "units": "s"},
            "cautions": {"source": source, "dtype": "string", "shape": []},
        }
        for name in METRIC_FIELDS:
            data_keys[name] = {"source": source, "dtype": "number", "shape": []}
        self._descriptor = self._bundle.compose_descriptor(
            name=DERIVED_STREAM,
            data_keys=data_keys,
            object_keys={"asirp": list(data_keys)},
            hints={"asirp": {"fields": ["restored_map"]}},
        )
        self._emit("descriptor", self._descriptor.descriptor_doc)

    def add(self, result: LiveResult) -> None:
        """Publish one successful restoration as an event (opening the run first if needed)."""
        if self.closed:
            raise RuntimeError(f"derived run {self.uid} is already closed")
        if result.restoration is None or result.restored_map is None:
            raise ValueError("only successful restorations are published as events")
        if self._bundle is None:
            self._open(result)
        self.restorations += 1
        restoration = result.restoration
        metrics = {k: float(v) for k, v in restoration.metrics.items()}
        data: dict[str, Any] = {
            "restored_map": np.ascontiguousarray(result.restored_map, dtype=np.float32),
            "input_map": np.ascontiguousarray(result.raw_map, dtype=np.float32),
            "final": bool(result.final),
            "rows_restored": int(result.rows_restored),
            "points_measured": int(result.points_measured),
            "method": restoration.method,
            "parameters": json.dumps(_json_safe(restoration.params), sort_keys=True),
            "metrics": json.dumps(metrics, sort_keys=True),
            "elapsed_s": float(restoration.elapsed_s),
            # what the engine's own checks say not to trust ("" when nothing), one per line
            "cautions": "\n".join(restoration.cautions()),
        }
        data.update(self._axes)
        for name in METRIC_FIELDS:
            data[name] = float(metrics.get(name, math.nan))
        now = time.time()
        event = self._descriptor.compose_event(
            data=data, timestamps={key: now for key in data}, time=now
        )
        self._emit("event", event)

    def count_failure(self) -> None:
        """Count a failed restoration (it is reported by the stop document, not an event)."""
        self.failures += 1

    def close(self, exit_status: str, reason: str = "", result: LiveResult | None = None) -> None:
        """Emit the stop document (opening the run first if nothing was published yet).

        Parameters
        ----------
        exit_status : {"success", "abort", "fail"}
            Outcome of the restoration.
        reason : str
            Why it did not succeed (empty on success).
        result : LiveResult, optional
            Used to open the run when no restoration was published before.
        """
        if self.closed:
            return
        if self._bundle is None:
            if result is None:
                raise RuntimeError("cannot close a derived run that was never opened")
            self._open(result)
        stop = dict(self._bundle.compose_stop(exit_status=exit_status, reason=reason))
        stop["restorations"] = self.restorations
        stop["failed_restorations"] = self.failures
        self.closed = True
        self._emit("stop", stop)


def _named_dims(
    dims: Sequence[str] | None, data_key: Mapping[str, Any] | None, ndim: int
) -> Sequence[str] | None:
    """``("time", *data_key["dims"])`` when those name every axis after time, else ``dims``."""
    declared = (data_key or {}).get("dims")
    if (
        isinstance(declared, list | tuple)
        and len(declared) == ndim - 1
        and all(isinstance(name, str) and name for name in declared)
    ):
        return ("time", *declared)
    return dims


class NamedDimsClient:
    """A tiled client whose new arrays take their axis names from their data key's ``dims``.

    ``TiledWriter`` passes each array field's data key as the array's metadata; this proxy
    replaces the writer's ``dim_int_*`` names by ``("time", *dims)`` when the data key names
    every axis after time, and passes every other call through to the wrapped client (the
    writer's containers are wrapped too, so the arrays of every stream get the names).

    Parameters
    ----------
    node : tiled.client.container.Container
        The client to wrap (a writable catalog, a run, or a stream).
    """

    def __init__(self, node: Any) -> None:
        self._node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def __repr__(self) -> str:
        return f"NamedDimsClient({self._node!r})"

    @property
    def base(self) -> NamedDimsClient:
        """The wrapped node's ``base`` container, wrapped."""
        return NamedDimsClient(self._node.base)

    def include_data_sources(self) -> NamedDimsClient:
        """The wrapped client's ``include_data_sources()``, wrapped."""
        return NamedDimsClient(self._node.include_data_sources())

    def create_container(self, *args: Any, **kwargs: Any) -> NamedDimsClient:
        """Create a container (a run, a stream) and wrap it."""
        return NamedDimsClient(self._node.create_container(*args, **kwargs))

    def write_array(
        self,
        array: Any,
        *,
        key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        dims: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Write an array, naming its axes after ``time`` from ``metadata["dims"]``."""
        named = _named_dims(dims, metadata, np.ndim(array))
        return self._node.write_array(array, key=key, metadata=metadata, dims=named, **kwargs)


def _writable(client: Any) -> Any:
    return client if isinstance(client, NamedDimsClient) else NamedDimsClient(client)


class TiledSink:
    """Write documents to tiled with bluesky's ``TiledWriter``; failures are logged, not raised.

    ``bluesky.callbacks.tiled_writer.TiledWriter`` (bluesky 1.15) puts every event field in a
    table: a 2-D ``ndarray`` field makes pyarrow raise, and nested lists become strings. The
    maintained ``TiledWriter`` of ``bluesky-tiled-plugins`` (the one databroker 2 reads back)
    writes array fields as arrays; ``max_array_size=0`` makes it do so for every array field
    (by default arrays of 16 elements or fewer go to the table, where a small 2-D array fails
    the same way, as the simulated detector's per-element ROI counts ``(4, 2)`` do).

    Parameters
    ----------
    client : tiled.client.container.Container
        Writable tiled node (the root of a catalog of runs).
    batch_size : int
        Events buffered before a write (1: each event written when it arrives).
    """

    def __init__(self, client: Any, *, batch_size: int = 1) -> None:
        from bluesky_tiled_plugins import TiledWriter

        self.client = client
        self._writer = TiledWriter(_writable(client), batch_size=batch_size, max_array_size=0)
        self.errors = 0
        self.last_error: str | None = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Write one document (errors are counted and logged)."""
        try:
            self._writer(name, doc)
        except Exception as error:  # tiled down, bad document: log, keep the scan alive
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {error}"
            _LOG.exception("writing the %s document to tiled failed", name)


def raw_run_writer(client: Any, *, batch_size: int = 1000) -> Any:
    """A ``TiledWriter`` for raw runs (subscribe it to the RunEngine or a 0MQ dispatcher).

    Parameters
    ----------
    client : tiled.client.container.Container
        Writable tiled node.
    batch_size : int
        Events buffered per write.

    Returns
    -------
    bluesky_tiled_plugins.TiledWriter
        Writes every array field as an array (see :class:`TiledSink`), its axes named by the
        data key's ``dims`` (see :class:`NamedDimsClient`).
    """
    from bluesky_tiled_plugins import TiledWriter

    return TiledWriter(_writable(client), batch_size=batch_size, max_array_size=0)


def derived_runs(client: Any, raw_uid: str) -> Any:
    """The derived runs of a raw run: one query on ``start.parent_uid``.

    Parameters
    ----------
    client : tiled.client.container.Container
        The catalog of runs.
    raw_uid : str
        Uid of the raw run.

    Returns
    -------
    tiled.client.container.Container
        The search result (iterate, ``len()``, ``.values()``), oldest first.
    """
    from tiled.queries import Key

    return client.search(Key("start.parent_uid") == raw_uid)


def read_final_map(derived_run: Any) -> np.ndarray:
    """The final restored map ``(H * s, W * s)`` float32 of a derived run read from tiled.

    Raises
    ------
    LookupError
        If the run holds no final restoration (it failed, or was cut short).
    """
    stream = derived_run[DERIVED_STREAM]
    finals = np.asarray(stream["final"].read(), dtype=bool)
    if not finals.any():
        raise LookupError(f"derived run {derived_run.metadata['start']['uid']} has no final map")
    index = int(np.flatnonzero(finals)[-1])
    return np.asarray(stream["restored_map"].read()[index], dtype=np.float32)
