"""Names, version and chunking of the raw µ-XRF scan layout (``asirp.raw_xrf`` version 1).

The layout itself (groups, datasets, attributes, units) is described in :mod:`asirp.xrf.raw`;
:mod:`asirp.xrf.raw_writer` writes it and :mod:`asirp.xrf.raw_reader` reads it, both with the
dataset paths and defaults below.
"""

from __future__ import annotations

LAYOUT_NAME = "asirp.raw_xrf"
"""Value of the ``layout`` attribute of ``/entry``."""
LAYOUT_VERSION = 1
"""Value of the ``layout_version`` attribute of ``/entry``."""

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
"""Channels per spectra chunk (the granularity of ROI reads)."""
DEFAULT_CHUNK_BYTES = 1 << 20
"""Target size of a spectra chunk, bytes (sets the points per chunk)."""
READ_CACHE_BYTES = 64 << 20
"""HDF5 chunk cache used when reading (bytes), large enough for a slab of ROI chunks."""


def chunk_shape(
    shape: tuple[int, int, int], itemsize: int, chunk_channels: int, chunk_bytes: int
) -> tuple[int, int, int]:
    """Chunk shape ``(points, D, channels)`` of spectra of ``shape`` ``(P, D, C)``.

    Parameters
    ----------
    shape : (int, int, int)
        Shape of the spectra ``(P, D, C)``.
    itemsize : int
        Bytes per stored count.
    chunk_channels : int
        Channels per chunk (at most ``C``).
    chunk_bytes : int
        Target chunk size, bytes: as many points as fit (at least 1, at most ``P``).

    Returns
    -------
    (int, int, int)
        The chunk shape; a chunk holds every detector element.
    """
    n_points, n_detectors, n_channels = shape
    channels = max(1, min(chunk_channels, n_channels))
    points = max(1, min(n_points, chunk_bytes // max(1, n_detectors * channels * itemsize)))
    return (points, n_detectors, channels)
