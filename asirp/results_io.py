"""Writing restorations with their provenance, and reading them back (NeXus/HDF5).

A restoration is written as NeXus (valid against the base classes; silx and PyMca show the
restored map as an image with axes)::

    /                           @default="entry", @creator="asirp", @creator_version, @file_time
    /entry                      NXentry; @default="restored"; title
      restored                  NXdata: signal="data", axes=["y", "x"] (a stack: [".", "y",
                                "x"]), y_indices, x_indices
        data                    float32 (H, W) or (B, H, W)   the restored map(s), counts
        y, x                    float64 (H,), (W,)   pixel centres from 0, µm (units="um") when
                                the pixel size is known (``pixel_um=``, or the beam PSF's), else
                                pixel indices (units="pixel"); a super-resolved map's pixels
                                are the input's divided by the scale
      input                     NXdata (when ``input_image=`` is given): the measured map(s),
                                same attributes, axes on the input's grid
      psf                       NXdata (when the result has a PSF): data float32 (h, w) or
                                (B, h, w), y and x offsets from the centre, µm or pixels
      process                   NXprocess, fields: program="asirp", version, date (ISO 8601),
                                sequence_index=1, method, input_path, elapsed_s (units="s")
        parameters              NXnote, type="application/json", data=the method's parameters
        psf                     NXnote, JSON: how the PSF was made (``psf_description``)
        metrics                 NXnote, JSON: the figures of merit
        provenance              NXnote, JSON: the whole ``Restoration.provenance()`` dict,
                                read back as written by :func:`read_restoration`

Files are written to a temporary name in the target folder and moved into place when complete
(:func:`asirp.safe_files.atomic_write`), so a failure never leaves a half-written result; an
existing file is replaced only with ``overwrite=True``, and the input of the restoration never.
Inputs are read by :mod:`asirp.io`. Files of the earlier layout (provenance as attributes of
``/entry/process``, the PSF in ``/entry/restored/psf``) are still read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp import nexus
from asirp.io import InputFileError, check_declared_size, split_hdf5_path
from asirp.restore import Restoration
from asirp.safe_files import DataRoot, FileIdentity, atomic_write


def write_restoration(
    path: str | os.PathLike,
    restoration: Restoration,
    *,
    input_path: str | os.PathLike | None = None,
    input_image: np.ndarray | None = None,
    pixel_um: float | Sequence[float] | None = None,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike | FileIdentity | None] = (),
    root: DataRoot | None = None,
    hint: str = "pass overwrite=True to replace it",
) -> Path:
    """Write a restoration and its provenance as NeXus/HDF5 (layout in the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.h5``).
    restoration : Restoration
        The result of :func:`asirp.restore`.
    input_path : str or os.PathLike, optional
        Where the measured data came from, recorded as provenance; that file is never replaced.
    input_image : numpy.ndarray, optional
        The measured map(s) ``(H, W)`` or ``(B, H, W)``, counts, stored in ``/entry/input``.
    pixel_um : float or (float, float), optional
        Pixel size of the input (row, column steps), µm, for the axes; by default the beam
        PSF's (``psf_description["pixel_um"]``), else the axes are pixel indices.
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

    Raises
    ------
    ValueError
        If ``pixel_um`` is not one or two positive sizes, or ``input_image`` is not 2-D or 3-D.
    """
    restored_image = np.asarray(restoration.image, dtype=np.float32)
    measured = None if input_image is None else np.asarray(input_image)
    if measured is not None and measured.ndim not in (2, 3):
        raise ValueError(f"input_image must be a 2-D map or a 3-D stack, got {measured.shape}")
    input_pixel = _input_pixel_um(restoration, pixel_um)
    restored_pixel = _restored_pixel_um(restoration, input_pixel, measured)
    guarded: list[str | os.PathLike | FileIdentity | None] = list(protect)
    if input_path is not None and root is None:
        guarded.append(split_hdf5_path(input_path)[0])
    if root is not None:
        target = root.resolve(path)
        writer = root.atomic_write(path, overwrite=overwrite, protect=guarded, hint=hint)
    else:
        target = Path(path)
        writer = atomic_write(target, overwrite=overwrite, protect=guarded, hint=hint)
    origin = (0.0, 0.0)
    if input_pixel is not None and restored_pixel is not None:
        # the input's pixel 0 is centred at 0 µm; a finer (super-resolved) grid covering the
        # same cells starts half an input pixel less half a fine pixel before it
        origin = (
            (restored_pixel[0] - input_pixel[0]) / 2,
            (restored_pixel[1] - input_pixel[1]) / 2,
        )
    with writer as output, h5py.File(output.file, "w") as handle:
        entry = nexus.create_entry(handle, title=f"asirp restoration: {restoration.method}")
        y, x = nexus.pixel_axes(restored_image.shape, restored_pixel, origin_um=origin)
        add_restoration(
            entry,
            restoration,
            axes=(y, x),
            psf_pixel_um=input_pixel,
            input_path=os.fspath(input_path) if input_path else "",
        )
        if measured is not None:
            y, x = nexus.pixel_axes(measured.shape, input_pixel)
            nexus.write_nxdata(
                entry,
                "input",
                measured,
                [None] * (measured.ndim - 2) + [y, x],
                long_name="measured counts",
            )
    return target


def add_restoration(
    entry: h5py.Group,
    restoration: Restoration,
    *,
    axes: tuple[nexus.Axis, nexus.Axis],
    psf_pixel_um: tuple[float, float] | None,
    input_path: str = "",
    units: str = nexus.COUNTS,
    long_name: str = "restored counts",
    sequence_index: int = 1,
) -> None:
    """Write a restoration into an NXentry: ``restored``, ``psf`` and ``process`` groups.

    ``restored`` becomes the entry's ``@default`` unless the entry already has one.

    Parameters
    ----------
    entry : h5py.Group
        The NXentry.
    restoration : Restoration
        The result of :func:`asirp.restore`.
    axes : (Axis, Axis)
        ``y`` and ``x`` of the restored grid (µm or pixels).
    psf_pixel_um : (float, float) or None
        The PSF's pixel (the input's), µm, for its offset axes; pixels when ``None``.
    input_path : str
        Where the measured data came from ("" if unknown).
    units : str
        Units of the restored signal.
    long_name : str
        Label of the restored signal.
    sequence_index : int
        The restoration's place among the entry's processes (1 when it is the only one).
    """
    image = np.asarray(restoration.image, dtype=np.float32)
    nexus.write_nxdata(
        entry,
        "restored",
        image,
        [None] * (image.ndim - 2) + list(axes),
        units=units,
        long_name=long_name,
    )
    if "default" not in entry.attrs:
        nexus.set_default(entry, "restored")
    if restoration.psf is not None:
        _write_psf(entry, np.asarray(restoration.psf, dtype=np.float32), psf_pixel_um)
    provenance = restoration.provenance()
    nexus.write_process(
        entry,
        "process",
        version=str(provenance.get("version", restoration.version)),
        sequence_index=sequence_index,
        fields={
            "method": restoration.method,
            "input_path": input_path,
            "elapsed_s": float(restoration.elapsed_s),
        },
        units={"elapsed_s": "s"},
        notes={
            "parameters": restoration.params,
            "psf": restoration.psf_description,
            "metrics": restoration.metrics,
            "provenance": provenance,
        },
        descriptions={
            "parameters": "the method's parameters, defaults and run facts",
            "psf": "how the PSF was made",
            "metrics": "figures of merit of the result",
            "provenance": "Restoration.provenance(): everything to reproduce the result",
        },
    )


def _input_pixel_um(
    restoration: Restoration, pixel_um: float | Sequence[float] | None
) -> tuple[float, float] | None:
    """The input's pixel size (row, column), µm: given, or the beam PSF's, or ``None``."""
    if pixel_um is not None:
        return nexus.pixel_pair(pixel_um)
    described = restoration.psf_description.get("pixel_um")
    if described is None:
        return None
    try:
        return nexus.pixel_pair(described)
    except (TypeError, ValueError):
        return None  # a description from elsewhere: the axes fall back to pixel indices


def _restored_pixel_um(
    restoration: Restoration,
    input_pixel: tuple[float, float] | None,
    measured: np.ndarray | None,
) -> tuple[float, float] | None:
    """The restored grid's pixel size, µm: the input's, divided by the upscaling if any."""
    if input_pixel is None:
        return None
    restored_shape = np.shape(restoration.image)[-2:]
    if measured is not None:
        ratio = [
            n_in / n_out for n_in, n_out in zip(measured.shape[-2:], restored_shape, strict=True)
        ]
    else:
        scale = restoration.params.get("scale", 1)
        ratio = [1.0 / scale] * 2 if isinstance(scale, int) and scale > 0 else [1.0, 1.0]
    return input_pixel[0] * ratio[0], input_pixel[1] * ratio[1]


def _write_psf(entry: h5py.Group, psf: np.ndarray, pixel_um: tuple[float, float] | None) -> None:
    """The PSF ``(h, w)`` or ``(B, h, w)`` as an NXdata, axes the offsets from its centre."""
    step_y, step_x = pixel_um if pixel_um is not None else (1.0, 1.0)
    units, label = (nexus.UM, "µm") if pixel_um is not None else (nexus.PIXEL, "pixel")
    rows, columns = psf.shape[-2:]
    axes = [
        nexus.Axis("y", step_y * (np.arange(rows) - rows // 2), units, f"y offset ({label})"),
        nexus.Axis("x", step_x * (np.arange(columns) - columns // 2), units, f"x offset ({label})"),
    ]
    nexus.write_nxdata(
        entry, "psf", psf, [None] * (psf.ndim - 2) + axes, units=None, long_name="PSF (sum 1)"
    )


def read_restoration(path: str | os.PathLike) -> dict[str, Any]:
    """Read back a file written by :func:`write_restoration` (this layout or the earlier one).

    Returns
    -------
    dict
        ``image``, ``psf`` (or ``None``), ``input_image`` (or ``None``), ``method``,
        ``params``, ``psf_description``, ``metrics``, ``version``, ``input_path``, and
        ``provenance``: the whole ``Restoration.provenance()`` dict as written.

    Raises
    ------
    asirp.io.InputFileError
        For a missing, unreadable or incomplete file, or arrays over the input size limit.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise InputFileError(f"restoration file not found: {file_path}")
    try:
        with h5py.File(file_path, "r") as handle:
            for name in ("entry/restored/data", "entry/process"):
                if name not in handle:
                    raise InputFileError(f"restoration file {file_path}: missing /{name}")
            process = handle["entry/process"]
            if "method" in process.attrs:
                result = _read_old_process(process)
                psf_path = "entry/restored/psf"
            else:
                result = _read_process(process)
                psf_path = "entry/psf/data"
            result["image"] = read_dataset(handle, "entry/restored/data")
            result["psf"] = read_dataset(handle, psf_path) if psf_path in handle else None
            measured = "entry/input/data"
            result["input_image"] = read_dataset(handle, measured) if measured in handle else None
            return result
    except InputFileError:
        raise
    except Exception as error:
        raise InputFileError(
            f"cannot read restoration file {file_path}: {type(error).__name__}: {error}"
        ) from error


def read_dataset(handle: h5py.File, name: str) -> np.ndarray:
    """The array at ``name``, its declared size checked before any byte is read.

    Raises
    ------
    asirp.io.InputFileError
        If ``name`` is a group, holds no numbers, or is over the input size limit.
    """
    dataset = handle[name]
    if not isinstance(dataset, h5py.Dataset):
        raise InputFileError(f"{handle.filename}: /{name} is a group, not a dataset")
    check_declared_size(dataset.shape, dataset.dtype, f"{handle.filename}::/{name}")
    return dataset[()]


def _read_process(process: h5py.Group) -> dict[str, Any]:
    notes = {
        name: nexus.read_json_note(process[name])
        for name in ("parameters", "psf", "metrics", "provenance")
    }
    return {
        "method": nexus.read_text(process["method"]),
        "params": notes["parameters"],
        "psf_description": notes["psf"],
        "metrics": notes["metrics"],
        "version": nexus.read_text(process["version"]),
        "input_path": nexus.read_text(process["input_path"]),
        "provenance": notes["provenance"],
    }


def _read_old_process(process: h5py.Group) -> dict[str, Any]:
    """Provenance stored as attributes of ``/entry/process`` (files of earlier versions)."""
    attrs = process.attrs
    result = {
        "method": nexus.read_text(attrs["method"]),
        "params": json.loads(attrs["parameters"]),
        "psf_description": json.loads(attrs["psf"]),
        "metrics": json.loads(attrs["metrics"]),
        "version": nexus.read_text(attrs["version"]),
        "input_path": nexus.read_text(attrs["input_path"]),
    }
    result["provenance"] = {
        "software": "asirp",
        "version": result["version"],
        "method": result["method"],
        "params": result["params"],
        "psf": result["psf_description"],
        "metrics": result["metrics"],
        "elapsed_s": float(attrs["elapsed_s"]),
    }
    return result
