"""Before/after figures (matplotlib, off-screen)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def before_after_figure(
    measured: np.ndarray,
    restored: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    pixel_um: float | None = None,
    truth: np.ndarray | None = None,
) -> Path:
    """Save measured vs restored maps (and the truth, when known) side by side as a PNG.

    Parameters
    ----------
    measured, restored : numpy.ndarray
        Maps ``(H, W)`` (the first image of a stack is shown).
    path : str or os.PathLike
        Output PNG.
    title : str
        Figure title (method and key figures).
    pixel_um : float, optional
        Pixel size in µm, to label the axes in µm instead of pixels.
    truth : numpy.ndarray, optional
        Ground truth ``(H, W)`` for synthetic data.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("measured", measured), ("restored", restored)]
    if truth is not None:
        panels.append(("ground truth", truth))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4))
    for axis, (label, image) in zip(np.atleast_1d(axes), panels, strict=True):
        image = image[0] if image.ndim == 3 else image
        extent = None
        if pixel_um is not None:
            extent = (0, image.shape[1] * pixel_um, image.shape[0] * pixel_um, 0)
        shown = axis.imshow(image, cmap="magma", extent=extent, interpolation="nearest")
        axis.set_title(label)
        axis.set_xlabel("x (µm)" if pixel_um else "x (px)")
        axis.set_ylabel("y (µm)" if pixel_um else "y (px)")
        figure.colorbar(shown, ax=axis, fraction=0.046, label="counts")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
