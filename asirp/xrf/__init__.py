"""µ-XRF maps: raw scans, emission lines, map assembly, map tools, exports and settings.

Modules
-------
:mod:`asirp.xrf.lines`
    Line energies (xraylib), energy calibration, detector resolution, channel ROIs.
:mod:`asirp.xrf.raw`
    Raw scans in memory (:class:`RawXRFScan`) and in HDF5 (NeXus-style layout documented
    there), with partial ROI reads (:class:`RawScanFile`, :func:`read_roi_sums`).
:mod:`asirp.xrf.formats`
    The files beamlines write, read into a :class:`RawXRFScan` (:func:`read_scan`, format
    found by :func:`detect_format`): APS MDA step scans (:mod:`asirp.xrf.mda`), APS XRF-Maps
    fly scans with their companion MDA file (:mod:`asirp.xrf.aps_fly`), Diamond Xspress3
    NeXus (:mod:`asirp.xrf.xspress3`) and the project's raw HDF5.
:mod:`asirp.xrf.maps`
    Map grid from positions (raster, snake, fly), channel-adding, dead time, I0/Ar
    normalisation, :class:`XRFMap` (feeds :func:`asirp.restore`).
:mod:`asirp.xrf.background`
    The continuum under an ROI: net counts from side windows, or SNIP on the summed spectrum.
:mod:`asirp.xrf.fitted`
    Fitted maps: PyMca's fast linear fit of every spectrum with a PyMca ``.cfg``.
:mod:`asirp.xrf.element_check`
    Detector elements with no signal or an anomalous dead time, left out of the sum.
:mod:`asirp.xrf.tools`
    Threshold, flip, rotate, crop.
:mod:`asirp.xrf.export`
    NeXus map, x-y-counts text, PNG with colour and scale bars, intensity-fluctuation view.
:mod:`asirp.xrf.spectra`
    Readers for single spectra: PyMca ``.spe`` and one-column ``.mca``, PyMca ``.cfg``
    (read by PyMca's ``ConfigDict``) calibration.
:mod:`asirp.xrf.config`, :mod:`asirp.xrf.workflow`
    The ``asirp xrf-map`` settings (TOML) and work.
:mod:`asirp.xrf.synthetic`
    Small synthetic raw scans for tests and benchmarks.

Examples
--------
>>> from asirp.xrf import build_map  # doctest: +SKIP
>>> cu = build_map("scan.h5", "Cu", normalize_by="i0", dead_time=True)  # doctest: +SKIP
>>> net = build_map("scan.mda", "Cu", background="linear")  # doctest: +SKIP
>>> fitted = build_map("scan.mda", "Cu", fit_config="CaFeCu.cfg")  # doctest: +SKIP
>>> restored = cu.restore("richardson_lucy", beam_fwhm_um=50)  # doctest: +SKIP
"""

from asirp.xrf.formats import FORMATS, detect_format, read_scan
from asirp.xrf.lines import (
    LINE_NAMES,
    ChannelROI,
    DetectorResolution,
    EnergyCalibration,
    argon_roi,
    channel_roi,
    element_roi,
    line_energy_kev,
)
from asirp.xrf.maps import (
    MapGrid,
    XRFMap,
    build_map,
    dead_time_correct,
    element_counts,
    infer_grid,
    normalize,
)
from asirp.xrf.raw import (
    RawScanFile,
    RawXRFScan,
    ROISums,
    read_raw_scan,
    read_roi_sums,
    write_raw_scan,
)

__all__ = [
    "FORMATS",
    "LINE_NAMES",
    "ChannelROI",
    "DetectorResolution",
    "EnergyCalibration",
    "MapGrid",
    "ROISums",
    "RawScanFile",
    "RawXRFScan",
    "XRFMap",
    "argon_roi",
    "build_map",
    "channel_roi",
    "dead_time_correct",
    "detect_format",
    "element_counts",
    "element_roi",
    "infer_grid",
    "line_energy_kev",
    "normalize",
    "read_raw_scan",
    "read_roi_sums",
    "read_scan",
    "write_raw_scan",
]
