"""Writing raw µ-XRF scans as HDF5 in the layout of :mod:`asirp.xrf.raw` (atomically)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from asirp import nexus
from asirp.safe_files import atomic_write
from asirp.xrf.raw_layout import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_CHUNK_CHANNELS,
    LAYOUT_NAME,
    LAYOUT_VERSION,
    chunk_shape,
)
from asirp.xrf.raw_model import RawXRFScan


def write_raw_scan(
    path: str | os.PathLike,
    scan: RawXRFScan,
    *,
    compression: str | None = None,
    checksum: bool = False,
    narrow: bool = True,
    chunk_channels: int = DEFAULT_CHUNK_CHANNELS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    overwrite: bool = False,
) -> Path:
    """Write a raw scan as HDF5 in the layout of :mod:`asirp.xrf.raw` (atomically).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.h5``/``.nxs``); an existing file is kept (raw data is never replaced
        by accident) unless ``overwrite``.
    scan : RawXRFScan
        The scan.
    compression : {None, "lzf", "gzip"}
        Filter for the spectra (none by default: ROI reads are fastest uncompressed).
    checksum : bool
        Add a Fletcher-32 checksum to each spectra chunk (corruption is detected on read, at
        a cost in read time).
    narrow : bool
        Store the counts as uint16 when they are all in 0..65535 (else as given).
    chunk_channels : int
        Channels per chunk (the granularity of ROI reads).
    chunk_bytes : int
        Target chunk size in bytes (sets the number of points per chunk).
    overwrite : bool
        Replace an existing file at ``path``.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not isinstance(scan, RawXRFScan):
        raise TypeError(f"scan must be a RawXRFScan, got {type(scan).__name__}")
    if compression not in (None, "lzf", "gzip"):
        raise ValueError(f"compression must be None, 'lzf' or 'gzip', got {compression!r}")
    if chunk_channels < 1 or chunk_bytes < 1:
        raise ValueError("chunk_channels and chunk_bytes must be >= 1")
    spectra = scan.spectra
    stored = spectra.dtype
    if narrow and stored.itemsize > 2 and spectra.min() >= 0 and spectra.max() <= 65535:
        stored = np.dtype(np.uint16)
    chunks = chunk_shape(spectra.shape, stored.itemsize, chunk_channels, chunk_bytes)
    with (
        atomic_write(path, overwrite=overwrite) as output,
        h5py.File(output.file, "w") as handle,
    ):
        entry = nexus.create_entry(handle)
        entry.attrs.update(
            default="data",
            layout=LAYOUT_NAME,
            layout_version=LAYOUT_VERSION,
        )
        if "title" in scan.metadata:
            entry["title"] = str(scan.metadata["title"])
        notes = entry.create_group("notes")
        notes.attrs["NX_class"] = "NXnote"
        notes["type"] = "application/json"
        notes["data"] = json.dumps(scan.metadata, sort_keys=True)
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample["name"] = str(scan.metadata.get("sample", ""))

        positioners = entry.create_group("positioners")
        positioners.attrs["NX_class"] = "NXcollection"
        for name, values, units in (
            ("x", scan.x_um, "um"),
            ("y", scan.y_um, "um"),
            ("time", scan.time_s, "s"),
        ):
            positioners.create_dataset(name, data=values).attrs["units"] = units
        positioners.create_dataset("line_index", data=scan.line_index)

        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        detector = instrument.create_group("xrf")
        detector.attrs.update(
            NX_class="NXdetector",
            calibration_offset_kev=scan.calibration.offset_kev,
            calibration_gain_kev_per_channel=scan.calibration.gain_kev_per_channel,
            calibration_quadratic_kev=scan.calibration.quadratic_kev,
            first_channel=scan.first_channel,
        )
        data = detector.create_dataset(
            "data",
            shape=spectra.shape,
            dtype=stored,
            chunks=chunks,
            compression=compression,
            fletcher32=checksum,
        )
        data.attrs["units"] = "counts"
        step = chunks[0] * 8
        for start in range(0, spectra.shape[0], step):
            data[start : start + step] = spectra[start : start + step].astype(stored, copy=False)
        detector.create_dataset("energy", data=scan.energy_kev()).attrs["units"] = "keV"
        for name, values in (("live_time", scan.live_time_s), ("real_time", scan.real_time_s)):
            detector.create_dataset(name, data=values).attrs["units"] = "s"
        # The I0 ion chamber is a detector of the instrument; NeXus keeps the monitor counts
        # in an NXmonitor of the entry (an NXinstrument may not hold one): a hard link.
        chamber = instrument.create_group("i0")
        chamber.attrs["NX_class"] = "NXdetector"
        chamber["type"] = "ion chamber"
        chamber.create_dataset("data", data=scan.i0).attrs["units"] = "counts"
        monitor = entry.create_group("monitor")
        monitor.attrs["NX_class"] = "NXmonitor"
        monitor["data"] = chamber["data"]

        nxdata = entry.create_group("data")
        nxdata.attrs.update(
            NX_class="NXdata",
            signal="data",
            axes=np.array([".", ".", "energy"], dtype=h5py.string_dtype()),
            x_indices=0,
            y_indices=0,
            energy_indices=2,
        )
        nxdata["data"] = data
        nxdata["energy"] = detector["energy"]
        nxdata["x"] = positioners["x"]
        nxdata["y"] = positioners["y"]
    return Path(path)
