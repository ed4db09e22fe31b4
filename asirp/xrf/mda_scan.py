"""APS µ-XRF step scans from MDA files (:func:`read_mda_scan`), and their per-pixel part.

:func:`read_mda_scan` reads an APS µ-XRF step scan (rank 3: rows x columns x MCA channels, one
MCA per detector element as detectors of the innermost level; scalers, the I0 monitor and the
elements' live and real times as detectors of the pixel level) into a
:class:`asirp.xrf.raw_model.RawXRFScan`; :func:`scan_points` gives the per-pixel part of it
(positions, I0, times) that a fly scan's companion MDA file provides
(:mod:`asirp.xrf.aps_fly`). The file itself is read by :mod:`asirp.xrf.mda`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asirp.io import InputFileError
from asirp.xrf.lines import EnergyCalibration
from asirp.xrf.mda import MDADetector, MDADimension, MDAFile, MDAPositioner, read_mda
from asirp.xrf.raw_model import RawXRFScan

I0_LABEL = re.compile(
    r"(^|[^a-z0-9])(i0|ic0|us[ _.:-]?ic|us[ _.:-]?ion|upstream|incident[ _]?flux)",
    re.IGNORECASE,
)
"""Names or descriptions of an incident-flux monitor (I0, upstream ion chamber)."""
_SCALER_CHANNEL = (
    # struck scaler arrays written per 4 channels: scaler3_cts1.A is channel 1, cts2.A is 5
    (
        re.compile(r"scaler\d*_cts(\d+)\.([A-D])$"),
        lambda m: 4 * (int(m[1]) - 1) + "ABCD".index(m[2]) + 1,
    ),
    # multichannel scaler (fly scans): mcs:mca2 is channel 2
    (re.compile(r"mcs:mca(\d+)(\.VAL)?$"), lambda m: int(m[1])),
    # scaler record channel fields S1..S32
    (re.compile(r"scaler\d*\.S(\d+)$"), lambda m: int(m[1])),
)
_SCALER_LABEL = re.compile(r"scaler\d*\.NM(\d+)$")
_LENGTH_UNITS_UM = {
    "mm": 1000.0,
    "um": 1.0,
    "µm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "nm": 1e-3,
    "m": 1e6,
}
_X_NAME = re.compile(r"(^|[^a-z])(x|samx|sample ?x)($|[^a-z])", re.IGNORECASE)
_Y_NAME = re.compile(r"(^|[^a-z])(y|samy|sample ?y)($|[^a-z])", re.IGNORECASE)
_MCA_SPECTRUM = re.compile(r"mca(\d+)(\.VAL)?$")


@dataclass(frozen=True)
class MapPoints:
    """The pixels of an MDA map (levels 0 and 1: rows and columns) in acquisition order.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        MDA indices of each point ``(P,)``, int64 (row = outer scan point).
    x_um, y_um : numpy.ndarray
        Stage positions ``(P,)``, µm.
    i0 : numpy.ndarray
        Incident-flux monitor ``(P,)``, counts (ones when the file has none: see cautions).
    metadata : dict
        ``positioners``, ``i0_source``, ``step_um``, ``extents_um``, ``dwell_s``, ...
    cautions : list of str
        What the reader could not find in the file and assumed instead.
    """

    rows: np.ndarray
    cols: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    i0: np.ndarray
    metadata: dict[str, Any]
    cautions: list[str]


def _unit_scale(unit: str, what: str, path: Path) -> float:
    scale = _LENGTH_UNITS_UM.get(unit.strip().lower().replace("μ", "µ"))
    if scale is None:
        raise InputFileError(
            f"MDA file {path}: the {what} positioner is in {unit!r}, not a length (mm, µm, nm); "
            "it cannot place map pixels"
        )
    return scale


def _positioner_unit(mda: MDAFile, positioner: MDAPositioner) -> str:
    """The positioner's unit, from the record or from the motor's ``.EGU`` extra PV."""
    for unit in (positioner.unit, positioner.readback_unit):
        if unit.strip():
            return unit.strip()
    for name in (positioner.name, positioner.readback_name):
        base = name.rsplit(".", 1)[0]
        pv = mda.extra_pvs.get(base + ".EGU")
        if pv is not None and isinstance(pv.value, str) and pv.value.strip():
            return pv.value.strip()
    return ""


def _axes(mda: MDAFile) -> tuple[MDAPositioner, MDAPositioner]:
    """The x and y positioners: the inner (fast) one is x unless the names say otherwise."""
    outer, inner = mda.levels[0], mda.levels[1]
    if not outer.positioners or not inner.positioners:
        raise InputFileError(
            f"MDA file {mda.path}: the row and column scans need a positioner each (found "
            f"{len(outer.positioners)} and {len(inner.positioners)})"
        )
    fast, slow = inner.positioners[0], outer.positioners[0]

    def says(pattern: re.Pattern, positioner: MDAPositioner) -> bool:
        return bool(pattern.search(positioner.description) or pattern.search(positioner.name))

    if says(_X_NAME, slow) and says(_Y_NAME, fast):
        return slow, fast
    return fast, slow


def _median_step(values: np.ndarray) -> float | None:
    steps = np.abs(np.diff(values))
    steps = steps[np.isfinite(steps) & (steps > 0)]
    return float(np.median(steps)) if steps.size else None


def _find_i0(
    mda: MDAFile, detectors: Sequence[MDADetector], wanted: str | None
) -> tuple[MDADetector | None, str]:
    """The I0 detector of the pixel level and why it was chosen (or None and why not)."""
    if wanted is not None:
        for detector in detectors:
            if detector.name == wanted:
                return detector, f"{detector.name} (chosen by the caller)"
        names = ", ".join(d.name for d in detectors)
        raise InputFileError(
            f"MDA file {mda.path}: no detector named {wanted!r} (detectors: {names})"
        )
    for detector in detectors:
        if I0_LABEL.search(detector.description) or I0_LABEL.search(detector.name):
            return detector, f"{detector.label} (its name says I0)"
    labels: dict[int, str] = {}
    for name, pv in mda.extra_pvs.items():
        match = _SCALER_LABEL.search(name)
        if match and isinstance(pv.value, str) and I0_LABEL.search(pv.value):
            labels.setdefault(int(match[1]), f"{pv.value.strip()!r} in {name}")
    for channel in sorted(labels):
        for detector in detectors:
            for pattern, number in _SCALER_CHANNEL:
                match = pattern.search(detector.name)
                if match and number(match) == channel:
                    return detector, (
                        f"{detector.name} (scaler channel {channel}, labelled {labels[channel]})"
                    )
    return None, "no detector or scaler label names an I0 monitor"


def scan_points(
    mda: MDAFile, *, n_columns: int | None = None, i0_detector: str | None = None
) -> MapPoints:
    """The pixels of a 2-D MDA map: positions (µm), I0 and the facts about them.

    Parameters
    ----------
    mda : MDAFile
        A file of rank >= 2 (rows = outer scan, columns = the next one).
    n_columns : int, optional
        Keep only the first columns of each row (a fly scan's spectra file may hold fewer
        bins than the MDA file plans positions).
    i0_detector : str, optional
        Name of the pixel-level detector to use as I0 (default: found by name, then by the
        scaler channel labels in the extra PVs).

    Returns
    -------
    MapPoints
        Acquired pixels in acquisition order (row by row).

    Raises
    ------
    asirp.io.InputFileError
        For a file of rank 1, without positioners, or with positions not in a length unit.
    """
    if len(mda.levels) < 2:
        raise InputFileError(
            f"MDA file {mda.path} is a rank-{mda.rank} scan with {len(mda.levels)} level(s) "
            "acquired; a map needs rows and columns (rank >= 2)"
        )
    cautions: list[str] = []
    pixel = mda.levels[1]
    acquired = pixel.acquired.copy()
    if n_columns is not None:
        acquired[:, n_columns:] = False
    rows, cols = np.nonzero(acquired)
    if rows.size < 2:
        raise InputFileError(f"MDA file {mda.path}: fewer than 2 pixels were acquired")
    x_positioner, y_positioner = _axes(mda)
    values = {}
    units = {}
    for axis, positioner in (("x", x_positioner), ("y", y_positioner)):
        data = positioner.data
        values[axis] = data[rows, cols] if data.ndim == 2 else data[rows]
        units[axis] = _positioner_unit(mda, positioner)
    for axis, other in (("x", "y"), ("y", "x")):
        if not units[axis]:
            if not units[other]:
                units[axis] = "mm"
                cautions.append(
                    f"the {axis} positioner has no unit in the file; mm assumed (the APS stages' "
                    "unit)"
                )
            else:
                cautions.append(
                    f"the {axis} positioner has no unit in the file; {units[other]} assumed (the "
                    f"{other} positioner's)"
                )
                units[axis] = units[other]
    x_um = values["x"] * _unit_scale(units["x"], "x", mda.path)
    y_um = values["y"] * _unit_scale(units["y"], "y", mda.path)
    if not (np.all(np.isfinite(x_um)) and np.all(np.isfinite(y_um))):
        raise InputFileError(f"MDA file {mda.path}: positions hold non-finite values")
    detector, reason = _find_i0(mda, pixel.detectors, i0_detector)
    if detector is None:
        i0 = np.ones(rows.size)
        cautions.append(
            f"no I0 monitor found ({reason}); I0 set to 1: normalisation by I0 does nothing"
        )
    else:
        i0 = np.asarray(detector.data[rows, cols], dtype=np.float64)
        if not np.all(np.isfinite(i0)) or np.any(i0 < 0):
            raise InputFileError(f"MDA file {mda.path}: I0 ({detector.name}) is negative or NaN")
    step_x = _median_step(np.unique(np.round(x_um, 6)))
    step_y = _median_step(np.unique(np.round(y_um, 6)))
    steps = [s for s in (step_y, step_x) if s is not None]
    step_um: float | list[float] | None = None
    if len(steps) == 2:
        step_um = steps[0] if abs(steps[0] - steps[1]) <= 0.01 * steps[1] else steps
    elif steps:
        step_um = steps[0]
    dwell = mda.extra_number(".TP", ".PRTM")
    metadata: dict[str, Any] = {
        "title": mda.path.stem,
        "scan_number": mda.scan_number,
        "mda_version": mda.version,
        "mda_dimensions": list(mda.dimensions),
        "scan_started": mda.levels[0].time,
        "positioners": {
            "x": {
                "pv": x_positioner.name,
                "description": x_positioner.description,
                "unit": units["x"],
            },
            "y": {
                "pv": y_positioner.name,
                "description": y_positioner.description,
                "unit": units["y"],
            },
        },
        "step_um": step_um,
        "extents_um": {
            "x": [float(x_um.min()), float(x_um.max())],
            "y": [float(y_um.min()), float(y_um.max())],
        },
        "i0_source": reason if detector is not None else None,
        "dwell_s": dwell,
    }
    return MapPoints(rows, cols, x_um, y_um, i0, metadata, cautions)


def mca_calibration(
    mda: MDAFile, mca_names: Sequence[str]
) -> tuple[EnergyCalibration | None, list[dict[str, float]], list[str]]:
    """The energy calibration of MCA spectra from the file (``CALO``/``CALS``/``CALQ`` PVs).

    Parameters
    ----------
    mda : MDAFile
        The file (extra PVs, then detectors of any level, are searched).
    mca_names : sequence of str
        The MCA record of each detector element (``dxpXMAP2xfm3:mca1``).

    Returns
    -------
    (EnergyCalibration or None, list of dict, list of str)
        The first element's calibration (None if the file has none), every element's
        coefficients, and cautions (elements whose calibrations differ by more than half a
        channel).
    """

    def value(name: str) -> float | None:
        pv = mda.extra_pvs.get(name)
        if pv is not None and pv.number() is not None:
            return pv.number()
        for level in mda.levels:
            for detector in level.detectors:
                if detector.name == name:
                    finite = detector.data[np.isfinite(detector.data)]
                    return float(finite.ravel()[0]) if finite.size else None
        return None

    per_element: list[dict[str, float]] = []
    for base in mca_names:
        offset, gain, quadratic = (value(f"{base}.{field}") for field in ("CALO", "CALS", "CALQ"))
        if offset is None or gain is None or gain <= 0:
            continue
        per_element.append(
            {"offset_kev": offset, "gain_kev_per_channel": gain, "quadratic_kev": quadratic or 0.0}
        )
    if not per_element:
        return None, [], []
    cautions = []
    first = EnergyCalibration(**per_element[0])
    channels = np.array([0.0, 2048.0])
    for index, coefficients in enumerate(per_element[1:], start=1):
        other = EnergyCalibration(**coefficients)
        shift = np.max(np.abs(first.energy_kev(channels) - other.energy_kev(channels)))
        if shift > 0.5 * first.gain_kev_per_channel:
            cautions.append(
                f"detector element {index} has another energy calibration than element 0 "
                f"({shift * 1000:.0f} eV apart); element 0's is used for all"
            )
    return first, per_element, cautions


def _element_times(
    detectors: Sequence[MDADetector], bases: Sequence[str], rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Live and real time ``(P, D)`` from the ``<mca>.ELTM`` / ``.ERTM`` detectors, if all exist."""
    by_name = {d.name: d for d in detectors}
    live, real = [], []
    for base in bases:
        eltm, ertm = by_name.get(base + ".ELTM"), by_name.get(base + ".ERTM")
        if eltm is None or ertm is None:
            return None
        live.append(eltm.data[rows, cols])
        real.append(ertm.data[rows, cols])
    return np.stack(live, axis=1).astype(np.float64), np.stack(real, axis=1).astype(np.float64)


def integer_counts(values: np.ndarray, where: str, cautions: list[str]) -> np.ndarray:
    """Spectra as integer counts: float counts rounded (with a caution if they were not whole).

    Raises
    ------
    asirp.io.InputFileError
        For negative or non-finite counts.
    """
    if values.dtype.kind in "iu":
        if values.dtype.kind == "i" and values.size and values.min() < 0:
            raise InputFileError(f"{where}: negative counts (overflowed integers?)")
        return values
    if not np.all(np.isfinite(values)):
        raise InputFileError(f"{where}: spectra hold NaN or Inf (points not acquired?)")
    if values.size and values.min() < 0:
        raise InputFileError(f"{where}: negative counts in the spectra")
    counts = np.rint(values)
    if np.max(np.abs(counts - values), initial=0.0) > 1e-3:
        cautions.append(
            f"{where} stores spectra as {values.dtype} with fractional values (already "
            "corrected, e.g. for dead time?); they were rounded to whole counts"
        )
    top = float(counts.max(initial=0.0))
    dtype = (
        np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32 if top <= 2**32 - 1 else np.int64
    )
    return counts.astype(dtype)


def finish_times(
    live: np.ndarray, real: np.ndarray, cautions: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip live to real time where a file rounds them apart; time since start per point.

    Returns
    -------
    (live, real, time_s)
        ``(P, D)``, ``(P, D)`` and ``(P,)`` s: ``time_s`` is the cumulative real time of the
        points before (motor and readout overheads are not in the files).
    """
    excess = live > real * (1 + 1e-9) + 1e-12
    if np.any(excess):
        cautions.append(
            f"live time exceeds real time at {int(excess.sum())} point-element(s); live time "
            "clipped to real time there"
        )
        live = np.minimum(live, real)
    per_point = real.max(axis=1)
    time_s = np.concatenate([[0.0], np.cumsum(per_point)[:-1]])
    return live, real, time_s


_MONO = re.compile(r"mono|bragg|dcm", re.IGNORECASE)


def monochromator_energy_kev(mda: MDAFile, cautions: list[str]) -> float | None:
    """The incident energy from a monochromator PV among the extra PVs, keV (None if absent).

    Undulator energies (``ID..:Energy``) are not the incident energy (harmonics) and are not
    used; when no monochromator PV is found a caution says so.
    """
    for name, pv in mda.extra_pvs.items():
        unit = pv.unit.strip().lower()
        if unit not in ("kev", "ev") or not (_MONO.search(name) or _MONO.search(pv.description)):
            continue
        number = pv.number()
        if number is not None and number > 0:
            return number / 1000.0 if unit == "ev" else number
    cautions.append(
        "the file records no monochromator energy (only the undulator's, which is not the "
        "incident energy); incident_energy_kev is None"
    )
    return None


def _spectra_detectors(level: MDADimension) -> list[MDADetector]:
    named = [d for d in level.detectors if _MCA_SPECTRUM.search(d.name)]
    return named or list(level.detectors)


def read_mda_scan(
    path: str | os.PathLike,
    *,
    calibration: EnergyCalibration | None = None,
    i0_detector: str | None = None,
    max_bytes: int | None = None,
) -> RawXRFScan:
    """Read an APS µ-XRF step scan (MDA rank 3: rows x columns x MCA channels).

    The innermost level's detectors are the MCA spectra, one per detector element; the pixel
    level holds the scalers (I0: found by name, or by the scaler channel labels ``*.NM<n>`` in
    the extra PVs; :func:`scan_points`) and each element's live and real time
    (``<mca>.ELTM``, ``<mca>.ERTM``); the calibration is each MCA's ``CALO``/``CALS``/``CALQ``.
    Positions are converted to µm (mm in APS files).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mda`` file.
    calibration : EnergyCalibration, optional
        Use this calibration instead of the file's (required when the file has none).
    i0_detector : str, optional
        Name of the detector to use as I0.
    max_bytes : int, optional
        Input size limit, bytes (default :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    RawXRFScan
        ``metadata`` says where each quantity came from (``i0_source``, ``calibration_source``,
        ``positioners``, ``detector_elements``) and lists in ``cautions`` what was assumed.

    Raises
    ------
    asirp.io.InputFileError
        For a file that is not MDA, truncated or corrupt, of rank < 3 (no spectra: a fly
        scan's MDA file; read its spectra file, :mod:`asirp.xrf.aps_fly`), or without a
        calibration when none is given.
    """
    mda = read_mda(path, max_bytes=max_bytes)
    if mda.rank < 3:
        raise InputFileError(
            f"MDA file {mda.path} is rank {mda.rank}: it holds no spectra (a fly scan's MDA file "
            "holds positions and scalers; read the fly scan's HDF5 spectra file, with this file "
            "as its companion)"
        )
    if len(mda.levels) < 3:
        raise InputFileError(f"MDA file {mda.path}: no spectrum was acquired")
    points = scan_points(mda, i0_detector=i0_detector)
    cautions = list(points.cautions)
    spectra_level = mda.levels[2]
    elements = _spectra_detectors(spectra_level)
    if not elements:
        raise InputFileError(f"MDA file {mda.path}: the innermost scan has no detectors (spectra)")
    where = f"MDA file {mda.path}"
    rows, cols = points.rows, points.cols
    # Pixels whose spectra were not completed (a stopped scan) are left out.
    complete = spectra_level.acquired[rows, cols].all(axis=-1)
    if not complete.all():
        cautions.append(f"{int((~complete).sum())} pixel(s) with incomplete spectra left out")
    keep = np.nonzero(complete)[0]
    rows, cols = rows[keep], cols[keep]
    spectra = np.stack([d.data[rows, cols, :] for d in elements], axis=1)
    spectra = integer_counts(spectra, where, cautions)
    bases = [d.name.removesuffix(".VAL") for d in elements]
    calibration_source = "given"
    per_element: list[dict[str, float]] = []
    if calibration is None:
        calibration, per_element, calibration_cautions = mca_calibration(mda, bases)
        if calibration is None:
            raise InputFileError(
                f"{where} records no energy calibration (no {bases[0]}.CALO/CALS PVs); give one "
                "(calibration=EnergyCalibration(offset_kev, gain_kev_per_channel))"
            )
        cautions += calibration_cautions
        calibration_source = f"{bases[0]}.CALO/.CALS/.CALQ in the file"
    times = _element_times(mda.levels[1].detectors, bases, rows, cols)
    dwell = points.metadata["dwell_s"]
    if times is None:
        seconds = float(dwell) if dwell else 1.0
        live = real = np.full((rows.size, len(elements)), seconds)
        cautions.append(
            "no live/real time per element in the file; both set to "
            + (f"the dwell time {seconds:g} s" if dwell else "1 s")
            + ": dead-time correction does nothing"
        )
    else:
        live, real = times
        if not (np.all(np.isfinite(live)) and np.all(np.isfinite(real))):
            raise InputFileError(f"{where}: live or real times hold NaN")
    live, real, time_s = finish_times(live, real, cautions)
    incident_kev = monochromator_energy_kev(mda, cautions)
    metadata = dict(points.metadata)
    metadata.update(
        source_format="aps_mda",
        source_file=mda.path.name,
        scan_kind="raster",
        incident_energy_kev=incident_kev,
        detector_elements=[d.name for d in elements],
        calibration_source=calibration_source,
        element_calibrations=per_element,
        time_source="cumulative real time of the points before (overheads not recorded)",
        cautions=cautions,
    )
    try:
        return RawXRFScan(
            spectra=spectra,
            x_um=points.x_um[keep],
            y_um=points.y_um[keep],
            i0=points.i0[keep],
            live_time_s=live,
            real_time_s=real,
            time_s=time_s,
            line_index=rows.astype(np.int64),
            calibration=calibration,
            metadata=metadata,
        )
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{where}: {error}") from error
