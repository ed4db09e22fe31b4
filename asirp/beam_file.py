"""Knife-edge scan files in, beam files out: what :mod:`asirp.beam_edge` fits and gives.

:func:`write_beam_json` writes what a user passes on (``asirp restore --beam-from-edge``)::

    {"beam_fwhm_um": [v, h] or v, "uncertainty_um": [dv, dh] or dv, "method": "knife-edge",
     "axes": [...], "fits": [...], "software": "asirp", "version": ...}

(``vertical horizontal``: the order of ``beam_fwhm_um`` pairs everywhere in ASIRP). It never
replaces a file without ``overwrite`` (:func:`asirp.safe_files.atomic_write`).
:func:`beam_from_json` reads it back as the value for ``beam_fwhm_um`` and the provenance to
record with a restoration.

Inputs (:func:`read_edge_scan`): a text or CSV file of columns (position µm, signal[, z µm])
with an optional header line and ``#`` comments, a ``.npy`` array ``(n, 2 | 3)``, or an HDF5
dataset ``file.h5::/path`` of that shape; sizes are checked before bytes are read
(:mod:`asirp.io`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asirp._version import __version__
from asirp.beam_edge import (
    AXES,
    METHOD,
    EdgeFit,
    EdgeScan,
    FocusSeries,
    Measurement,
    fit_edge,
    fit_focus_series,
)
from asirp.io import (
    HDF5_SUFFIXES,
    InputFileError,
    read_array,
    read_input_bytes,
    split_hdf5_path,
)
from asirp.safe_files import FileIdentity, atomic_write

TEXT_SUFFIXES = (".csv", ".txt", ".dat", ".tsv")
"""Suffixes read as text columns."""

MAX_BEAM_FILE_BYTES = 1 << 24
"""Largest beam file read, bytes (16 MiB; a beam file is a few kB)."""


def _parse_text(text: str, where: str) -> np.ndarray:
    """Rows of numbers from text: ``#`` comments, one optional header line, , ; tab or spaces."""
    rows: list[list[float]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        separator = "," if "," in line else ";" if ";" in line else None
        fields = [field.strip() for field in line.split(separator)]
        try:
            rows.append([float(field) for field in fields])
        except ValueError:
            if not rows:  # a header line before the numbers
                continue
            raise InputFileError(
                f"{where}, line {number}: {raw.strip()[:80]!r} is not a row of numbers"
            ) from None
    if not rows:
        raise InputFileError(f"{where} holds no rows of numbers")
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise InputFileError(
            f"{where}: rows have different numbers of columns ({sorted(widths)}); give position "
            "and signal (and z) on every row"
        )
    return np.array(rows, dtype=np.float64)


def _read_text(path: Path, max_bytes: int | None) -> np.ndarray:
    data = read_input_bytes(path, "input file", max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{path} is not a UTF-8 text file of columns") from None
    return _parse_text(text, str(path))


def _columns(array: np.ndarray, where: str) -> np.ndarray:
    """An array ``(n, 2 | 3)`` (or its transpose) as float64 columns."""
    if array.ndim != 2:
        raise InputFileError(
            f"{where} holds a {array.ndim}-D array of shape {array.shape}; an edge scan is "
            "(n, 2) columns of position (µm) and signal, or (n, 3) with the focus z (µm)"
        )
    if array.shape[1] not in (2, 3) and array.shape[0] in (2, 3):
        array = array.T
    if array.shape[1] not in (2, 3):
        raise InputFileError(
            f"{where} has shape {array.shape}; an edge scan is (n, 2) columns of position (µm) "
            "and signal, or (n, 3) with the focus z (µm)"
        )
    if np.iscomplexobj(array):
        raise InputFileError(f"{where} holds complex values; an edge scan is real")
    return np.asarray(array, dtype=np.float64)


def read_edge_scan(path: str | os.PathLike, *, max_bytes: int | None = None) -> EdgeScan:
    """Read a knife-edge scan: text/CSV columns, ``.npy``, or HDF5 ``file.h5::/dataset``.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``::/dataset`` for HDF5). Columns: position (µm), signal, and optionally the
        focus position z (µm).
    max_bytes : int, optional
        Largest input, bytes (default :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    EdgeScan
        The columns, unsorted, as float64.

    Raises
    ------
    asirp.io.InputFileError
        Missing, unreadable, too large or malformed files, or arrays of the wrong shape.
    """
    file_path, _ = split_hdf5_path(path)
    suffix = file_path.suffix.lower()
    where = os.fspath(path)
    if suffix in TEXT_SUFFIXES:
        array = _read_text(file_path, max_bytes)
    elif suffix == ".npy" or suffix in HDF5_SUFFIXES:
        array = read_array(path, max_bytes=max_bytes)
    else:
        raise InputFileError(
            f"unknown edge-scan format {suffix!r} for {where}; use text columns "
            f"({', '.join(TEXT_SUFFIXES)}), .npy or HDF5 as 'file.h5::/dataset'"
        )
    columns = _columns(array, where)
    z = columns[:, 2] if columns.shape[1] == 3 else None
    return EdgeScan(columns[:, 0], columns[:, 1], z, where)


def measure_edge_file(
    path: str | os.PathLike,
    *,
    axis: str | None = None,
    focus_series: bool = False,
    counts: bool | None = None,
) -> Measurement:
    """Read an edge scan (:func:`read_edge_scan`) and fit it, or fit its focus series.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    axis : {"vertical", "horizontal"}, optional
        The axis it measured.
    focus_series : bool
        The file is a focus series (a third column z): fit every scan and the caustic.
    counts : bool, optional
        As :func:`fit_edge`.

    Returns
    -------
    EdgeFit or FocusSeries

    Raises
    ------
    ValueError
        A bad file (:class:`asirp.io.InputFileError`) or a scan that cannot give the beam; a
        focus series without z, or several z without ``focus_series``.
    """
    scan = read_edge_scan(path)
    if focus_series:
        if scan.z_um is None:
            raise ValueError(
                f"{scan.source}: a focus series needs a third column, the focus position z (µm)"
            )
        return fit_focus_series(
            scan.position_um, scan.signal, scan.z_um, counts=counts, axis=axis, source=scan.source
        )
    z = None
    if scan.z_um is not None:
        planes = np.unique(scan.z_um)
        if planes.size > 1:
            raise ValueError(
                f"{scan.source} holds scans at {planes.size} focus positions (third column): "
                "fit them as a focus series (--focus-series)"
            )
        z = float(planes[0])
    return fit_edge(
        scan.position_um, scan.signal, counts=counts, axis=axis, source=scan.source, z_um=z
    )


# ------------------------------------------------------------------------------ beam files
def _beam_values(measurements: Sequence[Measurement]) -> tuple[Any, Any, list[str | None]]:
    values = [m.fwhm_um for m in measurements]
    errors = [m.fwhm_uncertainty_um for m in measurements]
    axes = [m.axis for m in measurements]
    if len(measurements) == 1:
        return values[0], errors[0], axes
    return values, errors, axes


def beam_record(measurements: Measurement | Sequence[Measurement]) -> dict[str, Any]:
    """The content of a beam file for one measurement, or two (vertical, horizontal).

    Parameters
    ----------
    measurements : EdgeFit or FocusSeries, or a sequence of one or two of them
        Two: the vertical then the horizontal axis (their ``axis`` must say so when set).

    Returns
    -------
    dict
        JSON-serialisable (module notes).

    Raises
    ------
    ValueError
        No measurement, more than two, or two whose axes are not vertical then horizontal.
    """
    if isinstance(measurements, EdgeFit | FocusSeries):
        measurements = [measurements]
    measurements = list(measurements)
    if not 1 <= len(measurements) <= 2:
        raise ValueError(
            f"a beam file holds one measurement or two (vertical, horizontal), got "
            f"{len(measurements)}"
        )
    if len(measurements) == 2:
        for measurement, expected in zip(measurements, AXES, strict=True):
            if measurement.axis not in (None, expected):
                raise ValueError(
                    "two measurements are the vertical then the horizontal axis, got "
                    f"{[m.axis for m in measurements]}"
                )
        measurements = [
            m if m.axis is not None else _with_axis(m, axis)
            for m, axis in zip(measurements, AXES, strict=True)
        ]
    value, error, axes = _beam_values(measurements)
    return {
        "beam_fwhm_um": value,
        "uncertainty_um": error,
        "method": METHOD,
        "axes": axes,
        "fits": [m.provenance() for m in measurements],
        "software": "asirp",
        "version": __version__,
    }


def _with_axis(measurement: Measurement, axis: str) -> Measurement:
    from dataclasses import replace

    if isinstance(measurement, FocusSeries):
        fits = tuple(replace(fit, axis=axis) for fit in measurement.fits)
        return replace(measurement, axis=axis, fits=fits)
    return replace(measurement, axis=axis)


def write_beam_json(
    path: str | os.PathLike,
    measurements: Measurement | Sequence[Measurement],
    *,
    overwrite: bool = False,
    protect: Sequence[str | os.PathLike | FileIdentity | None] = (),
    hint: str = "pass overwrite=True to replace it",
) -> dict[str, Any]:
    """Write the beam file of one or two measurements (:func:`beam_record`), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file.
    measurements : EdgeFit or FocusSeries, or a sequence of one or two
        Two: vertical then horizontal.
    overwrite : bool
        Replace an existing file.
    protect : sequence
        Files never replaced (the inputs), as in :func:`asirp.safe_files.atomic_write`.
    hint : str
        How to replace an existing file (for the message).

    Returns
    -------
    dict
        What was written.

    Raises
    ------
    asirp.safe_files.OutputExistsError
        If the file exists and ``overwrite`` is false (an ``OSError``).
    """
    record = beam_record(measurements)
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    with atomic_write(path, overwrite=overwrite, protect=protect, hint=hint) as output:
        output.file.write(text.encode("utf-8"))
    return record


def _positive(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputFileError(f"{where}: {what} must be a number of µm, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InputFileError(f"{where}: {what} must be finite and > 0 µm, got {value!r}")
    return float(value)


def _read_beam_bytes(path: Path) -> bytes:
    return read_input_bytes(path, "beam file", MAX_BEAM_FILE_BYTES)


def read_beam_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a beam file written by :func:`write_beam_json`.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file.

    Returns
    -------
    dict
        Its content; ``beam_fwhm_um`` is a number or a ``[vertical, horizontal]`` pair of µm.

    Raises
    ------
    asirp.io.InputFileError
        A missing, oversized or malformed file, another ``method``, or FWHMs that are not
        finite numbers > 0.
    """
    return _parse_beam(_read_beam_bytes(Path(path)), os.fspath(path))


def _parse_beam(data: bytes, where: str) -> dict[str, Any]:
    """The checked content of a beam file's bytes (see :func:`read_beam_json`)."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(f"{where} is not a JSON beam file: {error}") from None
    if not isinstance(record, dict) or "beam_fwhm_um" not in record:
        raise InputFileError(f"{where} is not a beam file: it has no 'beam_fwhm_um'")
    if record.get("method") != METHOD:
        raise InputFileError(
            f"{where}: method {record.get('method')!r}, expected {METHOD!r} (a file written "
            "by 'asirp psf-from-edge')"
        )
    value = record["beam_fwhm_um"]
    if isinstance(value, list):
        if len(value) != 2:
            raise InputFileError(
                f"{where}: beam_fwhm_um must be one number or a [vertical, horizontal] pair, "
                f"got {len(value)} values"
            )
        for item in value:
            _positive(item, "beam_fwhm_um", where)
    else:
        _positive(value, "beam_fwhm_um", where)
    return record


def beam_from_json(path: str | os.PathLike) -> tuple[float | tuple[float, float], dict[str, Any]]:
    """The beam FWHM of a beam file, for ``beam_fwhm_um``, and its provenance.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`write_beam_json` (``asirp psf-from-edge -o``).

    Returns
    -------
    fwhm : float or (float, float)
        µm; a ``(vertical, horizontal)`` pair when both axes were measured.
    provenance : dict
        For ``Restoration.psf_description["beam_source"]``: the method, the file and its
        SHA-256, the FWHM and uncertainty, and the fits.

    Raises
    ------
    asirp.io.InputFileError
        As :func:`read_beam_json`.
    """
    data = _read_beam_bytes(Path(path))  # read once: the digest is of the bytes parsed
    record = _parse_beam(data, os.fspath(path))
    value = record["beam_fwhm_um"]
    fwhm: float | tuple[float, float] = (
        (float(value[0]), float(value[1])) if isinstance(value, list) else float(value)
    )
    digest = hashlib.sha256(data).hexdigest()
    provenance = {
        "method": METHOD,
        "path": os.fspath(path),
        "sha256": digest,
        "beam_fwhm_um": record["beam_fwhm_um"],
        "uncertainty_um": record.get("uncertainty_um"),
        "axes": record.get("axes"),
        "fits": record.get("fits", []),
        "software": record.get("software"),
        "version": record.get("version"),
    }
    return fwhm, provenance
