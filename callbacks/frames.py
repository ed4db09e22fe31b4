"""Detector frames from untrusted documents: a confined AD_HDF5 handler, a Filler, checks.

Frames reach a callback inline (the event holds the array) or as references to files
(``resource`` and ``datum`` documents, the ``AD_HDF5`` layout of areaDetector's HDF5 plugin:
dataset ``/entry/data/data`` of shape ``(frames, rows, columns)``, datum kwarg
``point_number``). :func:`frame_filler` builds an :class:`event_model.Filler` whose only handler
is :class:`SafeADHDF5Handler`; :func:`as_frame` and :func:`as_temperature_K` check what an event
holds before it is analysed.

Rules of the handler (documents are untrusted; a path in one could name any file):

- The file must lie inside the configured data root (:class:`asirp.safe_files.DataRoot`):
  normalised lexically, no ``..`` above the root, **no symbolic link followed** (inside or
  out), opened component by component by file descriptor, so nothing is looked up twice by
  name (no check-then-open race). The ``resource`` document's ``root`` is joined to its
  ``resource_path`` by the Filler (``root_map`` can translate it) before the handler sees it.
- A file larger than ``max_file_bytes`` is refused from its descriptor's size, before a byte is
  read; h5py then reads the already-open file object (its ``fileobj`` driver), never the path.
- Inside the file, ``/entry/data/data`` must be reached by hard links only and be a plain
  numeric dataset: an external link, a virtual dataset or external raw storage would make
  HDF5 open other files by name, outside the data root, and are refused. The frame read
  (``frame_per_point`` frames, or a chunk of the dataset) may not exceed ``max_frame_bytes``
  (a compressed chunk could otherwise inflate to any size).
- ``resource_kwargs`` other than ``frame_per_point`` are refused (they are passed to the
  handler's constructor as keyword arguments, so one named ``data_root`` must not override
  the configured root).

A refused, vanished or corrupt file raises from the Filler; the caller logs it and skips the
frame (see :class:`callbacks.temporal.TemporalMonitor`).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from asirp.safe_files import DataRoot

AD_HDF5_SPEC = "AD_HDF5"
AD_HDF5_DATASET = ("entry", "data", "data")
"""Path of the frames inside an AD_HDF5 file, component by component."""
MAX_FILE_BYTES = 4 << 30
"""Default largest frame file opened, bytes (4 GiB)."""
MAX_FRAME_BYTES = 256 << 20
"""Default largest frame (or HDF5 chunk) read, bytes (256 MiB: 8192 x 8192 float32)."""
MAX_FRAMES_PER_POINT = 1000
DEFAULT_RETRY_INTERVALS = (0.02, 0.1)
"""Seconds between the Filler's further attempts at a file that is not there (yet)."""

_TEMPERATURE_UNITS: dict[str, tuple[float, float]] = {
    # units as written in a data key -> (scale, offset): kelvin = scale * value + offset
    "k": (1.0, 0.0),
    "kelvin": (1.0, 0.0),
    "degk": (1.0, 0.0),
    "c": (1.0, 273.15),
    "degc": (1.0, 273.15),
    "celsius": (1.0, 273.15),
    "°c": (1.0, 273.15),
}


class FrameError(ValueError):
    """A frame or temperature that cannot be analysed; ``reason`` is a short counter key.

    Parameters
    ----------
    reason : str
        ``"type"``, ``"dtype"``, ``"shape"``, ``"nonfinite"`` or ``"temperature"``.
    message : str
        What was wrong, for the log.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SafeADHDF5Handler:
    """Read frames of an AD_HDF5 file inside a data root (rules in the module notes).

    The file is opened at each call and closed before it returns, so a run of one file per
    frame keeps no descriptors open, and a file replaced between frames is read afresh.

    Parameters
    ----------
    filename : str
        The file, as the Filler composed it (``root`` joined to ``resource_path``); absolute
        inside the data root, or relative to it.
    frame_per_point : int
        Frames per datum (``point_number`` ``n`` reads frames ``n * fpp`` to ``(n+1) * fpp``).
    data_root : DataRoot
        The folder every file must lie in.
    max_file_bytes : int
        Largest file opened, bytes.
    max_frame_bytes : int
        Largest read (frames of one datum) and largest HDF5 chunk, bytes.

    Raises
    ------
    asirp.safe_files.DataRootError
        If ``filename`` leaves the data root (checked lexically, before anything is opened).
    ValueError
        If ``frame_per_point`` is not an integer in ``[1, 1000]``.
    """

    specs = frozenset({AD_HDF5_SPEC})

    def __init__(
        self,
        filename: str,
        frame_per_point: int = 1,
        *,
        data_root: DataRoot,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        if not isinstance(filename, str):
            raise TypeError(f"the resource path must be a string, got {type(filename).__name__}")
        self._parts = data_root.parts(filename)  # lexical: refuses '..' and paths outside
        if (
            isinstance(frame_per_point, bool)
            or not isinstance(frame_per_point, numbers.Integral)
            or not 1 <= int(frame_per_point) <= MAX_FRAMES_PER_POINT
        ):
            raise ValueError(
                f"frame_per_point must be an integer in [1, {MAX_FRAMES_PER_POINT}], "
                f"got {frame_per_point!r}"
            )
        self.data_root = data_root
        self.filename = filename
        self.frame_per_point = int(frame_per_point)
        self.max_file_bytes = int(max_file_bytes)
        self.max_frame_bytes = int(max_frame_bytes)

    def __call__(self, point_number: int) -> np.ndarray:
        """Frames of one datum, ``(frame_per_point, rows, columns)`` in the file's dtype.

        Raises
        ------
        asirp.safe_files.DataRootError
            If the path goes through a symbolic link.
        FileNotFoundError
            If the file is not (or no longer) there.
        ValueError
            If the file is too large, not an AD_HDF5 file of plain numeric frames, or
            ``point_number`` is out of range.
        OSError
            If HDF5 cannot read it (a corrupt or truncated file).
        """
        if isinstance(point_number, bool) or not isinstance(point_number, numbers.Integral):
            raise ValueError(f"point_number must be an integer, got {point_number!r}")
        start = int(point_number) * self.frame_per_point
        if start < 0:
            raise ValueError(f"point_number must be >= 0, got {point_number!r}")
        import h5py

        relative = "/".join(self._parts)
        with self.data_root.open(relative) as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > self.max_file_bytes:
                raise ValueError(
                    f"{relative!r} is {size} bytes, more than the {self.max_file_bytes} allowed"
                )
            with h5py.File(stream, "r") as file:
                dataset = _frames_dataset(file, relative)
                self._check_dataset(dataset, relative)
                stop = start + self.frame_per_point
                if stop > dataset.shape[0]:
                    raise ValueError(
                        f"{relative!r}: point_number {point_number} needs frames "
                        f"{start}:{stop}, the file holds {dataset.shape[0]}"
                    )
                return np.asarray(dataset[start:stop])

    def _check_dataset(self, dataset: Any, relative: str) -> None:
        if dataset.dtype.kind not in "biuf" or dataset.dtype.fields is not None:
            raise ValueError(f"{relative!r}: frames of dtype {dataset.dtype} are not numeric")
        if dataset.ndim != 3:
            raise ValueError(
                f"{relative!r}: /entry/data/data must be (frames, rows, columns), "
                f"got shape {dataset.shape}"
            )
        if dataset.is_virtual or dataset.id.get_create_plist().get_external_count():
            raise ValueError(
                f"{relative!r}: /entry/data/data is stored in other files (virtual or "
                "external storage), which are not opened"
            )
        item = dataset.dtype.itemsize
        frame = math.prod(dataset.shape[1:]) * item * self.frame_per_point
        chunk = math.prod(dataset.chunks) * item if dataset.chunks else 0
        if max(frame, chunk) > self.max_frame_bytes:
            raise ValueError(
                f"{relative!r}: a read of {max(frame, chunk)} bytes is more than the "
                f"{self.max_frame_bytes} allowed"
            )


def _frames_dataset(file: Any, relative: str) -> Any:
    """``/entry/data/data`` of ``file``, reached through hard links only."""
    import h5py

    node = file
    for index, part in enumerate(AD_HDF5_DATASET):
        where = "/" + "/".join(AD_HDF5_DATASET[: index + 1])
        if not isinstance(node, h5py.Group) or part not in node:
            raise ValueError(f"{relative!r} has no {where} (not an AD_HDF5 file)")
        link = node.get(part, getlink=True)
        if not isinstance(link, h5py.HardLink):
            # an external or soft link would make HDF5 look up another name, maybe another file
            raise ValueError(f"{relative!r}: {where} is a {type(link).__name__}, not followed")
        node = node[part]
    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"{relative!r}: /entry/data/data is not a dataset")
    return node


def ad_hdf5_handler_factory(
    data_root: DataRoot | str | os.PathLike,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_frame_bytes: int = MAX_FRAME_BYTES,
) -> Any:
    """A handler "class" for a Filler's registry: ``factory(resource_path, **resource_kwargs)``.

    Only ``frame_per_point`` is accepted from the resource document; any other keyword (which
    could otherwise override the data root) is refused with :class:`ValueError`.

    Parameters
    ----------
    data_root : DataRoot or path
        The folder frame files must lie in.
    max_file_bytes, max_frame_bytes : int
        See :class:`SafeADHDF5Handler`.
    """
    root = data_root if isinstance(data_root, DataRoot) else DataRoot(data_root)

    def factory(resource_path: str, **resource_kwargs: Any) -> SafeADHDF5Handler:
        unknown = sorted(set(resource_kwargs) - {"frame_per_point"})
        if unknown:
            raise ValueError(f"AD_HDF5 resource_kwargs not accepted: {unknown}")
        return SafeADHDF5Handler(
            resource_path,
            resource_kwargs.get("frame_per_point", 1),
            data_root=root,
            max_file_bytes=max_file_bytes,
            max_frame_bytes=max_frame_bytes,
        )

    factory.specs = SafeADHDF5Handler.specs  # type: ignore[attr-defined]
    return factory


def frame_filler(
    data_root: DataRoot | str | os.PathLike | None,
    *,
    root_map: Mapping[str, str] | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    retry_intervals: Sequence[float] = DEFAULT_RETRY_INTERVALS,
) -> Any:
    """An :class:`event_model.Filler` for one run, filling only AD_HDF5 frames inside a root.

    Parameters
    ----------
    data_root : DataRoot, path or None
        The folder frame files must lie in; ``None``: no handler (external frames then fail
        with ``UndefinedAssetSpecification``, and inline frames pass through).
    root_map : mapping, optional
        ``{resource root: local root}``, as :class:`event_model.Filler` applies it (for a data
        root mounted elsewhere here than on the detector's machine).
    max_file_bytes, max_frame_bytes : int
        See :class:`SafeADHDF5Handler`.
    retry_intervals : sequence of float
        Seconds to wait before each further attempt at a file that cannot be opened yet
        (files written over NFS appear late); then the frame is given up.

    Returns
    -------
    event_model.Filler
        ``inplace=False`` for pages; feed it the run's descriptor, resource and datum documents,
        then call ``fill_event(event, inplace=True)`` on a copy of each event.
    """
    from event_model import Filler

    registry: dict[str, Any] = {}
    if data_root is not None:
        registry[AD_HDF5_SPEC] = ad_hdf5_handler_factory(
            data_root, max_file_bytes=max_file_bytes, max_frame_bytes=max_frame_bytes
        )
    return Filler(
        registry,
        root_map=dict(root_map or {}),
        inplace=False,
        retry_intervals=list(retry_intervals),
    )


def as_frame(value: Any, shape: tuple[int, int]) -> np.ndarray:
    """A frame from an event's (filled) value: a ``shape`` float32 array of finite counts.

    A leading axis of length 1 (an AD_HDF5 datum of one frame) is dropped.

    Parameters
    ----------
    value : array_like
        The event's value.
    shape : (int, int)
        Expected ``(rows, columns)``, px.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` float32, a new array (never a view of ``value``).

    Raises
    ------
    FrameError
        ``reason`` ``"type"`` (not an array of numbers), ``"dtype"``, ``"shape"`` or
        ``"nonfinite"`` (a NaN or infinite pixel).
    """
    if value is None or isinstance(value, str | bytes | Mapping):
        raise FrameError("type", f"the frame is a {type(value).__name__}, not an array")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged lists
        raise FrameError("type", f"the frame is not an array: {error}") from None
    if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
        raise FrameError("dtype", f"frame dtype {array.dtype} is not numeric")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if tuple(array.shape) != tuple(shape):
        raise FrameError("shape", f"frame shape {array.shape}, the geometry's is {tuple(shape)}")
    frame = np.array(array, dtype=np.float32, copy=True)
    if not np.isfinite(frame).all():
        bad = int(frame.size - np.count_nonzero(np.isfinite(frame)))
        raise FrameError("nonfinite", f"{bad} pixel(s) of the frame are NaN or infinite")
    return frame


def temperature_conversion(units: Any) -> tuple[float, float]:
    """``(scale, offset)`` with kelvin = scale * value + offset, from a data key's units.

    Parameters
    ----------
    units : str or None
        ``None`` or empty (taken as kelvin), ``"K"``, ``"kelvin"``, ``"degC"``, ``"C"``, ...

    Raises
    ------
    ValueError
        For other units.
    """
    if units is None or (isinstance(units, str) and not units.strip()):
        return (1.0, 0.0)
    if not isinstance(units, str):
        raise ValueError(f"temperature units must be a string, got {units!r}")
    key = units.strip().lower().replace(" ", "").replace("_", "")
    if key not in _TEMPERATURE_UNITS:
        raise ValueError(f"temperature units {units[:32]!r} are not understood (K or degC)")
    return _TEMPERATURE_UNITS[key]


def as_temperature_K(value: Any, conversion: tuple[float, float] = (1.0, 0.0)) -> float:
    """A temperature in kelvin from an event's value.

    Parameters
    ----------
    value : number
        The reading (a 0-d or 1-element array is accepted).
    conversion : (float, float)
        ``(scale, offset)`` from :func:`temperature_conversion`.

    Raises
    ------
    FrameError
        ``reason`` ``"temperature"``: not a number, not finite, or not above 0 K.
    """
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FrameError("temperature", f"the temperature is not a number: {value!r:.40}")
    kelvin = conversion[0] * float(value) + conversion[1]
    if not (math.isfinite(kelvin) and kelvin > 0):
        raise FrameError("temperature", f"the temperature {value!r} is not a finite, positive K")
    return kelvin
