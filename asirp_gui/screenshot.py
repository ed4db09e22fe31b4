"""``asirp gui --screenshot FILE.png``: render each tab with example data, for the docs.

The example is a seeded synthetic element map (discs of different sizes, blurred by a Gaussian
beam, Poisson counts), restored with Richardson-Lucy: the offline tab shows it before/after
with a line profile, the live tab shows it as raw and restored maps with an ROI, as if a device
had sent them (no device needed), and the results tab lists it as a past restoration read from
tiled (no server needed). Files: ``FILE_offline.png``, ``FILE_live.png`` and
``FILE_results.png``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from asirp.safe_files import atomic_write
from asirp.xrf.lines import ChannelROI
from asirp.xrf.maps import XRFMap

TABS = ("offline", "live", "results")
"""The tabs rendered, in order (one image each)."""

EXAMPLE_PIXEL_UM = 0.5
EXAMPLE_BEAM_FWHM_UM = 2.0
FWHM_PER_SIGMA = 2.3548


def example_map(shape: tuple[int, int] = (48, 64), seed: int = 0) -> XRFMap:
    """A synthetic Fe Kα map ``shape`` (counts), 0.5 µm steps, blurred by a 2 µm beam."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    truth = np.full(shape, 5.0)
    for radius in (1.5, 2.5, 4.0, 6.0):
        y, x = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8)
        truth[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = 120.0
    sigma_px = EXAMPLE_BEAM_FWHM_UM / FWHM_PER_SIGMA / EXAMPLE_PIXEL_UM
    counts = rng.poisson(gaussian_filter(truth, sigma_px)).astype(np.float32)
    return XRFMap(
        data=counts,
        x_um=EXAMPLE_PIXEL_UM * (np.arange(shape[1]) + 0.5),
        y_um=EXAMPLE_PIXEL_UM * (np.arange(shape[0]) + 0.5),
        mask=np.ones(shape, bool),
        element="Fe",
        line="Ka",
        rois=(ChannelROI("Fe Ka", 630, 650, 6.40),),
        metadata={"beam_fwhm_um": EXAMPLE_BEAM_FWHM_UM, "sample": "synthetic example"},
    )


def screenshot_paths(path: str | os.PathLike) -> dict[str, Path]:
    """``FILE.png`` -> ``{"offline": FILE_offline.png, "live": FILE_live.png, ...}``."""
    base = Path(path)
    if base.suffix.lower() != ".png":
        raise ValueError(f"the screenshot must be a .png file, got {base.name!r}")
    stem = base.with_suffix("")
    return {tab: Path(f"{stem}_{tab}.png") for tab in TABS}


def render_screenshots(window, path: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Fill ``window``'s tabs with the example and save one PNG per tab.

    Parameters
    ----------
    window : asirp_gui.app.MainWindow
        The panel (shown or not).
    path : str or os.PathLike
        ``FILE.png``: the images are ``FILE_offline.png``, ``FILE_live.png`` and
        ``FILE_results.png``.
    overwrite : bool
        Replace existing images (default: refuse).

    Returns
    -------
    list of Path
        The images written.
    """
    from qtpy.QtCore import QBuffer, QByteArray, QIODevice
    from qtpy.QtWidgets import QApplication

    paths = screenshot_paths(path)
    xrf_map = example_map()
    restoration = xrf_map.restore(
        "richardson_lucy", beam_fwhm_um=EXAMPLE_BEAM_FWHM_UM, device="cpu"
    )
    window.offline.set_map(xrf_map)
    window.offline.show_restoration(restoration)
    window.offline.file_label.setText("example: synthetic Fe Kα map")
    live = window.live
    live.pixel_um.setValue(EXAMPLE_PIXEL_UM)
    live.beam_fwhm_um.setValue(EXAMPLE_BEAM_FWHM_UM)
    live.show_raw(xrf_map.data)
    live.show_restored(np.asarray(restoration.image))
    live.state.setText("ON (example, no device)")
    live.outcome.setText("succeeded")
    live.status.setText("example maps: connect to a device for live ones")
    cautions = list(restoration.cautions())
    live.cautions.setText("\n".join(cautions) if cautions else "none")
    live.method.setCurrentText("richardson_lucy")
    live.iterations.setValue(100)
    live.progress.setValue(100)
    live.restored_view.add_roi()
    _fill_results(window.results, xrf_map, restoration)
    window.resize(1400, 760)
    written = []
    tabs = {"offline": window.offline, "live": window.live, "results": window.results}
    for tab_name, tab in tabs.items():
        window.tabs.setCurrentWidget(tab)
        window.show()
        QApplication.processEvents()
        buffer = QBuffer()
        data = QByteArray()
        buffer.setBuffer(data)
        buffer.open(QIODevice.WriteOnly)
        window.grab().save(buffer, "PNG")
        buffer.close()
        with atomic_write(paths[tab_name], overwrite=overwrite) as output:
            output.file.write(bytes(data))
        written.append(paths[tab_name])
    return written


def _fill_results(browser, xrf_map: XRFMap, restoration: Any) -> None:
    """List the example as two past restorations and show the newest, as if read from tiled."""
    from asirp_gui.tiled_results import ResultMaps, ResultSummary, extent_from_centres

    now = time.time()
    shape = tuple(xrf_map.data.shape)
    runs = [
        ResultSummary(
            uid=f"{index:08x}-example",
            time=now - 600.0 * index,
            raw_uid=f"{index + 1:08x}-raw-example",
            raw_scan_id=42 - index,
            source="Fe Ka / i0",
            method=method,
            shape=shape,
            outcome="success",
        )
        for index, method in enumerate((restoration.method, "wiener"))
    ]
    extent = extent_from_centres(xrf_map.y_um, xrf_map.x_um)
    details = {
        "uid": runs[0].uid,
        "parent_uid": runs[0].raw_uid,
        "parent_scan_id": runs[0].raw_scan_id,
        "method": restoration.method,
        "parameters": restoration.params,
        "map": {"source": {"kind": "element", "element": "Fe", "normalize": "i0"}},
        "outcome": {"exit_status": "success", "reason": "", "restorations": 1},
        "cautions": list(restoration.cautions()),
        "metrics": dict(restoration.metrics),
        "example": "no tiled server: connect to one for past results",
    }
    result = ResultMaps(
        uid=runs[0].uid,
        raw=np.asarray(xrf_map.data, dtype=np.float32),
        restored=np.asarray(restoration.image, dtype=np.float32),
        raw_extent_um=extent,
        restored_extent_um=extent,
        details=details,
    )
    browser.uri.setText("http://tiled-host:8000/api/v1")
    browser.show_list(runs)
    browser.show_result(0, runs[0], result)
