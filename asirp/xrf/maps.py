"""Element maps from raw µ-XRF scans: grid geometry, channel-adding, dead time, normalisation.

The pipeline for one element line (:func:`build_map`):

1. **Geometry** (:func:`infer_grid`, from :mod:`asirp.xrf.grid`): the map grid is found from
   the stage positions (raster, snake or fly lines; rows follow y, columns follow x). Glitched
   positions outside the scan's extents (nominal ones from the metadata's ``extents_um``, else
   estimated from the bulk of the positions) are left out of the map, and a grid of more than
   :data:`~asirp.xrf.grid.MAX_MAP_CELLS` cells is refused; see :mod:`asirp.xrf.grid`.
2. **Channel-adding** (:func:`element_counts`): counts in the line's channel ROI, per point and
   detector element, less the continuum under it (``background=``, :mod:`asirp.xrf.background`);
   or, with a PyMca ``.cfg`` (``fit_config=``), the element's fitted peak areas
   (:mod:`asirp.xrf.fitted`). Detector elements with no signal or an anomalous dead time are
   found (:mod:`asirp.xrf.element_check`) and left out unless named; ``metadata["cautions"]``
   says so.
3. **Dead time** (optional, :func:`dead_time_correct`): counts x real time / live time, per
   point and element.
4. **Sum over detector elements** (the per-element maps are kept too, e.g. for Fourier ring
   correlation between two elements).
5. **Normalisation** (:func:`normalize`): by I0 or by Ar K-alpha counts (from the air path),
   scaled to the reference's mean, so the unit stays "counts at mean flux".

Unmeasured cells of :attr:`XRFMap.data` are filled with the nearest measured value, so the map
can go straight to :func:`asirp.restore`; :meth:`XRFMap.masked` gives them as NaN.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.io import check_declared_size
from asirp.restore import restore
from asirp.xrf.background import (
    BackgroundEstimate,
    check_background,
    estimate_background,
    read_with_background,
)
from asirp.xrf.element_check import check_detector_elements, choose_detectors
from asirp.xrf.fitted import fitted_counts
from asirp.xrf.formats import scan_source
from asirp.xrf.grid import (
    EXTENTS_KEY,
    MAX_MAP_CELLS,
    OUTLIER_IQR,
    OUTLIER_STEPS,
    MapGrid,
    infer_grid,
    nominal_extents,
)
from asirp.xrf.lines import (
    ChannelROI,
    DetectorResolution,
    EnergyCalibration,
    argon_roi,
    element_roi,
)
from asirp.xrf.raw import RawScanFile, RawXRFScan, ROISums

ScanSource = RawXRFScan | ROISums
NORMALIZATIONS = ("i0", "ar")

__all__ = [
    "EXTENTS_KEY",
    "MAX_MAP_CELLS",
    "NORMALIZATIONS",
    "OUTLIER_IQR",
    "OUTLIER_STEPS",
    "MapGrid",
    "ScanSource",
    "XRFMap",
    "build_map",
    "dead_time_correct",
    "element_counts",
    "infer_grid",
    "nominal_extents",
    "normalize",
]


def element_counts(
    source: ScanSource, roi: ChannelROI, *, detectors: Sequence[int] | None = None
) -> np.ndarray:
    """Channel-adding: counts in an ROI per point and detector element.

    Parameters
    ----------
    source : RawXRFScan or ROISums
        The scan (spectra held) or ROI sums read from a file (the ROI must be among them).
    roi : ChannelROI
        Inclusive detector-channel range.
    detectors : sequence of int, optional
        Detector elements to keep (all by default).

    Returns
    -------
    numpy.ndarray
        ``(n_points, n_selected_detectors)``, int64, counts.
    """
    counts = source.roi_counts(roi)
    return counts[:, _detector_selection(detectors, counts.shape[1])]


def _detector_selection(detectors: Sequence[int] | None, n_detectors: int) -> list[int]:
    if detectors is None:
        return list(range(n_detectors))
    chosen = [int(d) for d in detectors]
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"detectors must be distinct element indices, got {list(detectors)}")
    bad = [d for d in chosen if not 0 <= d < n_detectors]
    if bad:
        raise ValueError(
            f"detector element(s) {bad} do not exist; the scan has {n_detectors} "
            f"(0..{n_detectors - 1})"
        )
    return chosen


def dead_time_correct(
    counts: np.ndarray, live_time_s: np.ndarray, real_time_s: np.ndarray
) -> np.ndarray:
    """Correct counts for detector dead time: ``counts * real_time / live_time``.

    Parameters
    ----------
    counts : numpy.ndarray
        Counts ``(n_points, n_detectors)``.
    live_time_s, real_time_s : numpy.ndarray
        Live and real time ``(n_points, n_detectors)``, s.

    Returns
    -------
    numpy.ndarray
        Corrected counts, float64, same shape.

    Raises
    ------
    ValueError
        For mismatched shapes, or a zero live time where time elapsed.
    """
    counts = np.asarray(counts, dtype=np.float64)
    live = np.asarray(live_time_s, dtype=np.float64)
    real = np.asarray(real_time_s, dtype=np.float64)
    if not counts.shape == live.shape == real.shape:
        raise ValueError(
            f"counts {counts.shape}, live_time {live.shape} and real_time {real.shape} must "
            "have the same shape"
        )
    bad = (live <= 0) & (real > 0)
    if np.any(bad):
        raise ValueError(
            f"live time is zero at {int(bad.sum())} point(s) with elapsed real time; dead-time "
            "correction is impossible there"
        )
    ratio = np.divide(real, live, out=np.ones_like(real), where=live > 0)
    return counts * ratio


def _moving_mean(values: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return values
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(values, size=width, mode="nearest")


def normalize(
    counts: np.ndarray,
    by: str | None,
    reference: np.ndarray | None = None,
    *,
    smooth_points: int = 1,
) -> tuple[np.ndarray, float]:
    """Normalise counts by a flux reference, scaled to the reference's mean.

    ``normalised = counts * mean(reference) / reference``, so the unit stays counts at the mean
    flux and a map of a homogeneous sample under a fluctuating beam becomes flat.

    Parameters
    ----------
    counts : numpy.ndarray
        ``(n_points,)`` or ``(n_points, k)`` counts.
    by : {"i0", "ar", None}
        The reference kind (None: return the counts unchanged, as float64).
    reference : numpy.ndarray, optional
        ``(n_points,)``: I0 counts, or Ar K-alpha counts (summed over detector elements).
    smooth_points : int
        Moving mean over this many points in acquisition order before dividing (useful for
        Ar counts, which are few per point); 1 = none.

    Returns
    -------
    (numpy.ndarray, float)
        The normalised counts (float64, shape of ``counts``) and the reference mean used
        (NaN when ``by`` is None).

    Raises
    ------
    ValueError
        For an unknown ``by``, a missing or mismatched reference, or a reference that is zero
        or negative somewhere.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if by is None:
        return counts, float("nan")
    if by not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be 'i0', 'ar' or None, got {by!r}")
    if reference is None:
        raise ValueError(f"normalisation by {by!r} needs the reference counts")
    ref = np.asarray(reference, dtype=np.float64)
    if ref.shape != counts.shape[:1]:
        raise ValueError(
            f"reference must have shape ({counts.shape[0]},) (one per point), got {ref.shape}"
        )
    if isinstance(smooth_points, bool) or int(smooth_points) != smooth_points or smooth_points < 1:
        raise ValueError(f"smooth_points must be an integer >= 1, got {smooth_points!r}")
    ref = _moving_mean(ref, int(smooth_points))
    bad = ~(np.isfinite(ref) & (ref > 0))
    if np.any(bad):
        hint = (
            " (average over more points: ar_smooth_points; widen the Ar ROI; or normalise by i0)"
            if by == "ar"
            else ""
        )
        raise ValueError(
            f"{by} reference is zero, negative or non-finite at {int(bad.sum())} point(s); "
            f"cannot normalise{hint}"
        )
    mean = float(ref.mean())
    scale = mean / ref
    return counts * (scale if counts.ndim == 1 else scale[:, None]), mean


def _fill_nearest(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Unmeasured cells take the nearest measured cell's value."""
    if mask.all():
        return values
    from scipy.ndimage import distance_transform_edt

    _, (rows, cols) = distance_transform_edt(~mask, return_indices=True)
    return values[..., rows, cols]


@dataclass(frozen=True)
class XRFMap:
    """An element map with its geometry and how it was made.

    Attributes
    ----------
    data : numpy.ndarray
        ``(ny, nx)`` float32: counts (or counts at the mean flux when normalised), summed over
        the detector elements used. Unmeasured cells hold the nearest measured value.
    x_um, y_um : numpy.ndarray
        Column and row centres ``(nx,)``, ``(ny,)``, µm (float64).
    mask : numpy.ndarray
        ``(ny, nx)`` bool, True where measured.
    element : str
        Element or ROI label (``"Cu"``).
    line : str
        Line name (``"Ka"``), or ``""`` for a plain channel ROI.
    rois : tuple of ChannelROI
        The ROI summed, then the Ar K-alpha ROI when normalised by Ar.
    normalization : {"i0", "ar", None}
        Reference used.
    reference_mean : float
        Mean of the normalisation reference (NaN when not normalised), counts.
    dead_time_corrected : bool
        Whether counts were multiplied by real/live time.
    detectors : tuple of int
        Detector elements summed.
    detector_maps : numpy.ndarray or None
        ``(n_detectors, ny, nx)`` float32 per-element maps (same processing), or None.
    scan_kind : str
        ``raster``, ``snake`` or ``fly`` (from :func:`infer_grid`).
    metadata : dict
        The scan's metadata (``beam_fwhm_um``, ``sample``, ...).
    history : tuple of str
        Map tools applied, in order (see :mod:`asirp.xrf.tools`).
    calibration : EnergyCalibration or None
        Detector calibration the ROIs were defined with.
    """

    data: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    mask: np.ndarray
    element: str
    line: str
    rois: tuple[ChannelROI, ...]
    normalization: str | None = None
    reference_mean: float = float("nan")
    dead_time_corrected: bool = False
    detectors: tuple[int, ...] = ()
    detector_maps: np.ndarray | None = None
    scan_kind: str = "raster"
    metadata: dict[str, Any] = field(default_factory=dict)
    history: tuple[str, ...] = ()
    calibration: EnergyCalibration | None = None

    def __post_init__(self) -> None:
        data = np.asarray(self.data, dtype=np.float32)
        if data.ndim != 2 or min(data.shape) < 1:
            raise ValueError(f"map data must be 2-D and non-empty, got shape {data.shape}")
        x = np.asarray(self.x_um, dtype=np.float64)
        y = np.asarray(self.y_um, dtype=np.float64)
        if x.shape != (data.shape[1],) or y.shape != (data.shape[0],):
            raise ValueError(
                f"axes must match the map {data.shape}: x_um {x.shape}, y_um {y.shape}"
            )
        mask = np.asarray(self.mask, dtype=bool)
        if mask.shape != data.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the map {data.shape}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "x_um", x)
        object.__setattr__(self, "y_um", y)
        object.__setattr__(self, "mask", mask)
        if self.detector_maps is not None:
            maps = np.asarray(self.detector_maps, dtype=np.float32)
            if maps.ndim != 3 or maps.shape[1:] != data.shape:
                raise ValueError(
                    f"detector_maps must be (n_detectors, {data.shape[0]}, {data.shape[1]}), "
                    f"got {maps.shape}"
                )
            object.__setattr__(self, "detector_maps", maps)

    @property
    def shape(self) -> tuple[int, int]:
        """Map shape ``(ny, nx)``."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def pixel_um(self) -> tuple[float, float]:
        """Cell size ``(step_y, step_x)``, µm (1.0 along an axis of one cell)."""

        def step(axis: np.ndarray) -> float:
            return float(abs(axis[1] - axis[0])) if axis.shape[0] > 1 else 1.0

        return (step(self.y_um), step(self.x_um))

    @property
    def extent_um(self) -> tuple[float, float, float, float]:
        """Cell-edge extent ``(x_min, x_max, y_min, y_max)``, µm (for ``imshow``)."""
        dy, dx = self.pixel_um
        return (
            float(self.x_um.min() - dx / 2),
            float(self.x_um.max() + dx / 2),
            float(self.y_um.min() - dy / 2),
            float(self.y_um.max() + dy / 2),
        )

    @property
    def label(self) -> str:
        """``"Cu Ka"``-style name of the map."""
        return f"{self.element} {self.line}".strip()

    @property
    def units(self) -> str:
        """Unit of :attr:`data`."""
        names = {"i0": "I0", "ar": "Ar Ka"}
        if self.normalization is None:
            return "counts"
        return f"counts at mean {names.get(self.normalization, self.normalization)}"

    def masked(self) -> np.ndarray:
        """The map with unmeasured cells as NaN ``(ny, nx)``, float32."""
        return np.where(self.mask, self.data, np.float32("nan"))

    def replace(self, **changes: Any) -> XRFMap:
        """A copy with some fields changed (see :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    def restore(self, method: str = "auto", *, beam_fwhm_um: Any = None, **params: Any) -> Any:
        """Restore the map with :func:`asirp.restore` (PSF from the beam and the map's steps).

        Parameters
        ----------
        method : str
            Restoration method or ``"auto"``.
        beam_fwhm_um : float or (float, float), optional
            Beam FWHM in µm; by default ``metadata["beam_fwhm_um"]``. Not used when ``psf`` or
            ``psf_sigma_px`` is given in ``params``.
        **params
            Passed to :func:`asirp.restore`.

        Returns
        -------
        asirp.Restoration
        """
        if "psf" not in params and "psf_sigma_px" not in params:
            if beam_fwhm_um is None:
                beam_fwhm_um = self.metadata.get("beam_fwhm_um")
            if beam_fwhm_um is None:
                raise ValueError(
                    "no beam size: give beam_fwhm_um (µm), psf_sigma_px or psf; the scan "
                    "metadata has no beam_fwhm_um"
                )
            params["beam_fwhm_um"] = beam_fwhm_um
            params["pixel_um"] = self.pixel_um
        return restore(self.data, method, **params)


def build_map(
    source: ScanSource | str | os.PathLike,
    element: str | None = None,
    *,
    line: str = "Ka",
    roi: ChannelROI | None = None,
    normalize_by: str | None = None,
    dead_time: bool = False,
    detectors: Sequence[int] | None = None,
    width_kev: float | None = None,
    resolution: DetectorResolution | None = None,
    ar_roi: ChannelROI | None = None,
    ar_smooth_points: int = 1,
    step_um: float | Sequence[float] | None = None,
    keep_detector_maps: bool = True,
    background: str = "none",
    fit_config: str | os.PathLike | None = None,
) -> XRFMap:
    """Make an element map from a raw scan (in memory or a file, reading only ROI slabs).

    Parameters
    ----------
    source : RawXRFScan, ROISums, str or os.PathLike
        The raw scan, ROI sums already read, or a scan file of any supported format
        (:data:`asirp.xrf.formats.FORMATS`; a fly scan's companion MDA file is found by name:
        to name it, read the scan with :func:`asirp.xrf.formats.read_scan` first).
    element : str, optional
        Chemical symbol; its ``line`` ROI is made from the calibration. Or give ``roi``.
    line : str
        Emission line (``"Ka"``, ``"Kb"``, ``"La"``, ...).
    roi : ChannelROI, optional
        Explicit channel range (overrides the element's energy window).
    normalize_by : {"i0", "ar", None}
        Flux normalisation.
    dead_time : bool
        Multiply counts by real/live time (per point and element) first.
    detectors : sequence of int, optional
        Detector elements to sum (all by default).
    width_kev : float, optional
        Full ROI width in keV (default ±1 FWHM of ``resolution``).
    resolution : DetectorResolution, optional
        Detector resolution for the default ROI widths.
    ar_roi : ChannelROI, optional
        Explicit Ar K-alpha channel range for ``normalize_by="ar"``.
    ar_smooth_points : int
        Moving mean of the Ar counts over this many points (acquisition order).
    step_um : float or (float, float), optional
        Map cell size ``(y, x)`` in µm instead of the spacing found from the positions.
    keep_detector_maps : bool
        Also return the per-element maps.
    background : {"none", "linear", "snip"}
        Continuum subtracted from the ROI counts (:mod:`asirp.xrf.background`): ``"none"``
        (plain channel sums, the default here; ``asirp xrf-map`` defaults to ``"linear"``),
        ``"linear"`` (net counts from side windows) or ``"snip"`` (SNIP on the summed
        spectrum). Needs the spectra (a scan or a file): ROI sums only with their side windows.
    fit_config : str or os.PathLike, optional
        A PyMca fit configuration (``.cfg``): the map is then the element's fitted peak-group
        area (:mod:`asirp.xrf.fitted`; needs ``element`` and the spectra, and the fit models
        its own continuum, so ``background`` is not applied).

    Returns
    -------
    XRFMap
        ``metadata`` holds the scan's metadata plus ``background`` (how the continuum was
        estimated), ``detector_check`` (signal and dead time per detector element), ``fit``
        (with ``fit_config``) and ``cautions`` (sentences: detector elements left out or kept
        although flagged, after the scan's own cautions).

    Notes
    -----
    Detector elements are checked before they are summed
    (:func:`asirp.xrf.element_check.check_detector_elements`): one with almost no signal in
    the ROI or an anomalous dead time is left out of the sum, with a caution, unless
    ``detectors`` names the elements to sum.
    """
    if element is None and roi is None:
        raise ValueError("give an element (e.g. 'Cu') or a channel ROI")
    if normalize_by not in (None, *NORMALIZATIONS):
        raise ValueError(f"normalisation must be 'i0', 'ar' or None, got {normalize_by!r}")
    background = check_background(background)
    if fit_config is not None and element is None:
        raise ValueError("a fitted map (fit_config) needs an element, e.g. 'Cu'")
    raw_file = None
    if isinstance(source, str | os.PathLike):
        # Any supported format (MDA, APS fly scans, Xspress3 NeXus) is read whole; the
        # project's raw HDF5 stays a path and is read below by ROI slabs only.
        source = scan_source(source)
    if isinstance(source, str | os.PathLike):
        raw_file = RawScanFile(source)
        calibration, n_channels = raw_file.calibration, raw_file.first_channel + raw_file.n_channels
    elif isinstance(source, RawXRFScan):
        calibration, n_channels = source.calibration, source.first_channel + source.n_channels
    elif isinstance(source, ROISums):
        calibration, n_channels = source.calibration, source.n_channels
    else:
        raise TypeError(
            f"source must be a RawXRFScan, ROISums or a file path, got {type(source).__name__}"
        )
    try:
        if roi is None:
            roi = element_roi(
                str(element),
                calibration,
                line,
                width_kev=width_kev,
                resolution=resolution,
                n_channels=n_channels,
            )
        else:
            roi.check_within(n_channels)
        rois = [roi]
        if normalize_by == "ar":
            if ar_roi is None:
                ar_roi = argon_roi(calibration, resolution=resolution, n_channels=n_channels)
            ar_roi.check_within(n_channels)
            rois.append(ar_roi)
        windows = summed = None
        if raw_file is not None and fit_config is not None:
            # A fit needs every channel of every spectrum (uint16: the narrowest stored).
            check_declared_size(
                (raw_file.n_points, raw_file.n_detectors, raw_file.n_channels),
                np.uint16,
                f"the spectra of {raw_file.path}",
            )
            source = raw_file.read_scan()
        elif raw_file is not None:
            source, windows, summed = read_with_background(raw_file, rois, roi, background)
    finally:
        if raw_file is not None:
            raw_file.close()

    named = None if detectors is None else _detector_selection(detectors, source.n_detectors)
    gross = element_counts(source, roi).astype(np.float64)  # every detector element
    estimate: BackgroundEstimate | None = None
    if fit_config is None and background != "none":
        estimate = estimate_background(source, roi, background, windows=windows, summed=summed)
    continuum = estimate
    if continuum is None:
        try:
            continuum = estimate_background(source, roi, "linear", windows=windows)
        except ValueError:  # no side windows at hand: the element check uses gross counts
            continuum = None
    check = check_detector_elements(
        gross,
        source.live_time_s,
        source.real_time_s,
        background_counts=None if continuum is None else continuum.counts,
        roi_name=roi.name,
    )
    chosen, cautions = choose_detectors(check, named)
    fitted = None
    if fit_config is not None:
        if not isinstance(source, RawXRFScan):
            raise ValueError(
                "a fitted map (fit_config) needs the spectra: give a RawXRFScan or the scan "
                "file, not ROI sums"
            )
        fitted = fitted_counts(source, str(element), line, fit_config, detectors=chosen)
        counts = fitted.counts
    else:
        counts = gross[:, chosen]
        if estimate is not None:
            counts = counts - estimate.counts[:, chosen]
    live = source.live_time_s[:, chosen]
    real = source.real_time_s[:, chosen]
    if dead_time:
        counts = dead_time_correct(counts, live, real)
    reference = None
    if normalize_by == "i0":
        reference = source.i0
    elif normalize_by == "ar" and ar_roi is not None:
        ar_counts = element_counts(source, ar_roi, detectors=chosen).astype(np.float64)
        if dead_time:
            ar_counts = dead_time_correct(ar_counts, live, real)
        reference = ar_counts.sum(axis=1)
    counts, reference_mean = normalize(
        counts,
        normalize_by,
        reference,
        smooth_points=ar_smooth_points if normalize_by == "ar" else 1,
    )

    grid = infer_grid(
        source.x_um,
        source.y_um,
        source.line_index,
        step_um=step_um,
        extents_um=nominal_extents(source.metadata),
    )
    mask = grid.mask
    total = _fill_nearest(grid.assemble(counts.sum(axis=1)), mask)
    per_detector = None
    if keep_detector_maps:
        per_detector = _fill_nearest(grid.assemble(counts), mask).astype(np.float32)
    metadata = dict(source.metadata)
    earlier = metadata.get("cautions", [])
    metadata["cautions"] = [*(earlier if isinstance(earlier, list) else [str(earlier)]), *cautions]
    # With a fit, the continuum is PyMca's SNIP inside the fit ("fit").
    used = estimate or BackgroundEstimate(np.zeros((0, 0)), "fit" if fitted else "none")
    metadata["background"] = used.as_dict()
    if fitted is not None:
        metadata["fit"] = fitted.info
    metadata["detector_check"] = check.as_dict()
    return XRFMap(
        data=total.astype(np.float32),
        x_um=grid.x_um,
        y_um=grid.y_um,
        mask=mask,
        element=element.strip() if element else roi.name,
        line=line.strip() if element else "",
        rois=tuple(rois),
        normalization=normalize_by,
        reference_mean=reference_mean,
        dead_time_corrected=bool(dead_time),
        detectors=tuple(chosen),
        detector_maps=per_detector,
        scan_kind=grid.kind,
        metadata=metadata,
        calibration=calibration,
    )
