"""Element maps from raw µ-XRF scans: grid geometry, channel-adding, dead time, normalisation.

The pipeline for one element line (:func:`build_map`):

1. **Geometry** (:func:`infer_grid`): the map grid is found from the stage positions. Points are
   grouped into scan lines (by ``line_index`` when known, else where the slow coordinate jumps
   or the fast one turns back); the fast axis is the one that varies along lines. Each point
   goes to the cell nearest its position (fast axis: its own coordinate; slow axis: the mean
   coordinate of its line), with steps from the median spacing. Raster, snake and fly lines of
   unequal length all fit; cells nobody measured are unmeasured (``mask`` False), and points
   that land in the same cell are averaged. Rows follow y (row 0 at the smallest y), columns
   follow x (column 0 at the smallest x), whichever axis was fast.

   Glitched positions (an encoder reading far from the scan) do not grow the map: points
   outside the scan's extents are left out of the grid (their cells unmeasured) and counted in a
   logged warning. The extents are the nominal ones in the scan's metadata when it has them
   (``extents_um``: ``{"x": [first, last], "y": [first, last]}`` or ``[[y_first, y_last],
   [x_first, x_last]]``, µm), else a robust estimate from the bulk of the positions (the
   quartiles of each axis widened by :data:`OUTLIER_IQR` interquartile ranges and
   :data:`OUTLIER_STEPS` point spacings). A grid of more than :data:`MAX_MAP_CELLS` cells (a tiny
   ``step_um``) is refused before anything is allocated.
2. **Channel-adding** (:func:`element_counts`): counts in the line's channel ROI, per point and
   detector element.
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
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.restore import restore
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

_log = logging.getLogger(__name__)

MAX_MAP_CELLS = 1 << 26
"""Largest map grid built, cells (67 M: 8192 x 8192); a float64 map of it is 512 MiB."""
OUTLIER_IQR = 2.0
"""Positions more than this many interquartile ranges beyond the quartiles of an axis (plus
:data:`OUTLIER_STEPS` point spacings) are outside the scan (see the module notes)."""
OUTLIER_STEPS = 4.0
"""Margin in point spacings around the estimated (or nominal) extents of the scan."""
EXTENTS_KEY = "extents_um"
"""Metadata entry with the scan's nominal extents, µm (see the module notes)."""


@dataclass(frozen=True)
class MapGrid:
    """Where each scan point lies on the map grid.

    Attributes
    ----------
    shape : (int, int)
        Map shape ``(rows, columns)`` = ``(ny, nx)``.
    step_um : (float, float)
        Cell size ``(step_y, step_x)``, µm.
    origin_um : (float, float)
        Centre of cell ``(0, 0)``, ``(y0, x0)``, µm.
    rows, cols : numpy.ndarray
        Cell of each point ``(n_points,)``, int64; -1 for points outside the scan (glitched
        positions, left out of the map).
    fast_axis : {"x", "y"}
        The axis that varies along scan lines.
    kind : {"raster", "snake", "fly"}
        Scan pattern found: ``fly`` when lines differ in length or points do not sit on the
        grid, ``snake`` when successive lines run in opposite directions, else ``raster``.
    """

    shape: tuple[int, int]
    step_um: tuple[float, float]
    origin_um: tuple[float, float]
    rows: np.ndarray
    cols: np.ndarray
    fast_axis: str
    kind: str

    @property
    def x_um(self) -> np.ndarray:
        """Column centres ``(nx,)``, µm."""
        return self.origin_um[1] + self.step_um[1] * np.arange(self.shape[1])

    @property
    def y_um(self) -> np.ndarray:
        """Row centres ``(ny,)``, µm."""
        return self.origin_um[0] + self.step_um[0] * np.arange(self.shape[0])

    @property
    def outliers(self) -> np.ndarray:
        """Points left out of the map (positions outside the scan) ``(n_points,)``, bool."""
        return self.rows < 0

    @property
    def hits(self) -> np.ndarray:
        """Number of points in each cell ``(ny, nx)``, int64."""
        inside = ~self.outliers
        flat = np.bincount(
            self.rows[inside] * self.shape[1] + self.cols[inside],
            minlength=self.shape[0] * self.shape[1],
        )
        return flat.reshape(self.shape)

    @property
    def mask(self) -> np.ndarray:
        """Measured cells ``(ny, nx)``, bool."""
        return self.hits > 0

    def assemble(self, values: np.ndarray) -> np.ndarray:
        """Place per-point values on the grid (mean over points in a cell; NaN if none).

        Parameters
        ----------
        values : numpy.ndarray
            ``(n_points,)`` or ``(n_points, k)``.

        Returns
        -------
        numpy.ndarray
            ``(ny, nx)`` or ``(k, ny, nx)``, float64.
        """
        values = np.asarray(values, dtype=np.float64)
        if values.shape[0] != self.rows.shape[0] or values.ndim not in (1, 2):
            raise ValueError(
                f"values must be ({self.rows.shape[0]},) or ({self.rows.shape[0]}, k), got "
                f"{values.shape}"
            )
        cells = self.shape[0] * self.shape[1]
        inside = ~self.outliers
        flat = self.rows[inside] * self.shape[1] + self.cols[inside]
        hits = np.bincount(flat, minlength=cells).astype(np.float64)
        columns = (values[:, None] if values.ndim == 1 else values)[inside]
        out = np.empty((columns.shape[1], cells))
        with np.errstate(invalid="ignore", divide="ignore"):
            for k in range(columns.shape[1]):
                out[k] = np.bincount(flat, weights=columns[:, k], minlength=cells) / hits
        out = out.reshape(columns.shape[1], *self.shape)
        return out[0] if values.ndim == 1 else out


def _median_positive(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if values.size else None


def _split_lines(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """Line number of each point when no line index was recorded."""
    d_fast = np.diff(fast)
    d_slow = np.diff(slow)
    step = _median_positive(np.abs(d_fast))
    if step is None:
        return np.zeros(fast.shape[0], dtype=np.int64)
    breaks = np.abs(d_slow) > 0.5 * step
    # A turn of the fast direction also starts a line (raster fly-back, snake turn).
    significant = np.abs(d_fast) > 0.5 * step
    direction = np.sign(d_fast)
    previous = 0.0
    for i in range(d_fast.shape[0]):
        if breaks[i]:
            previous = 0.0
            continue
        if significant[i]:
            if previous and direction[i] != previous:
                breaks[i] = True
            previous = direction[i]
    return np.concatenate([[0], np.cumsum(breaks)]).astype(np.int64)


def nominal_extents(metadata: Any) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The scan's nominal extents from its metadata (``extents_um``), or None.

    Parameters
    ----------
    metadata : dict
        Scan metadata; ``extents_um`` is ``{"x": [first, last], "y": [first, last]}`` or
        ``[[y_first, y_last], [x_first, x_last]]``, µm.

    Returns
    -------
    ((float, float), (float, float)) or None
        ``((y_low, y_high), (x_low, x_high))`` in µm; None when absent or malformed (a
        malformed entry is logged).
    """
    if not isinstance(metadata, dict) or EXTENTS_KEY not in metadata:
        return None
    entry = metadata[EXTENTS_KEY]
    try:
        pairs = (entry["y"], entry["x"]) if isinstance(entry, dict) else (entry[0], entry[1])
        bounds = tuple(
            (float(min(pair[0], pair[1])), float(max(pair[0], pair[1]))) for pair in pairs
        )
        if len(bounds) != 2 or not np.all(np.isfinite(bounds)):
            raise ValueError
    except (KeyError, IndexError, TypeError, ValueError):
        _log.warning("scan metadata %r is not usable extents (%.80r); ignored", EXTENTS_KEY, entry)
        return None
    return bounds[0], bounds[1]


def _point_spacing(x: np.ndarray, y: np.ndarray) -> float:
    """Typical distance between consecutive points, µm (0 if all points coincide)."""
    spacing = _median_positive(np.hypot(np.diff(x), np.diff(y)))
    return spacing or 0.0


def _inside_scan(
    x: np.ndarray,
    y: np.ndarray,
    extents_um: tuple[tuple[float, float], tuple[float, float]] | None,
) -> np.ndarray:
    """Which points lie within the scan (see the module notes): ``(n_points,)`` bool."""
    spacing = _point_spacing(x, y)
    margin = OUTLIER_STEPS * spacing
    if extents_um is not None:
        inside = np.ones(x.shape[0], dtype=bool)
        for values, (low, high) in zip((y, x), extents_um, strict=True):
            pad = margin + 0.01 * (high - low)
            inside &= (values >= low - pad) & (values <= high + pad)
        if inside.mean() >= 0.5:
            return inside
        _log.warning(
            "only %d of %d positions lie within the scan's nominal extents %s µm; the extents "
            "are ignored (other units?) and estimated from the positions",
            int(inside.sum()),
            x.shape[0],
            extents_um,
        )
    inside = np.ones(x.shape[0], dtype=bool)
    for values in (y, x):
        low, high = np.percentile(values, [25.0, 75.0])
        pad = OUTLIER_IQR * (high - low) + margin
        inside &= (values >= low - pad) & (values <= high + pad)
    return inside


def _cell_count(span_um: float, step_um: float) -> float:
    """Cells along an axis spanning ``span_um`` with cells of ``step_um`` (as a float)."""
    return float(np.floor(span_um / step_um + 0.5)) + 1.0


def infer_grid(
    x_um: np.ndarray,
    y_um: np.ndarray,
    line_index: np.ndarray | None = None,
    *,
    step_um: float | Sequence[float] | None = None,
    extents_um: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> MapGrid:
    """Find the map grid from the stage positions.

    Parameters
    ----------
    x_um, y_um : numpy.ndarray
        Position of each point ``(n_points,)``, µm, in acquisition order.
    line_index : numpy.ndarray, optional
        Scan line of each point ``(n_points,)`` (recommended: fly lines and scans whose slow
        step is much smaller than the fast one are ambiguous without it).
    step_um : float or (float, float), optional
        Cell size ``(step_y, step_x)`` in µm, instead of the median spacing.
    extents_um : ((float, float), (float, float)), optional
        Nominal extents of the scan ``((y_first, y_last), (x_first, x_last))``, µm (see
        :func:`nominal_extents`); points outside them (by more than a few point spacings) are
        left out of the map. Without them, the extents are estimated from the positions.

    Returns
    -------
    MapGrid
        Points outside the scan have ``rows`` and ``cols`` -1 (:attr:`MapGrid.outliers`); their
        number is logged as a warning.

    Raises
    ------
    ValueError
        For mismatched lengths, non-finite positions, fewer than 2 points (within the scan), a
        step that cannot be found (all points at one place), or a grid of more than
        :data:`MAX_MAP_CELLS` cells.
    """
    x_all = np.asarray(x_um, dtype=np.float64)
    y_all = np.asarray(y_um, dtype=np.float64)
    if x_all.ndim != 1 or x_all.shape != y_all.shape:
        raise ValueError(
            f"x_um and y_um must be 1-D of equal length, got {x_all.shape}, {y_all.shape}"
        )
    if x_all.shape[0] < 2:
        raise ValueError(f"a map needs at least 2 points, got {x_all.shape[0]}")
    if not (np.all(np.isfinite(x_all)) and np.all(np.isfinite(y_all))):
        raise ValueError("positions hold non-finite values (NaN or Inf)")
    total_points = x_all.shape[0]
    if line_index is not None:
        line_index = np.asarray(line_index)
        if line_index.shape != (total_points,) or line_index.dtype.kind not in "iu":
            raise ValueError(
                f"line_index must be integers of shape ({total_points},), got "
                f"{line_index.dtype} {line_index.shape}"
            )
    inside = _inside_scan(x_all, y_all, extents_um)
    if not inside.all():
        where = "nominal extents" if extents_um is not None else "extents estimated from the rest"
        _log.warning(
            "%d of %d scan positions lie outside the scan's %s (glitched positions?); they are "
            "left out of the map",
            int((~inside).sum()),
            total_points,
            where,
        )
    x, y = x_all[inside], y_all[inside]
    if line_index is not None:
        line_index = line_index[inside]
    if x.shape[0] < 2:
        raise ValueError(f"a map needs at least 2 points within the scan, got {x.shape[0]}")
    n_points = x.shape[0]
    # The fast axis varies more between consecutive points.
    fast_axis = "x" if np.median(np.abs(np.diff(x))) >= np.median(np.abs(np.diff(y))) else "y"
    fast, slow = (x, y) if fast_axis == "x" else (y, x)
    if line_index is None:
        lines = _split_lines(fast, slow)
    else:
        lines = np.asarray(line_index)
        if lines.shape != (n_points,) or lines.dtype.kind not in "iu":
            raise ValueError(
                f"line_index must be integers of shape ({n_points},), got {lines.dtype} "
                f"{lines.shape}"
            )
    labels, inverse = np.unique(lines, return_inverse=True)
    n_lines = labels.shape[0]
    line_slow = np.bincount(inverse, weights=slow) / np.bincount(inverse)
    slow_of_point = line_slow[inverse]

    # Steps: along lines, the median spacing of consecutive points of the same line; between
    # lines, the median spacing of the sorted line positions.
    same_line = inverse[1:] == inverse[:-1]
    fast_step = _median_positive(np.abs(np.diff(fast))[same_line])
    slow_step = _median_positive(np.diff(np.sort(line_slow))) if n_lines > 1 else None
    if slow_step is not None and fast_step is not None and slow_step < 0.25 * fast_step:
        slow_step = None  # lines at (nearly) one position: repeated lines, not a new row
    if step_um is not None:
        pair = (step_um, step_um) if np.ndim(step_um) == 0 else tuple(step_um)
        if len(pair) != 2 or not all(np.isfinite(s) and s > 0 for s in pair):
            raise ValueError(f"step_um must be > 0 µm (one value or (y, x)), got {step_um!r}")
        step_y, step_x = float(pair[0]), float(pair[1])
        fast_step, slow_step = (step_x, step_y) if fast_axis == "x" else (step_y, step_x)
    fast_step = fast_step or slow_step
    slow_step = slow_step or fast_step
    if fast_step is None or slow_step is None:
        raise ValueError("cannot find the scan step: all points are at the same position")

    fast_origin = float(fast.min())
    slow_origin = float(line_slow.min())
    cells = _cell_count(float(fast.max()) - fast_origin, fast_step) * _cell_count(
        float(line_slow.max()) - slow_origin, slow_step
    )
    if not cells <= MAX_MAP_CELLS:
        steps = (slow_step, fast_step) if fast_axis == "x" else (fast_step, slow_step)
        raise ValueError(
            f"the map grid would have {cells:.3g} cells (steps (y, x) = ({steps[0]:.3g}, "
            f"{steps[1]:.3g}) µm over {float(np.ptp(y)):.4g} x {float(np.ptp(x)):.4g} µm); at "
            f"most {MAX_MAP_CELLS} cells are built: give a larger step_um"
        )
    fast_cell = np.rint((fast - fast_origin) / fast_step).astype(np.int64)
    slow_cell = np.rint((slow_of_point - slow_origin) / slow_step).astype(np.int64)
    n_fast = int(fast_cell.max()) + 1
    n_slow = int(slow_cell.max()) + 1

    # Scan kind.
    counts = np.bincount(inverse)
    off_grid = np.abs((fast - fast_origin) / fast_step - fast_cell) > 0.25
    kind = "raster"
    if np.unique(counts).shape[0] > 1 or np.mean(off_grid) > 0.1:
        kind = "fly"
    elif n_lines > 1:
        d_fast = np.where(same_line, np.diff(fast), 0.0)
        line_direction = np.sign(np.bincount(inverse[1:], weights=d_fast, minlength=n_lines))
        order = np.argsort(line_slow)
        directions = line_direction[order]
        if np.all(directions[1:] == -directions[:-1]) and np.all(directions != 0):
            kind = "snake"

    def every_point(cells_of_kept: np.ndarray) -> np.ndarray:
        out = np.full(total_points, -1, dtype=np.int64)
        out[inside] = cells_of_kept
        return out

    if fast_axis == "x":
        return MapGrid(
            (n_slow, n_fast),
            (slow_step, fast_step),
            (slow_origin, fast_origin),
            every_point(slow_cell),
            every_point(fast_cell),
            fast_axis,
            kind,
        )
    return MapGrid(
        (n_fast, n_slow),
        (fast_step, slow_step),
        (fast_origin, slow_origin),
        every_point(fast_cell),
        every_point(slow_cell),
        fast_axis,
        kind,
    )


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
) -> XRFMap:
    """Make an element map from a raw scan (in memory or a file, reading only ROI slabs).

    Parameters
    ----------
    source : RawXRFScan, ROISums, str or os.PathLike
        The raw scan, ROI sums already read, or a raw-scan HDF5 file.
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

    Returns
    -------
    XRFMap
    """
    if element is None and roi is None:
        raise ValueError("give an element (e.g. 'Cu') or a channel ROI")
    if normalize_by not in (None, *NORMALIZATIONS):
        raise ValueError(f"normalisation must be 'i0', 'ar' or None, got {normalize_by!r}")
    raw_file = None
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
        if raw_file is not None:
            source = raw_file.read_roi_sums(rois)
    finally:
        if raw_file is not None:
            raw_file.close()

    chosen = _detector_selection(detectors, source.n_detectors)
    counts = element_counts(source, roi, detectors=chosen).astype(np.float64)
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
        metadata=dict(source.metadata),
        calibration=calibration,
    )
