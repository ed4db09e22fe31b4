"""The map grid of a raw µ-XRF scan, found from its stage positions.

One job: where each scan point lies on the map (:func:`infer_grid`, giving a :class:`MapGrid`),
used by :func:`asirp.xrf.maps.build_map` (which re-exports these names).

Points are grouped into scan lines (by ``line_index`` when known, else where the slow coordinate
jumps or the fast one turns back); the fast axis is the one that varies along lines. Each point
goes to the cell nearest its position (fast axis: its own coordinate; slow axis: the mean
coordinate of its line), with steps from the median spacing. Raster, snake and fly lines of
unequal length all fit; cells nobody measured are unmeasured (``mask`` False), and points that
land in the same cell are averaged. Rows follow y (row 0 at the smallest y), columns follow x
(column 0 at the smallest x), whichever axis was fast.

Glitched positions (an encoder reading far from the scan) do not grow the map: points outside
the scan's extents are left out of the grid (their cells unmeasured) and counted in a logged
warning. The extents are the nominal ones in the scan's metadata when it has them
(``extents_um``: ``{"x": [first, last], "y": [first, last]}`` or ``[[y_first, y_last],
[x_first, x_last]]``, µm), else a robust estimate from the bulk of the positions (the quartiles
of each axis widened by :data:`OUTLIER_IQR` interquartile ranges and :data:`OUTLIER_STEPS`
point spacings). A grid of more than :data:`MAX_MAP_CELLS` cells (a tiny ``step_um``) is
refused before anything is allocated.

Warnings are logged under ``asirp.xrf.maps``, the logger of the map pipeline this grid belongs
to (as before the grid had its own module).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_log = logging.getLogger("asirp.xrf.maps")

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
