"""ASIRP's plans as a queue server accepts them: generator functions of serialisable arguments.

bluesky-queueserver offers a plan only when it is a generator function, and a client can send
only names, numbers, strings, lists and dicts. :func:`~bluesky_plans.adaptive.adaptive_roi_scan`
takes objects (the map provider, the stage timing, a report), so it cannot be queued as it is.
:func:`adaptive_rescan` is the same loop with every object built inside the plan from plain
arguments: the devices come by name (the manager resolves them among the startup module's
allowed devices), the restoration is an in-process :class:`callbacks.LiveRestorer` subscribed
for the plan's runs only, and the region rules are the tuned presets of
:mod:`bluesky_plans.presets`.

This module composes the plans and the callbacks, so it lives in the application layer (the
plans and the callbacks never import each other).
"""

# No ``from __future__ import annotations``: the queue server validates a queued item against
# the plan's annotations, which must be objects, not strings it cannot resolve.
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plans as bp
from bluesky.preprocessors import subs_wrapper
from bluesky.utils import FailedStatus
from bluesky_queueserver import parameter_annotation_decorator

from bluesky_plans.adaptive import AdaptiveReport, adaptive_roi_scan, fault_text
from bluesky_plans.arguments import positive_number, range_um
from bluesky_plans.budget import (
    StageTiming,
    fine_step_um,
    grid_scan_time_s,
    region_grid,
)
from bluesky_plans.maps import LiveMaps
from bluesky_plans.presets import adaptive_options
from bluesky_plans.roi import RegionOfInterest
from bluesky_plans.tomo import tomo_scan as _tomo_scan
from callbacks import LiveRestorer
from control_room.worker_tiled import TILED_URI_ENV, worker_catalog

_LOG = logging.getLogger(__name__)

QUEUEABLE_PLANS = ("adaptive_rescan", "tomo_scan", "coarse_map", "roi_rescans")
"""The plans of this module that the shipped profile offers (``user_group_permissions.yaml``)."""


def _dwell_of(detectors: Sequence[Any]) -> float:
    """The dwell time of the first detector that has a ``dwell_time`` signal, s."""
    for detector in detectors:
        signal = getattr(detector, "dwell_time", None)
        if signal is not None:
            return float(signal.get())
    raise ValueError("no detector has a dwell_time signal: give dwell_s")


# A type hint stops the queue server from turning names into devices; these tell it which names
# are devices (readable detectors, movable motors) and validate them against the allowed ones.
def _map_scan_devices() -> dict[str, Any]:
    """The device parameters of a map scan (detectors, x and y motors), a new dict each time."""
    return {
        "parameters": {
            "detectors": {"annotation": "typing.List[__READABLE__]"},
            "x_motor": {"annotation": "__MOVABLE__"},
            "y_motor": {"annotation": "__MOVABLE__"},
        }
    }


@parameter_annotation_decorator(_map_scan_devices())
def adaptive_rescan(
    detectors: Sequence[Any],
    x_motor: Any,
    y_motor: Any,
    x_range_um: Sequence[float],
    y_range_um: Sequence[float],
    coarse_step_um: float,
    *,
    element: str,
    beam_fwhm_um: float,
    target_resolution_um: float,
    method: str = "richardson_lucy",
    normalize: str | None = "i0",
    budget_fraction: float = 1.0 / 3.0,
    max_rois: int = 10,
    dwell_s: float | None = None,
    velocity_um_s: float = 1000.0,
    restore_timeout_s: float = 120.0,
    md: Mapping[str, Any] | None = None,
):
    """Coarse scan, live restoration, regions, fine rescans: the adaptive loop, queueable.

    Every argument a client sends is plain data; nothing moves before all are checked (the
    checks run at the plan's first step, before its first message).

    Parameters
    ----------
    detectors : list of readable devices
        Detectors of every scan, by name in a queued item (e.g. ``["xrf", "i0"]``).
    x_motor, y_motor : settable devices
        Stage motors in µm, by name; x is the fast axis.
    x_range_um, y_range_um : [float, float]
        Coarse region, µm.
    coarse_step_um : float
        Coarse step on both axes, µm.
    element : str
        Element whose map decides (a field of the detectors' events, e.g. ``"Se"``).
    beam_fwhm_um : float
        Beam FWHM, µm (the restoration's PSF and the region rules' scale).
    target_resolution_um : float
        Smallest feature to resolve in the rescans, µm (sets the fine step).
    method : str
        Restoration method of the coarse map (an ``asirp`` method or ``"auto"``).
    normalize : str, optional
        Monitor field the map is divided by (``"i0"``), or ``None``.
    budget_fraction : float
        Beam time allowed for the rescans, as a fraction of a full fine scan of the coarse
        region (0-1].
    max_rois : int
        Most regions to rescan (1-1000).
    dwell_s : float, optional
        Dwell per point, s, for the beam-time budget (default: the first detector's
        ``dwell_time``).
    velocity_um_s : float
        Stage speed between points, µm/s.
    restore_timeout_s : float
        Longest wait for the coarse map's final restoration after the coarse scan, s; the raw
        map decides after that, and the runs say so.
    md : dict, optional
        Metadata for every run of the plan.

    Returns
    -------
    list of str
        The run uids: the coarse scan's, then the rescans'.

    Raises
    ------
    ValueError
        For any argument out of range, before any motor moves.
    """
    if not isinstance(element, str) or not element:
        raise ValueError(f"element must be a non-empty string, got {element!r}")
    fraction = positive_number("budget_fraction", budget_fraction)
    if fraction > 1.0:
        raise ValueError(f"budget_fraction must be at most 1, got {budget_fraction!r}")
    if isinstance(max_rois, bool) or not isinstance(max_rois, int) or not 1 <= max_rois <= 1000:
        raise ValueError(f"max_rois must be an integer in 1-1000, got {max_rois!r}")
    dwell = _dwell_of(detectors) if dwell_s is None else positive_number("dwell_s", dwell_s)
    timing = StageTiming(
        dwell_s=dwell, velocity_um_s=positive_number("velocity_um_s", velocity_um_s)
    )
    beam = positive_number("beam_fwhm_um", beam_fwhm_um)
    step = positive_number("coarse_step_um", coarse_step_um)
    fine = fine_step_um(beam, positive_number("target_resolution_um", target_resolution_um), step)
    (x0, x1), (y0, y1) = range_um("x_range_um", x_range_um), range_um("y_range_um", y_range_um)
    full_s = grid_scan_time_s(x1 - x0, y1 - y0, fine, timing)
    restorer = LiveRestorer(element=element, normalize=normalize, method=method, every_rows=None)
    try:  # the restorer's thread ends with the plan, however it ends (a refused argument too)
        plan = adaptive_roi_scan(
            detectors,
            x_motor,
            y_motor,
            x_range_um,
            y_range_um,
            step,
            maps=LiveMaps(restorer, positive_number("restore_timeout_s", restore_timeout_s)),
            beam_fwhm_um=beam,
            target_resolution_um=target_resolution_um,
            timing=timing,
            max_rois=max_rois,
            budget_s=fraction * full_s,
            report=AdaptiveReport(),
            md={**dict(md or {}), "queued_plan": "adaptive_rescan"},
            **adaptive_options(beam_fwhm_um=beam, step_um=step),
        )
        return (yield from subs_wrapper(plan, restorer))
    finally:
        restorer.close(10.0, cancel=True)


tomo_scan = parameter_annotation_decorator(
    {
        "parameters": {
            "detector": {"annotation": "__READABLE__"},
            "rotation": {"annotation": "__MOVABLE__"},
            "shutter": {"annotation": "__MOVABLE__"},
            "sample": {"annotation": "__MOVABLE__"},
            "md": {"annotation": "typing.Optional[typing.Dict[str, typing.Any]]"},
        }
    }
)(_tomo_scan)
""":func:`bluesky_plans.tomo.tomo_scan` as the queue takes it: the devices by name (a readable
camera; a rotation stage, a shutter and a sample in/out switch that can be set)."""


COARSE_ROLE = "coarse_map"
"""``asirp_role`` of a :func:`coarse_map` run (what the agent looks for in tiled)."""

RESCAN_ROLE = "rescan"
"""``asirp_role`` of each run of :func:`roi_rescans`."""

MAX_SUGGESTIONS = 100
"""Most regions one :func:`roi_rescans` item may scan."""

MAX_RESCAN_POINTS = 100_000
"""Most points one region of :func:`roi_rescans` may have."""


def _grid_spans(x_range, y_range, step_um: float) -> tuple[tuple, tuple]:
    """``grid_scan``'s ``(y0, y1, ny)``, ``(x0, x1, nx)`` covering the ranges from their start."""
    (x0, x1), (y0, y1) = range_um("x_range_um", x_range), range_um("y_range_um", y_range)
    return region_grid(RegionOfInterest(x0, x1, y0, y1, 0.0, "queued"), step_um)


@parameter_annotation_decorator(_map_scan_devices())
def coarse_map(
    detectors: Sequence[Any],
    x_motor: Any,
    y_motor: Any,
    x_range_um: Sequence[float],
    y_range_um: Sequence[float],
    step_um: float,
    *,
    element: str,
    beam_fwhm_um: float,
    method: str = "richardson_lucy",
    normalize: str | None = "i0",
    sample: str | None = None,
    campaign: str | None = None,
    restore_timeout_s: float = 120.0,
    md: Mapping[str, Any] | None = None,
):
    """A coarse map, restored live, both stored in tiled: what a rescan agent starts from.

    The raw run goes to the worker's catalog (:func:`~control_room.worker_tiled.worker_catalog`,
    ``ASIRP_TILED_URI``) like every run of the profile; its final restoration is written there
    as a derived run (``parent_uid`` = the raw run) before the plan ends, so an agent that sees
    the raw run's stop document finds the restored map beside it. A failed restoration never
    fails the scan: the derived run then says so, and the agent decides on the raw map.

    Parameters
    ----------
    detectors : list of readable devices
        By name in a queued item (``["xrf", "i0"]``).
    x_motor, y_motor : settable devices
        Stage motors in µm, by name; x is the fast axis.
    x_range_um, y_range_um : [float, float]
        Region, µm.
    step_um : float
        Step on both axes, µm.
    element : str
        Element whose map is restored (``"Se"``).
    beam_fwhm_um : float
        Beam FWHM, µm (the restoration's PSF).
    method : str
        Restoration method (an ``asirp`` method or ``"auto"``).
    normalize : str, optional
        Monitor field the map is divided by (``"i0"``), or ``None``.
    sample : str, optional
        Sample name (the agent's beam-time budget is per sample).
    campaign : str, optional
        Campaign name: the agent that watches this campaign takes the run.
    restore_timeout_s : float
        Longest wait for the final restoration after the scan, s.
    md : dict, optional
        More start-document metadata.

    Returns
    -------
    str
        The raw run's uid.

    Raises
    ------
    ValueError
        For any argument out of range, or no catalog configured, before any motor moves.
    """
    if not isinstance(element, str) or not element:
        raise ValueError(f"element must be a non-empty string, got {element!r}")
    beam = positive_number("beam_fwhm_um", beam_fwhm_um)
    step = positive_number("step_um", step_um)
    y_span, x_span = _grid_spans(x_range_um, y_range_um, step)
    if y_span[2] < 2 or x_span[2] < 2:
        raise ValueError(f"the map needs at least 2 x 2 points at {step:g} µm")
    timeout_s = positive_number("restore_timeout_s", restore_timeout_s)
    try:
        dwell_s: float | None = _dwell_of(detectors)
    except ValueError:  # a detector without a dwell signal: the agent assumes its default
        dwell_s = None
    catalog = worker_catalog()
    if catalog is None:
        raise ValueError(
            f"coarse_map stores its maps in tiled: set {TILED_URI_ENV} for the manager"
        )
    run_md = {
        **dict(md or {}),
        "asirp_role": COARSE_ROLE,
        "campaign": campaign,
        "sample": sample,
        "element": element,
        "beam_fwhm_um": beam,
        "step_um": step,
        "x_range_um": [x_span[0], x_span[1]],
        "y_range_um": [y_span[0], y_span[1]],
        "normalize": normalize,
        "dwell_s": dwell_s,
        "queued_plan": "coarse_map",
    }
    restorer = LiveRestorer(
        element=element, normalize=normalize, method=method, every_rows=None, tiled=catalog
    )
    try:
        uid = yield from subs_wrapper(
            bp.grid_scan(list(detectors), y_motor, *y_span, x_motor, *x_span, md=run_md),
            restorer,
        )
        # the derived run is in tiled before the item ends (or the wait ran out)
        yield from LiveMaps(restorer, timeout_s).restored_map(
            uid, pixel_um=(step, step), beam_fwhm_um=beam
        )
        return uid
    finally:
        restorer.close(10.0, cancel=True)


def check_suggestion(suggestion: Any) -> tuple[str, tuple, tuple]:
    """``(id, y_span, x_span)`` of one region to rescan, or one clear ``ValueError``.

    The check :func:`roi_rescans` makes before anything moves (and an operator's edit is held
    to): an ``_id`` of 1-200 characters, finite ranges with stop > start (µm), a step > 0 µm,
    at most :data:`MAX_RESCAN_POINTS` points.
    """
    if not isinstance(suggestion, Mapping):
        raise ValueError(f"each suggestion must be a dict, got {type(suggestion).__name__}")
    ident = suggestion.get("_id")
    if not isinstance(ident, str) or not 0 < len(ident) <= 200:
        raise ValueError(f"each suggestion needs an '_id' string (1-200 characters), got {ident!r}")
    step = positive_number("step_um", suggestion.get("step_um"))
    y_span, x_span = _grid_spans(suggestion.get("x_range_um"), suggestion.get("y_range_um"), step)
    if y_span[2] * x_span[2] > MAX_RESCAN_POINTS:
        raise ValueError(f"suggestion {ident!r} asks for more than {MAX_RESCAN_POINTS} points")
    return ident, y_span, x_span


@parameter_annotation_decorator(
    {
        "parameters": {
            "actuators": {"annotation": "typing.List[__MOVABLE__]"},
            "sensors": {"annotation": "typing.List[__READABLE__]"},
            "suggestions": {"annotation": "typing.List[typing.Dict[str, typing.Any]]"},
            "md": {"annotation": "typing.Optional[typing.Dict[str, typing.Any]]"},
        }
    }
)
def roi_rescans(
    suggestions: Sequence[Mapping[str, Any]],
    actuators: Sequence[Any],
    sensors: Sequence[Any] | None = None,
    md: Mapping[str, Any] | None = None,
):
    """Fine grid scans of the regions an agent proposed, one run each; a failure stays local.

    The signature is bluesky-adaptive's acquisition plan (``AcquisitionPlan``:
    ``(suggestions, actuators, sensors, md)``), so a ``QueueserverOptimizationProblem`` can name
    it. A region whose scan fails (a motor fault) closes its run as failed and the next region
    is scanned; the item itself completes, so the queue goes on. Every run's start document
    carries the suggestion's ``_id`` as ``asirp_proposal_id`` (how the agent knows that a
    proposal ran, and that it ran once).

    Parameters
    ----------
    suggestions : list of dict
        ``{"_id": str, "x_range_um": [x0, x1], "y_range_um": [y0, y1], "step_um": float}``
        (µm; more keys are recorded as ``proposal``), at most :data:`MAX_SUGGESTIONS`.
    actuators : [x_motor, y_motor]
        Fast (x) and slow (y) stage motors, by name.
    sensors : list of readable devices
        Detectors, by name (``["xrf", "i0"]``).
    md : dict, optional
        Metadata of every run (the agent's links: ``coarse_uid``, ``derived_uid``,
        ``decision_uid``, ``campaign``).

    Returns
    -------
    list of str
        Uids of the runs that completed.

    Raises
    ------
    ValueError
        For any malformed suggestion, before any motor moves.
    """
    if isinstance(suggestions, str | bytes) or not isinstance(suggestions, Sequence):
        raise ValueError("suggestions must be a list of dicts")
    if not 1 <= len(suggestions) <= MAX_SUGGESTIONS:
        raise ValueError(f"give 1-{MAX_SUGGESTIONS} suggestions, got {len(suggestions)}")
    if len(actuators) != 2:
        raise ValueError(f"actuators must be [x_motor, y_motor], got {len(actuators)} devices")
    if not sensors:
        raise ValueError("sensors must name at least one detector")
    checked = [check_suggestion(suggestion) for suggestion in suggestions]
    if len({ident for ident, _, _ in checked}) != len(checked):
        raise ValueError("suggestion '_id's must be unique")
    x_motor, y_motor = actuators
    uids: list[str] = []
    for suggestion, (ident, y_span, x_span) in zip(suggestions, checked, strict=True):
        run_md = {
            **dict(md or {}),
            "asirp_role": RESCAN_ROLE,
            "asirp_proposal_id": ident,
            "proposal": dict(suggestion),
            "queued_plan": "roi_rescans",
        }
        try:
            uid = yield from bp.grid_scan(
                list(sensors), y_motor, *y_span, x_motor, *x_span, md=run_md
            )
        except FailedStatus as error:
            _LOG.warning("rescan of %s failed, going on: %s", ident, fault_text(error))
            continue
        uids.append(uid)
    return uids
