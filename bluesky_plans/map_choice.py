"""Which coarse map decides: the restored one, or the raw one where restoration adds nothing.

Restoration cannot help where the beam hides nothing: hotspots much larger than the beam, or
steps too coarse for the beam's blur to matter. There the restored map is the raw map plus
amplified noise, and deciding on it only adds risk. :func:`choose_map` measures how much
restoration changed the map, relative to the map's own contrast (``||restored - raw|| /
||raw - median(raw)||`` over the measured pixels), and below ``min_change`` says so and picks
the raw map.

Measured on the simulated samples with a 50 µm beam (``sim``; seed 0): the clustered tissue
changes by 31 % (50 µm steps) to 40 % (25 µm steps); a tissue whose hotspots have radii of
100-160 µm changes by 3-4 %. The default threshold, 10 %, sits between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_CHANGE = 0.10
"""Smallest relative change for which the restored map decides."""


@dataclass(frozen=True)
class MapChoice:
    """The map that decides, and why.

    Attributes
    ----------
    image : numpy.ndarray
        ``(H, W)`` map the regions are found on.
    map_used : str
        ``"restored"`` or ``"raw"``.
    reason : str
        Empty when the restored map decides; otherwise why the raw one does.
    change : float or None
        Relative change restoration made (``None`` without a restored map).
    """

    image: np.ndarray
    map_used: str
    reason: str
    change: float | None


def restoration_change(raw: np.ndarray, restored: np.ndarray) -> float:
    """``||restored - raw|| / ||raw - median(raw)||`` over the pixels finite in both (≥ 0).

    Raises
    ------
    ValueError
        Shapes differ, or no pixel is finite in both.
    """
    raw = np.asarray(raw, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    if raw.shape != restored.shape:
        raise ValueError(f"maps differ in shape: raw {raw.shape}, restored {restored.shape}")
    both = np.isfinite(raw) & np.isfinite(restored)
    if not both.any():
        raise ValueError("no pixel is finite in both maps")
    contrast = float(np.linalg.norm(raw[both] - np.median(raw[both])))
    return float(np.linalg.norm(restored[both] - raw[both])) / max(contrast, 1e-300)


def choose_map(
    raw: np.ndarray, restored: np.ndarray | None, *, min_change: float = MIN_CHANGE
) -> MapChoice:
    """The restored map, unless there is none or it changed less than ``min_change``.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(H, W)`` raw coarse map (NaN where unmeasured).
    restored : numpy.ndarray or None
        ``(H, W)`` restored map, ``None`` when restoration failed.
    min_change : float
        Threshold of :func:`restoration_change` (0 always keeps the restored map).
    """
    if not (math.isfinite(min_change) and min_change >= 0):
        raise ValueError(f"min_change must be a finite number >= 0, got {min_change}")
    if restored is None:
        return MapChoice(raw, "raw", "no restored map", None)
    change = restoration_change(raw, restored)
    if change < min_change:
        reason = (
            f"restoration changed the map by {change:.0%} of its contrast (< {min_change:.0%}): "
            "the beam hides nothing here at this step, so the raw map decides"
        )
        return MapChoice(raw, "raw", reason, change)
    return MapChoice(restored, "restored", "", change)
