"""Reading tomography scans: Data Exchange HDF5 and NeXus NXtomo, into one :class:`TomoScan`.

Data Exchange (APS, tomopy): ``exchange/data`` projections ``(N, R, C)``, ``exchange/data_white``
flats, ``exchange/data_dark`` darks, ``exchange/theta`` angles (``@units`` degrees or radians).
NXtomo: an NXentry holding an NXtomo-defined group with ``data/data`` frames ``(M, R, C)``,
``data/image_key`` (0 projection, 1 flat, 2 dark) and ``sample/rotation_angle`` (or
``data/rotation_angle``).

Every dataset's shape and dtype are checked (size limit of :func:`asirp.io.check_declared_size`,
shapes consistent with one another) before any data is read; data are then read in slabs of
projections, each checked for NaN/Inf, so a large file never sits twice in memory. The file is
opened through :func:`asirp.io.open_input_file` and datasets are found without following
external links or reading virtual or external storage (the checks of :mod:`asirp.io`). Every
problem is one :class:`ValueError` (:class:`asirp.io.InputFileError`) in one sentence.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import h5py
import numpy as np

from asirp.io import InputFileError, check_declared_size, hdf5_dataset, open_input_file
from asirp.nexus import read_text

SLAB_BYTES = 64 << 20
"""Projections are read in slabs of about this many bytes (64 MiB)."""

_DEGREE_UNITS = ("deg", "degree", "degrees")
_RADIAN_UNITS = ("rad", "radian", "radians")


@dataclass
class TomoScan:
    """A tomography scan as read from a file.

    Attributes
    ----------
    projections : numpy.ndarray
        ``(N, R, C)`` float32 detector counts, one frame per angle.
    flats : numpy.ndarray
        ``(F, R, C)`` float32 open-beam frames (F >= 1).
    darks : numpy.ndarray
        ``(D, R, C)`` float32 dark frames (D >= 1).
    angles_rad : numpy.ndarray
        ``(N,)`` float64 rotation angles, radians.
    pixel_um : float or None
        Detector pixel size (horizontal), µm, when the file says.
    metadata : dict
        JSON-serialisable: ``format``, the angle ``angle_units`` found and how
        (``angle_units_source``: ``"attribute"`` or ``"guessed from the range"``), dataset paths.
    """

    projections: np.ndarray
    flats: np.ndarray
    darks: np.ndarray
    angles_rad: np.ndarray
    pixel_um: float | None
    metadata: dict[str, Any] = field(default_factory=dict)


def read_scan(path_or_stream: str | os.PathLike | BinaryIO, *, name: str | None = None) -> TomoScan:
    """Read a Data Exchange or NXtomo HDF5 file.

    Parameters
    ----------
    path_or_stream : str, os.PathLike or binary file object
        The HDF5 file, or a file already open for reading in binary mode and seekable (for
        example one opened by descriptor through :class:`asirp.safe_files.DataRoot`, so that
        the file checked is the file read). An open stream is read from where HDF5 needs and
        left open: the caller closes it.
    name : str, optional
        What to call the file in messages (default: the path, or ``"tomography stream"``).

    Returns
    -------
    TomoScan

    Raises
    ------
    ValueError
        (:class:`asirp.io.InputFileError`) A missing file, not HDF5, neither layout, a missing
        dataset (flats, darks, angles), inconsistent shapes, NaN/Inf, or data over the size
        limit.
    """
    if hasattr(path_or_stream, "read"):
        stream = cast(BinaryIO, path_or_stream)
        return _read_stream(stream, name if name is not None else "tomography stream")
    where = name if name is not None else str(path_or_stream)
    with open_input_file(cast("str | os.PathLike", path_or_stream), "tomography file") as stream:
        return _read_stream(stream, where)


def _read_stream(stream: BinaryIO, where: str) -> TomoScan:
    try:
        handle = h5py.File(stream, "r")
    except OSError:
        raise InputFileError(f"{where} is not an HDF5 file") from None
    with handle:
        if any(group.name == "/exchange" for group in _hard_groups(handle)):
            return _read_exchange(handle, where)
        entry = _find_nxtomo(handle)
        if entry is not None:
            return _read_nxtomo(handle, entry, where)
        raise InputFileError(
            f"{where} is neither Data Exchange (exchange/data) nor NXtomo "
            "(an NXentry with definition NXtomo)"
        )


def _dataset(handle: h5py.File, name: str, where: str, what: str) -> h5py.Dataset:
    try:
        return hdf5_dataset(handle, name, where)
    except InputFileError as error:
        if "has no dataset" in str(error):
            raise InputFileError(f"{where} has no {what} ({name})") from None
        raise


def _check_frames(dataset: h5py.Dataset, where: str, what: str) -> None:
    if dataset.ndim != 3 or 0 in dataset.shape:
        raise InputFileError(
            f"{where}::{dataset.name} ({what}) must be 3-D (frames, rows, columns), "
            f"got shape {dataset.shape}"
        )
    check_declared_size(dataset.shape, dataset.dtype, f"{where}::{dataset.name}")


def _read_frames(
    dataset: h5py.Dataset, where: str, what: str, rows: np.ndarray | None = None
) -> np.ndarray:
    """Frames as float32, read in slabs, each checked for NaN/Inf (``rows`` selects frames)."""
    indices = np.arange(dataset.shape[0]) if rows is None else np.asarray(rows)
    frame_bytes = math.prod(dataset.shape[1:]) * max(dataset.dtype.itemsize, 4)
    step = max(1, SLAB_BYTES // max(frame_bytes, 1))
    out = np.empty((len(indices), *dataset.shape[1:]), dtype=np.float32)
    for start in range(0, len(indices), step):
        chosen = indices[start : start + step]
        # a contiguous slice, or increasing indices (flatnonzero), as h5py needs
        slab = dataset[int(chosen[0]) : int(chosen[-1]) + 1] if rows is None else dataset[chosen]
        with np.errstate(over="ignore", invalid="ignore"):
            slab = np.asarray(slab, dtype=np.float32)
        bad = ~np.isfinite(slab)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            frame = int(chosen[first[0]])
            raise InputFileError(
                f"{where}::{dataset.name} ({what}) holds {int(bad.sum())} NaN/Inf value(s) "
                f"in this slab (first in frame {frame} at pixel {first[1:]}); fix the file"
            )
        out[start : start + len(chosen)] = slab
    return out


def _angles(dataset: h5py.Dataset, count: int, where: str) -> tuple[np.ndarray, dict[str, str]]:
    """Angles in radians, and how their units were known."""
    if dataset.ndim != 1 or dataset.shape[0] != count:
        raise InputFileError(
            f"{where}::{dataset.name} has shape {dataset.shape}; expected ({count},), one angle "
            "per projection"
        )
    check_declared_size(dataset.shape, dataset.dtype, f"{where}::{dataset.name}")
    values = np.asarray(dataset[()], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InputFileError(f"{where}::{dataset.name} holds NaN/Inf angles")
    units = read_text(dataset.attrs.get("units", "")).strip().lower()
    if units in _DEGREE_UNITS:
        degrees, source = True, "attribute"
    elif units in _RADIAN_UNITS:
        degrees, source = False, "attribute"
    else:  # no units: a range beyond 2 pi (plus a step) cannot be radians
        degrees, source = bool(np.ptp(values) > 2 * np.pi + 0.5), "guessed from the range"
    radians = np.deg2rad(values) if degrees else values
    return radians, {
        "angle_units": "degrees" if degrees else "radians",
        "angle_units_source": source,
    }


def _pixel_um(handle: h5py.File, candidates: tuple[str, ...]) -> float | None:
    """The first positive finite pixel size found; metres and mm are converted to µm."""
    factors = {"um": 1.0, "µm": 1.0, "micron": 1.0, "mm": 1e3, "m": 1e6, "nm": 1e-3}
    for name in candidates:
        try:
            item = hdf5_dataset(handle, name, "")
        except InputFileError:  # absent, or not safe to follow: the size is optional
            continue
        if item.size != 1 or item.dtype.kind not in "iuf":
            continue
        value = float(np.asarray(item[()]).ravel()[0])
        factor = factors.get(read_text(item.attrs.get("units", "um")).strip())
        if factor is not None and math.isfinite(value) and value > 0:
            return value * factor
    return None


def _check_same_frame(shape: tuple[int, ...], other: h5py.Dataset, where: str, what: str) -> None:
    if tuple(other.shape[1:]) != tuple(shape[1:]):
        raise InputFileError(
            f"{where}: {what} frames are {tuple(other.shape[1:])} px, the projections "
            f"{tuple(shape[1:])} px"
        )


def _read_exchange(handle: h5py.File, where: str) -> TomoScan:
    names = {
        "data": "projections",
        "data_white": "flat fields",
        "data_dark": "dark fields",
        "theta": "angles",
    }
    data, white, dark, theta = (
        _dataset(handle, f"exchange/{name}", where, what) for name, what in names.items()
    )
    for dataset, what in ((data, "projections"), (white, "flat fields"), (dark, "dark fields")):
        _check_frames(dataset, where, what)
    _check_same_frame(data.shape, white, where, "flat-field")
    _check_same_frame(data.shape, dark, where, "dark-field")
    angles, angle_info = _angles(theta, data.shape[0], where)
    pixel = _pixel_um(
        handle,
        (
            "measurement/instrument/detector/x_pixel_size",
            "measurement/instrument/detection_system/objective/resolution",
        ),
    )
    return TomoScan(
        projections=_read_frames(data, where, "projections"),
        flats=_read_frames(white, where, "flat fields"),
        darks=_read_frames(dark, where, "dark fields"),
        angles_rad=angles,
        pixel_um=pixel,
        metadata={"format": "Data Exchange", "data": data.name, **angle_info},
    )


def _hard_groups(group: h5py.Group) -> list[h5py.Group]:
    """``group``'s member groups reached by hard links (no link to another file is opened)."""
    members = []
    for name in group:
        if isinstance(group.get(name, getlink=True), h5py.HardLink):
            member = group[name]
            if isinstance(member, h5py.Group):
                members.append(member)
    return members


def _find_nxtomo(handle: h5py.File) -> h5py.Group | None:
    """The first NXentry (or NXsubentry) whose ``definition`` is NXtomo."""
    for entry in _hard_groups(handle):
        for group in (entry, *_hard_groups(entry)):
            link = group.get("definition", getlink=True)
            definition = group["definition"] if isinstance(link, h5py.HardLink) else None
            if isinstance(definition, h5py.Dataset) and read_text(definition) == "NXtomo":
                return group
    return None


def _read_nxtomo(handle: h5py.File, entry: h5py.Group, where: str) -> TomoScan:
    base = entry.name.strip("/")
    data = _dataset(handle, f"{base}/data/data", where, "frames")
    keys = _dataset(handle, f"{base}/data/image_key", where, "image keys")
    angle_name = next(
        (
            f"{base}/{name}"
            for name in ("sample/rotation_angle", "data/rotation_angle")
            if name in entry
        ),
        f"{base}/sample/rotation_angle",
    )
    angles_all = _dataset(handle, angle_name, where, "rotation angles")
    _check_frames(data, where, "frames")
    count = data.shape[0]
    if keys.shape != (count,) or keys.dtype.kind not in "iu":
        raise InputFileError(
            f"{where}::{keys.name} must be {count} integers (one per frame), got "
            f"{keys.shape} {keys.dtype}"
        )
    key = np.asarray(keys[()])
    unknown = sorted(set(np.unique(key).tolist()) - {0, 1, 2, 3})
    if unknown:
        raise InputFileError(f"{where}::{keys.name} holds unknown image keys {unknown}")
    angles, angle_info = _angles(angles_all, count, where)
    chosen = {value: np.flatnonzero(key == value) for value in (0, 1, 2)}
    for value, what in ((0, "projections"), (1, "flat fields"), (2, "dark fields")):
        if chosen[value].size == 0:
            raise InputFileError(f"{where} has no {what} (image_key {value} in {keys.name})")
    pixel = _pixel_um(handle, (f"{base}/instrument/detector/x_pixel_size",))
    return TomoScan(
        projections=_read_frames(data, where, "projections", chosen[0]),
        flats=_read_frames(data, where, "flat fields", chosen[1]),
        darks=_read_frames(data, where, "dark fields", chosen[2]),
        angles_rad=angles[chosen[0]],
        pixel_um=pixel,
        metadata={"format": "NXtomo", "data": data.name, **angle_info},
    )
