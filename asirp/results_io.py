"""Writing restorations with their provenance, and reading them back (HDF5).

A restoration is written as HDF5 (NeXus-like layout)::

    /entry                      NX_class=NXentry
    /entry/restored/data        float32 (H, W) or (B, H, W)   the restored map(s), counts
    /entry/restored/psf         float32 (h, w) or (B, h, w)   PSF used or estimated
    /entry/process              NX_class=NXprocess; attrs: program, version, method,
                                parameters (JSON), psf (JSON), metrics (JSON), elapsed_s,
                                input_path, date

Files are written to a temporary name in the target folder and moved into place when complete
(:func:`asirp.safe_files.atomic_write`), so a failure never leaves a half-written result; an
existing file is replaced only with ``overwrite=True``, and the input of the restoration never.
Inputs are read by :mod:`asirp.io`.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp.io import split_hdf5_path
from asirp.restore import Restoration
from asirp.safe_files import DataRoot, FileIdentity, atomic_write


def write_restoration(
    path: str | os.PathLike,
    restoration: Restoration,
    *,
    input_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike | FileIdentity | None] = (),
    root: DataRoot | None = None,
    hint: str = "pass overwrite=True to replace it",
) -> Path:
    """Write a restoration and its provenance to an HDF5 file (layout in the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.h5``).
    restoration : Restoration
        The result of :func:`asirp.restore`.
    input_path : str or os.PathLike, optional
        Where the measured data came from, recorded as provenance; that file is never replaced.
    overwrite : bool
        Replace an existing file (default: refuse with
        :class:`asirp.safe_files.OutputExistsError`). The input is never replaced, even so.
    protect : iterable
        Other files never to replace (paths or ``(st_dev, st_ino)`` identities).
    root : asirp.safe_files.DataRoot, optional
        Write inside this data root only (``path`` relative to it, no link followed).
    hint : str
        How the caller asks for a replacement, for the error message.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    guarded: list[str | os.PathLike | FileIdentity | None] = list(protect)
    if input_path is not None and root is None:
        guarded.append(split_hdf5_path(input_path)[0])
    if root is not None:
        target = root.resolve(path)
        writer = root.atomic_write(path, overwrite=overwrite, protect=guarded, hint=hint)
    else:
        target = Path(path)
        writer = atomic_write(target, overwrite=overwrite, protect=guarded, hint=hint)
    with writer as output, h5py.File(output.file, "w") as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        restored = entry.create_group("restored")
        restored.attrs["NX_class"] = "NXdata"
        restored.attrs["signal"] = "data"
        data = restored.create_dataset(
            "data", data=restoration.image.astype(np.float32), compression="gzip"
        )
        data.attrs["units"] = "counts"
        if restoration.psf is not None:
            restored.create_dataset("psf", data=restoration.psf.astype(np.float32))
        process = entry.create_group("process")
        process.attrs["NX_class"] = "NXprocess"
        provenance = restoration.provenance()
        process.attrs["program"] = "asirp"
        process.attrs["version"] = provenance["version"]
        process.attrs["method"] = provenance["method"]
        process.attrs["parameters"] = json.dumps(provenance["params"], sort_keys=True)
        process.attrs["psf"] = json.dumps(provenance["psf"], sort_keys=True)
        process.attrs["metrics"] = json.dumps(provenance["metrics"], sort_keys=True)
        process.attrs["elapsed_s"] = provenance["elapsed_s"]
        process.attrs["input_path"] = os.fspath(input_path) if input_path else ""
        process.attrs["date"] = datetime.datetime.now(datetime.UTC).isoformat()
    return target


def read_restoration(path: str | os.PathLike) -> dict[str, Any]:
    """Read back a file written by :func:`write_restoration`.

    Returns
    -------
    dict
        ``image``, ``psf`` (or ``None``), ``method``, ``params``, ``psf_description``,
        ``metrics``, ``version``, ``input_path``.
    """
    with h5py.File(path, "r") as handle:
        process = handle["entry/process"].attrs
        restored = handle["entry/restored"]
        return {
            "image": restored["data"][()],
            "psf": restored["psf"][()] if "psf" in restored else None,
            "method": str(process["method"]),
            "params": json.loads(process["parameters"]),
            "psf_description": json.loads(process["psf"]),
            "metrics": json.loads(process["metrics"]),
            "version": str(process["version"]),
            "input_path": str(process["input_path"]),
        }
