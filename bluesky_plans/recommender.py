"""A ``tell``/``ask`` recommender of rescan regions, and rescans as queue-server plan items.

The protocol is bluesky-adaptive's (``tell(x, y)``, ``tell_many(xs, ys)``,
``ask(n, tell_pending=True)``, :class:`NoRecommendation` when there is nothing to suggest), so
the adaptive plans can be driven by this built-in ROI recommender or by any other agent that
speaks the same protocol (a Bayesian optimiser, a human in a GUI). Here an observation ``x`` is
the map's coordinate axes and ``y`` the (restored) map; an answer is a list of
:class:`~bluesky_plans.roi.RegionOfInterest`.

Instead of running the rescans directly, :func:`as_plan_items` turns them into
bluesky-queueserver plan items (``{"item_type": "plan", "name": ..., "args": [...],
"kwargs": {...}}``) that a queue server can run later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bluesky_plans.budget import (
    StageTiming,
    region_grid,
    region_scan_time_s,
    select_within_budget,
)
from bluesky_plans.roi import RegionOfInterest, detect_rois, merge_overlapping

RANKINGS = ("score", "value_per_second")
"""Orders in which :class:`RoiRecommender` suggests regions."""


class NoRecommendation(Exception):
    """The recommender has nothing (more) to suggest (the name bluesky-adaptive uses)."""


MapAxes = tuple[np.ndarray, np.ndarray]
"""``(x_um, y_um)``: pixel-centre coordinates of a map's columns and rows, µm."""


class RoiRecommender:
    """Suggests rescans of the regions that an ROI strategy finds on the maps it is told.

    Parameters
    ----------
    strategy : str
        ROI strategy name (see :func:`bluesky_plans.roi.roi_strategies`).
    fine_step_um : float
        Step of the rescans, µm (for the time estimate).
    timing : StageTiming
        Dwell and motor speeds, for the time estimate.
    budget_s : float, optional
        Total beam time the recommender may spend on rescans, s.
    rank : {"score", "value_per_second"}
        Order of the suggestions: the strategy's score, or the score per second of rescan
        time (more regions fit a budget when small boxes with much in them go first).
    **detect_options
        Passed to :func:`bluesky_plans.roi.detect_rois` (``margin_um``, ``min_size_um``,
        ``max_size_um``, ``max_count``, ``level``, ...).
    """

    def __init__(
        self,
        strategy: str = "threshold",
        *,
        fine_step_um: float,
        timing: StageTiming,
        budget_s: float | None = None,
        rank: str = "score",
        **detect_options: Any,
    ):
        if rank not in RANKINGS:
            raise ValueError(f"rank must be one of {RANKINGS}, got {rank!r}")
        if fine_step_um <= 0:
            raise ValueError(f"fine_step_um must be > 0, got {fine_step_um}")
        if budget_s is not None and budget_s < 0:
            raise ValueError(f"budget_s must be >= 0, got {budget_s}")
        self.strategy = strategy
        self.fine_step_um = float(fine_step_um)
        self.timing = timing
        self.budget_s = budget_s
        self.rank = rank
        self.detect_options = detect_options
        self._pending: list[RegionOfInterest] = []
        self._asked: list[RegionOfInterest] = []
        self.spent_s = 0.0

    def time_of(self, region: RegionOfInterest) -> float:
        """Estimated rescan time of ``region``, s."""
        return region_scan_time_s(region, self.fine_step_um, self.timing)

    def value_of(self, region: RegionOfInterest) -> float:
        """What ranks ``region``: its score, or its score per second of rescan time."""
        if self.rank == "score":
            return region.score
        return region.score / max(self.time_of(region), 1e-9)

    def tell(self, x: MapAxes, y: np.ndarray) -> None:
        """Detect regions on the map ``y`` (axes ``x``) and queue those not yet suggested."""
        x_um, y_um = x
        found = detect_rois(y, x_um, y_um, self.strategy, **self.detect_options)
        self._pending = [
            region for region in found if not any(region.overlaps(done) for done in self._asked)
        ]

    def tell_many(self, xs: Iterable[MapAxes], ys: Iterable[np.ndarray]) -> None:
        """Tell several maps; the last one decides what is pending."""
        for axes, image in zip(xs, ys, strict=True):
            self.tell(axes, image)

    def tell_regions(self, regions: Iterable[RegionOfInterest]) -> None:
        """Add regions found elsewhere (e.g. on partial maps).

        A region that overlaps one already pending or already asked for is dropped (the
        pending one covers it); pending regions are never merged with each other, so tiles of
        a large region stay tiles.
        """
        known = self._asked + self._pending
        fresh = [region for region in regions if not any(region.overlaps(k) for k in known)]
        merged = self._pending + merge_overlapping(fresh)
        self._pending = sorted(merged, key=lambda region: region.score, reverse=True)

    @property
    def pending(self) -> list[RegionOfInterest]:
        """Regions found and not yet asked for, best score first."""
        return list(self._pending)

    def ask(self, n: int, tell_pending: bool = True) -> list[RegionOfInterest]:
        """Up to ``n`` pending regions that fit the remaining budget, best score first.

        Parameters
        ----------
        n : int
            Maximum number of regions.
        tell_pending : bool
            Count the returned regions as done (they will not be suggested again and their
            time is charged to the budget).

        Raises
        ------
        NoRecommendation
            Nothing pending fits.
        """
        if n < 1:
            raise ValueError(f"ask needs n >= 1, got {n}")
        remaining = None if self.budget_s is None else self.budget_s - self.spent_s
        chosen = select_within_budget(self._pending, self.time_of, remaining, key=self.value_of)
        regions = list(chosen.selected[:n])
        if not regions:
            raise NoRecommendation("no region to rescan within the remaining budget")
        if tell_pending:
            self._asked.extend(regions)
            self.spent_s += sum(self.time_of(region) for region in regions)
            self._pending = [region for region in self._pending if region not in regions]
        return regions


def as_plan_items(
    regions: Sequence[RegionOfInterest],
    *,
    detectors: Sequence[str],
    x_motor: str,
    y_motor: str,
    step_um: float,
    plan_name: str = "grid_scan",
    snake: bool = True,
    md: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rescans as bluesky-queueserver plan items, one ``grid_scan`` per region.

    Parameters
    ----------
    regions : sequence of RegionOfInterest
        The regions to rescan.
    detectors : sequence of str
        Names of the detectors in the queue server's namespace.
    x_motor, y_motor : str
        Names of the stage motors (fast axis x, slow axis y).
    step_um : float
        Fine step, µm.
    plan_name : str
        A plan with ``grid_scan``'s signature known to the queue server.
    snake : bool
        Snake the fast axis.
    md : mapping, optional
        Extra start-document metadata (for example the coarse run's uid); each item adds
        ``roi`` (the region as a dict).

    Returns
    -------
    list of dict
        ``{"item_type": "plan", "name": plan_name, "args": [...], "kwargs": {"md": ...}}``,
        args as ``grid_scan(detectors, y_motor, y0, y1, ny, x_motor, x0, x1, nx,
        snake_axes=...)`` expects.
    """
    if step_um <= 0:
        raise ValueError(f"step_um must be > 0, got {step_um}")
    if not detectors:
        raise ValueError("as_plan_items needs at least one detector name")
    items = []
    for region in regions:
        y_span, x_span = region_grid(region, step_um)
        args = [list(detectors), y_motor, *y_span, x_motor, *x_span]
        item_md = {**(md or {}), "roi": region.as_dict()}
        items.append(
            {
                "item_type": "plan",
                "name": plan_name,
                "args": args,
                "kwargs": {"snake_axes": bool(snake), "md": item_md},
            }
        )
    return items
