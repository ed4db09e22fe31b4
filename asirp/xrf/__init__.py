"""µ-XRF maps: raw scans, emission lines, map assembly, map tools, exports and configuration.

Modules
-------
:mod:`asirp.xrf.lines`
    Line energies (xraylib), energy calibration, detector resolution, channel ROIs.
:mod:`asirp.xrf.raw`
    Raw scans in memory (:class:`RawXRFScan`) and in HDF5 (NeXus-style layout documented
    there), with partial ROI reads.
"""

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
from asirp.xrf.raw import (
    RawScanFile,
    RawXRFScan,
    ROISums,
    read_raw_scan,
    read_roi_sums,
    write_raw_scan,
)

__all__ = [
    "LINE_NAMES",
    "ChannelROI",
    "DetectorResolution",
    "EnergyCalibration",
    "ROISums",
    "RawScanFile",
    "RawXRFScan",
    "argon_roi",
    "channel_roi",
    "element_roi",
    "line_energy_kev",
    "read_raw_scan",
    "read_roi_sums",
    "write_raw_scan",
]
