"""Reading raw µ-XRF scans: whole, a channel range, or ROI sums without the spectra.

:class:`RawScanFile` checks the layout of :mod:`asirp.xrf.raw` when it opens a file and reads
parts on demand; :func:`read_raw_scan` and :func:`read_roi_sums` open, read and close. Every
reading error raises :class:`asirp.io.InputFileError` naming the file and the dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from asirp.io import InputFileError, UnsafeInputError, hdf5_node
from asirp.xrf.lines import ChannelROI, EnergyCalibration
from asirp.xrf.raw_layout import (
    DETECTOR,
    I0,
    LINE_INDEX,
    LIVE_TIME,
    NOTES,
    READ_CACHE_BYTES,
    REAL_TIME,
    SPECTRA,
    TIME,
    X,
    Y,
)
from asirp.xrf.raw_model import RawXRFScan, ROISums, check_points

ChannelSelection = ChannelROI | tuple[int, int] | None
"""A channel selection: all channels (``None``), an ROI, or an inclusive ``(first, last)``."""


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

    def _node(self, name: str, optional: bool = False) -> h5py.Group | h5py.Dataset | None:
        """``name`` in the file, never through a link to another file (None: optional, absent)."""
        try:
            return hdf5_node(self._handle, name, f"raw scan {self.path}")
        except UnsafeInputError:
            raise
        except InputFileError:
            if optional:
                return None
            raise self._fail(name, "missing dataset") from None
        except Exception as error:
            raise self._fail(name, f"unreadable ({type(error).__name__}: {error})") from error

    def _dataset(self, name: str, ndim: int, kinds: str) -> h5py.Dataset:
        item = self._node(name)
        if not isinstance(item, h5py.Dataset):
            raise self._fail(name, "is a group, expected a dataset")
        if item.is_virtual or item.external:
            raise UnsafeInputError(
                f"raw scan {self.path}: /{name} keeps its data in other files (virtual or "
                "external storage); ASIRP reads only data inside the file"
            )
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
        attrs = self._node(DETECTOR).attrs
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
        notes = self._node(NOTES, optional=True)
        if notes is not None:
            if not isinstance(notes, h5py.Dataset) or notes.is_virtual or notes.external:
                raise self._fail(NOTES, "metadata must be a string dataset inside the file")
            try:
                text = notes[()]
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
            return check_points(self.n_points, self.n_detectors, **raw)
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
