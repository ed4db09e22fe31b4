"""Score regions of interest against a simulation's ground-truth hotspots.

Recall counts the hotspots that matter (at least ``min_radius_um`` and ``min_concentration``,
of the mapped element, inside the scanned area) whose centre lies in some region. A region is a
false positive when it contains the centre of no hotspot of that element at all (smaller or
fainter hotspots are real features, not false alarms).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bluesky_plans.budget import StageTiming
from bluesky_plans.presets import adaptive_options, region_rules
from bluesky_plans.recommender import NoRecommendation, RoiRecommender
from bluesky_plans.roi import RegionOfInterest


@dataclass(frozen=True)
class HotspotScore:
    """Hotspot recall and false regions.

    Attributes
    ----------
    found, relevant : int
        Relevant hotspots inside some region, and relevant hotspots in the area.
    false_regions, regions : int
        Regions with no hotspot of the element, and all regions.
    """

    found: int
    relevant: int
    false_regions: int
    regions: int

    @property
    def recall(self) -> float:
        """``found / relevant`` (1 when nothing is relevant)."""
        return self.found / self.relevant if self.relevant else 1.0

    def as_dict(self) -> dict[str, float]:
        """JSON-ready figures."""
        return {
            "found": self.found,
            "relevant": self.relevant,
            "recall": self.recall,
            "false_regions": self.false_regions,
            "regions": self.regions,
        }


def score_regions(
    regions: Sequence[RegionOfInterest],
    hotspots: Sequence[Any],
    *,
    element: str,
    area_um: tuple[float, float, float, float],
    min_radius_um: float,
    min_concentration: float,
) -> HotspotScore:
    """Recall of relevant hotspots and regions that hold none.

    Parameters
    ----------
    regions : sequence of RegionOfInterest
        Regions found.
    hotspots : sequence of sim.Hotspot
        Ground truth: objects with ``centre_um`` ``(y, x)``, ``radius_um``, ``element`` and
        ``concentration``.
    element : str
        The mapped element.
    area_um : (x_min, x_max, y_min, y_max)
        Scanned area, µm.
    min_radius_um, min_concentration : float
        What counts as a hotspot that must be found (µm, µg/cm²).

    Returns
    -------
    HotspotScore
    """
    x_min, x_max, y_min, y_max = area_um
    of_element = [
        spot
        for spot in hotspots
        if spot.element == element
        and x_min <= spot.centre_um[1] <= x_max
        and y_min <= spot.centre_um[0] <= y_max
    ]
    relevant = [
        spot
        for spot in of_element
        if spot.radius_um >= min_radius_um and spot.concentration >= min_concentration
    ]

    def inside(region: RegionOfInterest, spot: Any) -> bool:
        return region.contains(spot.centre_um[1], spot.centre_um[0])

    found = sum(any(inside(region, spot) for region in regions) for spot in relevant)
    false = sum(not any(inside(region, spot) for spot in of_element) for region in regions)
    return HotspotScore(found, len(relevant), false, len(regions))


def decide_on_raw(
    raw: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray],
    *,
    beam_fwhm_um: float,
    coarse_step_um: float,
    fine_step_um: float,
    timing: StageTiming,
    budget_s: float | None,
    bounds_um: tuple[float, float, float, float],
    max_rois: int,
) -> tuple[list[RegionOfInterest], float]:
    """The regions the raw-map rule (:mod:`bluesky_plans.presets`) picks within the budget.

    What the loop would have rescanned without restoration, decided on the same coarse map
    with the same budget, ranking and region rules; nothing is scanned.

    Returns
    -------
    regions : list of RegionOfInterest
        In scan order.
    seconds : float
        Their estimated rescan time, s.
    """
    options = adaptive_options(beam_fwhm_um=beam_fwhm_um, step_um=coarse_step_um)
    rules = region_rules(beam_fwhm_um=beam_fwhm_um)
    recommender = RoiRecommender(
        options["strategy"],
        fine_step_um=fine_step_um,
        timing=timing,
        budget_s=budget_s,
        rank=rules.pop("rank"),
        max_count=max_rois,
        bounds_um=bounds_um,
        **rules,
        **options["raw_strategy_options"],
    )
    recommender.tell(axes, raw)  # unmeasured (NaN) pixels count as the map's minimum
    try:
        regions = recommender.ask(max_rois)
    except NoRecommendation:
        regions = []
    return regions, float(sum(recommender.time_of(region) for region in regions))
