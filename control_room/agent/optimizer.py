"""Rescan proposals as a bluesky-adaptive optimizer: coarse maps in, regions to rescan out.

:class:`RoiOptimizer` implements bluesky-adaptive 1.0's ``Optimizer`` protocol (``suggest``,
``ingest``, ``get_best_points``) and its ``CanRegisterSuggestions`` and ``TrialFaultAware``
protocols. What it ingests are the observations of
:class:`~control_room.agent.evaluation.TiledEvaluation`: a coarse map (a baseline point) makes
it find regions with the same rules as the in-process adaptive scan
(:func:`bluesky_plans.adaptive.adaptive_roi_scan`): the restored map decides unless restoration
changed it too little (:func:`~bluesky_plans.map_choice.choose_map`), regions are found with the
tuned presets of :mod:`bluesky_plans.presets`, ranked by value per second of rescan time; a
rescan's outcome (completed or failed) is remembered for ``get_best_points``.

A suggestion is plain data, what :func:`~control_room.queue_plans.roi_rescans` takes::

    {"_id": "p-1a2b3c4d-0", "x_range_um": [x0, x1], "y_range_um": [y0, y1], "step_um": 10.0,
     "coarse_uid": ..., "sample": ..., "score": ..., "estimated_s": ..., "why": "..."}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bluesky_plans.budget import StageTiming, fine_step_um, region_scan_time_s
from bluesky_plans.map_choice import MIN_CHANGE, choose_map
from bluesky_plans.presets import adaptive_options
from bluesky_plans.recommender import NoRecommendation, RoiRecommender
from bluesky_plans.roi import RegionOfInterest

DEFAULT_DWELL_S = 0.1
"""Dwell per point when the coarse run does not record one, s."""


def proposal_id(coarse_uid: str, index: int) -> str:
    """The id of the ``index``-th region proposed on a coarse map: the same on every restart."""
    return f"p-{coarse_uid[:8]}-{index}"


def region_of(suggestion: Mapping[str, Any]) -> RegionOfInterest:
    """The suggestion's box as a region, µm."""
    (x0, x1), (y0, y1) = suggestion["x_range_um"], suggestion["y_range_um"]
    return RegionOfInterest(
        float(x0), float(x1), float(y0), float(y1), float(suggestion.get("score", 0.0)), "agent"
    )


class RoiOptimizer:
    """Proposes rescans of the regions found on each coarse map it ingests.

    Parameters
    ----------
    target_resolution_um : float
        Smallest feature the rescans must resolve, µm (sets the fine step with the beam).
    max_per_map : int
        Most regions proposed per coarse map.
    velocity_um_s : float
        Stage speed between points, µm/s (for the time estimates).
    min_change : float
        Restoration must change the map by at least this fraction of its contrast to decide
        (:func:`~bluesky_plans.map_choice.choose_map`).
    """

    def __init__(
        self,
        *,
        target_resolution_um: float,
        max_per_map: int = 10,
        velocity_um_s: float = 1000.0,
        min_change: float = MIN_CHANGE,
    ) -> None:
        if not (math.isfinite(target_resolution_um) and target_resolution_um > 0):
            raise ValueError(f"target_resolution_um must be > 0, got {target_resolution_um!r}")
        if isinstance(max_per_map, bool) or not 1 <= int(max_per_map) <= 1000:
            raise ValueError(f"max_per_map must be an integer in 1-1000, got {max_per_map!r}")
        self.target_resolution_um = float(target_resolution_um)
        self.max_per_map = int(max_per_map)
        self.velocity_um_s = float(velocity_um_s)
        self.min_change = float(min_change)
        self._pending: list[dict[str, Any]] = []
        self._suggested: dict[str, dict[str, Any]] = {}
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._failed: set[str] = set()
        self._manual = 0
        self.last_decision: dict[str, Any] = {}

    # -- bluesky-adaptive's Optimizer ----------------------------------------------------------
    def ingest(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Coarse-map observations (regions become pending) and rescan outcomes."""
        for point in points:
            if point.get("kind") == "coarse_map":
                self._pending.extend(self._propose(point))
            elif point.get("_id") in self._suggested:
                self._outcomes[point["_id"]] = dict(point)

    def suggest(self, num_points: int | None = None) -> list[dict[str, Any]]:
        """The pending proposals, best value per second first (all of them by default)."""
        count = len(self._pending) if num_points is None else int(num_points)
        chosen, self._pending = self._pending[:count], self._pending[count:]
        for suggestion in chosen:
            self._suggested[suggestion["_id"]] = suggestion
        return [dict(suggestion) for suggestion in chosen]

    def get_best_points(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """``(id, proposal, outcome)`` of the completed rescans, most counts first."""
        done = [
            (ident, self._suggested[ident], outcome)
            for ident, outcome in self._outcomes.items()
            if outcome.get("exit_status") == "success"
        ]
        return sorted(done, key=lambda entry: -float(entry[2].get("counts") or 0.0))

    # -- CanRegisterSuggestions, TrialFaultAware -----------------------------------------------
    def register_suggestions(self, suggestions: Sequence[Mapping]) -> list[dict[str, Any]]:
        """Give an operator's own regions ids (``"_id"`` is overwritten) and track them."""
        registered = []
        for suggestion in suggestions:
            self._manual += 1
            entry = {**dict(suggestion), "_id": f"manual-{self._manual}"}
            self._suggested[entry["_id"]] = entry
            registered.append(entry)
        return registered

    def register_failures(self, suggestions: Sequence[Mapping]) -> None:
        """Remember rescans that failed (they are not among the best points)."""
        self._failed.update(str(s["_id"]) for s in suggestions)

    @property
    def failed(self) -> set[str]:
        """Ids of the rescans that failed."""
        return set(self._failed)

    def remember(self, suggestion: Mapping[str, Any]) -> None:
        """Track a proposal made before a restart (read back from the agent's records)."""
        self._suggested[str(suggestion["_id"])] = dict(suggestion)

    # -- the decision ----------------------------------------------------------------------------
    def _propose(self, observation: Mapping[str, Any]) -> list[dict[str, Any]]:
        beam, step = observation["beam_fwhm_um"], observation["step_um"]
        fine = fine_step_um(beam, self.target_resolution_um, step)
        timing = StageTiming(
            dwell_s=float(observation.get("dwell_s") or DEFAULT_DWELL_S),
            velocity_um_s=self.velocity_um_s,
        )
        options = adaptive_options(beam_fwhm_um=beam, step_um=step)
        choice = choose_map(observation["raw"], observation["restored"], min_change=self.min_change)
        detect = options[
            "strategy_options" if choice.map_used == "restored" else "raw_strategy_options"
        ]
        recommender = RoiRecommender(
            options["strategy"],
            fine_step_um=fine,
            timing=timing,
            rank=options["rank"],
            margin_um=options["margin_um"],
            min_size_um=options["min_size_um"],
            merge=options["merge"],
            max_count=self.max_per_map,
            bounds_um=tuple(observation["bounds_um"]),
            **detect,
        )
        recommender.tell((observation["x_um"], observation["y_um"]), choice.image)
        try:
            regions = recommender.ask(self.max_per_map)
        except NoRecommendation:
            regions = []
        map_why = f"found on the {choice.map_used} map" + (
            f" ({choice.reason or observation.get('reason')})" if choice.map_used == "raw" else ""
        )
        self.last_decision = {
            "map_used": choice.map_used,
            "map_choice_reason": choice.reason or observation.get("reason") or None,
            "restoration_change": choice.change,
            "strategy": options["strategy"],
            "fine_step_um": fine,
            "regions_found": len(recommender.pending) + len(regions),
        }
        coarse_uid = observation["_id"]
        return [
            {
                "_id": proposal_id(coarse_uid, index),
                "x_range_um": [region.x_min_um, region.x_max_um],
                "y_range_um": [region.y_min_um, region.y_max_um],
                "step_um": fine,
                "coarse_uid": coarse_uid,
                "sample": observation.get("sample"),
                "score": float(region.score),
                "estimated_s": float(region_scan_time_s(region, fine, timing)),
                "why": f"{map_why}; rank {index + 1} by signal per second of rescan",
            }
            for index, region in enumerate(regions)
        ]
