"""An optional live plot of the raw and restored maps (matplotlib), kept out of the callback.

:class:`LiveMapPlot` is a listener of :class:`~callbacks.live.LiveRestorer`: the worker thread
only hands it the latest :class:`~callbacks.live.LiveResult` (nothing is drawn there, as
matplotlib is not thread-safe); :meth:`LiveMapPlot.refresh` draws it from the GUI thread, called
by a canvas timer with interactive backends or by the caller (headless, notebooks, tests).

Examples
--------
>>> from callbacks.plot import LiveMapPlot
>>> plot = LiveMapPlot(restorer)   # doctest: +SKIP
>>> RE(grid_scan(...))             # doctest: +SKIP
>>> plot.refresh(); plot.save("live.png")  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from callbacks.live import LiveRestorer, LiveResult


def _limits(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


class LiveMapPlot:
    """Two panels, raw (normalised) map and restored map, updated from live results.

    Parameters
    ----------
    restorer : LiveRestorer, optional
        Subscribe to it now (else call the plot with results yourself).
    figure : matplotlib.figure.Figure, optional
        Figure to draw in (default: a new pyplot figure).
    interval_ms : int
        Refresh period of the canvas timer (interactive backends), ms.
    """

    def __init__(
        self,
        restorer: LiveRestorer | None = None,
        *,
        figure: Any = None,
        interval_ms: int = 500,
    ) -> None:
        if figure is None:
            import matplotlib.pyplot as plt

            figure = plt.figure(figsize=(9.0, 4.0))
        self.figure = figure
        self.axes = figure.subplots(1, 2)
        empty = np.full((2, 2), np.nan)
        self.images = [ax.imshow(empty, origin="lower", cmap="magma") for ax in self.axes]
        for ax, title in zip(self.axes, ("raw", "restored"), strict=True):
            ax.set_title(title)
        for image, ax in zip(self.images, self.axes, strict=True):
            figure.colorbar(image, ax=ax, shrink=0.8, label="counts")
        self._lock = threading.Lock()
        self._pending: LiveResult | None = None
        self.shown: LiveResult | None = None
        self._restorer = restorer
        self._token = restorer.subscribe(self) if restorer is not None else None
        self._timer = figure.canvas.new_timer(interval=interval_ms)
        self._timer.add_callback(self.refresh)
        self._timer.start()

    def __call__(self, result: LiveResult) -> None:
        """Keep the latest result (any thread); drawing waits for :meth:`refresh`."""
        with self._lock:
            self._pending = result

    def refresh(self) -> bool:
        """Draw the latest result if there is a new one (GUI thread); return whether it drew."""
        with self._lock:
            result, self._pending = self._pending, None
        if result is None:
            return False
        raw_image, restored_image = self.images
        raw_image.set_data(result.raw_map)
        raw_image.set_extent(
            (-0.5, result.raw_map.shape[1] - 0.5, -0.5, result.raw_map.shape[0] - 0.5)
        )
        raw_image.set_clim(*_limits(result.raw_map))
        if result.restored_map is not None:
            restored = result.restored_map
            restored_image.set_data(restored)
            restored_image.set_extent(
                (-0.5, restored.shape[1] - 0.5, -0.5, restored.shape[0] - 0.5)
            )
            restored_image.set_clim(*_limits(restored))
            state = "final" if result.final else f"{result.rows_restored} rows"
            self.axes[1].set_title(f"restored: {result.method} ({state})")
        else:
            self.axes[1].set_title(f"restoration failed: {result.error}"[:60])
        self.axes[0].set_title(f"raw: {100 * result.progress:.0f} % measured")
        self.figure.suptitle(f"run {result.run_uid[:8]}")
        self.figure.canvas.draw_idle()
        self.shown = result
        return True

    def save(self, path: str | Path) -> Path:
        """Refresh and save the figure; return the path."""
        self.refresh()
        self.figure.savefig(path)
        return Path(path)

    def close(self) -> None:
        """Stop the timer and unsubscribe."""
        self._timer.stop()
        if self._restorer is not None and self._token is not None:
            self._restorer.unsubscribe(self._token)
            self._token = None
