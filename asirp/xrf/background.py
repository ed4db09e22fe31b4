"""The continuum under an element's ROI, per point and detector element ("net ROI counts").

An ROI sum (channel-adding, :func:`asirp.xrf.maps.element_counts`) holds the line's counts plus
the continuum beneath it (scatter, bremsstrahlung, incomplete charge collection). Three choices
(:data:`BACKGROUNDS`):

``"none"``
    Plain channel sums (gross ROI counts).
``"linear"``
    The classic net ROI counts, as PyMca's ROI table and MAPS give them: two side windows next
    to the ROI (:func:`side_windows`), their mean counts per channel joined by a straight line
    under the peak, summed over the ROI's channels, per point and detector element. Exact for a
    flat or sloped continuum; unbiased at any count level (a per-point mean of Poisson counts is
    unbiased even at 0.1 count per channel), at the price of the side windows' Poisson noise.
    This is what ``asirp xrf-map`` does by default (:data:`DEFAULT_BACKGROUND`).
``"snip"``
    PyMca's SNIP (``PyMca5.PyMcaMath.fitting.SpecfitFuns.snip1d``) on the **summed** spectrum of
    each detector element (all points; smoothed over half the ROI's width first, see
    :func:`smoothing_width`), which has counts enough for SNIP to follow a curved continuum
    and to see a neighbouring peak as a peak; the continuum it finds under the ROI is
    then shared out among the points in proportion to each point's counts in the side windows.
    SNIP on each point's own spectrum is not offered: at the few counts per channel of a map
    pixel it clips into the Poisson noise and underestimates the continuum (a bias, not noise).
    Prefer it to ``"linear"`` when a neighbouring line reaches into a side window or the
    continuum is curved (on the flank of the scatter peaks); the map's total background is then
    right, its distribution over the points follows the side windows.

Side windows: each half the ROI's width (at least :data:`MIN_SIDE_CHANNELS`), a quarter of the
ROI's width away from it, so that less than 0.1 % of a Gaussian peak whose ROI is ±1 FWHM
reaches them (:func:`asirp.xrf.lines.element_roi`'s default). Near the end of the detector's
channels only one window may fit; the continuum is then taken as flat at that window's level.

Net counts can be negative where a point holds no line counts: that is the unbiased estimate,
and it is kept (clipping at zero would bias weak maps upwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d

from asirp.io import check_declared_size
from asirp.xrf.lines import ChannelROI
from asirp.xrf.raw_model import RawXRFScan, ROISums
from asirp.xrf.raw_reader import RawScanFile

BACKGROUNDS = ("none", "linear", "snip")
"""The continuum estimates :func:`estimate_background` knows."""

DEFAULT_BACKGROUND = "linear"
"""What ``asirp xrf-map`` subtracts by default: the net ROI counts a beamline user expects.

:func:`asirp.xrf.maps.build_map` itself defaults to ``"none"`` (plain channel sums), so that maps
from ROI sums read without side windows and from full spectra stay the same unless asked."""

MIN_SIDE_CHANNELS = 2
"""Fewest channels of a side window (a shorter window at the end of the detector is dropped)."""

SIDE_WIDTH_FRACTION = 0.5
"""Width of each side window, as a fraction of the ROI's width (about 1 FWHM by default)."""

SIDE_GAP_FRACTION = 0.25
"""Gap between the ROI and each side window, as a fraction of the ROI's width."""

SNIP_CONTEXT_WIDTHS = 3
"""Channels each side of the ROI summed for SNIP, in ROI widths (SNIP needs the peak's
surroundings to tell it from the continuum)."""


def check_background(background: Any) -> str:
    """Validate a background choice and return it (lower case).

    Raises
    ------
    ValueError
        For anything but one of :data:`BACKGROUNDS` (None counts as ``"none"``).
    """
    if background is None:
        return "none"
    if not isinstance(background, str) or background.strip().lower() not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    return background.strip().lower()


@dataclass(frozen=True)
class SideWindows:
    """The channel windows each side of an ROI where the continuum is measured.

    Attributes
    ----------
    roi : ChannelROI
        The ROI they belong to.
    left, right : ChannelROI or None
        Windows below and above the ROI (None where the detector's channels end).
    """

    roi: ChannelROI
    left: ChannelROI | None
    right: ChannelROI | None

    @property
    def rois(self) -> tuple[ChannelROI, ...]:
        """The windows present, left first."""
        return tuple(w for w in (self.left, self.right) if w is not None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (channel ranges)."""
        return {
            "left": None if self.left is None else self.left.as_dict(),
            "right": None if self.right is None else self.right.as_dict(),
        }


def side_windows(roi: ChannelROI, n_channels: int, *, first_channel: int = 0) -> SideWindows:
    """The side windows of an ROI inside the channels ``first_channel..n_channels - 1``.

    Parameters
    ----------
    roi : ChannelROI
        The element's ROI.
    n_channels : int
        One past the last detector channel available.
    first_channel : int
        First detector channel available.

    Returns
    -------
    SideWindows

    Raises
    ------
    ValueError
        When neither window fits in the channels.
    """
    width = max(MIN_SIDE_CHANNELS, round(roi.n_channels * SIDE_WIDTH_FRACTION))
    gap = round(roi.n_channels * SIDE_GAP_FRACTION)
    left_last = roi.first_channel - gap - 1
    left_first = max(first_channel, left_last - width + 1)
    right_first = roi.last_channel + gap + 1
    right_last = min(n_channels - 1, right_first + width - 1)
    left = right = None
    if left_last - left_first + 1 >= MIN_SIDE_CHANNELS:
        left = ChannelROI(f"{roi.name} background below", left_first, left_last)
    if right_last - right_first + 1 >= MIN_SIDE_CHANNELS:
        right = ChannelROI(f"{roi.name} background above", right_first, right_last)
    if left is None and right is None:
        raise ValueError(
            f"no room for background windows next to ROI {roi.name!r} (channels "
            f"{roi.first_channel}..{roi.last_channel} of {first_channel}..{n_channels - 1}); "
            "use background='none'"
        )
    return SideWindows(roi, left, right)


def snip_width(roi: ChannelROI) -> int:
    """SNIP's clipping width for an ROI, channels: the ROI's width (about 2 FWHM of the line)."""
    return max(3, roi.n_channels)


def smoothing_width(roi: ChannelROI) -> int:
    """Moving-mean width applied before SNIP, channels: half the ROI's width, odd, >= 3."""
    return max(3, (roi.n_channels // 2) | 1)


def snip_context(roi: ChannelROI, n_channels: int, *, first_channel: int = 0) -> tuple[int, int]:
    """Inclusive channel range summed for SNIP around an ROI (clipped to the channels held)."""
    margin = SNIP_CONTEXT_WIDTHS * roi.n_channels
    return (
        max(first_channel, roi.first_channel - margin),
        min(n_channels - 1, roi.last_channel + margin),
    )


@dataclass(frozen=True)
class SummedSpectra:
    """Spectra summed over all points, per detector element, over a channel range.

    Attributes
    ----------
    counts : numpy.ndarray
        ``(n_detectors, n)`` int64 counts.
    first_channel : int
        Detector channel of ``counts[:, 0]``.
    """

    counts: np.ndarray
    first_channel: int

    def window_sum(self, window: ChannelROI) -> np.ndarray:
        """Counts of each detector element in a window ``(n_detectors,)``, float64."""
        start = window.first_channel - self.first_channel
        stop = window.last_channel + 1 - self.first_channel
        if start < 0 or stop > self.counts.shape[1]:
            raise ValueError(
                f"window {window.name!r} lies outside the summed channels "
                f"{self.first_channel}..{self.first_channel + self.counts.shape[1] - 1}"
            )
        return self.counts[:, start:stop].sum(axis=1, dtype=np.float64)


def summed_spectra(scan: RawXRFScan, first: int, last: int) -> SummedSpectra:
    """Sum a scan's spectra over its points in the inclusive channel range ``first..last``."""
    start, stop = first - scan.first_channel, last + 1 - scan.first_channel
    if start < 0 or stop > scan.n_channels:
        raise ValueError(
            f"channels {first}..{last} are not all held by the scan ({scan.first_channel}.."
            f"{scan.first_channel + scan.n_channels - 1})"
        )
    return SummedSpectra(scan.spectra[:, :, start:stop].sum(axis=0, dtype=np.int64), first)


@dataclass(frozen=True)
class BackgroundEstimate:
    """The continuum under an ROI per point and detector element.

    Attributes
    ----------
    counts : numpy.ndarray
        ``(n_points, n_detectors)`` float64 continuum counts under the ROI (all detector
        elements of the scan; 0 for ``"none"``).
    method : str
        One of :data:`BACKGROUNDS`.
    windows : SideWindows or None
        The side windows used (None for ``"none"``).
    snip_width_channels : int or None
        SNIP's width (``"snip"`` only).
    """

    counts: np.ndarray
    method: str
    windows: SideWindows | None = None
    snip_width_channels: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """How the background was estimated (JSON-serialisable, for map metadata)."""
        return {
            "method": self.method,
            "side_windows": None if self.windows is None else self.windows.as_dict(),
            "snip_width_channels": self.snip_width_channels,
        }


def _window_counts(source: RawXRFScan | ROISums, window: ChannelROI, method: str) -> np.ndarray:
    try:
        return source.roi_counts(window).astype(np.float64)
    except ValueError:
        held = (
            "ROI sums read without the side windows"
            if isinstance(source, ROISums)
            else "a scan whose channels do not reach them"
        )
        raise ValueError(
            f"background={method!r} needs the counts in the side windows of the ROI (channels "
            f"{window.first_channel}..{window.last_channel}), and the source is {held}: give "
            "the spectra (a RawXRFScan or the scan file), read the windows too "
            "(asirp.xrf.background.side_windows), or use background='none'"
        ) from None


def _linear(roi: ChannelROI, windows: SideWindows, counts: dict[str, np.ndarray]) -> np.ndarray:
    """Straight line through the windows' mean counts per channel, summed over the ROI."""
    means = {}
    centres = {}
    for side, window in (("left", windows.left), ("right", windows.right)):
        if window is not None:
            means[side] = counts[side] / window.n_channels
            centres[side] = (window.first_channel + window.last_channel) / 2.0
    if len(means) == 1:
        (level,) = means.values()
        return level * roi.n_channels
    roi_centre = (roi.first_channel + roi.last_channel) / 2.0
    slope_fraction = (roi_centre - centres["left"]) / (centres["right"] - centres["left"])
    per_channel = means["left"] + (means["right"] - means["left"]) * slope_fraction
    return per_channel * roi.n_channels


def _snip(
    roi: ChannelROI,
    windows: SideWindows,
    side_counts: np.ndarray,
    summed: SummedSpectra,
) -> tuple[np.ndarray, int]:
    """SNIP on the summed spectra, its ROI continuum shared out by the points' side counts."""
    from PyMca5.PyMcaMath.fitting import SpecfitFuns  # lazy: PyMca's compiled module

    width = snip_width(roi)
    start = roi.first_channel - summed.first_channel
    stop = roi.last_channel + 1 - summed.first_channel
    if start < 0 or stop > summed.counts.shape[1]:
        raise ValueError(
            f"the summed spectra (channels {summed.first_channel}.."
            f"{summed.first_channel + summed.counts.shape[1] - 1}) do not cover ROI {roi.name!r}"
        )
    # SNIP clips to the lows of the noise, so it underestimates a noisy continuum by about one
    # noise sigma; a moving mean over half the ROI (about 1 FWHM) first, as PyMca smooths each
    # spectrum before SNIP in its fast fit, cuts that bias (measured on 400 points of 0.6
    # counts per channel: 10 % low unsmoothed, 3 % smoothed).
    smoothed = uniform_filter1d(
        summed.counts.astype(np.float64), smoothing_width(roi), axis=1, mode="nearest"
    )
    continuum = np.atleast_2d(SpecfitFuns.snip1d(smoothed, width))
    roi_continuum = continuum[:, start:stop].sum(axis=1)  # (D,)
    summed_side = sum(summed.window_sum(w) for w in windows.rois)  # (D,)
    n_points = side_counts.shape[0]
    # A detector element with no side counts at all shares its continuum out evenly.
    safe_side = np.where(summed_side > 0, summed_side, 1.0)
    share = np.where(summed_side > 0, side_counts / safe_side, 1.0 / n_points)
    return share * roi_continuum, width


def estimate_background(
    source: RawXRFScan | ROISums,
    roi: ChannelROI,
    method: str,
    *,
    windows: SideWindows | None = None,
    summed: SummedSpectra | None = None,
) -> BackgroundEstimate:
    """The continuum under ``roi`` per point and detector element.

    Parameters
    ----------
    source : RawXRFScan or ROISums
        The scan (spectra held), or ROI sums that include the side windows.
    roi : ChannelROI
        The element's ROI.
    method : {"none", "linear", "snip"}
        See the module notes.
    windows : SideWindows, optional
        Side windows (default :func:`side_windows` of the ROI in the source's channels).
    summed : SummedSpectra, optional
        For ``"snip"``: the spectra summed over the points around the ROI (default: summed
        from a RawXRFScan's spectra over :func:`snip_context`; ROI sums cannot give them).

    Returns
    -------
    BackgroundEstimate

    Raises
    ------
    ValueError
        For an unknown method, or a source that lacks what the method needs (side windows;
        spectra for SNIP).
    """
    method = check_background(method)
    n_points, n_detectors = source.n_points, source.n_detectors
    if method == "none":
        return BackgroundEstimate(np.zeros((n_points, n_detectors)), "none")
    if isinstance(source, RawXRFScan):
        first, end = source.first_channel, source.first_channel + source.n_channels
    else:
        first, end = 0, source.n_channels
    if windows is None:
        windows = side_windows(roi, end, first_channel=first)
    counts = {
        side: _window_counts(source, window, method)
        for side, window in (("left", windows.left), ("right", windows.right))
        if window is not None
    }
    if method == "linear":
        return BackgroundEstimate(_linear(roi, windows, counts), "linear", windows)
    if summed is None:
        if not isinstance(source, RawXRFScan):
            raise ValueError(
                "background='snip' needs the spectra summed over the points (SNIP works on "
                "the summed spectrum): give a RawXRFScan or the scan file, not ROI sums; or use "
                "background='linear'"
            )
        summed = summed_spectra(source, *snip_context(roi, end, first_channel=first))
    side_counts = sum(counts.values())
    background, width = _snip(roi, windows, side_counts, summed)
    return BackgroundEstimate(background, "snip", windows, width)


def read_with_background(
    raw_file: RawScanFile, rois: list[ChannelROI], roi: ChannelROI, method: str
) -> tuple[ROISums, SideWindows | None, SummedSpectra | None]:
    """Read ROI sums from a raw-scan file with what a background estimate needs, by slabs.

    The side windows are read with the ROIs whatever ``method`` is (two small slabs; the detector
    element check uses them); for ``"snip"`` the spectra around the ROI
    (:func:`snip_context`) are summed over the points too.

    Parameters
    ----------
    raw_file : RawScanFile
        The open file.
    rois : list of ChannelROI
        The ROIs the map needs (the element's first, then e.g. Ar).
    roi : ChannelROI
        The element's ROI.
    method : {"none", "linear", "snip"}
        The background to be estimated.

    Returns
    -------
    (ROISums, SideWindows or None, SummedSpectra or None)
        The sums (``rois`` and the windows); the windows (None when none fits, only allowed
        with ``"none"``); the summed spectra (``"snip"`` only).
    """
    method = check_background(method)
    first = raw_file.first_channel
    end = first + raw_file.n_channels
    try:
        windows: SideWindows | None = side_windows(roi, end, first_channel=first)
    except ValueError:
        if method != "none":
            raise
        windows = None
    extra = list(windows.rois) if windows is not None else []
    sums = raw_file.read_roi_sums([*rois, *extra])
    summed = None
    if method == "snip":
        low, high = snip_context(roi, end, first_channel=first)
        check_declared_size(
            (raw_file.n_points, raw_file.n_detectors, high - low + 1),
            np.int64,
            f"the spectra around {roi.name} in {raw_file.path}",
        )
        summed = SummedSpectra(raw_file.read_spectra((low, high)).sum(axis=0, dtype=np.int64), low)
    return sums, windows, summed
