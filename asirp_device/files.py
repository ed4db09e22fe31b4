"""The restoration component's file access, confined to a data root.

:class:`DataFiles` reads input maps from the data root, writes results into it, pins the
``weights`` files that method parameters name, and remembers which files the loaded inputs
were, so a result is never written over the file it was restored from. Files are opened by
descriptor through :class:`asirp.safe_files.DataRoot` (``..`` cannot escape, no symbolic link
inside the root is followed). Nothing here imports Tango.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from asirp.io import (
    HDF5_SUFFIXES,
    InputFileError,
    max_input_bytes,
    read_stream,
    split_hdf5_path,
)
from asirp.restore import Restoration
from asirp.results_io import write_restoration
from asirp.safe_files import DataRoot, DataRootError, FileIdentity, PinnedFile
from asirp_device.settings import MAX_SIDE_PX, validate_map

DEVICE_MAX_INPUT_BYTES = MAX_SIDE_PX * MAX_SIDE_PX * 16
"""Largest array LoadImage reads, bytes (a complex128 4096 x 4096 map; checked before reading)."""

MAX_PINNED_FILES = 8
"""Weight files kept open, and loaded inputs remembered (for SaveResult), per component."""


class DataFiles:
    """Reads, writes and pins files inside one data root (thread-safe).

    Parameters
    ----------
    data_root : str or os.PathLike, optional
        The folder every file must be in (an :class:`asirp.safe_files.DataRoot`). ``None`` or
        an empty string disables file access: reading, writing or pinning a file then raises
        :class:`asirp.safe_files.DataRootError`.
    overwrite_results : bool
        Let :meth:`save_result` replace an existing file (never the input of the result).

    Raises
    ------
    ValueError
        For a data root that is not an existing folder.
    """

    def __init__(
        self, data_root: str | os.PathLike | None = None, *, overwrite_results: bool = False
    ) -> None:
        self._root: DataRoot | None = None
        if data_root is not None and str(data_root).strip():
            self._root = DataRoot(data_root)
        self._overwrite_results = bool(overwrite_results)
        self._lock = threading.Lock()
        self._loaded: collections.OrderedDict[str, FileIdentity] = collections.OrderedDict()
        self._pins: collections.OrderedDict[str, PinnedFile] = collections.OrderedDict()

    @property
    def path(self) -> Path | None:
        """The resolved data root, or ``None`` when file access is disabled."""
        return self._root.path if self._root is not None else None

    def require_root(self) -> DataRoot:
        """The data root.

        Raises
        ------
        asirp.safe_files.DataRootError
            When file access is disabled (no data root).
        """
        if self._root is None:
            raise DataRootError(
                "file access is disabled: no data root is configured (DataRoot device property)"
            )
        return self._root

    def pin_weights(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Open a ``weights`` file of the parameters inside the data root and hold it.

        The engine opens weight files by path, so the file is opened here by descriptor through
        the :class:`asirp.safe_files.DataRoot` (no link followed, nothing outside the root) and
        the parameter is replaced by the path of a :class:`asirp.safe_files.PinnedFile`, which
        opens exactly that file whatever happens in the root afterwards (``parameters_json``
        reads back that path; writing it back keeps the same file). Errors never say whether a
        file outside the root exists. The last few pinned files stay open for restorations
        and live sessions that still use them.

        Parameters
        ----------
        parameters : dict
            Method parameters; only a non-empty string ``weights`` is looked at.

        Returns
        -------
        dict
            ``parameters`` itself when there is nothing to pin, else a copy whose ``weights``
            is the pinned file's path.
        """
        value = parameters.get("weights")
        if not isinstance(value, str) or not value.strip():
            return parameters
        with self._lock:
            for pinned in self._pins.values():
                if value == str(pinned.path):
                    return parameters
            root = self.require_root()
            try:
                pinned = root.pin(value, max_bytes=max_input_bytes())
            except FileNotFoundError as error:
                raise InputFileError(f"weights {error}") from None
            self._pins[str(pinned.path)] = pinned
            while len(self._pins) > MAX_PINNED_FILES:
                self._pins.popitem(last=False)[1].close()
        return {**parameters, "weights": str(pinned.path)}

    def load_image(self, path: str | os.PathLike, keep: Callable[[np.ndarray, str], None]) -> Path:
        """Read a 2-D map (``.npy``, TIFF, ``file.h5::/dataset``) from the data root.

        The file is opened by descriptor inside the data root and read from that descriptor
        (:mod:`asirp.safe_files`); its declared size is checked before its data are read, and
        HDF5 links or storage in other files are refused (:func:`asirp.io.read_array`). The
        map, checked by :func:`asirp_device.settings.validate_map`, goes to ``keep``; the file
        is then remembered as that input's (see :meth:`save_result`).

        Parameters
        ----------
        path : str or os.PathLike
            Inside the data root; ``file.h5::/dataset`` names an HDF5 dataset.
        keep : callable
            ``keep(image, source)`` takes the read-only float32 map and its name (the resolved
            path, with ``::dataset`` if one was given).

        Returns
        -------
        pathlib.Path
            The file that was read, inside the (resolved) data root.
        """
        root = self.require_root()
        text = os.fspath(path).strip()
        if not text:
            raise ValueError("the path is empty; give a file inside the data root")
        file_part, dataset = split_hdf5_path(text)
        file = root.resolve(file_part)
        name = f"{file}::{dataset}" if dataset else str(file)
        limit = min(max_input_bytes(), DEVICE_MAX_INPUT_BYTES)
        try:
            stream = root.open_stream(file_part)
        except FileNotFoundError as error:
            raise InputFileError(str(error)) from None
        with stream:
            info = os.fstat(stream.fileno())
            identity = (info.st_dev, info.st_ino)
            image = read_stream(stream, name, max_bytes=limit)
        keep(validate_map(image, f"the image in {name}"), name)
        with self._lock:
            self._loaded[name] = identity
            self._loaded.move_to_end(name)
            while len(self._loaded) > MAX_PINNED_FILES:
                self._loaded.popitem(last=False)
        return file

    def save_result(self, path: str | os.PathLike, restoration: Restoration, source: str) -> Path:
        """Write ``restoration`` with its provenance to an HDF5 file inside the data root.

        An existing file is replaced only with ``overwrite_results=True`` (the
        ``OverwriteResults`` device property), and the file the result was restored from
        (``source``, if :meth:`load_image` read it) never, even then. The write is atomic and
        the new file gets the usual permissions (``0o666`` less the server's umask).

        Parameters
        ----------
        path : str or os.PathLike
            An HDF5 file (``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``) inside the data root.
        restoration : asirp.Restoration
            The result to write.
        source : str
            Where its input came from (recorded as ``input_path``).

        Returns
        -------
        pathlib.Path
            The written file, inside the (resolved) data root.

        Raises
        ------
        asirp.safe_files.OutputExistsError
            If the file exists and overwriting is not allowed.
        asirp.safe_files.ProtectedFileError
            If the file is the input of the result.
        """
        root = self.require_root()
        text = os.fspath(path).strip()
        if not text:
            raise ValueError("the path is empty; give a file inside the data root")
        file_part, dataset = split_hdf5_path(text)
        if dataset is not None:
            raise ValueError("SaveResult writes a whole HDF5 file; give a path without '::'")
        file = root.resolve(file_part)
        if file.suffix.lower() not in HDF5_SUFFIXES:
            raise ValueError(
                f"SaveResult writes HDF5: the file name must end with one of "
                f"{', '.join(HDF5_SUFFIXES)}, got {file.name!r}"
            )
        with self._lock:
            protected = self._loaded.get(source)
        return write_restoration(
            file_part,
            restoration,
            input_path=source,
            overwrite=self._overwrite_results,
            protect=[protected],
            root=root,
            hint="set the OverwriteResults device property to true to replace existing files",
        )
