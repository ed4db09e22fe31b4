"""An ROI drawn on a restored map, as a rescan for the queue server.

:func:`rescan_item` makes the bluesky-queueserver plan item (``grid_scan`` over the ROI at the
fine step of :func:`bluesky_plans.budget.fine_step_um`, through
:func:`bluesky_plans.recommender.as_plan_items`). Sending is pluggable: a sender is any callable
``sender(item) -> str`` (a one-line report). :class:`JsonFileSender` (the default, no queue
server installed here) writes each item as a new JSON file; a queue-server sender would call
``bluesky_queueserver_api``'s ``item_add``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asirp.safe_files import atomic_write
from bluesky_plans.budget import fine_step_um
from bluesky_plans.recommender import as_plan_items
from bluesky_plans.roi import RegionOfInterest

RescanSender = Callable[[dict[str, Any]], str]
"""Sends one plan item; returns a one-line report for the panel."""


def rescan_item(
    x_range_um: Sequence[float],
    y_range_um: Sequence[float],
    *,
    beam_fwhm_um: float,
    target_resolution_um: float,
    detectors: Sequence[str] = ("xrf", "i0"),
    x_motor: str = "sample_x",
    y_motor: str = "sample_y",
    md: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The queue-server plan item that rescans one ROI.

    Parameters
    ----------
    x_range_um, y_range_um : (float, float)
        ROI edges, µm (stage coordinates).
    beam_fwhm_um, target_resolution_um : float
        Beam FWHM and wanted resolution, µm: they set the fine step.
    detectors, x_motor, y_motor : str
        Names in the queue server's namespace.
    md : dict, optional
        Extra start-document metadata (e.g. the device and result id the ROI was drawn on).

    Returns
    -------
    dict
        ``{"item_type": "plan", "name": "grid_scan", "args": [...], "kwargs": {...}}``.
    """
    region = RegionOfInterest(
        float(x_range_um[0]),
        float(x_range_um[1]),
        float(y_range_um[0]),
        float(y_range_um[1]),
        score=0.0,
        strategy="operator",
    )
    step = fine_step_um(beam_fwhm_um, target_resolution_um)
    (item,) = as_plan_items(
        [region], detectors=list(detectors), x_motor=x_motor, y_motor=y_motor, step_um=step, md=md
    )
    return item


class JsonFileSender:
    """Write each plan item to ``folder/rescan_NNNN.json`` (never replacing a file).

    Parameters
    ----------
    folder : str or os.PathLike
        Where the items go (created when missing).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def __call__(self, item: dict[str, Any]) -> str:
        """Write ``item``; return which file holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        number = 1
        while (path := self.folder / f"rescan_{number:04d}.json").exists():
            number += 1
        text = json.dumps(item, indent=2)
        with atomic_write(path) as output:
            output.file.write(text.encode())
        return f"plan item written to {path}"
