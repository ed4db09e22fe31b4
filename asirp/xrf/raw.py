"""Raw µ-XRF scans: per-point spectra of each detector element, positions, I0 and times.

A raw scan is a list of measured points (raster, snake or fly lines; the map geometry is found
later from the positions, see :mod:`asirp.xrf.maps`). :class:`RawXRFScan` holds it in memory;
:func:`write_raw_scan` and :func:`read_raw_scan` store it as HDF5 in the NeXus-style layout
below; :class:`RawScanFile` and :func:`read_roi_sums` read only what a map needs (ROI channel
slabs, never the whole spectra).

HDF5 layout (``asirp.raw_xrf`` version 1)::

    /entry                          NX_class=NXentry; default="data"; layout="asirp.raw_xrf",
                                    layout_version=1
      title                         str, optional (metadata["title"])
      notes                         NXnote: type="application/json", data=metadata (JSON str)
      sample                        NXsample: name (metadata["sample"], "" if absent)
      positioners                   NXcollection
        x, y                        float64 (P,)       stage position of each point, µm (units=um)
        time                        float64 (P,)       time since scan start, s
        line_index                  int64 (P,)         scan line (or fly line) of each point
      instrument                    NXinstrument
        xrf                         NXdetector; attrs calibration_offset_kev,
                                    calibration_gain_kev_per_channel, calibration_quadratic_kev,
                                    first_channel (detector channel of data[..., 0])
          data                      uint/int (P, D, C)  counts per point, detector element, channel
          energy                    float64 (C,)       channel centre energies, keV
          live_time, real_time      float64 (P, D)     per point and element, s
        i0                          NXmonitor
          data                      float64 (P,)       incident-flux monitor, counts
      data                          NXdata: signal="data", axes=[".", ".", "energy"],
                                    x_indices=0, y_indices=0, energy_indices=2; hard links to
                                    instrument/xrf/data, instrument/xrf/energy, positioners/x, y

``P`` points, ``D`` detector elements, ``C`` channels. ``data`` is chunked as
``(chunk_points, D, chunk_channels)`` (1 MiB: 2048 points x 4 elements x 64 uint16 channels), so a
channel ROI of a few tens of channels reads one or two slabs of chunks and nothing else.
Counts are stored as uint16 when they all fit (``narrow=True``, the default; reading returns
the stored dtype), which halves what an ROI read moves. Compression (``compression=None | "lzf"
| "gzip"``) and a Fletcher-32 checksum per chunk (``checksum=True``: a corrupted chunk becomes
an error instead of silent garbage) are optional and off by default: on the 182 x 162 x 4 x 4096
benchmark (``bench/bench_xrf_path.py --layouts``) each made the ROI read several times slower.
Files are written to a temporary name and renamed when complete.

Every reading error (missing file or dataset, wrong rank or length, non-finite positions,
truncated or corrupt file) raises :class:`asirp.io.InputFileError` naming the file and the
dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp.io import InputFileError
from asirp.safe_files import atomic_write
from asirp.xrf.lines import ChannelROI, EnergyCalibration

LAYOUT_NAME = "asirp.raw_xrf"
LAYOUT_VERSION = 1

SPECTRA = "entry/instrument/xrf/data"
ENERGY = "entry/instrument/xrf/energy"
LIVE_TIME = "entry/instrument/xrf/live_time"
REAL_TIME = "entry/instrument/xrf/real_time"
DETECTOR = "entry/instrument/xrf"
I0 = "entry/instrument/i0/data"
X = "entry/positioners/x"
Y = "entry/positioners/y"
TIME = "entry/positioners/time"
LINE_INDEX = "entry/positioners/line_index"
NOTES = "entry/notes/data"

DEFAULT_CHUNK_CHANNELS = 64
DEFAULT_CHUNK_BYTES = 1 << 20
READ_CACHE_BYTES = 64 << 20
"""HDF5 chunk cache used when reading (bytes), large enough for a slab of ROI chunks."""

ChannelSelection = ChannelROI | tuple[int, int] | None


def _json_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from None
    return metadata


def _check_points(
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
    """Validate and convert the per-point arrays; raise ValueError naming the array."""
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
        checked = _check_points(
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
        object.__setattr__(self, "metadata", _json_metadata(self.metadata))
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


def _chunk_shape(
    shape: tuple[int, int, int], itemsize: int, chunk_channels: int, chunk_bytes: int
) -> tuple[int, int, int]:
    n_points, n_detectors, n_channels = shape
    channels = max(1, min(chunk_channels, n_channels))
    points = max(1, min(n_points, chunk_bytes // max(1, n_detectors * channels * itemsize)))
    return (points, n_detectors, channels)


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
    """Write a raw scan as HDF5 in the layout of the module notes (atomically).

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
    chunks = _chunk_shape(spectra.shape, stored.itemsize, chunk_channels, chunk_bytes)
    with (
        atomic_write(path, overwrite=overwrite) as output,
        h5py.File(output.file, "w") as handle,
    ):
        entry = handle.create_group("entry")
        entry.attrs.update(
            NX_class="NXentry",
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
        monitor = instrument.create_group("i0")
        monitor.attrs["NX_class"] = "NXmonitor"
        monitor.create_dataset("data", data=scan.i0).attrs["units"] = "counts"

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


class RawScanFile:
    """An open raw-scan file that reads parts on demand (context manager).

    Opening checks the layout: every dataset present, ranks and lengths consistent, the
    calibration valid. Per-point arrays and spectra are read only when asked for.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file written by :func:`write_raw_scan` (or by another program in the same
        layout).

    Raises
    ------
    asirp.io.InputFileError
        For a missing, truncated, corrupt or inconsistent file (the message names the file and
        the dataset).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(f"raw scan file not found: {self.path}")
        try:
            self._handle = h5py.File(self.path, "r", rdcc_nbytes=READ_CACHE_BYTES)
        except Exception as error:
            raise InputFileError(
                f"cannot open raw scan {self.path} (truncated, corrupt or not HDF5): "
                f"{type(error).__name__}: {error}"
            ) from error
        try:
            self._inspect()
        except BaseException:
            self._handle.close()
            raise

    def _fail(self, dataset: str, problem: str) -> InputFileError:
        return InputFileError(f"raw scan {self.path}: /{dataset}: {problem}")

    def _dataset(self, name: str, ndim: int, kinds: str) -> h5py.Dataset:
        try:
            item = self._handle.get(name)
        except Exception as error:
            raise self._fail(name, f"unreadable ({type(error).__name__}: {error})") from error
        if item is None:
            raise self._fail(name, "missing dataset")
        if not isinstance(item, h5py.Dataset):
            raise self._fail(name, "is a group, expected a dataset")
        if item.ndim != ndim:
            raise self._fail(name, f"expected {ndim}-D, got shape {item.shape}")
        if item.dtype.kind not in kinds:
            raise self._fail(name, f"unexpected dtype {item.dtype}")
        return item

    def _inspect(self) -> None:
        self._spectra = self._dataset(SPECTRA, 3, "iu")
        n_points, n_detectors, n_channels = self._spectra.shape
        if min(n_points, n_detectors, n_channels) < 1:
            raise self._fail(SPECTRA, f"empty spectra, shape {self._spectra.shape}")
        self._shapes = {
            X: (n_points,),
            Y: (n_points,),
            TIME: (n_points,),
            LINE_INDEX: (n_points,),
            I0: (n_points,),
            LIVE_TIME: (n_points, n_detectors),
            REAL_TIME: (n_points, n_detectors),
        }
        for name, shape in self._shapes.items():
            kinds = "iu" if name == LINE_INDEX else "biuf"
            item = self._dataset(name, len(shape), kinds)
            if item.shape != shape:
                raise self._fail(
                    name,
                    f"shape {item.shape} does not match the spectra's {n_points} points"
                    + (f" x {n_detectors} detector elements" if len(shape) == 2 else "")
                    + f" ({SPECTRA} has shape {self._spectra.shape})",
                )
        attrs = self._handle[DETECTOR].attrs
        coefficients = {}
        for key in (
            "calibration_offset_kev",
            "calibration_gain_kev_per_channel",
            "calibration_quadratic_kev",
        ):
            if key not in attrs:
                raise self._fail(DETECTOR, f"missing attribute {key!r}")
            coefficients[key.removeprefix("calibration_")] = float(np.asarray(attrs[key]))
        try:
            self.calibration = EnergyCalibration(**coefficients)
        except (TypeError, ValueError) as error:
            raise self._fail(DETECTOR, f"invalid calibration: {error}") from error
        first = int(np.asarray(attrs.get("first_channel", 0)))
        if first < 0:
            raise self._fail(DETECTOR, f"first_channel must be >= 0, got {first}")
        self.first_channel = first
        self.metadata: dict[str, Any] = {}
        if NOTES in self._handle:
            try:
                text = self._handle[NOTES][()]
                text = text.decode() if isinstance(text, bytes) else str(text)
                metadata = json.loads(text)
            except Exception as error:
                raise self._fail(NOTES, f"metadata is not valid JSON: {error}") from error
            if not isinstance(metadata, dict):
                raise self._fail(NOTES, "metadata must be a JSON object")
            self.metadata = metadata

    @property
    def n_points(self) -> int:
        """Number of measured points."""
        return int(self._spectra.shape[0])

    @property
    def n_detectors(self) -> int:
        """Number of detector elements."""
        return int(self._spectra.shape[1])

    @property
    def n_channels(self) -> int:
        """Number of channels stored."""
        return int(self._spectra.shape[2])

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """HDF5 chunk shape of the spectra (None if contiguous)."""
        return self._spectra.chunks

    def _read(self, name: str, selection: Any = ()) -> np.ndarray:
        try:
            return np.asarray(self._handle[name][selection])
        except Exception as error:
            raise self._fail(
                name, f"cannot read (truncated or corrupt?): {type(error).__name__}: {error}"
            ) from error

    def read_points(self) -> dict[str, np.ndarray]:
        """Per-point arrays, validated.

        Returns
        -------
        dict
            ``x_um``, ``y_um``, ``i0``, ``time_s`` ``(P,)`` float64; ``live_time_s``,
            ``real_time_s`` ``(P, D)`` float64; ``line_index`` ``(P,)`` int64.
        """
        raw = {
            "x_um": self._read(X),
            "y_um": self._read(Y),
            "i0": self._read(I0),
            "live_time_s": self._read(LIVE_TIME),
            "real_time_s": self._read(REAL_TIME),
            "time_s": self._read(TIME),
            "line_index": self._read(LINE_INDEX),
        }
        where = {
            "x_um": X,
            "y_um": Y,
            "i0": I0,
            "live_time_s": LIVE_TIME,
            "real_time_s": REAL_TIME,
            "time_s": TIME,
            "line_index": LINE_INDEX,
        }
        for name, array in raw.items():
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise self._fail(where[name], "holds non-finite values (NaN or Inf)")
        try:
            return _check_points(self.n_points, self.n_detectors, **raw)
        except (TypeError, ValueError) as error:
            name = str(error).split()[0]
            raise self._fail(where.get(name, LIVE_TIME), str(error)) from error

    def _channel_range(self, channels: ChannelSelection) -> tuple[int, int]:
        """Inclusive detector-channel range of a selection, checked against the file."""
        if channels is None:
            return self.first_channel, self.first_channel + self.n_channels - 1
        if isinstance(channels, ChannelROI):
            first, last = channels.first_channel, channels.last_channel
        else:
            try:
                first, last = (int(v) for v in channels)
            except (TypeError, ValueError):
                raise TypeError(
                    f"channels must be None, a ChannelROI or (first, last), got {channels!r}"
                ) from None
        held_last = self.first_channel + self.n_channels - 1
        if not self.first_channel <= first <= last <= held_last:
            raise ValueError(
                f"channel range {first}..{last} is outside the channels stored in {self.path} "
                f"({self.first_channel}..{held_last})"
            )
        return first, last

    def read_spectra(self, channels: ChannelSelection = None) -> np.ndarray:
        """Spectra ``(P, D, n)`` for all channels or an inclusive range (ROI or pair)."""
        first, last = self._channel_range(channels)
        start, stop = first - self.first_channel, last + 1 - self.first_channel
        return self._read(SPECTRA, np.s_[:, :, start:stop])

    def _unfiltered_chunks(self) -> bool:
        """Whether the spectra are chunked without filters (raw chunks can be read directly)."""
        if self._spectra.chunks is None:
            return False
        return self._spectra.id.get_create_plist().get_nfilters() == 0

    def _roi_sum_direct(self, start: int, stop: int, out: np.ndarray) -> None:
        """Sum channels ``start:stop`` into ``out`` ``(P, D)`` from raw chunks (no HDF5 selection).

        Each chunk touched is read whole with one ``read_direct_chunk``, so the cost is one read
        per chunk and one reduction, without HDF5's per-element hyperslab copy.
        """
        chunk_points, chunk_detectors, chunk_channels = self._spectra.chunks
        dtype = self._spectra.dtype
        out[...] = 0
        for c0 in range(start // chunk_channels * chunk_channels, stop, chunk_channels):
            low, high = max(start, c0) - c0, min(stop, c0 + chunk_channels) - c0
            for p0 in range(0, self.n_points, chunk_points):
                for d0 in range(0, self.n_detectors, chunk_detectors):
                    _, raw = self._spectra.id.read_direct_chunk((p0, d0, c0))
                    chunk = np.frombuffer(raw, dtype=dtype).reshape(self._spectra.chunks)
                    n_p = min(chunk_points, self.n_points - p0)
                    n_d = min(chunk_detectors, self.n_detectors - d0)
                    out[p0 : p0 + n_p, d0 : d0 + n_d] += chunk[:n_p, :n_d, low:high].sum(
                        axis=2, dtype=np.int64
                    )

    def roi_sums(self, rois: Sequence[ChannelROI]) -> np.ndarray:
        """Counts summed over each ROI ``(P, D, len(rois))``, int64, reading only ROI slabs.

        Unfiltered chunked spectra (the default layout) are read chunk by chunk without HDF5
        selections, the fastest way; other layouts (compressed, checksummed, contiguous) go
        through HDF5 hyperslab reads. Both give the same sums.
        """
        rois = tuple(rois)
        if not rois or not all(isinstance(roi, ChannelROI) for roi in rois):
            raise TypeError("rois must be a non-empty sequence of ChannelROI")
        out = np.empty((self.n_points, self.n_detectors, len(rois)), dtype=np.int64)
        direct = self._unfiltered_chunks()
        block = self._spectra.chunks[0] * 16 if self._spectra.chunks else self.n_points
        for index, roi in enumerate(rois):
            first, last = self._channel_range(roi)
            start, stop = first - self.first_channel, last + 1 - self.first_channel
            if direct:
                try:
                    self._roi_sum_direct(start, stop, out[:, :, index])
                    continue
                except (OSError, ValueError, KeyError):
                    pass  # a missing or damaged chunk: the HDF5 path below reports it
            for p0 in range(0, self.n_points, block):
                slab = self._read(SPECTRA, np.s_[p0 : p0 + block, :, start:stop])
                np.sum(slab, axis=2, dtype=np.int64, out=out[p0 : p0 + block, :, index])
        return out

    def read_scan(self, channels: ChannelSelection = None) -> RawXRFScan:
        """The scan in memory, with all channels or an inclusive channel range."""
        first, _ = self._channel_range(channels)
        spectra = self.read_spectra(channels)
        try:
            return RawXRFScan(
                spectra=spectra,
                calibration=self.calibration,
                metadata=self.metadata,
                first_channel=first,
                **self.read_points(),
            )
        except (TypeError, ValueError) as error:
            raise InputFileError(f"raw scan {self.path}: {error}") from error

    def read_roi_sums(self, rois: Sequence[ChannelROI]) -> ROISums:
        """ROI sums and per-point data (see :class:`ROISums`)."""
        counts = self.roi_sums(rois)
        return ROISums(
            counts=counts,
            rois=tuple(rois),
            calibration=self.calibration,
            metadata=self.metadata,
            n_channels=self.first_channel + self.n_channels,
            **self.read_points(),
        )

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> RawScanFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_raw_scan(path: str | os.PathLike, *, channels: ChannelSelection = None) -> RawXRFScan:
    """Read a raw scan written by :func:`write_raw_scan`.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file.
    channels : ChannelROI or (int, int), optional
        Read only this inclusive detector-channel range (the result's ``first_channel`` says
        where it starts); all channels by default.

    Returns
    -------
    RawXRFScan

    Raises
    ------
    asirp.io.InputFileError
        For a missing, truncated, corrupt or inconsistent file.
    """
    with RawScanFile(path) as raw:
        return raw.read_scan(channels)


def read_roi_sums(path: str | os.PathLike, rois: Sequence[ChannelROI]) -> ROISums:
    """Read ROI-summed counts and the per-point data, without loading the whole spectra.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file.
    rois : sequence of ChannelROI
        Channel ranges to sum (e.g. an element line and Ar K-alpha).

    Returns
    -------
    ROISums
        ``counts`` ``(P, D, len(rois))``; equal to summing the full spectra over each ROI.
    """
    with RawScanFile(path) as raw:
        return raw.read_roi_sums(rois)
