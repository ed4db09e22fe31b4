"""Map tools: threshold, flip, rotate and crop (in µm or pixels).

Each tool takes an :class:`~asirp.xrf.maps.XRFMap` and returns a new one (the input is never
modified), applying the same operation to the per-element maps and the mask, and appending a
line to :attr:`~asirp.xrf.maps.XRFMap.history`.

Orientation: rows follow y (row 0 at the smallest y) and columns follow x, and maps are shown
with y pointing up (``origin="lower"``). ``flip(m, "x")`` mirrors left-right, ``flip(m, "y")``
top-bottom; ``rotate(m, 90)`` turns the map 90° counter-clockwise as shown (x and y steps
swap). Axes keep their first coordinate and step, so positions after a flip or rotation are in
the frame of the displayed image, not of the stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asirp.xrf.maps import XRFMap

THRESHOLD_MODES = ("clip", "mask")


def threshold(
    xrf_map: XRFMap,
    low: float | None = None,
    high: float | None = None,
    *,
    mode: str = "clip",
) -> XRFMap:
    """Limit map values to ``[low, high]``.

    Parameters
    ----------
    xrf_map : XRFMap
        The map.
    low, high : float, optional
        Bounds in the map's unit (counts); at least one.
    mode : {"clip", "mask"}
        ``clip``: values outside are set to the bound (e.g. hot pixels to ``high``, negative
        values to 0). ``mask``: values are kept and the cells outside are marked unmeasured.

    Returns
    -------
    XRFMap
    """
    if low is None and high is None:
        raise ValueError("threshold needs low, high or both")
    for name, value in (("low", low), ("high", high)):
        if value is not None and not np.isfinite(value):
            raise ValueError(f"threshold {name} must be finite, got {value!r}")
    if low is not None and high is not None and low > high:
        raise ValueError(f"threshold low ({low}) is above high ({high})")
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"threshold mode must be 'clip' or 'mask', got {mode!r}")
    note = f"threshold low={low} high={high} mode={mode}"
    if mode == "clip":
        maps = None
        if xrf_map.detector_maps is not None:
            maps = np.clip(xrf_map.detector_maps, low, high)
        return xrf_map.replace(
            data=np.clip(xrf_map.data, low, high),
            detector_maps=maps,
            history=(*xrf_map.history, note),
        )
    inside = np.ones(xrf_map.shape, dtype=bool)
    if low is not None:
        inside &= xrf_map.data >= low
    if high is not None:
        inside &= xrf_map.data <= high
    return xrf_map.replace(mask=xrf_map.mask & inside, history=(*xrf_map.history, note))


def flip(xrf_map: XRFMap, axis: str) -> XRFMap:
    """Mirror the map left-right (``axis="x"``) or top-bottom (``axis="y"``)."""
    if axis not in ("x", "y"):
        raise ValueError(f"flip axis must be 'x' or 'y', got {axis!r}")
    along = -1 if axis == "x" else -2
    maps = None if xrf_map.detector_maps is None else np.flip(xrf_map.detector_maps, along)
    return xrf_map.replace(
        data=np.flip(xrf_map.data, along),
        mask=np.flip(xrf_map.mask, along),
        detector_maps=maps,
        history=(*xrf_map.history, f"flip {axis}"),
    )


def rotate(xrf_map: XRFMap, degrees: int) -> XRFMap:
    """Rotate the map counter-clockwise (as shown, y up) by 90, 180 or 270 degrees."""
    if isinstance(degrees, bool) or degrees not in (0, 90, 180, 270, -90, -180, -270):
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {degrees!r}")
    turns = (int(degrees) // 90) % 4
    if turns == 0:
        return xrf_map.replace(history=(*xrf_map.history, "rotate 0"))

    def turn(array: np.ndarray) -> np.ndarray:
        # With row 0 at the bottom, a counter-clockwise turn is numpy's clockwise rot90.
        return np.rot90(array, -turns, axes=(-2, -1))

    x_um, y_um = xrf_map.x_um, xrf_map.y_um
    if turns % 2:
        (dy, dx) = xrf_map.pixel_um
        x_um = x_um[0] + dy * np.arange(xrf_map.shape[0])
        y_um = y_um[0] + dx * np.arange(xrf_map.shape[1])
    maps = None if xrf_map.detector_maps is None else turn(xrf_map.detector_maps)
    return xrf_map.replace(
        data=turn(xrf_map.data),
        mask=turn(xrf_map.mask),
        detector_maps=maps,
        x_um=x_um,
        y_um=y_um,
        history=(*xrf_map.history, f"rotate {turns * 90}"),
    )


def _range(value: Sequence[float] | None, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"{name} must be finite with low <= high, got {value!r}")
    return low, high


def crop(
    xrf_map: XRFMap,
    *,
    x_um: Sequence[float] | None = None,
    y_um: Sequence[float] | None = None,
    rows: Sequence[int] | None = None,
    cols: Sequence[int] | None = None,
) -> XRFMap:
    """Crop to a region of interest, in µm (cell centres inside ``[low, high]``) or pixels.

    Parameters
    ----------
    xrf_map : XRFMap
        The map.
    x_um, y_um : (float, float), optional
        Inclusive coordinate ranges, µm.
    rows, cols : (int, int), optional
        Pixel ranges ``(start, stop)`` (stop exclusive, like a slice). Do not combine an axis'
        µm and pixel ranges.

    Returns
    -------
    XRFMap
    """
    if x_um is not None and cols is not None:
        raise ValueError("give x_um or cols, not both")
    if y_um is not None and rows is not None:
        raise ValueError("give y_um or rows, not both")
    if all(v is None for v in (x_um, y_um, rows, cols)):
        raise ValueError("crop needs x_um, y_um, rows or cols")

    def select(
        axis: np.ndarray, um: Sequence[float] | None, px: Sequence[int] | None, name: str
    ) -> np.ndarray:
        n = axis.shape[0]
        if px is not None:
            try:
                start, stop = (int(v) for v in px)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a (start, stop) pixel pair, got {px!r}") from None
            if not 0 <= start < stop <= n:
                raise ValueError(f"{name} ({start}, {stop}) must satisfy 0 <= start < stop <= {n}")
            return np.arange(start, stop)
        bounds = _range(um, f"{name}_um")
        if bounds is None:
            return np.arange(n)
        tolerance = 1e-9 * max(1.0, float(np.abs(axis).max()))
        keep = np.flatnonzero((axis >= bounds[0] - tolerance) & (axis <= bounds[1] + tolerance))
        if keep.size == 0:
            raise ValueError(
                f"crop {name}_um {bounds} holds no cell (the map spans {axis.min():.6g}.."
                f"{axis.max():.6g} µm)"
            )
        return np.arange(keep.min(), keep.max() + 1)

    keep_cols = select(xrf_map.x_um, x_um, cols, "x" if cols is None else "cols")
    keep_rows = select(xrf_map.y_um, y_um, rows, "y" if rows is None else "rows")
    window = np.s_[keep_rows[0] : keep_rows[-1] + 1, keep_cols[0] : keep_cols[-1] + 1]
    maps = None if xrf_map.detector_maps is None else xrf_map.detector_maps[(slice(None), *window)]
    note = f"crop rows {keep_rows[0]}:{keep_rows[-1] + 1} cols {keep_cols[0]}:{keep_cols[-1] + 1}"
    return xrf_map.replace(
        data=xrf_map.data[window],
        mask=xrf_map.mask[window],
        detector_maps=maps,
        x_um=xrf_map.x_um[keep_cols],
        y_um=xrf_map.y_um[keep_rows],
        history=(*xrf_map.history, note),
    )
