"""A Bluesky µ-XRF map run read back from tiled as the core's scan model: :func:`scan_from_run`.

The file readers of :mod:`asirp.xrf` give a :class:`~asirp.xrf.raw_model.RawXRFScan` (spectra
per point and detector element) or :class:`~asirp.xrf.raw_model.ROISums` (ROI counts without
the spectra); :func:`scan_from_run` gives the same for a run that a ``TiledWriter`` (the
project's :class:`~callbacks.publish.TiledSink` or :func:`~callbacks.publish.raw_run_writer`)
stored in tiled, so :func:`asirp.xrf.maps.build_map` makes its element maps unchanged.

What is read, and from where
    Geometry
        The start document's ``shape``, ``extents``, ``snaking`` and position fields
        (:class:`~callbacks.geometry.ScanGeometry`, as the live restorer reads them). Map rows
        are the slow axis (``y_um``), columns the fast one (``x_um``); positions are converted
        to µm with the position fields' ``units`` (``um``/``µm``/``micron``, ``nm``, ``mm``),
        or with ``position_scale_um`` when the run does not say.
    XRF detector
        The one detector (of the start document's ``detectors``, or named with ``detector=``)
        whose fields are ROI counts described with their channel range (a data key property
        ``roi``, as the simulated detector's ``describe()`` gives; or the start document's
        ``rois``, ``{name: {first_channel, last_channel, ...}}`` for fields
        ``<detector>_<name>``) or a spectrum ``<detector>_spectrum``.
    Counts
        A spectrum field makes a :class:`RawXRFScan`: the simulated detector records the
        spectrum summed over its elements, so the scan has one detector element. Without
        spectra, ``<detector>_det_roi_counts`` ``(n_elements, n_rois)`` (its data key lists
        the ROIs of its columns as ``rois``) makes :class:`ROISums` per element; otherwise the
        ROI fields, summed over the elements, make :class:`ROISums` with one element (fly
        scans record only these).
    Times
        Real time of each point is the dwell: the detector's ``<detector>_dwell_time``
        configuration (step scans) or the start document's ``fly.period_s`` (fly scans).
        Live time is ``<detector>_live_time`` per element (averaged over the elements for a
        summed spectrum), else ``real * (1 - <detector>_dead_time)`` (the dead-time fraction,
        the same for every element), else the real time (no dead-time record; noted in the
        metadata). ``time_s`` is each event's time since the first.
    Calibration and metadata
        The energy calibration from the detector's configuration
        (``<detector>_calibration_offset_kev``, ``_gain_kev``, ``_quadratic_kev``), else its
        data keys' ``calibration`` property, else the start document's ``calibration`` or
        ``detector.calibration``. Metadata: the start document's ``sample`` and
        ``beam_fwhm_um``, the scan's step and nominal extents in µm (``step_um``,
        ``extents_um``), dwell, scan kind, beam energy, ROIs, how live time was found, the run's
        identity and its whole start document (``run_start``).

Sizes are checked before anything is read (:func:`asirp.io.check_declared_size`); a run that is
not a µ-XRF map gets one :class:`ValueError` that says what is missing.

Examples
--------
>>> from asirp.xrf.maps import build_map
>>> from callbacks.tiled_scan import recorded_roi, scan_from_run
>>> scan = scan_from_run(client[uid])  # doctest: +SKIP
>>> xrf_map = build_map(scan, roi=recorded_roi(scan, "Cu"), normalize_by="i0")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asirp.io import check_declared_size
from asirp.xrf.grid import EXTENTS_KEY
from asirp.xrf.lines import ChannelROI, EnergyCalibration
from asirp.xrf.raw_model import RawXRFScan, ROISums, check_points
from callbacks.geometry import GeometryError, ScanGeometry

__all__ = ["UM_PER_UNIT", "recorded_roi", "scan_from_run"]

UM_PER_UNIT = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
}
"""µm per position unit, by the ``units`` string of a motor's data key."""


@dataclass(frozen=True)
class _XRFFields:
    """The fields of the run's XRF detector (``None``: not recorded)."""

    name: str
    rois: dict[str, ChannelROI]  # ROI count field -> its channel range
    spectrum: str | None
    per_element: str | None
    live_time: str | None
    dead_time: str | None


def plain_metadata(value: Any) -> Any:
    """A JSON-ready copy of tiled metadata (its read-only mapping and list views included)."""
    if isinstance(value, Mapping):
        return {str(key): plain_metadata(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain_metadata(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _start_document(run: Any) -> dict[str, Any]:
    metadata = getattr(run, "metadata", None)
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("start"), Mapping):
        raise TypeError(
            f"run must be a Bluesky run read from tiled (client[uid]), got {type(run).__name__}"
        )
    return plain_metadata(metadata["start"])


def _not_a_map(uid: str, why: str) -> ValueError:
    return ValueError(f"run {uid} is not a µ-XRF map: {why}")


def _roi_from(description: Any, where: str) -> ChannelROI:
    if not isinstance(description, Mapping):
        raise ValueError(f"{where}: the ROI must be a mapping, got {description!r}")
    try:
        energy = description.get("energy_kev")
        return ChannelROI(
            str(description["name"]),
            description["first_channel"],
            description["last_channel"],
            math.nan if energy is None else float(energy),
        )
    except KeyError as missing:
        raise ValueError(f"{where}: the ROI has no {missing}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def _detector_fields(
    name: str, start: Mapping[str, Any], data_keys: Mapping[str, Mapping[str, Any]]
) -> _XRFFields | None:
    prefix = f"{name}_"
    rois = {
        key: _roi_from(key_info["roi"], f"data key {key!r}")
        for key, key_info in data_keys.items()
        if key.startswith(prefix) and isinstance(key_info.get("roi"), Mapping)
    }
    listed = start.get("rois")
    if not rois and isinstance(listed, Mapping):
        rois = {
            f"{prefix}{roi_name}": _roi_from(description, f"start document rois[{roi_name!r}]")
            for roi_name, description in listed.items()
            if f"{prefix}{roi_name}" in data_keys
        }

    def field(suffix: str) -> str | None:
        return f"{prefix}{suffix}" if f"{prefix}{suffix}" in data_keys else None

    spectrum = field("spectrum")
    if not rois and spectrum is None:
        return None
    return _XRFFields(
        name=name,
        rois=rois,
        spectrum=spectrum,
        per_element=field("det_roi_counts"),
        live_time=field("live_time"),
        dead_time=field("dead_time"),
    )


def _find_detector(
    uid: str,
    start: Mapping[str, Any],
    data_keys: Mapping[str, Mapping[str, Any]],
    detector: str | None,
) -> _XRFFields:
    if detector is not None:
        names = [detector]
    else:
        names = [str(n) for n in start.get("detectors") or []]
        for key, key_info in data_keys.items():  # detectors the start document does not list
            if isinstance(key_info.get("roi"), Mapping) and "_" in key:
                names.append(key.rsplit("_", 1)[0])
        names = list(dict.fromkeys(names))
    found = [f for f in (_detector_fields(n, start, data_keys) for n in names) if f is not None]
    if not found:
        raise _not_a_map(
            uid,
            f"no XRF detector{'' if detector is None else f' {detector!r}'} with ROI counts "
            "(data keys with a 'roi' channel range, or the start document's 'rois') or a "
            f"'<detector>_spectrum' field among {', '.join(sorted(data_keys)) or 'no fields'}",
        )
    if len(found) > 1:
        raise ValueError(
            f"run {uid} has several XRF detectors ({', '.join(f.name for f in found)}); "
            "name one with detector=..."
        )
    return found[0]


def _um_per_unit(key_info: Mapping[str, Any], field: str, position_scale_um: float | None) -> float:
    if position_scale_um is not None:
        return float(position_scale_um)
    units = key_info.get("units")
    if not units:
        raise ValueError(
            f"the position field {field!r} does not say its units; give position_scale_um "
            "(µm per motor unit)"
        )
    scale = UM_PER_UNIT.get(str(units).strip())
    if scale is None:
        raise ValueError(
            f"the position field {field!r} is in {units!r}, not a length this reader knows "
            f"({', '.join(UM_PER_UNIT)}); give position_scale_um"
        )
    return scale


def _configuration(descriptor: Mapping[str, Any]) -> dict[str, Any]:
    """Every configuration reading of the stream's devices, by field name."""
    values: dict[str, Any] = {}
    for device in (descriptor.get("configuration") or {}).values():
        if isinstance(device, Mapping):
            values.update(device.get("data") or {})
    return values


def _calibration(
    uid: str,
    start: Mapping[str, Any],
    configuration: Mapping[str, Any],
    data_keys: Mapping[str, Mapping[str, Any]],
    xrf: _XRFFields,
) -> tuple[EnergyCalibration, str]:
    prefix = f"{xrf.name}_calibration_"
    if f"{prefix}offset_kev" in configuration and f"{prefix}gain_kev" in configuration:
        return EnergyCalibration(
            float(configuration[f"{prefix}offset_kev"]),
            float(configuration[f"{prefix}gain_kev"]),
            float(configuration.get(f"{prefix}quadratic_kev", 0.0)),
        ), "detector configuration"
    for key in (xrf.spectrum, *xrf.rois):
        if key is not None and isinstance(data_keys[key].get("calibration"), Mapping):
            return _calibration_from(data_keys[key]["calibration"], f"data key {key!r}"), (
                "detector data keys"
            )
    detector_info = start.get("detector")
    for description, where in (
        (start.get("calibration"), "start document calibration"),
        (
            detector_info.get("calibration") if isinstance(detector_info, Mapping) else None,
            "start document detector.calibration",
        ),
    ):
        if isinstance(description, Mapping):
            return _calibration_from(description, where), where
    raise ValueError(
        f"run {uid} records no energy calibration of {xrf.name!r} (configuration "
        f"{prefix}offset_kev/gain_kev, a data key 'calibration', or the start document's "
        "'calibration')"
    )


def _calibration_from(description: Mapping[str, Any], where: str) -> EnergyCalibration:
    try:
        return EnergyCalibration(
            float(description["offset_kev"]),
            float(description["gain_kev_per_channel"]),
            float(description.get("quadratic_kev", 0.0)),
        )
    except KeyError as missing:
        raise ValueError(f"{where}: the calibration has no {missing}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def _dwell_s(
    uid: str,
    start: Mapping[str, Any],
    configuration: Mapping[str, Any],
    xrf: _XRFFields,
    fly: bool,
) -> float:
    fly_info = start.get("fly")
    candidates = []
    if fly and isinstance(fly_info, Mapping):
        candidates.append(fly_info.get("period_s"))
    candidates += [configuration.get(f"{xrf.name}_dwell_time"), start.get("dwell_s")]
    for value in candidates:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and value > 0 and math.isfinite(value):
            return float(value)
    raise ValueError(
        f"run {uid} records no dwell time (configuration {xrf.name}_dwell_time, the start "
        "document's fly.period_s or dwell_s)"
    )


JSON_DTYPES = {"number": "<f8", "integer": "<i8", "array": "<f8", "boolean": "|b1", "string": "<U1"}
"""numpy dtype of a data key without ``dtype_numpy``, by its JSON ``dtype`` (as the writer does)."""


def _read_fields(
    run: Any,
    events: Any,
    stream: str,
    keys: Sequence[str],
    data_keys: Mapping[str, Mapping[str, Any]],
    uid: str,
    max_bytes: int | None,
) -> dict[str, np.ndarray]:
    """Event fields of one stream, in one read, after checking their declared sizes.

    The size of each field is its per-point shape and dtype (data key) times the number of
    events the stop document counts (or, for a run still open, the first field's length).
    """
    stop = getattr(run, "metadata", {}).get("stop") or {}
    declared = (stop.get("num_events") or {}).get(stream)
    if isinstance(declared, bool) or not isinstance(declared, int):
        declared = int(events[keys[0]].shape[0])
    for key in keys:
        key_info = data_keys[key]
        shape = list(key_info.get("shape") or [])
        if any(not isinstance(n, int) for n in shape):
            raise ValueError(f"field {key!r} of run {uid} has no fixed shape per point: {shape}")
        dtype = key_info.get("dtype_numpy") or JSON_DTYPES.get(str(key_info.get("dtype")), "O")
        check_declared_size(
            (declared, *shape), np.dtype(dtype), f"field {key!r} of run {uid}", max_bytes
        )
    try:
        dataset = events.read(variables=list(keys))
        arrays = {key: np.asarray(dataset[key].values) for key in keys}
        arrays["time"] = np.asarray(dataset["time"].values, dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"run {uid}: reading the fields {', '.join(keys)} of stream {stream!r} failed: "
            f"{type(error).__name__}: {error}"
        ) from None
    return arrays


def _count_fields(xrf: _XRFFields, data_keys: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The fields the counts come from: the spectrum, else per-element ROIs, else ROI totals."""
    if xrf.spectrum is not None:
        return [xrf.spectrum]
    if xrf.per_element is not None and isinstance(data_keys[xrf.per_element].get("rois"), list):
        return [xrf.per_element]
    return list(xrf.rois)


def _counts(
    xrf: _XRFFields, fields: list[str], arrays: Mapping[str, np.ndarray], data_keys: Any
) -> tuple[np.ndarray, tuple[ChannelROI, ...], str]:
    """Counts ``(n_points, n_elements, n_channels or n_rois)``, the ROIs, how elements are kept."""
    if fields == [xrf.spectrum]:
        spectra = _integer_counts(arrays[xrf.spectrum], f"field {xrf.spectrum!r}")
        if spectra.ndim != 2:
            raise ValueError(f"field {xrf.spectrum!r} must be one spectrum per point")
        return spectra[:, None, :], tuple(xrf.rois.values()), "summed"
    if fields == [xrf.per_element]:
        counts = _integer_counts(arrays[xrf.per_element], f"field {xrf.per_element!r}")
        listed = data_keys[xrf.per_element]["rois"]
        rois = tuple(_roi_from(r, f"data key {xrf.per_element!r}") for r in listed)
        if counts.ndim != 3 or counts.shape[2] != len(rois):
            raise ValueError(
                f"field {xrf.per_element!r} has shape {counts.shape[1:]} per point; its data "
                f"key lists {len(rois)} ROIs"
            )
        return counts, rois, "separate"
    totals = [_integer_counts(arrays[key], f"field {key!r}") for key in fields]
    return np.stack(totals, axis=1)[:, None, :], tuple(xrf.rois[k] for k in fields), "summed"


def _integer_counts(values: np.ndarray, what: str) -> np.ndarray:
    """Counts as int64 (a writer without ``dtype_numpy`` stores them as floats)."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind != "f" or not np.all(np.isfinite(values)):
        raise ValueError(f"{what} must be finite counts, got dtype {values.dtype}")
    if np.any(values != np.rint(values)) or np.any(values < 0):
        raise ValueError(f"{what} must be whole non-negative counts")
    return values.astype(np.int64)


def scan_from_run(
    run: Any,
    *,
    detector: str | None = None,
    monitor: str = "i0",
    stream: str | None = None,
    position_scale_um: float | None = None,
    max_bytes: int | None = None,
) -> RawXRFScan | ROISums:
    """A µ-XRF map run from tiled as the core's scan: spectra, or ROI sums, per point.

    Parameters
    ----------
    run : tiled BlueskyRun client
        The raw run (``client[uid]``), as a ``TiledWriter`` stored it.
    detector : str, optional
        Name of the XRF detector (default: the one detector with ROI counts or a spectrum).
    monitor : str
        Incident-flux field (I0), counts.
    stream : str, optional
        Event stream of the map (default: the start document's hinted one, else primary).
    position_scale_um : float, optional
        µm per motor unit, when the position fields do not say their ``units``.
    max_bytes : int, optional
        Size limit of each field read (default :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    RawXRFScan or ROISums
        :class:`RawXRFScan` (``spectra`` ``(n_points, 1, n_channels)``: the spectrum summed
        over the detector elements) when the run records spectra, else :class:`ROISums`
        (``counts`` ``(n_points, n_elements, n_rois)``, or ``(n_points, 1, n_rois)`` from the
        element-summed ROI fields). Positions in µm, rows = slow axis = ``y_um``; I0 in counts;
        live and real time in s; ``line_index`` = map row.

    Raises
    ------
    TypeError
        If ``run`` is not a run read from tiled.
    ValueError
        If the run is not a 2-D µ-XRF map (no ``shape``/``extents``, no position fields, no
        XRF detector, no calibration or dwell time), if a field is too large
        (:class:`asirp.io.InputTooLargeError`) or inconsistent.
    """
    start = _start_document(run)
    uid = str(start.get("uid", "?"))
    try:
        geometry = ScanGeometry.from_start(start, stream)
    except GeometryError as error:
        raise _not_a_map(uid, str(error)) from None
    slow, fast = geometry.position_fields
    if slow is None or fast is None:
        raise _not_a_map(uid, "the start document names no position fields (hints or motors)")
    try:
        # The stored stream, whatever view of the run this is: after any run.v2 (databroker's
        # v1 API calls it) bluesky-tiled-plugins 2.0 hands out v2 runs, whose streams hide
        # the fields under "data"; the run's base container always gives the stream itself.
        events = getattr(run, "base", run)[geometry.stream]
    except KeyError:
        raise _not_a_map(uid, f"it has no event stream {geometry.stream!r}") from None
    descriptor = plain_metadata(events.metadata)
    data_keys: dict[str, dict[str, Any]] = descriptor.get("data_keys") or {}
    for key in (slow, fast, monitor):
        if key not in data_keys:
            raise _not_a_map(
                uid,
                f"the stream {geometry.stream!r} has no field {key!r} (it has "
                f"{', '.join(sorted(data_keys))})",
            )
    xrf = _find_detector(uid, start, data_keys, detector)
    configuration = _configuration(descriptor)
    scale_y = _um_per_unit(data_keys[slow], slow, position_scale_um)
    scale_x = _um_per_unit(data_keys[fast], fast, position_scale_um)
    calibration, calibration_source = _calibration(uid, start, configuration, data_keys, xrf)
    dwell = _dwell_s(uid, start, configuration, xrf, geometry.fly)

    fields = _count_fields(xrf, data_keys)
    timing = [key for key in (xrf.live_time, xrf.dead_time) if key is not None]
    arrays = _read_fields(
        run,
        events,
        geometry.stream,
        [slow, fast, monitor, *fields, *timing],
        data_keys,
        uid,
        max_bytes,
    )
    slow_positions = arrays[slow].astype(np.float64)
    fast_positions = arrays[fast].astype(np.float64)
    n_points = int(slow_positions.shape[0])
    if n_points == 0:
        raise _not_a_map(uid, "it holds no points")
    rows, _, _ = geometry.indices_from_positions(slow_positions, fast_positions)
    counts, rois, elements = _counts(xrf, fields, arrays, data_keys)
    n_elements = int(counts.shape[1])
    real_time = np.full((n_points, n_elements), dwell)
    live_time, live_time_from = _live_time(arrays, xrf, real_time, elements)
    points = check_points(
        n_points,
        n_elements,
        fast_positions * scale_x,
        slow_positions * scale_y,
        arrays[monitor],
        live_time,
        real_time,
        arrays["time"] - arrays["time"][0],
        rows,
    )
    metadata = _metadata(
        start,
        run,
        geometry,
        (scale_y, scale_x),
        xrf,
        rois,
        {
            "dwell_s": dwell,
            "incident_energy_kev": configuration.get(
                f"{xrf.name}_incident_energy_kev", start.get("incident_energy_kev")
            ),
            "detector_elements": elements,
            "live_time_from": live_time_from,
            "calibration_from": calibration_source,
            "axes": {"y": slow, "x": fast, "i0": monitor},
        },
    )
    if xrf.spectrum is not None:
        return RawXRFScan(
            spectra=counts,
            calibration=calibration,
            metadata=metadata,
            **points,
        )
    n_channels = _n_channels(start, data_keys, xrf, rois)
    return ROISums(
        counts=counts,
        rois=rois,
        calibration=calibration,
        metadata=metadata,
        n_channels=n_channels,
        **points,
    )


def _live_time(
    arrays: Mapping[str, np.ndarray], xrf: _XRFFields, real_time: np.ndarray, elements: str
) -> tuple[np.ndarray, str]:
    """Live time per point and element, s, and where it came from."""
    n_points, n_elements = real_time.shape
    if xrf.live_time is not None:
        live = arrays[xrf.live_time].astype(np.float64)
        if live.ndim == 2 and elements == "summed":
            return live.mean(axis=1, keepdims=True), f"{xrf.live_time} (mean over the elements)"
        if live.shape == (n_points, n_elements):
            return live, xrf.live_time
    if xrf.dead_time is not None:
        dead = arrays[xrf.dead_time].astype(np.float64)
        if dead.shape == (n_points,):
            return real_time * (1.0 - dead)[:, None], f"real time x (1 - {xrf.dead_time})"
    return real_time.copy(), "not recorded: live time = real time (no dead-time correction)"


def _n_channels(
    start: Mapping[str, Any],
    data_keys: Mapping[str, Mapping[str, Any]],
    xrf: _XRFFields,
    rois: Sequence[ChannelROI],
) -> int:
    """Detector channels: as described, else the fewest that hold the ROIs."""
    for key in xrf.rois:
        value = data_keys[key].get("detector_channels")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    detector_info = start.get("detector")
    if isinstance(detector_info, Mapping) and isinstance(detector_info.get("n_channels"), int):
        return int(detector_info["n_channels"])
    return max(roi.last_channel for roi in rois) + 1


def _metadata(
    start: dict[str, Any],
    run: Any,
    geometry: ScanGeometry,
    scales: tuple[float, float],
    xrf: _XRFFields,
    rois: Sequence[ChannelROI],
    facts: dict[str, Any],
) -> dict[str, Any]:
    extents_um = [
        [first * scale, last * scale]
        for (first, last), scale in zip(geometry.extents, scales, strict=True)
    ]
    try:
        step_y, step_x = geometry.pixel_um()
        step_um: list[float] | None = [step_y * scales[0], step_x * scales[1]]
    except GeometryError:  # a single point: no step
        step_um = None
    kind = "fly" if geometry.fly else ("snake" if geometry.snaking[1] else "raster")
    stop = getattr(run, "metadata", {}).get("stop") or {}
    metadata: dict[str, Any] = {
        key: start[key] for key in ("sample", "beam_fwhm_um", "seed") if key in start
    }
    metadata.update(
        {
            "step_um": step_um,
            EXTENTS_KEY: extents_um,
            "scan_kind": kind,
            "detector": xrf.name,
            "rois": {roi.name: roi.as_dict() for roi in rois},
            **facts,
            "source": {
                "kind": "bluesky_run",
                "uid": start.get("uid"),
                "scan_id": start.get("scan_id"),
                "plan_name": start.get("plan_name"),
                "stream": geometry.stream,
                "exit_status": plain_metadata(stop.get("exit_status")) if stop else None,
            },
            "run_start": start,
        }
    )
    return metadata


def recorded_roi(scan: ROISums | RawXRFScan, element: str) -> ChannelROI:
    """The ROI a run recorded for an element (``"Cu"`` finds ``"Cu Ka"``).

    Parameters
    ----------
    scan : ROISums or RawXRFScan
        A scan from :func:`scan_from_run`.
    element : str
        Element symbol, or the ROI's full name.

    Returns
    -------
    ChannelROI
        For ``build_map(scan, roi=...)``: ROI sums can only be mapped over the channel ranges
        the run recorded (an element ROI computed from the calibration may differ by a few
        channels).

    Raises
    ------
    ValueError
        If no ROI, or several, match.
    """
    if isinstance(scan, ROISums):
        rois = list(scan.rois)
    else:
        rois = [_roi_from(r, "scan metadata") for r in scan.metadata.get("rois", {}).values()]
    wanted = element.strip()
    matches = [r for r in rois if r.name == wanted or r.name.split()[0] == wanted]
    if len(matches) != 1:
        names = ", ".join(r.name for r in rois) or "none"
        raise ValueError(f"{len(matches)} recorded ROIs match {element!r} (ROIs: {names})")
    return matches[0]
