"""The raw µ-XRF scan in memory (:class:`RawXRFScan`) and ROI sums read from one (:class:`ROISums`).

The checks of the per-point arrays (:func:`check_points`) and of the metadata
(:func:`json_metadata`) are shared with the reader (:mod:`asirp.xrf.raw_reader`), so a scan built
in memory and one read from a file obey the same rules. Storage: :mod:`asirp.xrf.raw`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.xrf.lines import ChannelROI, EnergyCalibration


def json_metadata(metadata: Any) -> dict[str, Any]:
    """Check that scan metadata is a JSON-serialisable dict and return it unchanged.

    Parameters
    ----------
    metadata : Any
        The metadata given.

    Returns
    -------
    dict
        ``metadata`` itself.

    Raises
    ------
    TypeError
        If it is not a dict.
    ValueError
        If it cannot be written as JSON.
    """
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from None
    return metadata


def check_points(
    n_points: int,
    n_detectors: int,
    x_um: Any,
    y_um: Any,
    i0: Any,
    live_time_s: Any,
    real_time_s: Any,
    time_s: Any,
    line_index: Any,
) -> dict[str, np.ndarray]:
    """Validate and convert the per-point arrays; raise ValueError naming the array.

    Parameters
    ----------
    n_points, n_detectors : int
        Points and detector elements of the spectra.
    x_um, y_um, i0, live_time_s, real_time_s, time_s, line_index : array_like
        As in :class:`RawXRFScan`.

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays by name: float64, except ``line_index`` (int64).

    Raises
    ------
    TypeError
        For an array of the wrong kind (not real numbers; not integers for ``line_index``).
    ValueError
        For a wrong shape, non-finite or negative values, or live time above real time.
    """
    out: dict[str, np.ndarray] = {}
    per_point = {"x_um": x_um, "y_um": y_um, "i0": i0, "time_s": time_s}
    for name, value in per_point.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64, copy=False)
        if array.shape != (n_points,):
            raise ValueError(
                f"{name} must have shape ({n_points},) (one per point), got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds non-finite values (NaN or Inf)")
        out[name] = array
    if np.any(out["i0"] < 0):
        raise ValueError("i0 holds negative counts")
    for name, value in (("live_time_s", live_time_s), ("real_time_s", real_time_s)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64, copy=False)
        if array.shape != (n_points, n_detectors):
            raise ValueError(
                f"{name} must have shape ({n_points}, {n_detectors}) (points, detector "
                f"elements), got {array.shape}"
            )
        if not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ValueError(f"{name} must be finite and >= 0 s")
        out[name] = array
    if np.any(out["live_time_s"] > out["real_time_s"] * (1 + 1e-9) + 1e-12):
        raise ValueError("live_time_s exceeds real_time_s at some points")
    index = np.asarray(line_index)
    if index.dtype.kind not in "biu":
        raise TypeError(f"line_index must be integers, got dtype {index.dtype}")
    if index.shape != (n_points,):
        raise ValueError(f"line_index must have shape ({n_points},), got {index.shape}")
    if np.any(index < 0):
        raise ValueError("line_index must be >= 0")
    out["line_index"] = index.astype(np.int64, copy=False)
    return out


@dataclass(frozen=True)
class RawXRFScan:
    """A raw µ-XRF scan in memory: spectra per point and detector element, plus positions.

    Parameters
    ----------
    spectra : numpy.ndarray
        Counts ``(n_points, n_detectors, n_channels)``, integer dtype (kept as given).
    x_um, y_um : numpy.ndarray
        Stage position of each point ``(n_points,)``, µm (float64, finite).
    i0 : numpy.ndarray
        Incident-flux monitor ``(n_points,)``, counts (float64, >= 0).
    live_time_s, real_time_s : numpy.ndarray
        Live and real (elapsed) time of each point and element ``(n_points, n_detectors)``, s;
        live <= real.
    time_s : numpy.ndarray
        Time of each point since the scan started ``(n_points,)``, s.
    line_index : numpy.ndarray
        Scan line (or fly line) of each point ``(n_points,)``, int64 >= 0.
    calibration : EnergyCalibration
        Channel-to-energy calibration of the detector channels.
    metadata : dict
        JSON-serialisable facts: ``sample``, ``beam_fwhm_um``, ``step_um``, ``dwell_s``,
        ``scan_kind`` (``raster`` | ``snake`` | ``fly``), ``incident_energy_kev``, ``seed``, ...
    first_channel : int
        Detector channel number of ``spectra[..., 0]`` (0 unless a channel range was read).
    """

    spectra: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    i0: np.ndarray
    live_time_s: np.ndarray
    real_time_s: np.ndarray
    time_s: np.ndarray
    line_index: np.ndarray
    calibration: EnergyCalibration
    metadata: dict[str, Any] = field(default_factory=dict)
    first_channel: int = 0

    def __post_init__(self) -> None:
        spectra = np.asarray(self.spectra)
        if spectra.dtype.kind not in "iu":
            raise TypeError(f"spectra must be integer counts, got dtype {spectra.dtype}")
        if spectra.ndim != 3 or min(spectra.shape) < 1:
            raise ValueError(
                "spectra must have shape (n_points, n_detectors, n_channels), all >= 1, got "
                f"{spectra.shape}"
            )
        if not isinstance(self.calibration, EnergyCalibration):
            raise TypeError(
                f"calibration must be an EnergyCalibration, got {type(self.calibration).__name__}"
            )
        if isinstance(self.first_channel, bool) or not isinstance(
            self.first_channel, int | np.integer
        ):
            raise TypeError(f"first_channel must be an integer, got {self.first_channel!r}")
        if self.first_channel < 0:
            raise ValueError(f"first_channel must be >= 0, got {self.first_channel}")
        checked = check_points(
            spectra.shape[0],
            spectra.shape[1],
            self.x_um,
            self.y_um,
            self.i0,
            self.live_time_s,
            self.real_time_s,
            self.time_s,
            self.line_index,
        )
        object.__setattr__(self, "spectra", spectra)
        for name, array in checked.items():
            object.__setattr__(self, name, array)
        object.__setattr__(self, "metadata", json_metadata(self.metadata))
        object.__setattr__(self, "first_channel", int(self.first_channel))

    @property
    def n_points(self) -> int:
        """Number of measured points."""
        return int(self.spectra.shape[0])

    @property
    def n_detectors(self) -> int:
        """Number of detector elements."""
        return int(self.spectra.shape[1])

    @property
    def n_channels(self) -> int:
        """Number of channels held in ``spectra``."""
        return int(self.spectra.shape[2])

    @property
    def channels(self) -> np.ndarray:
        """Detector channel numbers of ``spectra``'s last axis ``(n_channels,)``."""
        return np.arange(self.first_channel, self.first_channel + self.n_channels)

    def energy_kev(self) -> np.ndarray:
        """Channel centre energies ``(n_channels,)``, keV."""
        return np.asarray(self.calibration.energy_kev(self.channels))

    def roi_counts(self, roi: ChannelROI) -> np.ndarray:
        """Counts summed over an ROI's channels ``(n_points, n_detectors)``, int64."""
        start = roi.first_channel - self.first_channel
        stop = roi.last_channel + 1 - self.first_channel
        if start < 0 or stop > self.n_channels:
            raise ValueError(
                f"ROI {roi.name!r} (channels {roi.first_channel}..{roi.last_channel}) is not "
                f"inside the channels held ({self.first_channel}.."
                f"{self.first_channel + self.n_channels - 1})"
            )
        return self.spectra[:, :, start:stop].sum(axis=2, dtype=np.int64)


@dataclass(frozen=True)
class ROISums:
    """ROI-summed counts of a raw scan with its per-point data, read without the spectra.

    Parameters
    ----------
    counts : numpy.ndarray
        Counts in each ROI ``(n_points, n_detectors, n_rois)``, int64.
    rois : tuple of ChannelROI
        The ROIs, in the order of ``counts``' last axis.
    x_um, y_um, i0, live_time_s, real_time_s, time_s, line_index
        As in :class:`RawXRFScan`.
    calibration : EnergyCalibration
        Detector calibration.
    metadata : dict
        Scan metadata.
    n_channels : int
        Number of detector channels in the file.
    """

    counts: np.ndarray
    rois: tuple[ChannelROI, ...]
    x_um: np.ndarray
    y_um: np.ndarray
    i0: np.ndarray
    live_time_s: np.ndarray
    real_time_s: np.ndarray
    time_s: np.ndarray
    line_index: np.ndarray
    calibration: EnergyCalibration
    metadata: dict[str, Any]
    n_channels: int

    @property
    def n_points(self) -> int:
        """Number of measured points."""
        return int(self.counts.shape[0])

    @property
    def n_detectors(self) -> int:
        """Number of detector elements."""
        return int(self.counts.shape[1])

    def roi_counts(self, roi: ChannelROI) -> np.ndarray:
        """Counts of one of the ROIs read ``(n_points, n_detectors)``, int64."""
        for index, held in enumerate(self.rois):
            if (held.first_channel, held.last_channel) == (roi.first_channel, roi.last_channel):
                return self.counts[:, :, index]
        names = ", ".join(r.name for r in self.rois)
        raise ValueError(f"ROI {roi.name!r} was not read (ROIs held: {names})")
