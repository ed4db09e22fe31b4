"""``asirp gui --screenshot FILE.png``: render each tab with example data, for the docs.

The example is a seeded synthetic element map (discs of different sizes, blurred by a Gaussian
beam, Poisson counts), restored with Richardson-Lucy: the offline tab shows it before/after
with a line profile, the live tab shows it as raw and restored maps with an ROI, as if a device
had sent them (no device needed). Files: ``FILE_offline.png`` and ``FILE_live.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from asirp.safe_files import atomic_write
from asirp.xrf.lines import ChannelROI
from asirp.xrf.maps import XRFMap

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
    """``FILE.png`` -> ``{"offline": FILE_offline.png, "live": FILE_live.png}``."""
    base = Path(path)
    if base.suffix.lower() != ".png":
        raise ValueError(f"the screenshot must be a .png file, got {base.name!r}")
    stem = base.with_suffix("")
    return {tab: Path(f"{stem}_{tab}.png") for tab in ("offline", "live")}


def render_screenshots(window, path: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Fill ``window``'s tabs with the example and save one PNG per tab.

    Parameters
    ----------
    window : asirp_gui.app.MainWindow
        The panel (shown or not).
    path : str or os.PathLike
        ``FILE.png``: the images are ``FILE_offline.png`` and ``FILE_live.png``.
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
    live.method.setCurrentText("richardson_lucy")
    live.iterations.setValue(100)
    live.progress.setValue(100)
    live.restored_view.add_roi()
    window.resize(1400, 760)
    written = []
    for tab_name, tab in (("offline", window.offline), ("live", window.live)):
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
