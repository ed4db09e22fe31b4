"""NeXus building blocks shared by every HDF5 file ASIRP writes.

The files follow the NeXus base classes (checked with ``nxvalidate`` in the tests) and open in
silx and PyMca as images with axes:

- the root carries ``@default`` (the entry to show) and who wrote the file (``@creator``,
  ``@creator_version``, ``@file_time``, ``@HDF5_Version``, ``@h5py_version``);
- an NXentry carries ``@default`` (the NXdata to show);
- an NXdata carries ``@signal``, ``@axes`` (``["y", "x"]``, or ``[".", "y", "x"]`` for a stack
  of images), ``@y_indices``/``@x_indices``; its axis datasets carry ``@units`` (``"um"``
  for µm, the NeXus spelling, or ``"pixel"`` where no physical size is known) and
  ``@long_name``; the signal carries ``@units`` (``"counts"``) and ``@long_name``;
- an NXprocess holds how a result was made as FIELDS (``program``, ``version``, ``date``,
  ``sequence_index``, then e.g. ``method``), and NXnote groups (``type="application/json"``,
  ``data`` = the JSON text) for structured parameters and the full provenance.

No application definition is claimed (``/entry/definition`` is not written): none of those
NeXus defines (NXfluo, NXxrot, ...) describes a restored map, and the field must only name a
definition the file conforms to.

Plain h5py is used: silx's writer (``silx.io.nxdata.save_NXdata``) opens the file by name
(ASIRP writes through :func:`asirp.safe_files.atomic_write`'s open file) and writes neither
units, ``@AXISNAME_indices`` nor compression. silx reads these files (``silx.io.nxdata``).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from asirp._version import __version__

UM = "um"
"""NeXus units of µm (NeXus spells micro as ``u``)."""
PIXEL = "pixel"
"""Units of an axis given in pixel indices (no physical size known)."""
COUNTS = "counts"
"""Units of detector counts."""
JSON_NOTE = "application/json"
"""``type`` of an NXnote whose ``data`` is JSON text."""

_STRING = h5py.string_dtype()


@dataclass(frozen=True)
class Axis:
    """One axis of an NXdata: a dataset of coordinates along one dimension of the signal.

    Attributes
    ----------
    name : str
        Dataset name (``"x"``, ``"y"``).
    values : numpy.ndarray or h5py.Dataset
        ``(n,)`` coordinates, one per signal element along the dimension; an existing
        dataset of the same file is hard-linked instead of copied.
    units : str
        NeXus units (``"um"``, ``"pixel"``, ``"keV"``).
    long_name : str
        Label for plots (``"x (µm)"``).
    """

    name: str
    values: np.ndarray | h5py.Dataset
    units: str
    long_name: str


def utc_now() -> str:
    """The current time as ISO 8601 with its UTC offset (NeXus ``NX_DATE_TIME``)."""
    return datetime.datetime.now(datetime.UTC).isoformat()


def string_array(values: Sequence[str]) -> np.ndarray:
    """A 1-D array of variable-length UTF-8 strings, for attributes such as ``@axes``."""
    return np.array(list(values), dtype=_STRING)


def to_json(payload: Any) -> str:
    """JSON text of ``payload``; numpy scalars and arrays become numbers and lists.

    Key order is kept (not sorted), so what is read back is the dict as written.
    """
    return json.dumps(payload, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def read_text(value: Any) -> str:
    """A string field or attribute as ``str`` (h5py gives ``bytes`` or 0-d arrays for some)."""
    if isinstance(value, h5py.Dataset):
        value = value[()]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def pixel_axes(
    shape: Sequence[int],
    pixel_um: float | Sequence[float] | None = None,
    *,
    origin_um: tuple[float, float] = (0.0, 0.0),
) -> tuple[Axis, Axis]:
    """The ``y`` and ``x`` axes of an image of ``shape`` ``(..., H, W)``.

    Parameters
    ----------
    shape : sequence of int
        The image's shape; the last two are rows and columns.
    pixel_um : float or (float, float), optional
        Pixel size (row, column steps), µm. Without it the axes are pixel indices
        (units ``"pixel"``).
    origin_um : (float, float)
        Centre of pixel ``[0, 0]`` as ``(y, x)``, µm (used with ``pixel_um``).

    Returns
    -------
    (Axis, Axis)
        ``y`` (``H`` pixel centres) and ``x`` (``W``), µm or pixel indices.
    """
    rows, columns = int(shape[-2]), int(shape[-1])
    if pixel_um is None:
        return (
            Axis("y", np.arange(rows, dtype=np.float64), PIXEL, "y (pixel)"),
            Axis("x", np.arange(columns, dtype=np.float64), PIXEL, "x (pixel)"),
        )
    step_y, step_x = pixel_pair(pixel_um)
    return (
        Axis("y", origin_um[0] + step_y * np.arange(rows), UM, "y (µm)"),
        Axis("x", origin_um[1] + step_x * np.arange(columns), UM, "x (µm)"),
    )


def pixel_pair(pixel_um: float | Sequence[float]) -> tuple[float, float]:
    """``(row_step, column_step)`` in µm from one size or a pair; ``ValueError`` otherwise."""
    values = np.atleast_1d(np.asarray(pixel_um, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, 2)
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"pixel_um must be one or two positive sizes in µm, got {pixel_um!r}")
    return float(values[0]), float(values[1])


def mark_root(handle: h5py.File, *, default_entry: str = "entry") -> None:
    """Write the root's ``@default`` and who wrote the file (NXroot attributes).

    Parameters
    ----------
    handle : h5py.File
        The file, open for writing.
    default_entry : str
        Name of the NXentry viewers open first.
    """
    handle.attrs.update(
        default=default_entry,
        creator="asirp",
        creator_version=__version__,
        file_time=utc_now(),
        HDF5_Version=h5py.version.hdf5_version,
        h5py_version=h5py.version.version,
    )


def create_entry(
    handle: h5py.File,
    name: str = "entry",
    *,
    title: str | None = None,
    default: bool = True,
) -> h5py.Group:
    """Create an NXentry (and with ``default``, make it the root's ``@default``).

    Parameters
    ----------
    handle : h5py.File
        The file, open for writing.
    name : str
        The entry's name.
    title : str, optional
        The entry's ``title`` field.
    default : bool
        Mark the root (:func:`mark_root`) with this entry as the one to show.

    Returns
    -------
    h5py.Group
    """
    entry = handle.create_group(name)
    entry.attrs["NX_class"] = "NXentry"
    if title is not None:
        entry["title"] = title
    if default:
        mark_root(handle, default_entry=name)
    return entry


def set_default(group: h5py.Group, child: str) -> None:
    """Point ``group``'s ``@default`` at its member ``child`` (an NXdata, or an NXentry)."""
    if child not in group:
        raise ValueError(f"{group.name} has no member {child!r} to show by default")
    group.attrs["default"] = child


def write_nxdata(
    parent: h5py.Group,
    name: str,
    signal: np.ndarray,
    axes: Sequence[Axis | None],
    *,
    units: str | None = COUNTS,
    long_name: str | None = None,
    signal_name: str = "data",
    compression: str | None = "gzip",
    default: bool = False,
) -> h5py.Group:
    """Write an NXdata group: the signal, its axes and the attributes viewers need.

    Parameters
    ----------
    parent : h5py.Group
        Where the group goes (an NXentry).
    name : str
        The group's name.
    signal : numpy.ndarray or h5py.Dataset
        The data, e.g. ``(H, W)`` or a stack ``(B, H, W)``. An existing dataset of the same
        file is hard-linked as it is (its attributes left alone: they are another format's).
    axes : sequence of Axis or None
        One per dimension of ``signal``, slowest first; ``None`` for a dimension without
        coordinates (written as ``"."`` in ``@axes``).
    units : str or None
        Units of the signal (``"counts"``); ``None`` for a dimensionless one.
    long_name : str, optional
        Label of the signal.
    signal_name : str
        Name of the signal dataset.
    compression : str or None
        HDF5 filter of the signal.
    default : bool
        Make this group ``parent``'s ``@default``.

    Returns
    -------
    h5py.Group

    Raises
    ------
    ValueError
        If the number of axes or an axis length does not match the signal.
    """
    linked = isinstance(signal, h5py.Dataset)
    values = signal if linked else np.asarray(signal)
    if len(axes) != values.ndim:
        raise ValueError(f"{name}: {len(axes)} axes for a signal of shape {values.shape}")
    for dimension, axis in enumerate(axes):
        if axis is not None and axis.values.shape != (values.shape[dimension],):
            raise ValueError(
                f"{name}: axis {axis.name!r} has shape {axis.values.shape}, the signal "
                f"{values.shape[dimension]} elements along dimension {dimension}"
            )
    group = parent.create_group(name)
    group.attrs.update(
        NX_class="NXdata",
        signal=signal_name,
        axes=string_array([axis.name if axis is not None else "." for axis in axes]),
    )
    for dimension, axis in enumerate(axes):
        if axis is not None:
            group.attrs[f"{axis.name}_indices"] = np.int64(dimension)
    if linked:
        group[signal_name] = values
    else:
        dataset = group.create_dataset(
            signal_name, data=values, compression=compression if values.size > 1 else None
        )
        if units is not None:
            dataset.attrs["units"] = units
        if long_name is not None:
            dataset.attrs["long_name"] = long_name
        if values.ndim == 3:
            # a stack of images, not a volume: silx shows one frame with a frame slider
            dataset.attrs["interpretation"] = "image"
    for axis in axes:
        if axis is None:
            continue
        if isinstance(axis.values, h5py.Dataset):
            group[axis.name] = axis.values  # a hard link: one dataset, two NXdata
        else:
            written = group.create_dataset(axis.name, data=np.asarray(axis.values))
            written.attrs.update(units=axis.units, long_name=axis.long_name)
    if default:
        set_default(parent, name)
    return group


def write_json_note(
    parent: h5py.Group, name: str, payload: Any, *, description: str | None = None
) -> h5py.Group:
    """Write ``payload`` as JSON in an NXnote (``type="application/json"``, ``data``).

    Parameters
    ----------
    parent : h5py.Group
        Where the note goes (an NXprocess or NXentry).
    name : str
        The note's name.
    payload : Any
        Anything JSON can hold (numpy scalars and arrays become numbers and lists).
    description : str, optional
        What the note holds, in words.

    Returns
    -------
    h5py.Group
    """
    note = parent.create_group(name)
    note.attrs["NX_class"] = "NXnote"
    note["type"] = JSON_NOTE
    if description is not None:
        note["description"] = description
    note["data"] = to_json(payload)
    return note


def read_json_note(note: h5py.Group) -> Any:
    """The payload of a note written by :func:`write_json_note`.

    Raises
    ------
    ValueError
        If the group is not a JSON NXnote or its text is not JSON.
    """
    if "data" not in note or read_text(note.get("type", b"")) != JSON_NOTE:
        raise ValueError(f"{note.name} is not an NXnote holding JSON (type {JSON_NOTE!r})")
    try:
        return json.loads(read_text(note["data"]))
    except json.JSONDecodeError as error:
        raise ValueError(f"{note.name}/data is not JSON: {error}") from None


def write_process(
    parent: h5py.Group,
    name: str = "process",
    *,
    fields: Mapping[str, Any] | None = None,
    units: Mapping[str, str] | None = None,
    notes: Mapping[str, Any] | None = None,
    descriptions: Mapping[str, str] | None = None,
    program: str = "asirp",
    version: str = __version__,
    sequence_index: int = 1,
    date: str | None = None,
) -> h5py.Group:
    """Write an NXprocess: what made a result, as fields, and JSON notes.

    Parameters
    ----------
    parent : h5py.Group
        Where it goes (an NXentry).
    name : str
        The group's name.
    fields : mapping
        Further fields after ``program``, ``version``, ``date`` and ``sequence_index``
        (``method``, ``input_path``, ...): strings, numbers or booleans; ``None`` values are
        left out.
    units : mapping
        ``@units`` of some of those fields (``{"elapsed_s": "s"}``).
    notes : mapping
        ``name -> payload`` written as JSON NXnotes (:func:`write_json_note`).
    descriptions : mapping
        ``name -> text``, the ``description`` of some of those notes.
    program, version : str
        What ran.
    sequence_index : int
        Position of this step among the file's processes (1 for the first).
    date : str, optional
        When (ISO 8601); now by default.

    Returns
    -------
    h5py.Group
    """
    fields, units = fields or {}, units or {}
    notes, descriptions = notes or {}, descriptions or {}
    process = parent.create_group(name)
    process.attrs["NX_class"] = "NXprocess"
    process["program"] = program
    process["version"] = version
    process["date"] = date if date is not None else utc_now()
    process["sequence_index"] = np.int64(sequence_index)
    for key, value in fields.items():
        if value is None:
            continue
        process[key] = value
        if key in units:
            process[key].attrs["units"] = units[key]
    for key, payload in notes.items():
        write_json_note(process, key, payload, description=descriptions.get(key))
    return process
