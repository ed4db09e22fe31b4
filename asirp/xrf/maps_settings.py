"""The settings files of APS's MAPS/XRF-Maps that come with a dataset: fit override, standard.

A beamline dataset processed with MAPS carries two small text files next to the scans:

- ``maps_fit_parameters_override.txt``: ``KEY: value`` lines (indented lines are comments),
  among them the detector's energy calibration (``CAL_OFFSET_[E_OFFSET]`` keV,
  ``CAL_SLOPE_[E_LINEAR]`` keV/channel, ``CAL_QUAD_[E_QUADRATIC]`` keV/channel²), the incident
  energy (``COHERENT_SCT_ENERGY`` keV), the elements to fit (``ELEMENTS_TO_FIT``) and the
  detector's resolution (``FWHM_OFFSET`` keV, ``FWHM_FANOPRIME``). The calibration there is the
  one MAPS fitted to the spectra; the one written into the MDA file by the MCA record is often
  the nominal one (on the APS 2-ID-E test data the file's gain is about 1.3 % low, which moves
  Cu K-alpha by 5 channels, a third of its ROI).
- ``maps_standardinfo.txt``: the standard's scan file (``FILENAME``), its elements
  (``ELEMENTS_IN_STANDARD``) and their areal densities (``WEIGHT``, µg/cm²).

:func:`read_maps_override` and :func:`read_standard_info` read them (size-checked, text only);
``asirp xrf-map --maps-override FILE`` uses the override's calibration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from asirp.io import InputFileError, read_input_bytes
from asirp.xrf.lines import EnergyCalibration, line_energy_kev

MAX_SETTINGS_BYTES = 1 << 20
"""Largest settings file read, bytes (1 MiB; the real ones are a few kB)."""


@dataclass(frozen=True)
class MapsOverride:
    """What ASIRP uses of a MAPS fit-parameter override file.

    Attributes
    ----------
    calibration : EnergyCalibration
        The detector's channel-energy calibration.
    incident_energy_kev : float or None
        Incident (coherent scatter) energy, keV.
    elements_to_fit : tuple of str
        Elements listed for fitting (``"Ca"``; ``"Au_L"`` for L lines, as MAPS writes them).
    detector_elements : int or None
        Detector elements the file was written for.
    fwhm_offset_kev : float or None
        Detector resolution at 0 keV, FWHM keV.
    fwhm_fanoprime : float or None
        Energy dependence of the resolution (MAPS's Fano-like term).
    source : str
        The file read.
    """

    calibration: EnergyCalibration
    incident_energy_kev: float | None
    elements_to_fit: tuple[str, ...]
    detector_elements: int | None
    fwhm_offset_kev: float | None
    fwhm_fanoprime: float | None
    source: str

    def provenance(self) -> dict[str, object]:
        """A JSON-serialisable record of the settings used."""
        return {
            "source": self.source,
            "calibration": self.calibration.as_dict(),
            "incident_energy_kev": self.incident_energy_kev,
            "elements_to_fit": list(self.elements_to_fit),
        }


@dataclass(frozen=True)
class StandardInfo:
    """A MAPS standard description: which scan measured it and what it holds.

    Attributes
    ----------
    filename : str
        The standard's scan file as written (``axo_std.mda``).
    areal_density_ug_cm2 : dict of str to float
        Certified areal density of each element, µg/cm².
    source : str
        The file read.
    """

    filename: str
    areal_density_ug_cm2: dict[str, float]
    source: str


def _key_values(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """``KEY: value`` pairs of a MAPS settings file (first occurrence wins), checked for size."""
    where = os.fspath(path)
    data = read_input_bytes(path, "MAPS settings file", MAX_SETTINGS_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if "\x00" in text:
        raise InputFileError(f"{where} is not a text file")
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in " \t" or ":" not in line:
            continue  # MAPS comments are indented lines
        key, value = line.split(":", 1)
        pairs.setdefault(key.strip().upper(), value.strip())
    return where, pairs


def _number(pairs: dict[str, str], key: str, where: str, *, required: bool) -> float | None:
    text = pairs.get(key, "")
    if not text:
        if required:
            raise InputFileError(f"{where} has no {key} (not a MAPS fit-parameter override?)")
        return None
    try:
        value = float(text.split()[0])
    except ValueError:
        raise InputFileError(f"{where}: {key} is not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InputFileError(f"{where}: {key} is not finite: {text!r}")
    return value


def read_maps_override(path: str | os.PathLike) -> MapsOverride:
    """Read a MAPS ``maps_fit_parameters_override.txt`` (keys in the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        The override file.

    Returns
    -------
    MapsOverride

    Raises
    ------
    asirp.io.InputFileError
        For a missing, oversized or binary file, a missing calibration, or a value that is not a
        number (or a calibration ``EnergyCalibration`` refuses, such as a gain <= 0).
    """
    where, pairs = _key_values(path)
    offset = _number(pairs, "CAL_OFFSET_[E_OFFSET]", where, required=True)
    gain = _number(pairs, "CAL_SLOPE_[E_LINEAR]", where, required=True)
    quadratic = _number(pairs, "CAL_QUAD_[E_QUADRATIC]", where, required=False) or 0.0
    try:
        calibration = EnergyCalibration(float(offset or 0.0), float(gain or 0.0), quadratic)
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{where}: {error}") from None
    elements = tuple(
        name.strip() for name in pairs.get("ELEMENTS_TO_FIT", "").split(",") if name.strip()
    )
    detectors = _number(pairs, "DETECTOR_ELEMENTS", where, required=False)
    return MapsOverride(
        calibration=calibration,
        incident_energy_kev=_number(pairs, "COHERENT_SCT_ENERGY", where, required=False),
        elements_to_fit=elements,
        detector_elements=None if detectors is None else int(detectors),
        fwhm_offset_kev=_number(pairs, "FWHM_OFFSET", where, required=False),
        fwhm_fanoprime=_number(pairs, "FWHM_FANOPRIME", where, required=False),
        source=where,
    )


def read_standard_info(path: str | os.PathLike) -> StandardInfo:
    """Read a MAPS ``maps_standardinfo.txt``: the standard's scan, elements and µg/cm².

    Raises
    ------
    asirp.io.InputFileError
        For a missing or unreadable file, a missing key, element and weight lists of different
        lengths, an unknown element or a weight that is not a positive number.
    """
    where, pairs = _key_values(path)
    for key in ("FILENAME", "ELEMENTS_IN_STANDARD", "WEIGHT"):
        if not pairs.get(key):
            raise InputFileError(f"{where} has no {key} (not a MAPS standard description?)")
    elements = [name.strip() for name in pairs["ELEMENTS_IN_STANDARD"].split(",")]
    weights = [text.strip() for text in pairs["WEIGHT"].split(",")]
    if len(elements) != len(weights):
        raise InputFileError(
            f"{where}: {len(elements)} elements but {len(weights)} weights in the standard"
        )
    densities: dict[str, float] = {}
    for element, text in zip(elements, weights, strict=True):
        try:
            line_energy_kev(element.split("_")[0], "Ka" if "_" not in element else "La")
            value = float(text)
        except ValueError:
            raise InputFileError(f"{where}: bad element or weight {element!r}: {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise InputFileError(f"{where}: the weight of {element} must be > 0 µg/cm², got {text}")
        densities[element] = value
    return StandardInfo(
        filename=Path(pairs["FILENAME"]).name, areal_density_ug_cm2=densities, source=where
    )
