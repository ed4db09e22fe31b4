"""Map views on pyqtgraph: a colour-mapped image in µm, and a line profile across maps.

:class:`MapView` shows one ``(ny, nx)`` map with a colour map and an optional display
threshold (values outside ``[low, high]`` are clipped for display only), with y up as in
``asirp.xrf.export.write_map_png``. It can carry a rectangular ROI the operator drags, read back
in µm. :class:`ProfileView` draws one row of several maps (before/after) against x in µm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QRectF
from qtpy.QtWidgets import QVBoxLayout, QWidget

COLOUR_MAPS = ("viridis", "inferno", "magma", "plasma", "cividis")
"""Colour maps offered (pyqtgraph's bundled matplotlib maps)."""


class MapView(QWidget):
    """One map with axes in µm.

    Parameters
    ----------
    title : str
        Shown above the map.
    """

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(title=title)
        self.plot.setAspectLocked(True)
        self.plot.setLabel("bottom", "x", units="µm")
        self.plot.setLabel("left", "y", units="µm")
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image_item)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.data: np.ndarray | None = None
        self.extent_um: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)
        self.roi: pg.RectROI | None = None
        self._cmap = "viridis"
        self._levels: tuple[float | None, float | None] = (None, None)
        self.set_colour_map("viridis")

    def set_colour_map(self, name: str) -> None:
        """Use colour map ``name`` (one of :data:`COLOUR_MAPS`)."""
        if name not in COLOUR_MAPS:
            raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLOUR_MAPS)}")
        self._cmap = name
        self.image_item.setColorMap(pg.colormap.get(name))

    def set_threshold(self, low: float | None, high: float | None) -> None:
        """Display levels, counts: values outside ``[low, high]`` saturate; None: data range."""
        self._levels = (low, high)
        self._redraw()

    def set_map(self, data: np.ndarray, extent_um: Sequence[float] | None = None) -> None:
        """Show ``data`` ``(ny, nx)`` over ``extent_um`` = (x0, x1, y0, y1) µm (default: pixels)."""
        image = np.asarray(data, dtype=np.float32)
        if image.ndim != 2:
            raise ValueError(f"a map is 2-D; got shape {image.shape}")
        if image.size == 0:  # a device with no result yet sends an empty image
            self.clear()
            return
        self.data = image
        ny, nx = image.shape
        self.extent_um = tuple(float(v) for v in extent_um) if extent_um else (0, nx, 0, ny)
        self._redraw()
        self.plot.autoRange()

    def clear(self) -> None:
        """Show nothing."""
        self.data = None
        self.image_item.clear()

    def _redraw(self) -> None:
        if self.data is None:
            return
        finite = self.data[np.isfinite(self.data)]
        low, high = self._levels
        low = float(finite.min()) if low is None and finite.size else (low or 0.0)
        high = float(finite.max()) if high is None and finite.size else (high or 1.0)
        if high <= low:
            high = low + 1.0
        self.image_item.setImage(self.data, levels=(low, high))
        x0, x1, y0, y1 = self.extent_um
        self.image_item.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))

    def add_roi(self) -> pg.RectROI:
        """Put a draggable rectangle on the middle half of the map (replacing any other)."""
        if self.roi is not None:
            self.plot.removeItem(self.roi)
        x0, x1, y0, y1 = self.extent_um
        width, height = (x1 - x0) / 2, (y1 - y0) / 2
        self.roi = pg.RectROI([x0 + width / 2, y0 + height / 2], [width, height], pen="r")
        self.plot.addItem(self.roi)
        return self.roi

    def roi_um(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The ROI as ``((x_min, x_max), (y_min, y_max))`` in µm, or None without one."""
        if self.roi is None:
            return None
        (x, y), (width, height) = self.roi.pos(), self.roi.size()
        return (float(x), float(x + width)), (float(y), float(y + height))


class ProfileView(QWidget):
    """One row of several maps against x (µm): the line profile across before and after."""

    COLOURS = ("#1f77b4", "#d62728", "#2ca02c")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(title="Line profile")
        self.plot.setLabel("bottom", "x", units="µm")
        self.plot.setLabel("left", "counts")
        self.plot.addLegend()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.curves: dict[str, np.ndarray] = {}

    def show_row(
        self, maps: dict[str, np.ndarray], extent_um: Sequence[float], row_fraction: float
    ) -> None:
        """Plot the row at height ``row_fraction`` (0 bottom .. 1 top) of each map.

        Maps (name -> ``(ny, nx)``) may differ in shape (an upscaled restoration): each is
        drawn on its own x grid (µm) over the same extent, at the same physical height.
        """
        self.plot.clear()
        self.curves = {}
        x0, x1, _, _ = extent_um
        for index, (name, data) in enumerate(maps.items()):
            ny, nx = data.shape
            row = min(max(int(row_fraction * ny), 0), ny - 1)
            values = np.asarray(data[row], dtype=np.float64)
            step = (x1 - x0) / nx
            x = x0 + step * (np.arange(nx) + 0.5)
            pen = pg.mkPen(self.COLOURS[index % len(self.COLOURS)], width=2)
            self.plot.plot(x, values, pen=pen, name=name)
            self.curves[name] = values
