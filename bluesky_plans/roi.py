"""Regions of interest on a (restored) scan map: detection strategies and the rules around them.

A strategy turns a 2-D map into candidate regions (pixel bounding boxes with a score); the
shared post-processing then converts them to sample coordinates (µm), adds margins, enforces
minimum and maximum sizes, merges regions that overlap, ranks them by score and caps their
number. Strategies are pluggable: :func:`register_roi_strategy` adds one under a name that
:func:`detect_rois` accepts.

Built-in strategies
-------------------
``threshold``
    Connected regions above a level: Otsu's threshold of the map by default, or a level given
    in map units (for example an element concentration in normalised counts). Score: the
    integrated signal above the level.
``top_k``
    The ``k`` connected regions with the largest integrated signal above a lower level
    (``level``, default: the map's median plus ``sigma`` robust standard deviations). Useful
    when a few strong features matter more than everything above a threshold.
``hotspots``
    Local hotspots on a smooth background (element hotspots in tissue): the map minus its
    median over ``background_px`` x ``background_px`` pixels (which keeps ramps and removes
    peaks smaller than about half the window), thresholded at the residual's median plus
    ``sigma`` robust standard deviations (the noise of the flat parts). Score: the integrated
    residual above that level.
``peaks``
    Each significant local maximum grown into its own object, boxed tightly and scored by the
    amount it holds (:mod:`bluesky_plans.peaks`): the strategy for restored maps, where close
    and weak objects have their own maxima; with ``smooth_px`` (a matched filter) the raw-map
    baseline.
``detail``
    Regions of high local detail: the smoothed squared gradient magnitude of the map,
    thresholded with Otsu. Score: the integrated detail. Finds edges and texture rather than
    bright areas (e.g. boundaries between tissues).

No control-system imports: this module is pure numpy/scipy/scikit-image so that the plans,
the Tango device and offline notebooks can share it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from bluesky_plans.peaks import peak_strategy

PixelBox = tuple[int, int, int, int]
"""``(row_start, row_stop, col_start, col_stop)``, stops exclusive, in map pixels (or, as
floats, edges in continuous pixel units: pixel ``i`` spans ``[i, i + 1)``)."""

StrategyFunction = Callable[..., list[tuple[PixelBox, float]]]
"""``f(image, **options) -> [(pixel_box, score), ...]`` on a finite 2-D float map."""


@dataclass(frozen=True)
class RegionOfInterest:
    """A rectangular region of the sample, in stage coordinates (µm).

    Attributes
    ----------
    x_min_um, x_max_um, y_min_um, y_max_um : float
        Edges of the region, µm (``x_min_um < x_max_um``, ``y_min_um < y_max_um``).
    score : float
        The strategy's figure of merit (larger is more interesting; unit of the map times
        pixels for integrated signal).
    strategy : str
        Name of the strategy that found it (``"merged"`` parts keep the first name).
    """

    x_min_um: float
    x_max_um: float
    y_min_um: float
    y_max_um: float
    score: float
    strategy: str

    def __post_init__(self) -> None:
        edges = (self.x_min_um, self.x_max_um, self.y_min_um, self.y_max_um)
        if not all(math.isfinite(edge) for edge in edges):
            raise ValueError(f"region edges must be finite, got {edges}")
        if self.x_max_um <= self.x_min_um or self.y_max_um <= self.y_min_um:
            raise ValueError(f"region must have positive width and height, got {edges}")

    @property
    def width_um(self) -> float:
        """Extent along x, µm."""
        return self.x_max_um - self.x_min_um

    @property
    def height_um(self) -> float:
        """Extent along y, µm."""
        return self.y_max_um - self.y_min_um

    @property
    def area_um2(self) -> float:
        """Area, µm²."""
        return self.width_um * self.height_um

    @property
    def centre_um(self) -> tuple[float, float]:
        """Centre ``(x, y)``, µm."""
        return (0.5 * (self.x_min_um + self.x_max_um), 0.5 * (self.y_min_um + self.y_max_um))

    def overlaps(self, other: RegionOfInterest) -> bool:
        """Whether the two rectangles share area (touching edges count as overlap)."""
        return not (
            other.x_min_um > self.x_max_um
            or other.x_max_um < self.x_min_um
            or other.y_min_um > self.y_max_um
            or other.y_max_um < self.y_min_um
        )

    def union(self, other: RegionOfInterest) -> RegionOfInterest:
        """The bounding rectangle of both; scores add."""
        return RegionOfInterest(
            min(self.x_min_um, other.x_min_um),
            max(self.x_max_um, other.x_max_um),
            min(self.y_min_um, other.y_min_um),
            max(self.y_max_um, other.y_max_um),
            self.score + other.score,
            self.strategy,
        )

    def contains(self, x_um: float, y_um: float) -> bool:
        """Whether the point ``(x_um, y_um)`` lies inside (edges included)."""
        return self.x_min_um <= x_um <= self.x_max_um and self.y_min_um <= y_um <= self.y_max_um

    def as_dict(self) -> dict[str, float | str]:
        """JSON-ready description (for start documents and reports)."""
        return {
            "x_min_um": self.x_min_um,
            "x_max_um": self.x_max_um,
            "y_min_um": self.y_min_um,
            "y_max_um": self.y_max_um,
            "score": self.score,
            "strategy": self.strategy,
        }


def _connected_regions(mask: np.ndarray, weight: np.ndarray) -> list[tuple[PixelBox, float]]:
    """Bounding boxes and integrated ``weight`` of the 8-connected regions of ``mask``."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    sums = ndimage.sum_labels(weight, labels, index=np.arange(1, count + 1))
    regions = []
    for index, slices in enumerate(ndimage.find_objects(labels)):
        rows, cols = slices
        box = (rows.start, rows.stop, cols.start, cols.stop)
        regions.append((box, float(sums[index])))
    return regions


def otsu_level(image: np.ndarray) -> float:
    """Otsu's threshold of a finite map (scikit-image), in map units."""
    from skimage.filters import threshold_otsu

    if float(np.ptp(image)) == 0.0:
        return float(image.flat[0])
    return float(threshold_otsu(image))


def threshold_strategy(
    image: np.ndarray, *, level: float | None = None
) -> list[tuple[PixelBox, float]]:
    """Connected regions above ``level`` (Otsu's threshold when ``None``); see module notes."""
    cut = otsu_level(image) if level is None else float(level)
    return _connected_regions(image > cut, np.clip(image - cut, 0.0, None))


def top_k_strategy(
    image: np.ndarray, *, k: int = 5, level: float | None = None, sigma: float = 3.0
) -> list[tuple[PixelBox, float]]:
    """The ``k`` strongest connected regions above a robust level; see module notes."""
    if int(k) < 1:
        raise ValueError(f"top_k needs k >= 1, got {k}")
    if level is None:
        median = float(np.median(image))
        robust_std = 1.4826 * float(np.median(np.abs(image - median)))
        level = median + sigma * robust_std
    regions = _connected_regions(image > level, np.clip(image - level, 0.0, None))
    regions.sort(key=lambda item: item[1], reverse=True)
    return regions[: int(k)]


def hotspot_strategy(
    image: np.ndarray, *, background_px: int = 7, sigma: float = 4.0
) -> list[tuple[PixelBox, float]]:
    """Local hotspots above a smooth (median) background; see module notes."""
    if int(background_px) < 3:
        raise ValueError(f"hotspots background_px must be >= 3, got {background_px}")
    if sigma <= 0:
        raise ValueError(f"hotspots sigma must be > 0, got {sigma}")
    tophat = image - ndimage.median_filter(image, size=int(background_px), mode="reflect")
    median = float(np.median(tophat))
    robust_std = 1.4826 * float(np.median(np.abs(tophat - median)))
    cut = median + sigma * max(robust_std, np.finfo(np.float64).tiny)
    return _connected_regions(tophat > cut, np.clip(tophat - cut, 0.0, None))


def detail_strategy(
    image: np.ndarray, *, smoothing_px: float = 1.5
) -> list[tuple[PixelBox, float]]:
    """Regions of high local gradient energy; see module notes."""
    if smoothing_px <= 0:
        raise ValueError(f"detail smoothing_px must be > 0, got {smoothing_px}")
    gradient_y = ndimage.sobel(image, axis=0, mode="nearest")
    gradient_x = ndimage.sobel(image, axis=1, mode="nearest")
    energy = ndimage.gaussian_filter(gradient_y**2 + gradient_x**2, smoothing_px)
    cut = otsu_level(energy)
    return _connected_regions(energy > cut, np.clip(energy - cut, 0.0, None))


_STRATEGIES: dict[str, StrategyFunction] = {
    "peaks": peak_strategy,
    "threshold": threshold_strategy,
    "top_k": top_k_strategy,
    "hotspots": hotspot_strategy,
    "detail": detail_strategy,
}


def register_roi_strategy(name: str, strategy: StrategyFunction) -> None:
    """Make ``strategy`` available to :func:`detect_rois` under ``name``.

    Parameters
    ----------
    name : str
        Strategy name (snake_case); an existing name is replaced.
    strategy : callable
        ``strategy(image, **options) -> [((r0, r1, c0, c1), score), ...]`` on a finite
        ``(H, W)`` float64 map, boxes in pixels with exclusive stops.
    """
    if not name.isidentifier():
        raise ValueError(f"strategy name must be an identifier, got {name!r}")
    if not callable(strategy):
        raise TypeError(f"strategy must be callable, got {type(strategy).__name__}")
    _STRATEGIES[name] = strategy


def roi_strategies() -> list[str]:
    """Names accepted by :func:`detect_rois`."""
    return sorted(_STRATEGIES)


def _axis_step(axis_um: np.ndarray, name: str) -> float:
    if axis_um.ndim != 1 or axis_um.size < 2:
        raise ValueError(f"{name} must be a 1-D axis with at least 2 points")
    if not np.all(np.isfinite(axis_um)):
        raise ValueError(f"{name} must be finite")
    steps = np.diff(axis_um)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise ValueError(f"{name} must be strictly monotonic")
    return float(np.mean(np.abs(steps)))


def _box_to_region(
    box: PixelBox, score: float, x_um: np.ndarray, y_um: np.ndarray, strategy: str
) -> RegionOfInterest:
    """Pixel box → µm rectangle covering the pixels' full extent (centres ± half a step).

    Integer boxes are index ranges; a box with fractional edges (a strategy that locates
    objects between pixel centres) is in continuous pixel units, pixel ``i`` spanning
    ``[i, i + 1)``, mapped linearly on the (uniform) axes.
    """
    row_start, row_stop, col_start, col_stop = box
    if not all(isinstance(edge, int | np.integer) for edge in box):

        def edges(axis: np.ndarray, start: float, stop: float) -> tuple[float, float]:
            step = (float(axis[-1]) - float(axis[0])) / (axis.size - 1)
            ends = (axis[0] + (start - 0.5) * step, axis[0] + (stop - 0.5) * step)
            return float(min(ends)), float(max(ends))

        x_min, x_max = edges(x_um, col_start, col_stop)
        y_min, y_max = edges(y_um, row_start, row_stop)
        return RegionOfInterest(x_min, x_max, y_min, y_max, score, strategy)
    half_x = 0.5 * _axis_step(x_um, "x_um")
    half_y = 0.5 * _axis_step(y_um, "y_um")
    xs = x_um[col_start:col_stop]
    ys = y_um[row_start:row_stop]
    return RegionOfInterest(
        float(xs.min()) - half_x,
        float(xs.max()) + half_x,
        float(ys.min()) - half_y,
        float(ys.max()) + half_y,
        score,
        strategy,
    )


def _resize(
    region: RegionOfInterest, minimum_um: float, maximum_um: float | None
) -> list[RegionOfInterest]:
    """Grow a region to the minimum size about its centre; split one larger than the maximum."""
    centre_x, centre_y = region.centre_um
    half_w = max(region.width_um, minimum_um) / 2
    half_h = max(region.height_um, minimum_um) / 2
    grown = replace(
        region,
        x_min_um=centre_x - half_w,
        x_max_um=centre_x + half_w,
        y_min_um=centre_y - half_h,
        y_max_um=centre_y + half_h,
    )
    if maximum_um is None or (grown.width_um <= maximum_um and grown.height_um <= maximum_um):
        return [grown]
    columns = math.ceil(grown.width_um / maximum_um)
    rows = math.ceil(grown.height_um / maximum_um)
    tile_w, tile_h = grown.width_um / columns, grown.height_um / rows
    share = grown.score / (rows * columns)
    return [
        replace(
            grown,
            x_min_um=grown.x_min_um + column * tile_w,
            x_max_um=grown.x_min_um + (column + 1) * tile_w,
            y_min_um=grown.y_min_um + row * tile_h,
            y_max_um=grown.y_min_um + (row + 1) * tile_h,
            score=share,
        )
        for row in range(rows)
        for column in range(columns)
    ]


MERGE_RULES = ("union", "cheaper")
"""How :func:`merge_overlapping` treats two overlapping regions: always union them, or only
when the union covers no more area than the two do apart (tight boxes stay tight)."""


def merge_overlapping(
    regions: list[RegionOfInterest], rule: str = "union"
) -> list[RegionOfInterest]:
    """Union overlapping regions until none left overlaps (scores add).

    Parameters
    ----------
    regions : list of RegionOfInterest
        Candidates.
    rule : {"union", "cheaper"}
        ``"union"``: every overlapping pair becomes its bounding rectangle (no two regions
        overlap afterwards). ``"cheaper"``: only pairs whose bounding rectangle is no larger
        than the sum of their areas (otherwise both are kept and their small overlap is
        scanned twice, which costs less than the corners of a big rectangle).
    """
    if rule not in MERGE_RULES:
        raise ValueError(f"merge rule must be one of {MERGE_RULES}, got {rule!r}")
    merged = list(regions)
    changed = True
    while changed:
        changed = False
        result: list[RegionOfInterest] = []
        for region in merged:
            for index, kept in enumerate(result):
                cheaper = kept.union(region).area_um2 <= kept.area_um2 + region.area_um2
                if kept.overlaps(region) and (rule == "union" or cheaper):
                    result[index] = kept.union(region)
                    changed = True
                    break
            else:
                result.append(region)
        merged = result
    return merged


def _clip(region: RegionOfInterest, bounds: tuple[float, float, float, float]):
    x_min, x_max, y_min, y_max = bounds
    clipped = (
        max(region.x_min_um, x_min),
        min(region.x_max_um, x_max),
        max(region.y_min_um, y_min),
        min(region.y_max_um, y_max),
    )
    if clipped[1] <= clipped[0] or clipped[3] <= clipped[2]:
        return None
    return replace(
        region,
        x_min_um=clipped[0],
        x_max_um=clipped[1],
        y_min_um=clipped[2],
        y_max_um=clipped[3],
    )


def detect_rois(
    image: np.ndarray,
    x_um: np.ndarray,
    y_um: np.ndarray,
    strategy: str = "threshold",
    *,
    margin_um: float = 0.0,
    min_size_um: float = 0.0,
    max_size_um: float | None = None,
    max_count: int | None = None,
    bounds_um: tuple[float, float, float, float] | None = None,
    merge: str = "union",
    **options: float,
) -> list[RegionOfInterest]:
    """Find regions of interest on a map and apply the shared rules.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` map (restored or raw), any float unit. Unmeasured pixels may be NaN; they
        are treated as the map's minimum (never interesting).
    x_um, y_um : numpy.ndarray
        ``(W,)`` and ``(H,)`` pixel-centre coordinates, µm (monotonic).
    strategy : str
        A name from :func:`roi_strategies`.
    margin_um : float
        Added on every side of each region before merging, µm.
    min_size_um, max_size_um : float
        Regions smaller than ``min_size_um`` grow about their centre; larger than
        ``max_size_um`` are split into tiles no larger than it, µm; each tile gets the share of
        the region's score that its signal above the map's median holds.
    max_count : int, optional
        Keep at most this many regions, best score first.
    bounds_um : (x_min, x_max, y_min, y_max), optional
        Clip regions to this rectangle (the scannable area), µm. Default: the map's extent.
    merge : {"union", "cheaper"}
        How overlapping regions merge (:func:`merge_overlapping`).
    **options
        Passed to the strategy (``level``, ``k``, ``sigma``, ``smoothing_px``).

    Returns
    -------
    list of RegionOfInterest
        Non-overlapping regions, best score first.

    Raises
    ------
    ValueError
        Unknown strategy, a map that is not 2-D or has no finite value, axes that do not match
        the map, negative sizes or margins, a maximum size below the minimum.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown ROI strategy {strategy!r}; available: {roi_strategies()}")
    if merge not in MERGE_RULES:
        raise ValueError(f"merge must be one of {MERGE_RULES}, got {merge!r}")
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2 or min(data.shape) < 2:
        raise ValueError(f"ROI detection needs a 2-D map of at least 2x2, got {data.shape}")
    x_axis = np.asarray(x_um, dtype=np.float64)
    y_axis = np.asarray(y_um, dtype=np.float64)
    if x_axis.shape != (data.shape[1],) or y_axis.shape != (data.shape[0],):
        raise ValueError(
            f"axes must match the map {data.shape}: x_um {x_axis.shape}, y_um {y_axis.shape}"
        )
    _axis_step(x_axis, "x_um")
    _axis_step(y_axis, "y_um")
    if margin_um < 0 or min_size_um < 0:
        raise ValueError(f"margin_um and min_size_um must be >= 0, got {margin_um}, {min_size_um}")
    if max_size_um is not None and max_size_um <= max(min_size_um, 0.0):
        raise ValueError(f"max_size_um ({max_size_um}) must exceed min_size_um ({min_size_um})")
    if max_count is not None and int(max_count) < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError("the map has no finite value")
    data = np.where(finite, data, data[finite].min())

    candidates = [
        _box_to_region(box, score, x_axis, y_axis, strategy)
        for box, score in _STRATEGIES[strategy](data, **options)
    ]
    if bounds_um is None:
        half_x = 0.5 * _axis_step(x_axis, "x_um")
        half_y = 0.5 * _axis_step(y_axis, "y_um")
        bounds_um = (
            float(x_axis.min()) - half_x,
            float(x_axis.max()) + half_x,
            float(y_axis.min()) - half_y,
            float(y_axis.max()) + half_y,
        )
    widened = [
        replace(
            region,
            x_min_um=region.x_min_um - margin_um,
            x_max_um=region.x_max_um + margin_um,
            y_min_um=region.y_min_um - margin_um,
            y_max_um=region.y_max_um + margin_um,
        )
        for region in candidates
    ]
    sized = [piece for region in widened for piece in _resize(region, min_size_um, None)]
    regions = merge_overlapping(sized, merge)
    if max_size_um is not None:
        excess = np.clip(data - np.median(data), 0.0, None)

        def signal(region: RegionOfInterest) -> float:
            columns = (x_axis >= region.x_min_um) & (x_axis <= region.x_max_um)
            rows = (y_axis >= region.y_min_um) & (y_axis <= region.y_max_um)
            return float(excess[np.ix_(rows, columns)].sum())

        split = []
        for region in regions:
            tiles = _resize(region, 0.0, max_size_um)
            if len(tiles) > 1:  # share the score by the signal each tile holds
                shares = np.array([signal(tile) for tile in tiles])
                weights = shares / shares.sum() if shares.sum() > 0 else None
                if weights is not None:
                    tiles = [
                        replace(tile, score=region.score * float(weight))
                        for tile, weight in zip(tiles, weights, strict=True)
                    ]
            split.extend(tiles)
        regions = split
    clipped = [_clip(region, bounds_um) for region in regions]
    kept = sorted(
        (region for region in clipped if region is not None),
        key=lambda region: region.score,
        reverse=True,
    )
    return kept if max_count is None else kept[: int(max_count)]
