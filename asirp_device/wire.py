"""The ``DevEncoded`` format of the device's ``Submit`` and ``FetchResult`` commands.

A ``DevEncoded`` value is a pair ``(format, data)``: here ``format`` is a JSON object (the
header) and ``data`` the raw bytes of one 2-D map, C order (rows, then columns), little-endian.

``Submit`` header
    ``{"shape": [rows, columns], "dtype": "float32"}`` (dtype one of :data:`WIRE_DTYPES`;
    values in counts), optionally with per-request settings, which replace the device's for
    this request only: ``method`` (str), ``auto_select`` (bool), ``iterations`` (int),
    ``beam_fwhm_um`` and ``pixel_um`` (µm), ``parameters`` (a JSON object).
``FetchResult`` header
    ``{"request_id": N, "method": "...", "shape": [rows, columns], "dtype": "float32", ...}``
    (also ``sequence``, ``iterations_run``, ``duration_ms``, ``metrics``, ``source``: where the
    input came from, a live result's raw run uid, and ``derived_uid``: the derived run in tiled
    that holds a live result, else ``null``); the bytes are the restored map, float32 counts.

This module imports only numpy, so plans and plain ``DeviceProxy`` clients can use it without
the engine or the server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

WIRE_DTYPES = ("float32", "float64", "uint8", "uint16", "uint32", "int16", "int32")
"""Element types ``Submit`` accepts (little-endian)."""

REQUEST_SETTINGS = ("method", "auto_select", "iterations", "beam_fwhm_um", "pixel_um", "parameters")
"""Settings a ``Submit`` header may carry for its request only."""

MAX_HEADER_CHARS = 65_536
"""Longest header accepted, characters."""


def _dtype(name: Any) -> np.dtype:
    if not isinstance(name, str) or name not in WIRE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(WIRE_DTYPES)}, got {name!r}")
    return np.dtype(name).newbyteorder("<")


def _header(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise TypeError(f"the header must be JSON text, got {type(text).__name__}")
    if len(text) > MAX_HEADER_CHARS:
        raise ValueError(f"the header is {len(text)} characters long; at most {MAX_HEADER_CHARS}")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise ValueError(f"the header must be a JSON object, got {text[:80]!r}")
    return header


def _shape(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(side, int) and not isinstance(side, bool) for side in value)
        or min(value) < 1
    ):
        raise ValueError(f"shape must be [rows, columns], two integers >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def _array(header: Mapping[str, Any], data: Any) -> np.ndarray:
    """The read-only 2-D array described by ``header`` over ``data`` (no copy)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"the data must be bytes, got {type(data).__name__}")
    rows, cols = _shape(header.get("shape"))
    dtype = _dtype(header.get("dtype"))
    expected = rows * cols * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"the header says {rows}x{cols} {dtype.name} ({expected} bytes) but {len(data)} "
            "bytes came"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(rows, cols)
    array.flags.writeable = False
    return array


def encode_map(image: npt.ArrayLike, **settings: Any) -> tuple[str, bytes]:
    """The ``Submit`` argument for a 2-D map, with optional per-request settings.

    Parameters
    ----------
    image : array_like
        The map, (rows, columns), counts; sent as float32.
    **settings
        Any of :data:`REQUEST_SETTINGS`.

    Returns
    -------
    tuple of (str, bytes)
        The ``DevEncoded`` value: header, then the float32 bytes.
    """
    unknown = sorted(set(settings) - set(REQUEST_SETTINGS))
    if unknown:
        raise ValueError(f"unknown request settings {unknown}; known: {list(REQUEST_SETTINGS)}")
    array = np.ascontiguousarray(image, dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"the map must be 2-D (rows, columns), got shape {array.shape}")
    header = {"shape": list(array.shape), "dtype": "float32", **settings}
    return json.dumps(header), array.tobytes()


def decode_map(header_text: str, data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a ``Submit`` argument.

    Returns
    -------
    image : numpy.ndarray
        Read-only 2-D view of ``data`` (not yet checked for NaN/Inf or size limits).
    settings : dict
        The per-request settings of the header (keys of :data:`REQUEST_SETTINGS`).

    Raises
    ------
    ValueError, TypeError
        For a header that is not a JSON object, a bad shape or dtype, a byte count that does
        not match, or an unknown header key.
    """
    header = _header(header_text)
    image = _array(header, data)
    settings = {key: value for key, value in header.items() if key not in ("shape", "dtype")}
    unknown = sorted(set(settings) - set(REQUEST_SETTINGS))
    if unknown:
        raise ValueError(
            f"unknown header keys {unknown}; known: shape, dtype, {', '.join(REQUEST_SETTINGS)}"
        )
    return image, settings


def encode_result(header: Mapping[str, Any], image: npt.ArrayLike) -> tuple[str, bytes]:
    """The ``FetchResult`` reply: ``header`` with ``shape`` and ``dtype`` added, float32 bytes."""
    array = np.ascontiguousarray(image, dtype="<f4")
    full = {**header, "shape": list(array.shape), "dtype": "float32"}
    return json.dumps(full, sort_keys=True, allow_nan=True), array.tobytes()


def decode_result(encoded: tuple[str, bytes] | list[Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Read a ``FetchResult`` reply: its header and the restored map (read-only float32)."""
    header_text, data = encoded
    header = _header(header_text)
    return header, _array(header, bytes(data))
