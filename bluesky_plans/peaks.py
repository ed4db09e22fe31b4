"""Objects on a map as peaks: where each one is, how big it is, how much it holds.

The ``peaks`` ROI strategy (:func:`peak_strategy`) is the one that uses what restoration
gives. On a restored map an object is as small as it really is, two close objects are two
peaks, and a weak object in a strong one's tail has its own maximum; so the strategy finds
every significant local maximum, grows each into its own object (the pixels of its watershed
basin at or above half its height), and returns the object's bounding box (tight: the object,
not the beam) with the amount it holds as the score.

The same strategy on a raw map is the honest baseline: there ``smooth_px`` applies a matched
filter first (the raw map's noise is white; a restored map's is not, and smoothing it would
undo the restoration), and objects come out as wide as the beam, merged where the beam merges
them.

Significance
    A local maximum counts when its height above the background (the map's median over
    ``background_px`` pixels, or the map's median) exceeds ``sigma`` robust standard
    deviations of the map's excess (``1.4826 x`` its median absolute deviation), and the
    object's amount exceeds ``min_amount``.
Amount
    The excess summed over the object's basin where it is at least ``tail_fraction`` of the
    peak height, in map units x pixels. Blurring moves signal but keeps it, so the raw and the
    restored map estimate the same amount for an isolated object; only the restored one splits
    it between objects the beam merged.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PixelBox = tuple[int, int, int, int]
"""``(row_start, row_stop, col_start, col_stop)``, stops exclusive, in map pixels."""


def _background(image: np.ndarray, background_px: float) -> np.ndarray | float:
    if background_px <= 0:
        return float(np.median(image))
    size = max(3, round(background_px) | 1)
    return ndimage.median_filter(image, size=size, mode="reflect")


def _objects_of(
    excess: np.ndarray,
    maxima: np.ndarray,
    *,
    min_amount: float,
    half_fraction: float,
    tail_fraction: float,
    level: np.ndarray | float = 0.0,
    counts_sigma: float = 0.0,
    footprint_px: float = 1.0,
) -> list[tuple[PixelBox, float, tuple[float, float], float]]:
    """Grow each maximum of ``excess`` into its watershed basin; box, amount, centre, height."""
    from skimage.segmentation import watershed

    markers, count = ndimage.label(maxima, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    basins = watershed(-excess, markers, mask=excess > 0)
    heights = ndimage.maximum(excess, markers, index=np.arange(1, count + 1))
    objects = []
    for label, slices in enumerate(ndimage.find_objects(basins), start=1):
        if slices is None:
            continue
        height = float(heights[label - 1])
        local = excess[slices]
        basin = basins[slices] == label
        core = basin & (local >= half_fraction * height)
        counted = basin & (local >= tail_fraction * height)
        amount = float(local[counted].sum())
        if amount < min_amount or not core.any():
            continue
        if counts_sigma > 0:  # Poisson: the object's counts and its background's, in counts
            pixels = max(float(counted.sum()), footprint_px)
            background = float(np.mean(np.broadcast_to(level, excess.shape)[slices][counted]))
            if amount < counts_sigma * np.sqrt(max(amount + max(background, 0.0) * pixels, 1e-12)):
                continue
        rows, cols = np.nonzero(core)
        weights = local[rows, cols]
        centre = (
            float(slices[0].start + np.average(rows, weights=weights)),
            float(slices[1].start + np.average(cols, weights=weights)),
        )
        box = (
            slices[0].start + int(rows.min()),
            slices[0].start + int(rows.max()) + 1,
            slices[1].start + int(cols.min()),
            slices[1].start + int(cols.max()) + 1,
        )
        objects.append((box, amount, centre, height))
    return objects


def _gaussian_models(
    shape: tuple[int, int], objects: list[tuple[PixelBox, float, tuple[float, float], float]]
) -> np.ndarray:
    """Sum of round Gaussians with each object's height, centre and amount (``2 pi s^2 h``)."""
    rows = np.arange(shape[0], dtype=np.float64)[:, None]
    cols = np.arange(shape[1], dtype=np.float64)[None, :]
    model = np.zeros(shape)
    for _, amount, (row, col), height in objects:
        variance = max(amount / (2.0 * np.pi * height), 0.25)
        model += height * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2.0 * variance))
    return model


def peak_objects(
    image: np.ndarray,
    *,
    smooth_px: float = 0.0,
    background_px: float = 0.0,
    sigma: float = 5.0,
    min_amount: float = 0.0,
    half_fraction: float = 0.5,
    tail_fraction: float = 0.1,
    deflate: int = 0,
    shoulder_fraction: float = 0.5,
    min_separation_px: float = 1.0,
    counts_sigma: float = 0.0,
    footprint_px: float = 1.0,
) -> list[tuple[PixelBox, float, tuple[float, float], float]]:
    """Significant objects of a finite map.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` finite float map (counts or any linear unit).
    smooth_px : float
        Gaussian matched-filter sigma applied first, px (0: none; for raw maps).
    background_px : float
        Window of the median background, px (0: the map's median).
    sigma : float
        Significance of a peak, in robust standard deviations of the excess.
    min_amount : float
        Smallest amount an object must hold, map units x px.
    half_fraction : float
        The object's extent: basin pixels at or above this fraction of its peak height.
    tail_fraction : float
        Pixels counted in the amount: basin pixels at or above this fraction of the peak.
    deflate : int
        Rounds of deflation: subtract a round Gaussian model of every object found and look
        for significant maxima in what is left (objects on another's shoulder).
    shoulder_fraction : float
        A maximum left after deflation counts only where it exceeds this fraction of the
        models there (what the round models cannot explain).
    counts_sigma : float
        With > 0 the map is in counts (Poisson), and an object must also hold this many
        standard deviations of its amount: ``amount >= counts_sigma * sqrt(amount +
        background * pixels)``, over its counted pixels (at least ``footprint_px``, the
        footprint a measurement spreads an object over). This holds where a restored map's
        own spread does not (its background can be mostly zeros between sparse spikes).
    footprint_px : float
        See ``counts_sigma``, px.
    min_separation_px : float
        ... and only farther than this from the centre of every object found before, px
        (closer, it is the model's misfit of that object, not an object of its own).

    Returns
    -------
    list of (box, amount, centre, height)
        ``box`` the object's pixel box, ``amount`` map units x px, ``centre`` the
        excess-weighted ``(row, column)`` of its half-height pixels (px), ``height`` its peak
        excess; strongest amount first.
    """
    data = np.asarray(image, dtype=np.float64)
    work = ndimage.gaussian_filter(data, smooth_px, mode="reflect") if smooth_px > 0 else data
    level = _background(work, background_px)
    excess = work - level
    deviation = float(np.median(np.abs(excess - np.median(excess))))
    noise = max(1.4826 * deviation, 1e-12 * max(float(np.abs(excess).max()), 1e-300))
    cut = sigma * noise
    local_max = work == ndimage.maximum_filter(work, size=3, mode="nearest")
    options = {
        "min_amount": min_amount,
        "half_fraction": half_fraction,
        "tail_fraction": tail_fraction,
        "level": level,
        "counts_sigma": counts_sigma,
        "footprint_px": footprint_px,
    }
    objects = _objects_of(excess, local_max & (excess > cut), **options)
    for _ in range(int(deflate)):
        if not objects:
            break
        model = _gaussian_models(excess.shape, objects)
        residual = excess - model
        peaks = (
            (residual == ndimage.maximum_filter(residual, size=3, mode="nearest"))
            & (residual > cut)
            & (residual > shoulder_fraction * model)
        )
        found = [
            item
            for item in _objects_of(residual, peaks, **options)
            if all(
                np.hypot(item[2][0] - known[2][0], item[2][1] - known[2][1]) > min_separation_px
                for known in objects
            )
        ]
        if not found:
            break
        objects = objects + found
    objects.sort(key=lambda item: item[1], reverse=True)
    return objects


def object_size_um(
    amount: float, height: float, *, pixel_um: float, beam_fwhm_um: float = 0.0
) -> float:
    """Radius at half maximum of a round Gaussian object, µm, from its amount and height.

    ``amount / height = 2 pi s^2`` (px²) for a Gaussian of standard deviation ``s``; the
    beam (on a raw map) and the pixel's own width are removed in quadrature.
    """
    variance_um2 = amount / (2.0 * np.pi * max(height, 1e-300)) * pixel_um**2
    beam_sigma = beam_fwhm_um / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    true_variance = max(variance_um2 - beam_sigma**2 - pixel_um**2 / 12.0, 0.0)
    return float(np.sqrt(true_variance) * np.sqrt(2.0 * np.log(2.0)))


def object_peak(amount: float, radius_um: float, *, pixel_um: float, floor_um: float) -> float:
    """Peak value of a round Gaussian object of this amount and radius (map units).

    ``radius_um`` is floored at ``floor_um`` (a size no map can tell apart from a point).
    """
    sigma_um = max(radius_um, floor_um) / np.sqrt(2.0 * np.log(2.0))
    return float(amount * pixel_um**2 / (2.0 * np.pi * sigma_um**2))


def peak_strategy(
    image: np.ndarray,
    *,
    smooth_px: float = 0.0,
    background_px: float = 0.0,
    sigma: float = 5.0,
    min_amount: float = 0.0,
    half_fraction: float = 0.5,
    deflate: float = 0,
    pixel_um: float = 0.0,
    beam_fwhm_um: float = 0.0,
    min_radius_um: float = 0.0,
    min_peak: float = 0.0,
    counts_sigma: float = 0.0,
    footprint_px: float = 1.0,
    box_sigmas: float = 0.0,
    box_floor_px: float = 0.5,
) -> list[tuple[PixelBox, float]]:
    """The ``peaks`` ROI strategy: each significant object's box, scored by its amount.

    See :func:`peak_objects` for the detection options; the ROI rules (margin, sizes,
    merging) are applied afterwards by :func:`bluesky_plans.roi.detect_rois`.

    With ``pixel_um`` > 0, objects are also judged by what they are estimated to be: an
    object whose radius at half maximum (:func:`object_size_um`; ``beam_fwhm_um`` is the
    blur still in the map: the beam on a raw map, 0 on a restored one) is below
    ``min_radius_um``, or whose peak (:func:`object_peak`, in map units) is below
    ``min_peak``, is left out. Give the thresholds with the tolerance the estimates need.

    With ``box_sigmas`` > 0 each box is centred on the object's centroid (between pixel
    centres) with a half-width of ``box_sigmas`` times its standard deviation
    (``sqrt(amount / (2 pi height))``, px) and at least ``box_floor_px``: on a restored
    map the object's own size, not its pixels'.
    """
    if sigma <= 0:
        raise ValueError(f"peaks sigma must be > 0, got {sigma}")
    for name, value in (
        ("smooth_px", smooth_px),
        ("background_px", background_px),
        ("min_amount", min_amount),
        ("pixel_um", pixel_um),
        ("beam_fwhm_um", beam_fwhm_um),
        ("min_radius_um", min_radius_um),
        ("min_peak", min_peak),
        ("deflate", deflate),
        ("counts_sigma", counts_sigma),
        ("footprint_px", footprint_px),
        ("box_sigmas", box_sigmas),
        ("box_floor_px", box_floor_px),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"peaks {name} must be a finite number >= 0, got {value}")
    if not 0 < half_fraction < 1:
        raise ValueError(f"peaks half_fraction must be in (0, 1), got {half_fraction}")
    kept: list[tuple[PixelBox, float]] = []
    for box, amount, centre, height in peak_objects(
        image,
        smooth_px=smooth_px,
        background_px=background_px,
        sigma=sigma,
        min_amount=min_amount,
        half_fraction=half_fraction,
        deflate=int(deflate),
        counts_sigma=counts_sigma,
        footprint_px=footprint_px,
    ):
        if pixel_um > 0 and (min_radius_um > 0 or min_peak > 0):
            radius = object_size_um(amount, height, pixel_um=pixel_um, beam_fwhm_um=beam_fwhm_um)
            peak = object_peak(amount, radius, pixel_um=pixel_um, floor_um=pixel_um / 2)
            if radius < min_radius_um or peak < min_peak:
                continue
        if box_sigmas > 0:
            spread = float(np.sqrt(amount / (2.0 * np.pi * max(height, 1e-300))))
            half = max(box_sigmas * spread, box_floor_px)
            row, col = centre[0] + 0.5, centre[1] + 0.5  # continuous units: pixel i is [i, i+1)
            box = (row - half, row + half, col - half, col + half)
        kept.append((box, amount))
    return kept
