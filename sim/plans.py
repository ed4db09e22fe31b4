"""A fly-scan map plan for the simulated beamline.

The adaptive plans live in ``bluesky_plans/``; this is the plain fly map they (and tests) can
build on: one ``prepare``/``kickoff``/``complete``/``collect`` per line, so each line reaches
the callbacks as one event page while the map is still being measured.
"""

from __future__ import annotations

import math
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from sim.beamline import SimulatedBeamline
from sim.devices import FlyLine


def fly_map(
    beamline: SimulatedBeamline,
    x_start_um: float,
    x_stop_um: float,
    y_start_um: float,
    y_stop_um: float,
    num_lines: int,
    *,
    speed_um_s: float = 1000.0,
    period_s: float = 0.01,
    snake: bool = False,
    md: dict[str, Any] | None = None,
):
    """Fly a map line by line: x at constant speed, y stepped between lines.

    Parameters
    ----------
    beamline : SimulatedBeamline
        The beamline (its ``flyer``, ``x`` and ``y`` are used).
    x_start_um, x_stop_um : float
        Ends of each line, µm.
    y_start_um, y_stop_um : float
        First and last line, µm.
    num_lines : int
        Number of lines (>= 1).
    speed_um_s : float
        Stage speed along x, µm/s (bins are ``speed * period`` µm wide).
    period_s : float
        Counting period, s.
    snake : bool
        Fly every other line backwards.
    md : dict, optional
        Metadata merged into the start document.

    Yields
    ------
    bluesky.utils.Msg
        The plan's messages.

    Returns
    -------
    str
        The run uid.

    Raises
    ------
    ValueError
        For a bad number of lines, non-finite ends, or a speed/period the flyer refuses.
    """
    if isinstance(num_lines, bool) or not isinstance(num_lines, int | np.integer):
        raise TypeError(f"num_lines must be an integer, got {num_lines!r}")
    if num_lines < 1:
        raise ValueError(f"num_lines must be >= 1, got {num_lines}")
    for name, value in (
        ("x_start_um", x_start_um),
        ("x_stop_um", x_stop_um),
        ("y_start_um", y_start_um),
        ("y_stop_um", y_stop_um),
        ("speed_um_s", speed_um_s),
        ("period_s", period_s),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    flyer, x, y = beamline.flyer, beamline.x, beamline.y
    ys = np.linspace(float(y_start_um), float(y_stop_um), int(num_lines))
    lines = []
    for index, row in enumerate(ys):
        backwards = snake and index % 2 == 1
        start, stop = (x_stop_um, x_start_um) if backwards else (x_start_um, x_stop_um)
        lines.append(
            FlyLine(float(row), float(start), float(stop), float(speed_um_s), float(period_s))
        )
    n_bins = lines[0].n_bins
    bin_um = math.copysign(lines[0].bin_um, x_stop_um - x_start_um)
    first_centre = x_start_um + bin_um / 2
    last_centre = x_start_um + bin_um * (n_bins - 0.5)
    _md: dict[str, Any] = {
        "plan_name": "fly_map",
        "plan_args": {
            "beamline": repr(beamline.flyer.name),
            "x_start_um": x_start_um,
            "x_stop_um": x_stop_um,
            "y_start_um": y_start_um,
            "y_stop_um": y_stop_um,
            "num_lines": int(num_lines),
            "speed_um_s": speed_um_s,
            "period_s": period_s,
            "snake": bool(snake),
        },
        "shape": (int(num_lines), int(n_bins)),
        "extents": ([float(y_start_um), float(y_stop_um)], [first_centre, last_centre]),
        "snaking": (False, bool(snake)),
        "motors": (y.name, x.name),
        "detectors": [beamline.xrf.name, beamline.i0.name],
        "fly": {"speed_um_s": speed_um_s, "period_s": period_s, "bin_um": abs(bin_um)},
        "hints": {
            "gridding": "rectilinear",
            "dimensions": [([y.name], flyer.stream_name), ([x.name], flyer.stream_name)],
        },
    }
    _md.update(md or {})

    @bpp.run_decorator(md=_md)
    def inner():
        for line in lines:
            yield from bps.prepare(flyer, line, wait=True)
            yield from bps.kickoff(flyer, wait=True)
            yield from bps.complete(flyer, wait=True)
            yield from bps.collect(flyer)

    return (yield from inner())
