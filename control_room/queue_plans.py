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
from collections.abc import Mapping, Sequence
from typing import Any

from bluesky.preprocessors import subs_wrapper
from bluesky_queueserver import parameter_annotation_decorator

from bluesky_plans.adaptive import AdaptiveReport, adaptive_roi_scan
from bluesky_plans.arguments import positive_number, range_um
from bluesky_plans.budget import StageTiming, fine_step_um, grid_scan_time_s
from bluesky_plans.maps import LiveMaps
from bluesky_plans.presets import adaptive_options
from bluesky_plans.tomo import tomo_scan as _tomo_scan
from callbacks import LiveRestorer

QUEUEABLE_PLANS = ("adaptive_rescan", "tomo_scan")
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
@parameter_annotation_decorator(
    {
        "parameters": {
            "detectors": {"annotation": "typing.List[__READABLE__]"},
            "x_motor": {"annotation": "__MOVABLE__"},
            "y_motor": {"annotation": "__MOVABLE__"},
        }
    }
)
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
