"""Xspress3 µ-XRF scans in NeXus as Diamond (I18, GDA) writes them.

The layout found in Diamond's files (``i18_test_data.nxs``; group names vary with the
scannables of the scan, so datasets are found by name and shape, not by fixed paths)::

    entry1/instrument/xspress3/MCAs          (rows, columns, elements, channels) or
                                             (points, elements, channels): spectra, float64
    entry1/instrument/<counter timer>/I0     (rows, columns) incident-flux counts
                                    /It      transmitted counts (recorded in metadata only)
                                    /liveTime  counting time of the point, s
    entry1/.../<scannable X>, <scannable Y>  (rows, columns) stage positions
    entry1/instrument/DCM/energy             monochromator energy (eV when > 100, else keV)
    entry1/instrument/xspress3/<El>_K        ROI sums per element (not used)

Positions are datasets of the scan's shape whose names say x or y (``traj1ContiniousX``); a
rotation (``..theta..``) is not a position: when the file has no y position (a sinogram slice
of XRF tomography), rows are placed one x step apart and a caution says so. Positions without
a ``units`` attribute are taken as mm (GDA's motors), with a caution.

**Calibration.** Diamond's files often hold no channel-energy calibration (Xspress3 channels
are usually 10 eV wide, but nothing in the file says so). It is taken from the file when the
detector group has an energy axis (``energy``, one value per channel, keV or eV) or an
``eV_per_channel`` value; otherwise it must be given (``calibration=``), and the metadata
records that it was given (``calibration_source``) with a caution.

Spectra stored as floats with fractional values (dead-time corrected by GDA) are rounded to
whole counts, with a caution.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp.io import InputFileError, read_array
from asirp.xrf.lines import EnergyCalibration
from asirp.xrf.mda_scan import I0_LABEL, finish_times, integer_counts
from asirp.xrf.raw_model import RawXRFScan

SPECTRA_NAME = "MCAs"
"""Name of the Xspress3 spectra dataset."""
_ANGLE = re.compile(r"theta|rot|phi|omega|chi|angle", re.IGNORECASE)
_LIVE = re.compile(r"^live_?time$", re.IGNORECASE)
_REAL = re.compile(r"^real_?time$", re.IGNORECASE)
_TRANSMITTED = re.compile(r"^it$", re.IGNORECASE)
_ENERGY_AXIS = re.compile(r"^(energy|energies|energy_axis|channel_energ\w*)$", re.IGNORECASE)
_EV_PER_CHANNEL = re.compile(r"^ev_?per_?channel$", re.IGNORECASE)
_MONO = re.compile(r"dcm|mono", re.IGNORECASE)
_LENGTH_UNITS_UM = {"mm": 1000.0, "um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3}


def _axis_of(name: str) -> str | None:
    """``angle``, ``x``, ``y`` or None from a dataset's name."""
    if _ANGLE.search(name):
        return "angle"
    for axis in ("x", "y"):
        if re.search(rf"(^|[^a-z]){axis}($|[^a-z])", name.lower()) or re.search(
            rf"{axis.upper()}($|[^a-z])", name
        ):
            return axis
    return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def _layout(path: Path) -> dict[str, Any]:
    """What the file holds: spectra path and shape, per-point datasets, calibration hints."""
    try:
        with h5py.File(path, "r") as handle:
            datasets: dict[str, h5py.Dataset] = {}

            # visititems follows hard links only: soft and external links are not entered
            # (and it stops at the first callback that returns something: return None).
            def collect(name: str, item: Any) -> None:
                if isinstance(item, h5py.Dataset):
                    datasets.setdefault(name, item)

            handle.visititems(collect)
            spectra = [
                name
                for name, item in datasets.items()
                if name.split("/")[-1].lower() == SPECTRA_NAME.lower() and item.ndim in (3, 4)
            ]
            if not spectra:
                raise InputFileError(
                    f"{path} holds no Xspress3 spectra (a 3-D or 4-D dataset named "
                    f"{SPECTRA_NAME!r})"
                )
            # The copy under instrument/ is the detector's own; entry-level ones are links.
            spectra.sort(key=lambda name: ("instrument" not in name.split("/"), len(name)))
            spectra_name = spectra[0]
            spectra_item = datasets[spectra_name]
            shape = tuple(spectra_item.shape)
            scan_shape = shape[:-2]
            entry = spectra_name.split("/")[0]
            per_point = {
                name: {
                    "units": _text(item.attrs.get("units", "")).strip(),
                    "dtype": item.dtype,
                }
                for name, item in datasets.items()
                if tuple(item.shape) == scan_shape
                and name.split("/")[0] == entry
                and item.dtype.kind in "iuf"
            }
            group_name = spectra_name.rsplit("/", 1)[0]
            hints: dict[str, Any] = {}
            group = handle[group_name]
            for key, value in group.attrs.items():
                if _EV_PER_CHANNEL.match(key):
                    hints["ev_per_channel"] = (f"{group_name}@{key}", value)
            members = {
                member.rsplit("/", 1)[-1]: item
                for member, item in datasets.items()
                if member.rsplit("/", 1)[0] == group_name
            }
            for name, item in members.items():
                if _EV_PER_CHANNEL.match(name) and item.size == 1:
                    hints["ev_per_channel"] = (f"{group_name}/{name}", item[()])
                if _ENERGY_AXIS.match(name) and item.shape == (shape[-1],):
                    hints["energy_axis"] = (
                        f"{group_name}/{name}",
                        _text(item.attrs.get("units", "")).strip(),
                    )
            monochromator = [
                name
                for name, item in datasets.items()
                if name.split("/")[-1].lower() == "energy" and _MONO.search(name) and item.size == 1
            ]
            mono = None
            if monochromator:
                item = datasets[monochromator[0]]
                mono = (
                    monochromator[0],
                    float(np.asarray(item[()]).reshape(-1)[0]),
                    _text(item.attrs.get("units", "")).strip(),
                )
    except InputFileError:
        raise
    except Exception as error:  # truncated or foreign files raise many different errors
        raise InputFileError(
            f"cannot read Xspress3 NeXus file {path} (truncated, corrupt or not HDF5): "
            f"{type(error).__name__}: {error}"
        ) from None
    return {
        "spectra": spectra_name,
        "shape": shape,
        "per_point": per_point,
        "hints": hints,
        "mono": mono,
    }


def _pick(per_point: dict[str, dict[str, Any]], pattern: re.Pattern) -> str | None:
    """The per-point dataset whose last name matches, the one under instrument/ first."""
    names = [name for name in per_point if pattern.search(name.split("/")[-1])]
    names.sort(key=lambda name: ("instrument" not in name.split("/"), len(name)))
    return names[0] if names else None


def _file_calibration(
    path: Path, layout: dict[str, Any], n_channels: int, max_bytes: int | None
) -> tuple[EnergyCalibration | None, str | None]:
    hints = layout["hints"]
    if "energy_axis" in hints:
        name, units = hints["energy_axis"]
        energies = read_array(f"{path}::/{name}", max_bytes=max_bytes).astype(np.float64)
        if units.lower() == "ev" or (not units and np.nanmax(energies) > 200.0):
            energies = energies / 1000.0
        channels = np.arange(n_channels, dtype=np.float64)
        coefficients = np.polynomial.polynomial.polyfit(channels, energies, 2)
        fitted = np.polynomial.polynomial.polyval(channels, coefficients)
        gain = float(coefficients[1])
        if gain > 0 and np.max(np.abs(fitted - energies)) < 0.1 * gain:
            calibration = EnergyCalibration(*(float(c) for c in coefficients))
            return calibration, f"energy axis {name} in the file"
    if "ev_per_channel" in hints:
        name, value = hints["ev_per_channel"]
        gain_ev = float(np.asarray(value).reshape(-1)[0])
        if np.isfinite(gain_ev) and gain_ev > 0:
            return EnergyCalibration(0.0, gain_ev / 1000.0), f"{name} = {gain_ev:g} eV/channel"
    return None, None


def read_xspress3(
    path: str | os.PathLike,
    *,
    calibration: EnergyCalibration | None = None,
    max_bytes: int | None = None,
) -> RawXRFScan:
    """Read a Diamond NeXus file of Xspress3 spectra into a raw scan.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.nxs`` file.
    calibration : EnergyCalibration, optional
        Channel-energy calibration; required when the file holds none (see the module notes).
    max_bytes : int, optional
        Input size limit per array, bytes (default :func:`asirp.io.max_input_bytes`).

    Returns
    -------
    RawXRFScan
        Points row by row; ``metadata`` says where I0, positions, times and the calibration
        came from, and ``cautions`` what was assumed.

    Raises
    ------
    asirp.io.InputFileError
        For a file without Xspress3 spectra, without x positions, truncated or corrupt, or
        without a calibration when none is given.
    """
    path = Path(path)
    layout = _layout(path)
    shape = layout["shape"]
    scan_shape, (n_elements, n_channels) = shape[:-2], shape[-2:]
    n_points = int(np.prod(scan_shape))
    per_point = layout["per_point"]
    where = f"Xspress3 file {path}"
    cautions: list[str] = []

    def points(name: str) -> np.ndarray:
        return read_array(f"{path}::/{name}", max_bytes=max_bytes).astype(np.float64).reshape(-1)

    file_calibration, file_source = _file_calibration(path, layout, n_channels, max_bytes)
    if calibration is not None:
        calibration_source = "given"
        if file_calibration is None:
            cautions.append(
                f"the file records no energy calibration; the one given was used ({calibration})"
            )
    elif file_calibration is not None:
        calibration, calibration_source = file_calibration, str(file_source)
    else:
        raise InputFileError(
            f"{where} records no energy calibration (no energy axis or eV-per-channel in "
            f"{layout['spectra'].rsplit('/', 1)[0]}); give one: calibration="
            "EnergyCalibration(offset_kev, gain_kev_per_channel) (Diamond's Xspress3 channels "
            "are usually 10 eV: EnergyCalibration(0.0, 0.01), but check a known line)"
        )

    spectra = read_array(f"{path}::/{layout['spectra']}", max_bytes=max_bytes)
    spectra = integer_counts(spectra.reshape(n_points, n_elements, n_channels), where, cautions)

    positions: dict[str, tuple[str, np.ndarray]] = {}
    row_axis = None
    for name, info in sorted(
        per_point.items(), key=lambda item: ("instrument" not in item[0].split("/"), len(item[0]))
    ):
        axis = _axis_of(name.split("/")[-1])
        if axis is None or axis in positions:
            continue
        values = points(name)
        if np.ptp(values) == 0 or not np.all(np.isfinite(values)):
            continue
        if axis == "angle":
            row_axis = row_axis or name
            continue
        units = info["units"]
        scale = _LENGTH_UNITS_UM.get(units.lower().replace("μ", "µ"))
        if scale is None:
            if units:
                continue  # another kind of quantity (an angle in degrees, say)
            scale = 1000.0
            cautions.append(f"{name} has no units attribute; mm assumed (GDA's motors)")
        positions[axis] = (name, values * scale)
    if "x" not in positions:
        raise InputFileError(
            f"{where}: no x position found (a varying dataset of the scan's shape {scan_shape} "
            "whose name says x)"
        )
    x_name, x_um = positions["x"]
    if "y" in positions:
        y_name, y_um = positions["y"]
    else:
        if len(scan_shape) != 2:
            raise InputFileError(f"{where}: no y position found for the {n_points} points")
        step = np.median(np.abs(np.diff(x_um.reshape(scan_shape), axis=1)))
        y_um = np.repeat(np.arange(scan_shape[0], dtype=np.float64), scan_shape[1]) * step
        y_name = None
        cautions.append(
            "the file has no y position"
            + (
                f" (its rows follow {row_axis}, a rotation: a sinogram slice, not a map)"
                if row_axis
                else ""
            )
            + f"; rows were placed one x step ({step:g} µm) apart"
        )
    line_index = (
        np.repeat(np.arange(scan_shape[0]), scan_shape[1])
        if len(scan_shape) == 2
        else np.zeros(n_points, dtype=np.int64)
    )

    i0_name = _pick(per_point, re.compile(r"^i0$", re.IGNORECASE)) or _pick(per_point, I0_LABEL)
    if i0_name is None:
        i0 = np.ones(n_points)
        cautions.append("no I0 monitor in the file; I0 set to 1: normalisation by I0 does nothing")
    else:
        i0 = points(i0_name)
    live_name, real_name = _pick(per_point, _LIVE), _pick(per_point, _REAL)
    if live_name is None and real_name is None:
        raise InputFileError(f"{where}: no live or real time per point")
    live_point = points(live_name) if live_name else points(str(real_name))
    real_point = points(real_name) if real_name else live_point
    if real_name is None or live_name is None:
        cautions.append(
            f"only {live_name or real_name} in the file (one time per point, not per element); "
            "used as live and real time of every element: dead-time correction does nothing"
        )
    live = np.repeat(live_point[:, None], n_elements, axis=1)
    real = np.repeat(real_point[:, None], n_elements, axis=1)
    if not (np.all(np.isfinite(live)) and np.all(np.isfinite(real))):
        raise InputFileError(f"{where}: live or real times hold NaN or Inf")
    live, real, time_s = finish_times(live, real, cautions)

    incident_kev = incident_source = None
    if layout["mono"] is not None:
        incident_source, value, units = layout["mono"]
        incident_kev = (
            value / 1000.0 if units.lower() == "ev" or (not units and value > 200) else value
        )
    else:
        cautions.append("the file records no monochromator energy; incident_energy_kev is None")
    steps = [
        float(np.median(np.abs(np.diff(values.reshape(scan_shape), axis=axis))))
        for values, axis in ((y_um, 0), (x_um, 1))
        if len(scan_shape) == 2 and scan_shape[axis] > 1
    ]
    step_um: float | list[float] | None = None
    if steps:
        step_um = steps[0] if np.allclose(steps, steps[0], rtol=0.01) else steps
    metadata: dict[str, Any] = {
        "title": path.stem,
        "source_format": "xspress3_nexus",
        "source_file": path.name,
        "scan_kind": "raster",
        "scan_shape": list(scan_shape),
        "step_um": step_um,
        "incident_energy_kev": incident_kev,
        "incident_energy_source": incident_source,
        "positioners": {"x": x_name, "y": y_name, "rows": row_axis},
        "i0_source": i0_name,
        "transmission_source": _pick(per_point, _TRANSMITTED),
        "time_sources": {"live": live_name, "real": real_name},
        "spectra_dataset": layout["spectra"],
        "calibration_source": calibration_source,
        "time_source": "cumulative real time of the points before (overheads not recorded)",
        "cautions": cautions,
    }
    try:
        return RawXRFScan(
            spectra=spectra,
            x_um=x_um,
            y_um=y_um,
            i0=i0,
            live_time_s=live,
            real_time_s=real,
            time_s=time_s,
            line_index=line_index.astype(np.int64),
            calibration=calibration,
            metadata=metadata,
        )
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{where}: {error}") from error
