"""Readers for single XRF spectra and PyMca calibrations.

- **SPE** (``.spe``, ORTEC/Maestro text as written by PyMca, e.g. PyMca's ``Steel.spe``):
  ``$SECTION:`` headers; ``$DATA:`` holds ``first last`` channel numbers then the counts
  (whitespace-separated, any number per line); the optional ``$MEAS_TIM:`` holds
  ``live real`` (s) and ``$ENER_FIT:`` ``offset gain`` (keV).
- **One-column MCA** (``.mca``, PyMca's simplest format, e.g. ``XRFSpectrum.mca``): lines
  starting with ``#`` are comments, every other non-empty line holds one count.
- **PyMca fit configuration** (``.cfg``): the ``[detector]`` table's ``zero`` (keV) and ``gain``
  (keV/channel) give the calibration, ``noise`` (keV FWHM) and ``fano`` the resolution.

Errors (missing file, no data, non-numeric or negative counts, a channel count that does not
match the header) raise :class:`asirp.io.InputFileError` naming the file and the line.
"""

from __future__ import annotations

import configparser
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asirp.io import InputFileError
from asirp.xrf.lines import ChannelROI, DetectorResolution, EnergyCalibration


@dataclass(frozen=True)
class Spectrum:
    """One XRF spectrum.

    Attributes
    ----------
    counts : numpy.ndarray
        Counts per channel ``(n_channels,)``, float64.
    first_channel : int
        Detector channel number of ``counts[0]``.
    calibration : EnergyCalibration or None
        Calibration stored in the file, if any.
    live_time_s, real_time_s : float or None
        Acquisition times from the file, s.
    source : str
        The file read.
    """

    counts: np.ndarray
    first_channel: int = 0
    calibration: EnergyCalibration | None = None
    live_time_s: float | None = None
    real_time_s: float | None = None
    source: str = ""

    @property
    def channels(self) -> np.ndarray:
        """Detector channel numbers ``(n_channels,)``."""
        return np.arange(self.first_channel, self.first_channel + self.counts.shape[0])

    def energy_kev(self, calibration: EnergyCalibration | None = None) -> np.ndarray:
        """Channel energies ``(n_channels,)``, keV, with ``calibration`` or the file's own."""
        calibration = calibration or self.calibration
        if calibration is None:
            raise ValueError(f"{self.source or 'spectrum'} has no calibration; pass one")
        return np.asarray(calibration.energy_kev(self.channels))

    def roi_counts(self, roi: ChannelROI) -> float:
        """Counts summed over an ROI's channels."""
        start = roi.first_channel - self.first_channel
        stop = roi.last_channel + 1 - self.first_channel
        if start < 0 or stop > self.counts.shape[0]:
            raise ValueError(f"ROI {roi.name!r} lies outside the spectrum's channels")
        return float(self.counts[start:stop].sum())


def _open_text(path: str | os.PathLike) -> tuple[Path, list[str]]:
    file_path = Path(path)
    if not file_path.is_file():
        raise InputFileError(f"spectrum file not found: {file_path}")
    try:
        return file_path, file_path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(f"cannot read {file_path} as text: {error}") from error


def _numbers(file_path: Path, number: int, text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise InputFileError(f"{file_path}, line {number}: not numbers: {text.strip()!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InputFileError(f"{file_path}, line {number}: non-finite value")
    return values


def _checked_counts(file_path: Path, values: list[float]) -> np.ndarray:
    counts = np.asarray(values, dtype=np.float64)
    if counts.size == 0:
        raise InputFileError(f"{file_path}: no counts found")
    if np.any(counts < 0):
        raise InputFileError(f"{file_path}: negative counts")
    return counts


def read_spe(path: str | os.PathLike) -> Spectrum:
    """Read an SPE text spectrum (see the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.spe`` file.

    Returns
    -------
    Spectrum
    """
    file_path, lines = _open_text(path)
    sections: dict[str, list[tuple[int, str]]] = {}
    current = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("$"):
            current = stripped.rstrip(":").lstrip("$").upper()
            sections[current] = []
        elif current is not None and stripped:
            sections[current].append((number, stripped))
    if "DATA" not in sections or not sections["DATA"]:
        raise InputFileError(f"{file_path}: no $DATA: section (not an SPE spectrum)")
    number, header = sections["DATA"][0]
    bounds = _numbers(file_path, number, header)
    if len(bounds) != 2 or not all(b == int(b) for b in bounds) or bounds[1] < bounds[0]:
        raise InputFileError(
            f"{file_path}, line {number}: $DATA: must start with 'first last' channels, got "
            f"{header!r}"
        )
    first, last = int(bounds[0]), int(bounds[1])
    values: list[float] = []
    for number, text in sections["DATA"][1:]:
        values.extend(_numbers(file_path, number, text))
    counts = _checked_counts(file_path, values)
    if counts.shape[0] != last - first + 1:
        raise InputFileError(
            f"{file_path}: $DATA: announces channels {first}..{last} ({last - first + 1}) but "
            f"holds {counts.shape[0]} counts (truncated?)"
        )
    live = real = None
    if sections.get("MEAS_TIM"):
        number, text = sections["MEAS_TIM"][0]
        times = _numbers(file_path, number, text)
        if len(times) >= 2:
            live, real = times[0], times[1]
    calibration = None
    if sections.get("ENER_FIT"):
        number, text = sections["ENER_FIT"][0]
        fit = _numbers(file_path, number, text)
        if len(fit) >= 2 and fit[1] > 0:
            calibration = EnergyCalibration(fit[0], fit[1])
    return Spectrum(counts, first, calibration, live, real, str(file_path))


def read_mca_column(path: str | os.PathLike) -> Spectrum:
    """Read a one-column MCA text spectrum (``#`` comments, one count per line).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mca`` file.

    Returns
    -------
    Spectrum
        Channels from 0, no calibration.
    """
    file_path, lines = _open_text(path)
    values: list[float] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        row = _numbers(file_path, number, stripped)
        if len(row) != 1:
            raise InputFileError(
                f"{file_path}, line {number}: expected one number per line, got {len(row)}"
            )
        values.append(row[0])
    return Spectrum(_checked_counts(file_path, values), 0, None, None, None, str(file_path))


def read_spectrum(path: str | os.PathLike) -> Spectrum:
    """Read ``.spe`` or one-column ``.mca`` by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".spe":
        return read_spe(path)
    if suffix == ".mca":
        return read_mca_column(path)
    raise InputFileError(f"unknown spectrum format {suffix!r} for {path}; use .spe or .mca")


def read_pymca_calibration(
    path: str | os.PathLike,
) -> tuple[EnergyCalibration, DetectorResolution | None]:
    """Energy calibration and detector resolution from a PyMca fit configuration (``.cfg``).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.cfg`` file.

    Returns
    -------
    (EnergyCalibration, DetectorResolution or None)
        ``zero`` and ``gain`` of ``[detector]`` (keV, keV/channel), and ``noise``/``fano``
        when both are present.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise InputFileError(f"PyMca configuration not found: {file_path}")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(file_path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as error:
        raise InputFileError(f"cannot parse PyMca configuration {file_path}: {error}") from error
    if not parser.has_section("detector"):
        raise InputFileError(f"{file_path}: no [detector] section (not a PyMca fit configuration)")
    detector = parser["detector"]

    def value(key: str) -> float:
        if key not in detector:
            raise InputFileError(f"{file_path}: [detector] has no {key!r}")
        try:
            return float(detector[key])
        except ValueError:
            raise InputFileError(
                f"{file_path}: [detector] {key} is not a number: {detector[key]!r}"
            ) from None

    try:
        calibration = EnergyCalibration(value("zero"), value("gain"))
    except ValueError as error:
        if isinstance(error, InputFileError):
            raise
        raise InputFileError(f"{file_path}: invalid calibration: {error}") from error
    resolution = None
    if "noise" in detector and "fano" in detector:
        resolution = DetectorResolution(value("noise"), value("fano"))
    return calibration, resolution
