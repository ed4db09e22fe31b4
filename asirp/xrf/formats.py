"""Which µ-XRF scan format a file is, and reading any of them into a :class:`RawXRFScan`.

The formats (:data:`FORMATS`), told apart by their bytes and structure, not by their names:

``asirp_raw``
    The project's raw HDF5 (:mod:`asirp.xrf.raw`): ``/entry`` with ``layout="asirp.raw_xrf"``
    or the ``entry/instrument/xrf/data`` dataset. Maps read it by ROI slabs.
``aps_mda``
    An APS step scan in the EPICS MDA format (:mod:`asirp.xrf.mda`): XDR header of version 1.3.
``aps_fly``
    An APS XRF-Maps fly scan (:mod:`asirp.xrf.aps_fly`): HDF5 with ``MAPS_RAW/data_a``, read
    with its companion MDA file (found by name, or given).
``xspress3_nexus``
    Diamond NeXus with Xspress3 spectra (:mod:`asirp.xrf.xspress3`): HDF5 with a 3-D or 4-D
    dataset named ``MCAs``.

:func:`detect_format` names the format; :func:`read_scan` reads a file whole;
:func:`scan_source` is what map making uses (the project's raw HDF5 stays a path, read later
by ROI slabs; other formats are read whole). A file of no supported format raises one
:class:`asirp.io.InputFileError` that lists the formats.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py

from asirp.io import InputFileError, check_declared_size, open_input_file
from asirp.xrf.aps_fly import GROUP as FLY_GROUP
from asirp.xrf.aps_fly import SPECTRA_PREFIX, read_aps_fly
from asirp.xrf.lines import EnergyCalibration
from asirp.xrf.mda import looks_like_mda
from asirp.xrf.mda_scan import read_mda_scan
from asirp.xrf.raw_layout import LAYOUT_NAME, SPECTRA
from asirp.xrf.raw_model import RawXRFScan
from asirp.xrf.raw_reader import read_raw_scan
from asirp.xrf.xspress3 import SPECTRA_NAME, read_xspress3

FORMATS: dict[str, str] = {
    "asirp_raw": "ASIRP raw µ-XRF HDF5 (asirp.xrf.raw layout)",
    "aps_mda": "APS step scan in EPICS MDA (.mda, rank 3 with MCA spectra)",
    "aps_fly": "APS XRF-Maps fly scan (HDF5 MAPS_RAW/data_a.., with its companion .mda)",
    "xspress3_nexus": "Diamond NeXus with Xspress3 spectra (.nxs, .../xspress3/MCAs)",
}
"""Supported formats: name -> description."""

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The 8 bytes an HDF5 superblock starts with (at byte 0, or 512, 1024, ... after a user block)."""
_MAX_USER_BLOCK = 1 << 16


def _supported() -> str:
    return "; ".join(f"{name}: {text}" for name, text in FORMATS.items())


def _unsupported(path: Path, what: str) -> InputFileError:
    return InputFileError(
        f"{path} is {what}, not a µ-XRF scan of a supported format ({_supported()})"
    )


def _is_hdf5(path: Path, head: bytes) -> bool:
    if head.startswith(HDF5_SIGNATURE):
        return True
    return path.stat().st_size > 512 and h5py.is_hdf5(path)


def _hdf5_format(path: Path) -> str:
    try:
        with h5py.File(path, "r") as handle:
            datasets: set[str] = set()
            groups: set[str] = set()

            # visititems follows hard links only, so no link leads into another file.
            def collect(name: str, item: object) -> None:
                (datasets if isinstance(item, h5py.Dataset) else groups).add(name)

            handle.visititems(collect)
            layout = handle["entry"].attrs.get("layout", "") if "entry" in groups else ""
    except Exception as error:  # truncated or foreign files raise many different errors
        raise InputFileError(
            f"cannot open {path} (an HDF5 file, truncated or corrupt): "
            f"{type(error).__name__}: {error}"
        ) from None
    if str(layout) == LAYOUT_NAME or SPECTRA in datasets:
        return "asirp_raw"
    if f"{FLY_GROUP}/{SPECTRA_PREFIX}a" in datasets:
        return "aps_fly"
    if any(name.rsplit("/", 1)[-1] == SPECTRA_NAME for name in datasets):
        return "xspress3_nexus"
    raise _unsupported(path, "an HDF5 file of another layout")


def _check_raw_size(path: Path, max_bytes: int | None) -> None:
    """Refuse raw spectra larger than the input limit before reading them whole."""
    try:
        with h5py.File(path, "r") as handle:
            stored = handle.get(SPECTRA)
            shape, dtype = (
                (stored.shape, stored.dtype) if isinstance(stored, h5py.Dataset) else ((), None)
            )
    except Exception:  # the reader reports what is wrong with the file, naming the dataset
        return
    if dtype is not None:
        check_declared_size(shape, dtype, f"{path}::/{SPECTRA}", max_bytes)


def detect_format(path: str | os.PathLike) -> str:
    """The format of a µ-XRF scan file, by its bytes and structure.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        A key of :data:`FORMATS`.

    Raises
    ------
    asirp.io.InputFileError
        For a missing file, a folder, or a file of no supported format (the message lists the
        formats).
    """
    file_path = Path(path)
    with open_input_file(file_path, "raw scan file") as stream:
        head = stream.read(16)
    if _is_hdf5(file_path, head):
        return _hdf5_format(file_path)
    if looks_like_mda(head):
        return "aps_mda"
    if not head:
        raise _unsupported(file_path, "empty")
    raise _unsupported(file_path, "neither HDF5 nor MDA")


def read_scan(
    path: str | os.PathLike,
    *,
    companion: str | os.PathLike | None = None,
    calibration: EnergyCalibration | None = None,
    max_bytes: int | None = None,
) -> RawXRFScan:
    """Read a µ-XRF scan of any supported format (:data:`FORMATS`) whole.

    Parameters
    ----------
    path : str or os.PathLike
        The scan file.
    companion : str or os.PathLike, optional
        The MDA file of an APS fly scan (found by name next to the spectra by default); an
        error for other formats.
    calibration : EnergyCalibration, optional
        Channel-energy calibration to use instead of the file's (required for files without
        one, e.g. Diamond's Xspress3 files); ``metadata["calibration_source"]`` says
        ``"given"``.
    max_bytes : int, optional
        Input size limit, bytes (default :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    RawXRFScan
        ``metadata["source_format"]`` names the format; ``metadata["cautions"]`` (a list of
        sentences) says what the reader assumed.

    Raises
    ------
    asirp.io.InputFileError
        For a file of no supported format, truncated or corrupt, or missing what the format
        needs (the fly scan's companion, a calibration).
    TypeError
        For a calibration that is not an :class:`EnergyCalibration`.
    """
    if calibration is not None and not isinstance(calibration, EnergyCalibration):
        raise TypeError(
            f"calibration must be an EnergyCalibration, got {type(calibration).__name__}"
        )
    kind = detect_format(path)
    if companion is not None and kind != "aps_fly":
        raise InputFileError(
            f"a companion file is only used by APS fly scans; {path} is {FORMATS[kind]}"
        )
    if kind == "aps_mda":
        return read_mda_scan(path, calibration=calibration, max_bytes=max_bytes)
    if kind == "aps_fly":
        return read_aps_fly(path, companion=companion, calibration=calibration, max_bytes=max_bytes)
    if kind == "xspress3_nexus":
        return read_xspress3(path, calibration=calibration, max_bytes=max_bytes)
    _check_raw_size(Path(path), max_bytes)
    scan = read_raw_scan(path)
    metadata = {"source_format": "asirp_raw", **scan.metadata}
    if calibration is not None:
        metadata["calibration_source"] = "given"
        metadata["file_calibration"] = scan.calibration.as_dict()
        return dataclasses.replace(scan, calibration=calibration, metadata=metadata)
    return dataclasses.replace(scan, metadata=metadata)


def scan_source(
    path: str | os.PathLike,
    *,
    companion: str | os.PathLike | None = None,
    calibration: EnergyCalibration | None = None,
) -> Path | RawXRFScan:
    """What :func:`asirp.xrf.maps.build_map` maps: the raw HDF5's path, or the scan read whole.

    The project's raw HDF5 stays a path (maps read only its ROI channel slabs); every other
    format is read by :func:`read_scan`.

    Parameters
    ----------
    path : str or os.PathLike
        The scan file.
    companion, calibration
        As in :func:`read_scan` (a calibration makes the raw HDF5 read whole too).

    Returns
    -------
    pathlib.Path or RawXRFScan
    """
    if calibration is None and companion is None and detect_format(path) == "asirp_raw":
        return Path(path)
    return read_scan(path, companion=companion, calibration=calibration)
