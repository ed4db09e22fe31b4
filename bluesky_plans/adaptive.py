"""Adaptive region-of-interest rescans: coarse map, restoration, ROI detection, fine scans.

:func:`adaptive_roi_scan` is the feedback loop of online restoration: a coarse step scan of a
region, its restored map (from the live callback in-process or from the ASIRP Tango device,
see :mod:`bluesky_plans.maps`), regions of interest found on it by a pluggable strategy
(:mod:`bluesky_plans.roi`), and fine step scans of those regions within a beam-time budget
(:mod:`bluesky_plans.budget`). Each scan is an ordinary ``grid_scan`` run; every fine run's
start document links to the coarse run (``coarse_uid``) and to the region that caused it.

With ``live_feedback=True`` (in-process restorer only) regions are queued while the coarse
scan is still running: a listener on the restorer's partial results (it runs in the
restorer's worker thread, never on the RunEngine's) detects regions in the rows restored so
far, so the fine scans can start the moment the coarse scan ends.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bluesky.plans as bp
import numpy as np
from bluesky.preprocessors import subs_wrapper
from bluesky.utils import FailedStatus

from bluesky_plans.arguments import range_um
from bluesky_plans.budget import StageTiming, fine_step_um, grid_points, region_grid
from bluesky_plans.map_choice import MIN_CHANGE, MapChoice, choose_map
from bluesky_plans.maps import LiveMaps, MapOutcome, MapProvider
from bluesky_plans.recommender import RANKINGS, NoRecommendation, RoiRecommender
from bluesky_plans.roi import MERGE_RULES, RegionOfInterest, detect_rois, roi_strategies

_LOG = logging.getLogger(__name__)


@dataclass
class AdaptiveReport:
    """What an adaptive scan did (filled in while the plan runs).

    Attributes
    ----------
    coarse_uid : str or None
        Uid of the coarse run.
    fine_uids : list of str
        Uids of the fine runs, in scan order.
    coarse_outcome : MapOutcome or None
        The coarse maps (restored, or raw with the fallback reason).
    map_choice : MapChoice or None
        The map the regions were found on, and why (:func:`~bluesky_plans.map_choice.
        choose_map`).
    regions : list of RegionOfInterest
        The regions rescanned, in order.
    queued_live : list of RegionOfInterest
        Regions queued from partial maps of the coarse scan.
    queued_during_scan : int
        How many of them were queued before the coarse run's stop document.
    skipped : list of RegionOfInterest
        Regions dropped by the budget.
    fine_step_um : float
        Step of the rescans, µm.
    estimated_fine_s : float
        Estimated time of the rescans, s.
    failed : list of dict
        Rescans that failed (a device whose move or trigger failed), each ``roi_index``,
        ``uid`` (its run, closed with exit status ``"fail"``) and ``error``; the plan went on
        with the next region.
    """

    coarse_uid: str | None = None
    fine_uids: list[str] = field(default_factory=list)
    coarse_outcome: MapOutcome | None = None
    map_choice: MapChoice | None = None
    regions: list[RegionOfInterest] = field(default_factory=list)
    queued_live: list[RegionOfInterest] = field(default_factory=list)
    queued_during_scan: int = 0
    skipped: list[RegionOfInterest] = field(default_factory=list)
    fine_step_um: float = math.nan
    estimated_fine_s: float = 0.0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uids(self) -> list[str]:
        """All run uids, coarse first."""
        return ([self.coarse_uid] if self.coarse_uid else []) + list(self.fine_uids)


def _grid_plan_args(
    detectors: Sequence[Any],
    y_motor: Any,
    y_span: tuple[float, float, int],
    x_motor: Any,
    x_span: tuple[float, float, int],
    snake: bool,
) -> dict[str, Any]:
    """``grid_scan``'s arguments by device name: what a queue server needs to replay the run."""

    def name(device: Any) -> str:
        return str(getattr(device, "name", repr(device)))

    return {
        "detectors": [name(d) for d in detectors],
        "args": [name(y_motor), *y_span, name(x_motor), *x_span],
        "snake_axes": bool(snake),
    }


class _LiveRegionQueue:
    """Listener on partial restorations: queue regions found in the rows restored so far."""

    def __init__(self, run_uid_box: list[str], axes, strategy, guard_rows: int, options):
        self.run_uid_box = run_uid_box
        self.x_um, self.y_um = axes
        self.strategy = strategy
        self.guard_rows = guard_rows
        self.options = options
        self.queue: queue.Queue[RegionOfInterest] = queue.Queue()
        self.coarse_finished = threading.Event()
        self.queued_during_scan = 0
        self._queued: list[RegionOfInterest] = []
        self._lock = threading.Lock()

    def __call__(self, result: Any) -> None:
        if result.final or not result.ok or not self.run_uid_box:
            return
        if result.run_uid != self.run_uid_box[0]:
            return
        rows = result.rows_restored - self.guard_rows  # the last rows are not settled yet
        if rows < 3:
            return
        try:
            found = detect_rois(
                result.restored_map[:rows],
                self.x_um,
                self.y_um[:rows],
                self.strategy,
                **self.options,
            )
        except ValueError:
            return
        with self._lock:
            for region in found:
                if not any(region.overlaps(done) for done in self._queued):
                    self._queued.append(region)
                    self.queue.put(region)
                    if not self.coarse_finished.is_set():
                        self.queued_during_scan += 1

    def drain(self) -> list[RegionOfInterest]:
        regions = []
        while True:
            try:
                regions.append(self.queue.get_nowait())
            except queue.Empty:
                return regions


def adaptive_roi_scan(
    detectors: Sequence[Any],
    x_motor: Any,
    y_motor: Any,
    x_range_um: Sequence[float],
    y_range_um: Sequence[float],
    coarse_step_um: float,
    *,
    maps: MapProvider,
    beam_fwhm_um: float,
    target_resolution_um: float,
    timing: StageTiming,
    strategy: str = "threshold",
    strategy_options: Mapping[str, Any] | None = None,
    margin_um: float | None = None,
    min_size_um: float | None = None,
    max_size_um: float | None = None,
    max_rois: int = 10,
    budget_s: float | None = None,
    rank: str = "score",
    merge: str = "union",
    raw_strategy_options: Mapping[str, Any] | None = None,
    min_change: float = MIN_CHANGE,
    snake: bool = True,
    live_feedback: bool = False,
    report: AdaptiveReport | None = None,
    md: Mapping[str, Any] | None = None,
):
    """Coarse scan, restored map, ROI detection, fine scans of the regions found.

    Arguments are checked when the function is called, before any plan message exists, so
    a bad argument raises ``ValueError`` before any motor moves.

    Parameters
    ----------
    detectors : sequence of readable devices
        Detectors of every scan (e.g. ``[xrf, i0]``).
    x_motor, y_motor : settable devices
        Stage motors in µm; x is the fast axis.
    x_range_um, y_range_um : (float, float)
        Coarse region, µm.
    coarse_step_um : float
        Coarse step on both axes, µm.
    maps : MapProvider
        Source of the restored coarse map (:class:`~bluesky_plans.maps.LiveMaps` or
        :class:`~bluesky_plans.maps.TangoMaps`).
    beam_fwhm_um : float
        Beam FWHM, µm (PSF of the restoration, and floor of the fine step).
    target_resolution_um : float
        Smallest feature to resolve in the rescans, µm; sets the fine step
        (:func:`~bluesky_plans.budget.fine_step_um`).
    timing : StageTiming
        Dwell and stage speed, for the beam-time budget.
    strategy : str
        ROI strategy (:func:`~bluesky_plans.roi.roi_strategies`).
    strategy_options : mapping, optional
        Options of the strategy (``level``, ``k``, ...).
    margin_um, min_size_um, max_size_um : float, optional
        Region rules (defaults: half the beam FWHM, two beam FWHM, none).
    max_rois : int
        Most regions to rescan.
    budget_s : float, optional
        Beam time allowed for the rescans, s (estimated from ``timing``).
    rank : {"score", "value_per_second"}
        Order of the rescans (:class:`~bluesky_plans.recommender.RoiRecommender`).
    merge : {"union", "cheaper"}
        How overlapping regions merge (:func:`~bluesky_plans.roi.merge_overlapping`).
    raw_strategy_options : mapping, optional
        Options of the strategy when the raw map decides (restoration failed, or changed
        less than ``min_change``); default ``strategy_options``.
    min_change : float
        The raw map decides when restoration changed the map by less than this fraction of
        its contrast (:func:`~bluesky_plans.map_choice.choose_map`; 0: never).
    snake : bool
        Snake the fast axis.
    live_feedback : bool
        Queue regions from partial restorations during the coarse scan (needs
        :class:`~bluesky_plans.maps.LiveMaps`).
    report : AdaptiveReport, optional
        Filled in as the plan runs (uids, the map used, regions, skipped regions).
    md : mapping, optional
        Metadata added to every run's start document.

    Returns
    -------
    generator
        The plan; its return value is the list of run uids, coarse first.

    Raises
    ------
    ValueError
        An empty region, non-positive steps or sizes, a fine step not finer than the coarse
        one, a negative budget, an unknown strategy, live feedback without a live restorer.
    """
    x0, x1 = range_um("x_range_um", x_range_um)
    y0, y1 = range_um("y_range_um", y_range_um)
    for name, value in (("coarse_step_um", coarse_step_um), ("beam_fwhm_um", beam_fwhm_um)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0 µm, got {value!r}")
    step = fine_step_um(beam_fwhm_um, target_resolution_um, coarse_step_um)
    if strategy not in roi_strategies():
        raise ValueError(f"unknown ROI strategy {strategy!r}; available: {roi_strategies()}")
    if budget_s is not None and not (math.isfinite(budget_s) and budget_s >= 0):
        raise ValueError(f"budget_s must be >= 0 s, got {budget_s}")
    if isinstance(max_rois, bool) or not isinstance(max_rois, int) or max_rois < 1:
        raise ValueError(f"max_rois must be an integer >= 1, got {max_rois!r}")
    if not (isinstance(min_change, int | float) and math.isfinite(min_change) and min_change >= 0):
        raise ValueError(f"min_change must be a finite number >= 0, got {min_change!r}")
    if rank not in RANKINGS:
        raise ValueError(f"rank must be one of {RANKINGS}, got {rank!r}")
    if merge not in MERGE_RULES:
        raise ValueError(f"merge must be one of {MERGE_RULES}, got {merge!r}")
    if live_feedback and not isinstance(maps, LiveMaps):
        raise ValueError("live_feedback needs maps=LiveMaps(restorer) (an in-process restorer)")
    margin = 0.5 * beam_fwhm_um if margin_um is None else float(margin_um)
    min_size = 2.0 * beam_fwhm_um if min_size_um is None else float(min_size_um)
    if margin < 0 or min_size < 0:
        raise ValueError(f"margin_um and min_size_um must be >= 0, got {margin}, {min_size}")
    if max_size_um is not None and max_size_um <= min_size:
        raise ValueError(f"max_size_um ({max_size_um}) must exceed min_size_um ({min_size})")
    columns = grid_points(x1 - x0, coarse_step_um)
    rows = grid_points(y1 - y0, coarse_step_um)
    if rows < 2 or columns < 2:
        raise ValueError(
            f"the coarse region needs at least 2 x 2 points at {coarse_step_um:g} µm, "
            f"got {rows} x {columns}"
        )
    x_axis = x0 + coarse_step_um * np.arange(columns)
    y_axis = y0 + coarse_step_um * np.arange(rows)
    options = dict(strategy_options or {})
    raw_options = dict(options if raw_strategy_options is None else raw_strategy_options)
    rules = {
        "margin_um": margin,
        "min_size_um": min_size,
        "max_size_um": max_size_um,
        "max_count": max_rois,
        "bounds_um": (x0, x1, y0, y1),
        "merge": merge,
    }
    recommender = RoiRecommender(
        strategy,
        fine_step_um=step,
        timing=timing,
        budget_s=budget_s,
        rank=rank,
        **rules,
        **options,
    )
    report = report if report is not None else AdaptiveReport()
    report.fine_step_um = step
    plan_args = {
        "detectors": [getattr(d, "name", repr(d)) for d in detectors],
        "x_motor": getattr(x_motor, "name", repr(x_motor)),
        "y_motor": getattr(y_motor, "name", repr(y_motor)),
        "x_range_um": [x0, x1],
        "y_range_um": [y0, y1],
        "coarse_step_um": coarse_step_um,
        "beam_fwhm_um": beam_fwhm_um,
        "target_resolution_um": target_resolution_um,
        "strategy": strategy,
        "strategy_options": options,
        "raw_strategy_options": raw_options,
        "min_change": min_change,
        "max_rois": max_rois,
        "budget_s": budget_s,
        "rank": rank,
        "merge": merge,
        "live_feedback": live_feedback,
    }
    # Each run records its own replayable grid_scan arguments as ``plan_args``; the
    # adaptive plan's arguments travel as ``adaptive_plan_args``.
    base_md = {
        "adaptive_plan": "adaptive_roi_scan",
        "adaptive_plan_args": plan_args,
        "beam_fwhm_um": beam_fwhm_um,
        **dict(md or {}),
    }
    return _adaptive_plan(
        detectors,
        x_motor,
        y_motor,
        (x0, x1, y0, y1),
        (rows, columns),
        (x_axis, y_axis),
        coarse_step_um,
        step,
        maps,
        recommender,
        rules,
        options,
        (raw_options, float(min_change)),
        snake,
        live_feedback,
        report,
        base_md,
    )


def fault_text(error: FailedStatus) -> str:
    """What failed: the failed Status's own exception when it has one."""
    status = error.args[0] if error.args else None
    cause = status.exception() if hasattr(status, "exception") else None
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(error)


def _uid_into(uids: list[str]):
    """A start-document callback that appends the run's uid to ``uids``."""

    def remember(name: str, doc: dict[str, Any]) -> None:
        uids.append(doc["uid"])

    return remember


def _adaptive_plan(
    detectors,
    x_motor,
    y_motor,
    bounds,
    shape,
    axes,
    coarse_step,
    fine_step,
    maps,
    recommender,
    rules,
    options,
    raw_choice,
    snake,
    live_feedback,
    report,
    base_md,
):
    x0, _, y0, _ = bounds
    raw_options, min_change = raw_choice
    rows, columns = shape
    run_uid_box: list[str] = []
    live_queue = None
    token = None
    if live_feedback:
        guard_rows = max(2, math.ceil(base_md["beam_fwhm_um"] / coarse_step))
        live_queue = _LiveRegionQueue(
            run_uid_box, axes, recommender.strategy, guard_rows, {**rules, **options}
        )
        token = maps.restorer.subscribe(live_queue)

    def remember_uid(name, doc):
        if name == "start" and not run_uid_box:
            run_uid_box.append(doc["uid"])
        elif name == "stop" and live_queue is not None:
            live_queue.coarse_finished.set()

    y_span = (y0, y0 + (rows - 1) * coarse_step, rows)
    x_span = (x0, x0 + (columns - 1) * coarse_step, columns)
    coarse_md = {
        **base_md,
        "adaptive_stage": "coarse",
        "plan_args": _grid_plan_args(detectors, y_motor, y_span, x_motor, x_span, snake),
    }

    try:
        coarse_uid = yield from subs_wrapper(
            bp.grid_scan(
                list(detectors), y_motor, *y_span, x_motor, *x_span, snake_axes=snake, md=coarse_md
            ),
            {"all": [remember_uid]},
        )
        report.coarse_uid = coarse_uid
        outcome = yield from maps.restored_map(
            coarse_uid,
            pixel_um=(coarse_step, coarse_step),
            beam_fwhm_um=base_md["beam_fwhm_um"],
        )
    finally:  # partial results arrive until the final one: listen until then
        if token is not None:
            maps.restorer.unsubscribe(token)
    report.coarse_outcome = outcome

    queued = live_queue.drain() if live_queue is not None else []
    report.queued_live = list(queued)
    report.queued_during_scan = 0 if live_queue is None else live_queue.queued_during_scan
    choice = choose_map(outcome.raw, outcome.restored, min_change=min_change)
    report.map_choice = choice
    if choice.map_used == "raw":  # the raw map decides with the raw map's options
        recommender.detect_options = {**rules, **raw_options}
        queued = []  # regions queued live came from restored rows
    recommender.tell(axes, choice.image)
    recommender.tell_regions(queued)  # regions queued live merge with the final map's
    try:
        regions = recommender.ask(int(rules["max_count"]))
    except NoRecommendation:
        regions = []
    report.regions = list(regions)
    report.skipped = recommender.pending
    report.estimated_fine_s = float(sum(recommender.time_of(region) for region in regions))
    record = getattr(maps, "record_regions", None)
    if record is not None:
        try:  # provenance must never abort the scan
            record(outcome, [region.as_dict() for region in regions])
        except Exception:
            _LOG.warning("could not record the regions in the derived run", exc_info=True)

    for index, region in enumerate(regions):
        y_span, x_span = region_grid(region, fine_step)
        fine_md = {
            **base_md,
            "adaptive_stage": "fine",
            "plan_args": _grid_plan_args(detectors, y_motor, y_span, x_motor, x_span, snake),
            "coarse_uid": coarse_uid,
            "derived_uid": getattr(outcome, "derived_uid", None),
            "roi_index": index,
            "roi": region.as_dict(),
            "fine_step_um": fine_step,
            "queued_during_coarse": any(region.overlaps(q) for q in queued),
            **outcome.describe(),
            "map_used": choice.map_used,
            "map_choice_reason": choice.reason or None,
            "restoration_change": choice.change,
        }
        started: list[str] = []
        rescan = bp.grid_scan(
            list(detectors), y_motor, *y_span, x_motor, *x_span, snake_axes=snake, md=fine_md
        )
        try:
            uid = yield from subs_wrapper(rescan, {"start": [_uid_into(started)]})
        except FailedStatus as error:
            # one rescan's device fault stays local: its run is closed as failed, the fault is
            # recorded, and the next region is scanned
            fault = fault_text(error)
            report.failed.append(
                {"roi_index": index, "uid": started[0] if started else None, "error": fault}
            )
            _LOG.warning("rescan %d failed, going on with the next region: %s", index, fault)
            continue
        report.fine_uids.append(uid)
    return report.uids
