"""Readers for single XRF spectra and PyMca calibrations.

- **SPE** (``.spe``, ORTEC/Maestro text as written by PyMca, e.g. PyMca's ``Steel.spe``):
  ``$SECTION:`` headers; ``$DATA:`` holds ``first last`` channel numbers then the counts
  (whitespace-separated, any number per line); the optional ``$MEAS_TIM:`` holds
  ``live real`` (s) and ``$ENER_FIT:`` ``offset gain`` (keV). Read here, not by PyMca (see
  :func:`read_spe` for why).
- **One-column MCA** (``.mca``, PyMca's simplest format, e.g. ``XRFSpectrum.mca``): lines
  starting with ``#`` are comments, every other non-empty line holds one count. Read with
  :func:`numpy.loadtxt`, which refuses a line of another width (see :func:`read_mca_column`).
- **PyMca fit configuration** (``.cfg``): read with PyMca's own ``ConfigDict``
  (:func:`read_pymca_config`); the ``[detector]`` table's ``zero`` (keV) and ``gain``
  (keV/channel) give the calibration, ``noise`` (keV FWHM) and ``fano`` the resolution.

Files larger than :func:`asirp.io.max_input_bytes` are refused before they are read. Errors
(missing file, no data, non-numeric or negative counts, a channel count that does not match the
header, an unparsable configuration) raise one :class:`asirp.io.InputFileError` naming the file
(and the line, for SPE), whatever the library underneath raised.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asirp.io import InputFileError, check_declared_size
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


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    """The path of an existing file no larger than the input limit (checked before reading)."""
    file_path = Path(path)
    if not file_path.is_file():
        raise InputFileError(f"{what} not found: {file_path}")
    check_declared_size((file_path.stat().st_size,), np.uint8, f"{what} {file_path}")
    return file_path


def _open_text(path: str | os.PathLike) -> tuple[Path, list[str]]:
    file_path = _existing_file(path, "spectrum file")
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

    PyMca's reader of these files (``PyMca5.PyMcaIO.specfilewrapper``, its "QXAS" branch) reads
    ``Steel.spe`` correctly but is not safe on damaged files, so this one is kept: on a file
    without a ``$DATA:`` section it loops for ever while its memory grows (measured: about
    0.8 GB in ten seconds); it accepts a ``$DATA:`` block shorter than its ``first last``
    header without a word; a file whose first line is not ``$SPEC_ID:`` (or ``$DATE_MEA:``,
    ``$MEAS_TIM:``) is taken for a table and misread; and on unreadable bytes it leaves the
    file open (a ``ResourceWarning``). ``tests/asirp/xrf/test_spectra.py`` checks that both
    readers give the same counts for ``Steel.spe``.

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

    Read with :func:`numpy.loadtxt`. PyMca's reader of this format
    (``PyMca5.PyMcaIO.specfilewrapper``) reads ``XRFSpectrum.mca`` correctly but silently drops
    a line with another number of columns (``2 3``) or a word, shifting every later channel;
    :func:`numpy.loadtxt` refuses both.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mca`` file.

    Returns
    -------
    Spectrum
        Channels from 0, no calibration.
    """
    file_path = _existing_file(path, "spectrum file")
    try:
        with warnings.catch_warnings():
            # numpy warns (instead of failing) on a file without data: reported below.
            warnings.simplefilter("ignore", UserWarning)
            values = np.loadtxt(file_path, comments="#", dtype=np.float64, ndmin=2)
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(f"cannot read {file_path} as text: {error}") from error
    except ValueError as error:
        # numpy's advice ("use `usecols`...") is about its own API, not for the file's user.
        reason = str(error).split("; use `usecols`")[0]
        raise InputFileError(f"{file_path}: not a one-column spectrum: {reason}") from None
    if values.size and values.shape[1] != 1:
        raise InputFileError(
            f"{file_path}: not a one-column spectrum: {values.shape[1]} numbers per line"
        )
    counts = values.ravel()
    if not np.all(np.isfinite(counts)):
        raise InputFileError(f"{file_path}: non-finite counts (NaN or Inf)")
    return Spectrum(_checked_counts(file_path, list(counts)), 0, None, None, None, str(file_path))


def read_spectrum(path: str | os.PathLike) -> Spectrum:
    """Read ``.spe`` or one-column ``.mca`` by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".spe":
        return read_spe(path)
    if suffix == ".mca":
        return read_mca_column(path)
    raise InputFileError(f"unknown spectrum format {suffix!r} for {path}; use .spe or .mca")


def read_pymca_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a PyMca configuration file with PyMca's own reader (``ConfigDict``).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.cfg`` file.

    Returns
    -------
    dict
        Sections as nested dicts; values as PyMca parses them (int, float, str or lists).

    Raises
    ------
    asirp.io.InputFileError
        For a missing, oversized or unparsable file (whatever PyMca raised).
    """
    from PyMca5.PyMcaIO.ConfigDict import ConfigDict  # lazy: PyMca is slow to import

    file_path = _existing_file(path, "PyMca configuration")
    config = ConfigDict()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The resolved path holds no "::", which ConfigDict would take for an HDF5 dataset.
            config.read(str(file_path.resolve()))
    except Exception as error:
        raise InputFileError(
            f"cannot parse PyMca configuration {file_path}: {type(error).__name__}: {error}"
        ) from error
    return dict(config)


def read_pymca_calibration(
    path: str | os.PathLike,
) -> tuple[EnergyCalibration, DetectorResolution | None]:
    """Energy calibration and detector resolution from a PyMca fit configuration (``.cfg``).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.cfg`` file (read by :func:`read_pymca_config`).

    Returns
    -------
    (EnergyCalibration, DetectorResolution or None)
        ``zero`` and ``gain`` of ``[detector]`` (keV, keV/channel), and ``noise``/``fano``
        when both are present.
    """
    file_path = Path(path)
    config = read_pymca_config(file_path)
    detector = config.get("detector")
    if not isinstance(detector, dict):
        raise InputFileError(f"{file_path}: no [detector] section (not a PyMca fit configuration)")

    def value(key: str) -> float:
        if key not in detector:
            raise InputFileError(f"{file_path}: [detector] has no {key!r}")
        number = detector[key]
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InputFileError(f"{file_path}: [detector] {key} is not a number: {number!r}")
        return float(number)

    try:
        calibration = EnergyCalibration(value("zero"), value("gain"))
    except ValueError as error:
        if isinstance(error, InputFileError):
            raise
        raise InputFileError(f"{file_path}: invalid calibration: {error}") from error
    resolution = None
    if "noise" in detector and "fano" in detector:
        try:
            resolution = DetectorResolution(value("noise"), value("fano"))
        except ValueError as error:
            if isinstance(error, InputFileError):
                raise
            raise InputFileError(f"{file_path}: invalid resolution: {error}") from error
    return calibration, resolution
