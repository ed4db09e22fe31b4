"""Writing reconstructions as NeXus HDF5: NXentry, NXdata volumes and an NXprocess.

Layout (``/entry``, the root's default)::

    entry/                     NXentry, @default = the restored volume when there is one
        reconstruction_raw/       NXdata: data (Z, Y, X) float32, axes z, y, x
        reconstruction_restored/  NXdata: the same from restored projections (when restored)
        process/                  NXprocess: program, version, date, input sha256, method,
                                  centre_px, and JSON notes (parameters, plan, versions, ...)

Axes are µm when the pixel size is known (the signal is then attenuation in 1/µm), else pixel
indices (attenuation per pixel). The file is written through :func:`asirp.safe_files.atomic_write`
(or a :class:`~asirp.safe_files.DataRoot`'s, confined to that root): an existing file is kept
unless ``overwrite``, and the input is never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from asirp import nexus
from asirp.safe_files import DataRoot, atomic_write

RAW = "reconstruction_raw"
RESTORED = "reconstruction_restored"


def volume_axes(shape: tuple[int, int, int], pixel_um: float | None) -> list[nexus.Axis]:
    """The ``z``, ``y``, ``x`` axes of a volume ``(Z, Y, X)``: µm, or pixel indices."""
    if pixel_um is None:
        z = nexus.Axis("z", np.arange(shape[0], dtype=np.float64), nexus.PIXEL, "z (pixel)")
    else:
        z = nexus.Axis("z", pixel_um * np.arange(shape[0]), nexus.UM, "z (µm)")
    y, x = nexus.pixel_axes(shape, pixel_um)
    return [z, y, x]


def write_volumes(
    path: str | os.PathLike,
    volumes: Mapping[str, np.ndarray],
    *,
    pixel_um: float | None,
    fields: Mapping[str, Any],
    notes: Mapping[str, Any],
    overwrite: bool = False,
    protect: Iterable[Any] = (),
    title: str = "asirp tomography reconstruction",
    root: DataRoot | None = None,
    hint: str = "use --overwrite",
) -> None:
    """Write reconstructions and their provenance to a NeXus file.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    volumes : mapping of str to numpy.ndarray
        ``name -> (Z, Y, X)`` float32 attenuation per pixel (:data:`RAW`, :data:`RESTORED`);
        the last one is the default plot.
    pixel_um : float or None
        Pixel size, µm: the volumes are written in 1/µm on µm axes.
    fields : mapping
        NXprocess fields (``input_sha256``, ``method``, ``centre_px``, ...).
    notes : mapping
        NXprocess JSON notes (``parameters``, ``plan``, ``versions``, ...).
    overwrite : bool
        Replace an existing file.
    protect : iterable
        Files never replaced (the input).
    title : str
        The entry's title.
    root : asirp.safe_files.DataRoot, optional
        Write inside this data root only: ``path`` is relative to it (or absolute inside it),
        no symbolic link is followed, and ``protect`` must then be ``(st_dev, st_ino)``
        identities (a path would be looked up outside the root).
    hint : str
        How the caller asks for a replacement, for the error message.

    Raises
    ------
    asirp.safe_files.OutputExistsError
        When ``path`` exists and ``overwrite`` is false (or it is a protected file).
    asirp.safe_files.DataRootError
        With ``root``: ``path`` leaves the root or goes through a symbolic link.
    """
    units = "1/um" if pixel_um is not None else "1/pixel"
    if root is not None:
        writer = root.atomic_write(path, overwrite=overwrite, protect=protect, hint=hint)
    else:
        writer = atomic_write(path, overwrite=overwrite, protect=protect, hint=hint)
    with writer as out, h5py.File(out.file, "w") as handle:
        entry = nexus.create_entry(handle, title=title)
        for name, volume in volumes.items():
            values = np.asarray(volume, dtype=np.float32)
            if pixel_um is not None:
                values = values / np.float32(pixel_um)
            nexus.write_nxdata(
                entry,
                name,
                values,
                volume_axes(values.shape, pixel_um),
                units=units,
                long_name=f"attenuation ({units})",
                default=True,  # the last one written stays the default
            )  # a 3-D signal gets @interpretation "image": silx shows slices with a slider
        unit_of = {"centre_px": nexus.PIXEL, "elapsed_s": "s", "psf_fwhm_px": nexus.PIXEL}
        nexus.write_process(entry, "process", fields=fields, units=unit_of, notes=notes)
