"""Bluesky plans for ASIRP: adaptive rescans of regions of interest found on restored maps."""

from bluesky_plans.roi import (
    RegionOfInterest,
    detect_rois,
    merge_overlapping,
    register_roi_strategy,
    roi_strategies,
)

__all__ = [
    "RegionOfInterest",
    "detect_rois",
    "merge_overlapping",
    "register_roi_strategy",
    "roi_strategies",
]
