"""Reading images and writing restorations: ``.npy``, TIFF and HDF5, with provenance.

Inputs are named by a path; an HDF5 dataset by ``file.h5::/path/to/dataset`` (the path inside
the file may be omitted when the file holds exactly one dataset). Inputs are opened read-only
and never modified.

A restoration is written as HDF5 (NeXus-like layout)::

    /entry                      NX_class=NXentry
    /entry/restored/data        float32 (H, W) or (B, H, W)   the restored map(s), counts
    /entry/restored/psf         float32 (h, w) or (B, h, w)   PSF used or estimated
    /entry/process              NX_class=NXprocess; attrs: program, version, method,
                                parameters (JSON), psf (JSON), metrics (JSON), elapsed_s,
                                input_path, date

Files are written to a temporary name in the target folder and renamed when complete, so a
failure never leaves a half-written result.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp.restore import Restoration


class InputFileError(ValueError):
    """An input file is missing, unreadable, or does not hold what was asked for."""


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")
TIFF_SUFFIXES = (".tif", ".tiff")


def split_hdf5_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``file.h5::/dataset`` into the file path and the dataset path (or ``None``)."""
    text = os.fspath(path)
    if "::" in text:
        file_part, dataset = text.split("::", 1)
        return Path(file_part), dataset or None
    return Path(text), None


def _single_dataset(handle: h5py.File, file_path: Path) -> str:
    names: list[str] = []
    handle.visititems(
        lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
    )
    if len(names) != 1:
        listed = ", ".join("/" + n for n in names[:10]) or "none"
        raise InputFileError(
            f"{file_path} holds {len(names)} datasets ({listed}); name one as "
            f"'{file_path}::/path/to/dataset'"
        )
    return names[0]


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read an array from ``.npy``, TIFF or HDF5 (``file.h5::/dataset``).

    Parameters
    ----------
    path : str or os.PathLike
        The file, with ``::/dataset`` for HDF5.

    Returns
    -------
    numpy.ndarray
        The array as stored (dtype unchanged).

    Raises
    ------
    ValueError
        For a missing file, an unknown suffix, a missing dataset, or a file that cannot be
        parsed (corrupt or of another format).
    """
    file_path, dataset = split_hdf5_path(path)
    if not file_path.is_file():
        raise InputFileError(f"input file not found: {file_path}")
    suffix = file_path.suffix.lower()
    try:
        if suffix == ".npy":
            # allow_pickle=False: never unpickle objects from a file we did not write.
            return np.load(file_path, allow_pickle=False)
        if suffix in TIFF_SUFFIXES:
            import tifffile

            return tifffile.imread(file_path)
        if suffix in HDF5_SUFFIXES:
            with h5py.File(file_path, "r") as handle:
                name = dataset if dataset is not None else _single_dataset(handle, file_path)
                if name not in handle:
                    raise InputFileError(f"{file_path} has no dataset {name!r}")
                item = handle[name]
                if not isinstance(item, h5py.Dataset):
                    raise InputFileError(f"{file_path}::{name} is a group, not a dataset")
                return item[()]
    except InputFileError:
        raise
    except Exception as error:  # corrupt or foreign files raise many different errors
        raise InputFileError(f"cannot read {path}: {type(error).__name__}: {error}") from error
    raise InputFileError(
        f"unknown input format {suffix!r} for {file_path}; use .npy, .tif/.tiff or "
        f"HDF5 ({', '.join(HDF5_SUFFIXES)}) as 'file.h5::/dataset'"
    )


def write_restoration(
    path: str | os.PathLike,
    restoration: Restoration,
    *,
    input_path: str | os.PathLike | None = None,
) -> Path:
    """Write a restoration and its provenance to an HDF5 file (layout in the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.h5``); an existing file is replaced.
    restoration : Restoration
        The result of :func:`asirp.restore`.
    input_path : str or os.PathLike, optional
        Where the measured data came from, recorded as provenance.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    target = Path(path)
    if input_path is not None:
        source, _ = split_hdf5_path(input_path)
        if source.exists() and target.exists() and source.resolve() == target.resolve():
            raise ValueError(f"output {target} is the input file; choose another output path")
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(suffix=".h5.part", dir=target.parent)
    os.close(descriptor)
    try:
        with h5py.File(temporary, "w") as handle:
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
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
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
