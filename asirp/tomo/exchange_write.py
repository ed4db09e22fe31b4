"""Writing a :class:`~asirp.tomo.exchange.TomoScan` as Data Exchange HDF5.

The layout is the one :func:`asirp.tomo.exchange.read_scan` reads (and TomoPy/dxchange):
``exchange/data`` projections ``(N, R, C)``, ``exchange/data_white`` flats ``(F, R, C)``,
``exchange/data_dark`` darks ``(D, R, C)`` (float32 counts), ``exchange/theta`` ``(N,)`` in
degrees (``@units``), and the pixel size, when known, in
``measurement/instrument/detector/x_pixel_size`` (µm). A NeXus entry hard-links the same
projections with their angles, so NeXus viewers (silx) open them; the Data Exchange layout is
unchanged by it.

Angles are written in degrees, as beamline stages read them and as TomoPy expects; read back,
they equal the scan's radians to the last bit or two of float64. Counts are written as the
float32 the scan holds, so they read back bit for bit.

The file is written atomically (:func:`asirp.safe_files.atomic_write`): a reader never sees a
half-written file, and an existing file is kept unless ``overwrite`` is given.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp import nexus
from asirp.safe_files import atomic_write
from asirp.tomo.exchange import TomoScan

__all__ = ["write_exchange"]


def _frames(array: Any, what: str) -> np.ndarray:
    """``array`` as ``(frames, rows, columns)`` finite float32, or one ValueError."""
    values = np.asarray(array)
    if values.ndim != 3 or 0 in values.shape:
        raise ValueError(f"{what} must be 3-D (frames, rows, columns), got shape {values.shape}")
    if values.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be numbers (counts), got dtype {values.dtype}")
    values = values.astype(np.float32, copy=False)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} hold NaN/Inf values")
    return values


def _checked(scan: TomoScan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scan's projections, flats, darks (float32) and angles (float64 rad), checked."""
    data = _frames(scan.projections, "projections")
    white = _frames(scan.flats, "flat fields")
    dark = _frames(scan.darks, "dark fields")
    for frames, what in ((white, "flat-field"), (dark, "dark-field")):
        if frames.shape[1:] != data.shape[1:]:
            raise ValueError(
                f"{what} frames are {frames.shape[1:]} px, the projections {data.shape[1:]} px"
            )
    angles = np.asarray(scan.angles_rad, dtype=np.float64)
    if angles.shape != (data.shape[0],):
        raise ValueError(
            f"angles have shape {angles.shape}; expected ({data.shape[0]},), one per projection"
        )
    if not np.all(np.isfinite(angles)):
        raise ValueError("angles hold NaN/Inf values")
    if scan.pixel_um is not None and not (math.isfinite(scan.pixel_um) and scan.pixel_um > 0):
        raise ValueError(f"the pixel size must be > 0 µm, got {scan.pixel_um!r}")
    return data, white, dark, angles


def write_exchange(
    path: str | os.PathLike,
    scan: TomoScan,
    *,
    overwrite: bool = False,
    title: str = "asirp tomography scan",
    notes: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``scan`` as a Data Exchange HDF5 file that :func:`read_scan` reads back.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (its folder is created if missing).
    scan : TomoScan
        Projections ``(N, R, C)``, flats ``(F, R, C)`` and darks ``(D, R, C)`` in counts,
        angles ``(N,)`` in radians, pixel size in µm or ``None``.
    overwrite : bool
        Replace an existing file (default: refuse).
    title : str
        ``exchange/title`` and the NeXus entry's title.
    notes : mapping, optional
        JSON-serialisable description kept as ``measurement/@asirp_scan`` (e.g. where the scan
        came from: run uid, plan, detector).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Arrays that are not 3-D numbers, NaN/Inf, frames of different sizes, not one angle per
        projection, a pixel size that is not > 0, or notes that are not JSON.
    asirp.safe_files.OutputExistsError
        ``path`` exists and ``overwrite`` is false (a ``FileExistsError``); nothing is written.
    """
    data, white, dark, angles = _checked(scan)
    try:
        note_text = json.dumps(dict(notes or {}), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"notes must be JSON-serialisable: {error}") from None
    with atomic_write(path, overwrite=overwrite) as output, h5py.File(output.file, "w") as handle:
        handle["implements"] = "exchange:measurement"
        exchange = handle.create_group("exchange")
        for name, frames, axes in (
            ("data", data, "theta:y:x"),
            ("data_white", white, "theta_white:y:x"),
            ("data_dark", dark, "theta_dark:y:x"),
        ):
            dataset = exchange.create_dataset(name, data=frames)
            dataset.attrs.update(axes=axes, units="counts")
        exchange["data"].attrs["description"] = "transmission"
        exchange.create_dataset("theta", data=np.rad2deg(angles)).attrs["units"] = "degrees"
        exchange["title"] = title
        measurement = handle.create_group("measurement")
        measurement.attrs["asirp_scan"] = note_text
        detector = measurement.create_group("instrument/detector")
        if scan.pixel_um is not None:
            size = detector.create_dataset("x_pixel_size", data=float(scan.pixel_um))
            size.attrs["units"] = "um"
        # A NeXus view (hard links, no copy) so NeXus viewers show the projections with angles.
        entry = nexus.create_entry(handle, title=title)
        y, x = nexus.pixel_axes(data.shape, scan.pixel_um)
        theta = nexus.Axis("theta", exchange["theta"], "degrees", "theta (degrees)")
        nexus.write_nxdata(entry, "projections", exchange["data"], [theta, y, x], default=True)
    return Path(path)
