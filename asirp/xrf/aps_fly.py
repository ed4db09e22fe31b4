"""APS XRF-Maps fly scans: spectra in HDF5 (``MAPS_RAW``), positions and scalers in MDA.

A fly scan at APS 2-ID-E writes two files: the MDA file of the scan (``2xfm_0011.mda``: rows x
columns of stage positions and multichannel-scaler counts, I0 among them; rank 2, no spectra)
and, per line or per scan, an HDF5 file of the XMAP spectra, named after it
(``2xfm_0011_2xfm3__0.h5``, kept in ``flyXRF.h5/`` next to ``mda/`` by XRF-Maps)::

    MAPS_RAW/data_a .. data_d   int16 (channels, rows, columns)  spectra of elements 1..4
    MAPS_RAW/livetime           float32 (elements, rows, columns)  s
    MAPS_RAW/realtime           float32 (elements, rows, columns)  s
    MAPS_RAW/inputcounts, ouputcounts   (elements, rows, columns)  counts (kept as written)

The spectra file may hold fewer columns than the MDA file plans positions (the scaler records
fewer bins than trigger positions); pixel ``k`` of a line is placed at the line's ``k``-th
position, as XRF-Maps does. :func:`find_companion` finds the MDA file by the naming convention
(the HDF5 name without its ``_<detector>__<n>`` tail, in the same folder, ``../mda`` or ``..``);
:func:`read_aps_fly` reads both into a :class:`asirp.xrf.raw_model.RawXRFScan`.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

import h5py
import numpy as np

from asirp.io import InputFileError, read_array
from asirp.xrf.lines import EnergyCalibration
from asirp.xrf.mda import MDAFile, read_mda
from asirp.xrf.mda_scan import (
    finish_times,
    integer_counts,
    mca_calibration,
    monochromator_energy_kev,
    scan_points,
)
from asirp.xrf.raw_model import RawXRFScan

GROUP = "MAPS_RAW"
"""The HDF5 group of XRF-Maps' raw fly-scan spectra."""
SPECTRA_PREFIX = "data_"
"""Spectra datasets are ``data_a``, ``data_b``, ... (detector elements 1, 2, ...)."""
LIVE_TIME = "livetime"
REAL_TIME = "realtime"
_MCA_CALIBRATION = re.compile(r"^(.*mca)(\d+)\.CALO$")


def companion_candidates(spectra_path: str | os.PathLike) -> list[Path]:
    """Where the companion MDA file of a fly-scan HDF5 file may be, most likely first.

    ``2xfm_0011_2xfm3__0.h5`` gives ``2xfm_0011_2xfm3.mda``, ``2xfm_0011.mda`` and
    ``2xfm.mda``, each looked for in the file's folder, in ``../mda`` and in ``..``.

    Parameters
    ----------
    spectra_path : str or os.PathLike
        The HDF5 spectra file.

    Returns
    -------
    list of pathlib.Path
        Candidate paths (existing or not).
    """
    path = Path(spectra_path)
    stem = path.name.split(".")[0]
    stem = stem.split("__")[0] if "__" in stem else stem
    parts = [part for part in stem.split("_") if part]
    names = ["_".join(parts[:n]) + ".mda" for n in range(len(parts), 0, -1)]
    folders = [path.parent, path.parent.parent / "mda", path.parent.parent]
    return [folder / name for name in names for folder in folders]


def find_companion(spectra_path: str | os.PathLike) -> Path:
    """The companion MDA file of a fly-scan HDF5 file, by the naming convention.

    Raises
    ------
    asirp.io.InputFileError
        When none of :func:`companion_candidates` exists (the message names them and how to
        give the file).
    """
    candidates = companion_candidates(spectra_path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(dict.fromkeys(str(c.name) for c in candidates))
    raise InputFileError(
        f"fly-scan spectra {spectra_path} need their companion MDA file (positions and I0), "
        f"and none was found ({tried} looked for next to it, in ../mda and in ..); give it "
        "explicitly: companion=PATH (asirp xrf-map --companion FILE)"
    )


def _element_datasets(path: Path) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """Names of the spectra datasets in order and the shapes of every dataset of the group."""
    try:
        with h5py.File(path, "r") as handle:
            shapes: dict[str, tuple[int, ...]] = {}

            # visititems follows hard links only, so no link leads into another file.
            def collect(name: str, item: object) -> None:
                group, _, dataset = name.rpartition("/")
                if group == GROUP and isinstance(item, h5py.Dataset):
                    shapes[dataset] = tuple(item.shape)

            handle.visititems(collect)
    except InputFileError:
        raise
    except Exception as error:  # truncated or foreign files raise many different errors
        raise InputFileError(
            f"cannot open fly-scan spectra {path} (truncated, corrupt or not HDF5): "
            f"{type(error).__name__}: {error}"
        ) from None
    names = []
    for letter in string.ascii_lowercase:
        if SPECTRA_PREFIX + letter not in shapes:
            break
        names.append(SPECTRA_PREFIX + letter)
    if not names:
        raise InputFileError(
            f"{path}: no {GROUP}/{SPECTRA_PREFIX}a spectra dataset: not an XRF-Maps fly scan"
        )
    return names, shapes


def _detector_prefix(spectra_path: Path, mda: MDAFile) -> str:
    """The detector tag in the HDF5 name after the MDA stem (``2xfm3``), or ''."""
    stem = spectra_path.name.split(".")[0].split("__")[0]
    return stem.removeprefix(mda.path.stem).strip("_")


def _calibration_names(mda: MDAFile, n_elements: int, tag: str) -> list[str]:
    """The MCA records (``dxpXMAP2xfm3:mca1``, ...) whose calibrations describe the elements."""
    records: dict[str, set[int]] = {}
    for name in mda.extra_pvs:
        match = _MCA_CALIBRATION.match(name)
        if match:
            records.setdefault(match[1], set()).add(int(match[2]))
    if not records:
        return []
    prefixes = sorted(records, key=lambda p: (tag.lower() not in p.lower(), -len(records[p])))
    return [f"{prefixes[0]}{k}" for k in range(1, n_elements + 1)]


def read_aps_fly(
    path: str | os.PathLike,
    *,
    companion: str | os.PathLike | None = None,
    calibration: EnergyCalibration | None = None,
    max_bytes: int | None = None,
) -> RawXRFScan:
    """Read an APS XRF-Maps fly scan (HDF5 spectra + companion MDA file).

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 spectra file (``MAPS_RAW/data_a`` ...).
    companion : str or os.PathLike, optional
        The MDA file of the scan (default: found by :func:`find_companion`).
    calibration : EnergyCalibration, optional
        Use this calibration instead of the MCA calibration PVs of the companion file.
    max_bytes : int, optional
        Input size limit per array and for the MDA file, bytes (default
        :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    RawXRFScan
        ``scan_kind`` ``fly``; ``metadata`` names both files and says where I0, the positions
        and the calibration came from; ``cautions`` lists what was assumed.

    Raises
    ------
    asirp.io.InputFileError
        For a missing companion, files that do not match (rows or columns), or a truncated or
        corrupt file.
    """
    spectra_path = Path(path)
    mda_path = Path(companion) if companion is not None else find_companion(spectra_path)
    names, shapes = _element_datasets(spectra_path)
    shape = shapes[names[0]]
    if len(shape) != 3 or min(shape) < 1:
        raise InputFileError(
            f"{spectra_path}: {GROUP}/{names[0]} must be (channels, rows, columns), got {shape}"
        )
    _, n_rows, n_columns = shape
    for name in [*names[1:], LIVE_TIME, REAL_TIME]:
        expected = shape if name.startswith(SPECTRA_PREFIX) else (len(names), n_rows, n_columns)
        if shapes.get(name) != expected:
            raise InputFileError(
                f"{spectra_path}: {GROUP}/{name} has shape {shapes.get(name)}, expected "
                f"{expected} (like {names[0]})"
            )
    mda = read_mda(mda_path, max_bytes=max_bytes)
    where = f"fly scan {spectra_path.name} (with {mda_path.name})"
    if mda.rank != 2 or len(mda.levels) < 2:
        raise InputFileError(
            f"{where}: the companion must be the fly scan's rank-2 MDA file, got rank {mda.rank}"
        )
    planned_rows, planned_columns = mda.levels[1].acquired.shape
    if n_rows > planned_rows or n_columns > planned_columns:
        raise InputFileError(
            f"{where}: the spectra hold {n_rows} x {n_columns} pixels, more than the companion's "
            f"{planned_rows} x {planned_columns} positions: is it the right companion?"
        )
    points = scan_points(mda, n_columns=n_columns)
    inside = points.rows < n_rows
    rows, cols = points.rows[inside], points.cols[inside]
    if rows.size != n_rows * n_columns:
        raise InputFileError(
            f"{where}: the companion acquired {rows.size} of the spectra's {n_rows} x "
            f"{n_columns} pixels; the files do not belong together (or the scan stopped)"
        )
    cautions = list(points.cautions)

    def dataset(name: str) -> np.ndarray:
        return read_array(f"{spectra_path}::/{GROUP}/{name}", max_bytes=max_bytes)

    # (channels, rows, columns) per element -> (points, elements, channels), points row by row.
    spectra = np.stack(
        [dataset(name)[:, rows, cols].T for name in names],
        axis=1,
    )
    spectra = integer_counts(spectra, where, cautions)
    live = dataset(LIVE_TIME)[:, rows, cols].T.astype(np.float64)
    real = dataset(REAL_TIME)[:, rows, cols].T.astype(np.float64)
    if not (np.all(np.isfinite(live)) and np.all(np.isfinite(real))):
        raise InputFileError(f"{where}: live or real times hold NaN or Inf")
    live, real, time_s = finish_times(live, real, cautions)
    calibration_source = "given"
    per_element: list[dict[str, float]] = []
    if calibration is None:
        records = _calibration_names(mda, len(names), _detector_prefix(spectra_path, mda))
        calibration, per_element, calibration_cautions = mca_calibration(mda, records)
        if calibration is None:
            raise InputFileError(
                f"{where}: no energy calibration (MCA .CALO/.CALS PVs) in the companion; give "
                "one (calibration=EnergyCalibration(offset_kev, gain_kev_per_channel))"
            )
        cautions += calibration_cautions
        calibration_source = f"{records[0]}.CALO/.CALS/.CALQ in {mda_path.name}"
    metadata = dict(points.metadata)
    metadata.update(
        title=spectra_path.stem,
        source_format="aps_fly",
        source_file=spectra_path.name,
        companion_file=mda_path.name,
        scan_kind="fly",
        incident_energy_kev=monochromator_energy_kev(mda, cautions),
        detector_elements=[f"{GROUP}/{name}" for name in names],
        calibration_source=calibration_source,
        element_calibrations=per_element,
        position_source=(
            "pixel k of a line at the line's k-th position in the companion MDA file "
            f"({n_columns} of {planned_columns} positions have spectra)"
        ),
        time_source="cumulative real time of the points before (overheads not recorded)",
        cautions=cautions,
    )
    try:
        return RawXRFScan(
            spectra=spectra,
            x_um=points.x_um[inside],
            y_um=points.y_um[inside],
            i0=points.i0[inside],
            live_time_s=live,
            real_time_s=real,
            time_s=time_s,
            line_index=rows.astype(np.int64),
            calibration=calibration,
            metadata=metadata,
        )
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{where}: {error}") from error
