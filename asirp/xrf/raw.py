"""Raw µ-XRF scans: per-point spectra of each detector element, positions, I0 and times.

A raw scan is a list of measured points (raster, snake or fly lines; the map geometry is found
later from the positions, see :mod:`asirp.xrf.maps`). :class:`RawXRFScan` holds it in memory;
:func:`write_raw_scan` and :func:`read_raw_scan` store it as HDF5 in the NeXus-style layout
below; :class:`RawScanFile` and :func:`read_roi_sums` read only what a map needs (ROI channel
slabs, never the whole spectra).

HDF5 layout (``asirp.raw_xrf`` version 1)::

    /                               @default="entry", @creator="asirp", @creator_version, ...
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
        i0                          NXdetector (the ion chamber): type="ion chamber"
          data                      float64 (P,)       incident-flux monitor, counts
      monitor                       NXmonitor: data, a hard link to instrument/i0/data
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

This module is the public entry; the work is done by :mod:`asirp.xrf.raw_model` (the scan in
memory and its checks), :mod:`asirp.xrf.raw_layout` (dataset names, version, chunking),
:mod:`asirp.xrf.raw_writer` and :mod:`asirp.xrf.raw_reader`. Import from here.
"""

from __future__ import annotations

from asirp.xrf.raw_layout import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_CHUNK_CHANNELS,
    DETECTOR,
    ENERGY,
    I0,
    LAYOUT_NAME,
    LAYOUT_VERSION,
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
from asirp.xrf.raw_model import RawXRFScan, ROISums
from asirp.xrf.raw_reader import ChannelSelection, RawScanFile, read_raw_scan, read_roi_sums
from asirp.xrf.raw_writer import write_raw_scan

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_CHUNK_CHANNELS",
    "DETECTOR",
    "ENERGY",
    "I0",
    "LAYOUT_NAME",
    "LAYOUT_VERSION",
    "LINE_INDEX",
    "LIVE_TIME",
    "NOTES",
    "READ_CACHE_BYTES",
    "REAL_TIME",
    "SPECTRA",
    "TIME",
    "ChannelSelection",
    "ROISums",
    "RawScanFile",
    "RawXRFScan",
    "X",
    "Y",
    "read_raw_scan",
    "read_roi_sums",
    "write_raw_scan",
]
