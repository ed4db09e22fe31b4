"""Emission lines, energy calibration and channel regions of interest (ROIs).

Line energies come from xraylib. Line names follow the Siegbahn notation used by PyMca:

``Ka``
    K-alpha, the radiative-rate-weighted mean of K-alpha1 and K-alpha2 (xraylib ``KA_LINE``);
``Ka1``, ``Ka2``, ``Kb`` (weighted K-beta), ``Kb1``, ``La`` (weighted L-alpha), ``La1``,
``Lb`` (weighted L-beta), ``Lb1``, ``Lg1``, ``Ma1``.

An :class:`EnergyCalibration` maps detector channel numbers ``c`` (0-based, of the full
detector range) to energies, ``E(c) = offset + gain * c + quadratic * c**2`` (keV), PyMca's
``zero``/``gain`` convention. A :class:`ChannelROI` is an inclusive channel range
``first_channel..last_channel`` around a line; by default it spans ±1 FWHM of the detector
resolution at the line energy (:class:`DetectorResolution`), which holds about 98 % of a
Gaussian peak.

Examples
--------
>>> calibration = EnergyCalibration(offset_kev=-0.00612, gain_kev_per_channel=0.011928)
>>> roi = element_roi("Fe", calibration)
>>> roi.name, round(roi.energy_kev, 3)
('Fe Ka', 6.4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LINE_NAMES = ("Ka", "Ka1", "Ka2", "Kb", "Kb1", "La", "La1", "Lb", "Lb1", "Lg1", "Ma1")
"""Line names accepted by :func:`line_energy_kev` (case-insensitive)."""

_XRAYLIB_MACROS = {
    "ka": "KA_LINE",
    "ka1": "KA1_LINE",
    "ka2": "KA2_LINE",
    "kb": "KB_LINE",
    "kb1": "KB1_LINE",
    "la": "LA_LINE",
    "la1": "LA1_LINE",
    "lb": "LB_LINE",
    "lb1": "LB1_LINE",
    "lg1": "LG1_LINE",
    "ma1": "MA1_LINE",
}

SI_PAIR_ENERGY_KEV = 0.00385
"""Mean energy to create one electron-hole pair in silicon, keV."""

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@lru_cache(maxsize=512)
def line_energy_kev(element: str, line: str = "Ka") -> float:
    """Energy of an emission line, from xraylib.

    Parameters
    ----------
    element : str
        Chemical symbol (``"Cu"``, ``"Fe"``, ``"Ar"``), case as usual.
    line : str
        Line name, one of :data:`LINE_NAMES` (case-insensitive); ``"Ka"`` is the weighted
        K-alpha1/K-alpha2 mean.

    Returns
    -------
    float
        Line energy, keV.

    Raises
    ------
    ValueError
        For an unknown element or line name, or a line the element does not emit.
    """
    import xraylib

    if not isinstance(element, str) or not isinstance(line, str):
        raise TypeError(f"element and line must be strings, got {element!r}, {line!r}")
    macro = _XRAYLIB_MACROS.get(line.strip().lower())
    if macro is None:
        raise ValueError(f"unknown line {line!r}; use one of {', '.join(LINE_NAMES)}")
    try:
        atomic_number = xraylib.SymbolToAtomicNumber(element.strip())
    except ValueError:
        raise ValueError(f"unknown element symbol {element!r}") from None
    try:
        energy = float(xraylib.LineEnergy(atomic_number, getattr(xraylib, macro)))
    except ValueError:
        raise ValueError(f"{element} has no {line} line in xraylib") from None
    if not energy > 0.0:
        raise ValueError(f"{element} has no {line} line in xraylib")
    return energy


@dataclass(frozen=True)
class EnergyCalibration:
    """Channel-to-energy calibration ``E(c) = offset + gain * c + quadratic * c**2``.

    Parameters
    ----------
    offset_kev : float
        Energy of channel 0, keV (PyMca ``zero``).
    gain_kev_per_channel : float
        Linear term, keV per channel (PyMca ``gain``); must be positive.
    quadratic_kev : float
        Quadratic term, keV per channel squared (0 for a linear calibration).
    """

    offset_kev: float
    gain_kev_per_channel: float
    quadratic_kev: float = 0.0

    def __post_init__(self) -> None:
        for name in ("offset_kev", "gain_kev_per_channel", "quadratic_kev"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise TypeError(f"calibration {name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"calibration {name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.gain_kev_per_channel <= 0.0:
            raise ValueError(
                f"calibration gain must be positive (keV/channel), got {self.gain_kev_per_channel}"
            )

    def energy_kev(self, channels: np.ndarray | float) -> np.ndarray | float:
        """Energy of channel number(s), keV (float in, float out; array in, float64 array out)."""
        c = np.asarray(channels, dtype=np.float64)
        energy = self.offset_kev + self.gain_kev_per_channel * c + self.quadratic_kev * c * c
        return float(energy) if energy.ndim == 0 else energy

    def channel(self, energy_kev: np.ndarray | float) -> np.ndarray | float:
        """Fractional channel number of energy(ies) in keV (the inverse of :meth:`energy_kev`).

        Raises
        ------
        ValueError
            When a quadratic calibration cannot reach the energy on its increasing branch.
        """
        e = np.asarray(energy_kev, dtype=np.float64)
        a, b, c0 = self.quadratic_kev, self.gain_kev_per_channel, self.offset_kev - e
        if a == 0.0:
            channel = -c0 / b
        else:
            discriminant = b * b - 4.0 * a * c0
            if np.any(discriminant < 0.0):
                raise ValueError(f"energy {energy_kev} keV is outside the calibrated range")
            # Numerically stable root of the increasing branch (b > 0).
            channel = (2.0 * -c0) / (b + np.sqrt(discriminant))
        return float(channel) if np.ndim(channel) == 0 else channel

    def as_dict(self) -> dict[str, float]:
        """The three coefficients (JSON-serialisable)."""
        return {
            "offset_kev": self.offset_kev,
            "gain_kev_per_channel": self.gain_kev_per_channel,
            "quadratic_kev": self.quadratic_kev,
        }


@dataclass(frozen=True)
class DetectorResolution:
    """Energy resolution of a silicon drift detector (PyMca's noise + Fano model).

    ``FWHM(E)**2 = noise**2 + 2.3548**2 * 0.00385 keV * fano * E``.

    Parameters
    ----------
    noise_kev : float
        Electronic noise, FWHM in keV (PyMca ``noise``; 0.1 is typical for an SDD).
    fano : float
        Fano factor of silicon (PyMca ``fano``; about 0.114).
    """

    noise_kev: float = 0.1
    fano: float = 0.114

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_kev) and self.noise_kev >= 0.0):
            raise ValueError(f"detector noise must be >= 0 keV, got {self.noise_kev}")
        if not (math.isfinite(self.fano) and self.fano >= 0.0):
            raise ValueError(f"Fano factor must be >= 0, got {self.fano}")

    def fwhm_kev(self, energy_kev: float) -> float:
        """Peak FWHM at an energy, keV."""
        variance = self.noise_kev**2 + _FWHM_PER_SIGMA**2 * SI_PAIR_ENERGY_KEV * self.fano * max(
            float(energy_kev), 0.0
        )
        return math.sqrt(variance)


@dataclass(frozen=True)
class ChannelROI:
    """An inclusive range of detector channels summed into one map.

    Parameters
    ----------
    name : str
        Label, e.g. ``"Cu Ka"``.
    first_channel, last_channel : int
        First and last channel summed (inclusive, 0-based detector channel numbers).
    energy_kev : float
        Line (centre) energy, keV; NaN for a plain channel range.
    """

    name: str
    first_channel: int
    last_channel: int
    energy_kev: float = float("nan")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ROI name must be a non-empty string, got {self.name!r}")
        for attribute in ("first_channel", "last_channel"):
            value = getattr(self, attribute)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"ROI {self.name!r} {attribute} must be an integer, got {value!r}")
            object.__setattr__(self, attribute, int(value))
        if self.first_channel < 0 or self.last_channel < self.first_channel:
            raise ValueError(
                f"ROI {self.name!r} needs 0 <= first_channel <= last_channel, got "
                f"{self.first_channel}..{self.last_channel}"
            )
        object.__setattr__(self, "energy_kev", float(self.energy_kev))

    @property
    def n_channels(self) -> int:
        """Number of channels summed."""
        return self.last_channel - self.first_channel + 1

    @property
    def slice(self) -> slice:
        """The channel range as a Python slice (stop exclusive)."""
        return slice(self.first_channel, self.last_channel + 1)

    def check_within(self, n_channels: int) -> None:
        """Raise ``ValueError`` if the ROI does not fit a spectrum of ``n_channels`` channels."""
        if self.last_channel >= n_channels:
            raise ValueError(
                f"ROI {self.name!r} (channels {self.first_channel}..{self.last_channel}) "
                f"extends past the detector's {n_channels} channels"
            )

    def as_dict(self) -> dict[str, float | int | str]:
        """Name, channel range and energy (JSON-serialisable; NaN energy becomes None)."""
        return {
            "name": self.name,
            "first_channel": self.first_channel,
            "last_channel": self.last_channel,
            "energy_kev": None if math.isnan(self.energy_kev) else self.energy_kev,
        }


def channel_roi(
    name: str,
    calibration: EnergyCalibration,
    low_kev: float,
    high_kev: float,
    *,
    energy_kev: float = float("nan"),
    n_channels: int | None = None,
) -> ChannelROI:
    """ROI of the channels whose centre energy lies in ``[low_kev, high_kev]``.

    Parameters
    ----------
    name : str
        ROI label.
    calibration : EnergyCalibration
        Detector calibration.
    low_kev, high_kev : float
        Energy window, keV (``low_kev < high_kev``).
    energy_kev : float
        Line energy recorded in the ROI, keV.
    n_channels : int, optional
        Number of detector channels; when given the ROI must lie inside them.

    Returns
    -------
    ChannelROI
    """
    if not (math.isfinite(low_kev) and math.isfinite(high_kev) and low_kev < high_kev):
        raise ValueError(f"ROI {name!r} needs low < high keV, got {low_kev}..{high_kev}")
    first = max(math.ceil(calibration.channel(low_kev) - 1e-9), 0)
    last = math.floor(calibration.channel(high_kev) + 1e-9)
    if last < first:
        raise ValueError(
            f"ROI {name!r} ({low_kev:.3f}..{high_kev:.3f} keV) holds no channel with this "
            "calibration; widen it"
        )
    if n_channels is not None and first >= n_channels:
        raise ValueError(
            f"ROI {name!r} ({low_kev:.3f}..{high_kev:.3f} keV) starts past the detector's "
            f"{n_channels} channels (last channel at "
            f"{calibration.energy_kev(n_channels - 1):.3f} keV)"
        )
    if n_channels is not None:
        last = min(last, n_channels - 1)
    return ChannelROI(name, first, last, energy_kev)


def element_roi(
    element: str,
    calibration: EnergyCalibration,
    line: str = "Ka",
    *,
    width_kev: float | None = None,
    resolution: DetectorResolution | None = None,
    n_channels: int | None = None,
) -> ChannelROI:
    """ROI around an element's emission line.

    Parameters
    ----------
    element : str
        Chemical symbol.
    calibration : EnergyCalibration
        Detector calibration.
    line : str
        Line name (see :data:`LINE_NAMES`).
    width_kev : float, optional
        Full width of the window, keV. By default twice the detector FWHM at the line
        (±1 FWHM, about 98 % of the peak).
    resolution : DetectorResolution, optional
        Detector resolution used when ``width_kev`` is not given (default SDD values).
    n_channels : int, optional
        Number of detector channels; the ROI is checked against it.

    Returns
    -------
    ChannelROI
        Named ``"<element> <line>"``, e.g. ``"Cu Ka"``.
    """
    energy = line_energy_kev(element, line)
    if width_kev is None:
        width_kev = 2.0 * (resolution or DetectorResolution()).fwhm_kev(energy)
    if not (math.isfinite(width_kev) and width_kev > 0.0):
        raise ValueError(f"ROI width must be a positive number of keV, got {width_kev}")
    return channel_roi(
        f"{element.strip()} {line.strip()}",
        calibration,
        energy - width_kev / 2.0,
        energy + width_kev / 2.0,
        energy_kev=energy,
        n_channels=n_channels,
    )


def argon_roi(
    calibration: EnergyCalibration,
    *,
    width_kev: float | None = None,
    resolution: DetectorResolution | None = None,
    n_channels: int | None = None,
) -> ChannelROI:
    """ROI of Ar K-alpha (2.96 keV) from the air path, used to normalise by Ar counts."""
    return element_roi(
        "Ar",
        calibration,
        "Ka",
        width_kev=width_kev,
        resolution=resolution,
        n_channels=n_channels,
    )
