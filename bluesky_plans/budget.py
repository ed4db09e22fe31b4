"""Beam time of step scans, the fine step for a rescan, and keeping rescans within a budget.

The estimate follows how a step-scanning stage spends its time: for each point the stage moves
one step (at the motor velocity) and settles, then the detector counts for the dwell time;
every line ends with a return move along the fast axis (a raster; a snake skips it), and the
stage first travels from where it is to the region's corner. It is the same bookkeeping the
simulated motors use, so plans can compare estimated and simulated time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bluesky_plans.roi import RegionOfInterest


@dataclass(frozen=True)
class StageTiming:
    """How a step scan spends time.

    Attributes
    ----------
    dwell_s : float
        Counting time per point, s.
    velocity_um_s : float
        Stage velocity, µm/s (both axes).
    settle_s : float
        Settling time after each move, s.
    snake : bool
        Whether lines alternate direction (no return move).
    """

    dwell_s: float
    velocity_um_s: float
    settle_s: float = 0.0
    snake: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dwell_s) and self.dwell_s > 0):
            raise ValueError(f"dwell_s must be > 0, got {self.dwell_s}")
        if not (math.isfinite(self.velocity_um_s) and self.velocity_um_s > 0):
            raise ValueError(f"velocity_um_s must be > 0, got {self.velocity_um_s}")
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ValueError(f"settle_s must be >= 0, got {self.settle_s}")


def grid_points(length_um: float, step_um: float) -> int:
    """Points needed to cover ``length_um`` at ``step_um`` (both ends included, at least 1)."""
    if step_um <= 0:
        raise ValueError(f"step_um must be > 0, got {step_um}")
    return max(1, math.floor(length_um / step_um + 1e-9) + 1)


def grid_scan_time_s(
    width_um: float,
    height_um: float,
    step_um: float,
    timing: StageTiming,
    *,
    approach_um: float = 0.0,
) -> float:
    """Estimated wall time of a step grid scan, s.

    Parameters
    ----------
    width_um, height_um : float
        Extent of the scanned rectangle, µm.
    step_um : float
        Step on both axes, µm.
    timing : StageTiming
        Dwell, velocity, settling, snake.
    approach_um : float
        Distance the stage travels to reach the first point, µm.

    Returns
    -------
    float
        Seconds: points × (dwell + step move + settle) + line returns + approach.
    """
    columns = grid_points(width_um, step_um)
    rows = grid_points(height_um, step_um)
    per_point = timing.dwell_s + step_um / timing.velocity_um_s + timing.settle_s
    returns = 0.0 if timing.snake else (rows - 1) * (columns - 1) * step_um / timing.velocity_um_s
    return rows * columns * per_point + returns + approach_um / timing.velocity_um_s


GridSpan = tuple[float, float, int]
"""``(start_um, stop_um, points)`` of one axis of a step grid scan."""


def region_grid(region: RegionOfInterest, step_um: float) -> tuple[GridSpan, GridSpan]:
    """The ``(y, x)`` spans of a step grid that covers ``region`` from its lower corner.

    Parameters
    ----------
    region : RegionOfInterest
        The region, µm.
    step_um : float
        Step on both axes, µm.

    Returns
    -------
    ((y0, y1, ny), (x0, x1, nx))
        As ``grid_scan`` takes them: both ends included, ``n`` points (:func:`grid_points`).
    """
    rows = grid_points(region.height_um, step_um)
    columns = grid_points(region.width_um, step_um)
    y0, x0 = region.y_min_um, region.x_min_um
    return (y0, y0 + (rows - 1) * step_um, rows), (x0, x0 + (columns - 1) * step_um, columns)


def region_scan_time_s(region: RegionOfInterest, step_um: float, timing: StageTiming) -> float:
    """Estimated time of a fine step scan of ``region``, s (see :func:`grid_scan_time_s`)."""
    return grid_scan_time_s(region.width_um, region.height_um, step_um, timing)


def fine_step_um(
    beam_fwhm_um: float,
    target_resolution_um: float,
    coarse_step_um: float | None = None,
    *,
    oversampling_limit: float = 10.0,
) -> float:
    """The step of a rescan, from the beam size and the resolution the user wants.

    The step samples the target resolution at Nyquist (half of it), but never finer than
    ``beam_fwhm_um / oversampling_limit``: below that, restoration of the beam blur gains
    nothing from more points.

    Parameters
    ----------
    beam_fwhm_um : float
        Beam FWHM, µm.
    target_resolution_um : float
        The smallest feature to resolve, µm.
    coarse_step_um : float, optional
        Step of the coarse scan, µm; the fine step must be smaller.
    oversampling_limit : float
        Finest useful step as a fraction of the beam FWHM.

    Returns
    -------
    float
        Fine step, µm.

    Raises
    ------
    ValueError
        Non-positive sizes, or a fine step not smaller than the coarse step.
    """
    for name, value in (
        ("beam_fwhm_um", beam_fwhm_um),
        ("target_resolution_um", target_resolution_um),
        ("oversampling_limit", oversampling_limit),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value}")
    step = max(target_resolution_um / 2.0, beam_fwhm_um / oversampling_limit)
    if coarse_step_um is not None and step >= coarse_step_um:
        raise ValueError(
            f"the fine step ({step:g} µm, from target resolution {target_resolution_um:g} µm and "
            f"beam {beam_fwhm_um:g} µm) is not finer than the coarse step ({coarse_step_um:g} µm)"
        )
    return step


@dataclass(frozen=True)
class BudgetedSelection:
    """Regions kept within a beam-time budget.

    Attributes
    ----------
    selected : tuple of RegionOfInterest
        Kept, in scan order (best score first).
    skipped : tuple of RegionOfInterest
        Dropped because their time would exceed the budget.
    times_s : tuple of float
        Estimated time of each selected region, s.
    """

    selected: tuple[RegionOfInterest, ...]
    skipped: tuple[RegionOfInterest, ...]
    times_s: tuple[float, ...]

    @property
    def total_s(self) -> float:
        """Estimated time of all selected regions, s."""
        return float(sum(self.times_s))


def select_within_budget(
    regions: Sequence[RegionOfInterest],
    time_of: Callable[[RegionOfInterest], float],
    budget_s: float | None,
    *,
    key: Callable[[RegionOfInterest], float] | None = None,
) -> BudgetedSelection:
    """Keep the best regions whose summed scan time fits ``budget_s``.

    Greedy by ``key`` (default: the score): a region that does not fit is skipped, and
    smaller ones after it may still fit. ``budget_s=None`` keeps everything.
    """
    if budget_s is not None and not (math.isfinite(budget_s) and budget_s >= 0):
        raise ValueError(f"budget_s must be >= 0, got {budget_s}")
    selected, skipped, times = [], [], []
    used = 0.0
    for region in sorted(regions, key=key or (lambda item: item.score), reverse=True):
        cost = float(time_of(region))
        if budget_s is None or used + cost <= budget_s:
            selected.append(region)
            times.append(cost)
            used += cost
        else:
            skipped.append(region)
    return BudgetedSelection(tuple(selected), tuple(skipped), tuple(times))
