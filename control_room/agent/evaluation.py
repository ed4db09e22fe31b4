"""What the agent sees: coarse maps and rescans read back from tiled.

This is bluesky-adaptive's ``EvaluationFunction``.
A coarse map (a :func:`~control_room.queue_plans.coarse_map` run) is read with its derived run:
the assembled, normalised raw map and the final restored map, both with their axes in µm. When
there is no final restoration (it failed, or never arrived), the raw map is rebuilt from the
run's own events, and the observation says why. A rescan is read as its run's exit status and
the element's total counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from callbacks.publish import DERIVED_STREAM, derived_runs
from callbacks.tiled_scan import plain_metadata

COARSE = "coarse_map"
RESCAN = "rescan"


def _final_index(stream: Any) -> int | None:
    finals = np.asarray(stream["final"].read(), dtype=bool)
    return int(np.flatnonzero(finals)[-1]) if finals.any() else None


def grid_map_from_events(
    run: Any, element: str, normalize: str | None, step_um: float, origin_um: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(map, x_um, y_um)`` of an unsnaked grid scan, from its primary stream.

    Parameters
    ----------
    run : tiled run
        The run (its start document's ``shape`` is ``(rows, columns)``).
    element : str
        The element; the field is ``xrf_<element>`` (the profile's detector).
    normalize : str, optional
        Monitor field the counts are divided by (then times its mean), or ``None``.
    step_um : float
        Step on both axes, µm.
    origin_um : (x0, y0)
        The first point, µm.

    Returns
    -------
    map : numpy.ndarray
        ``(rows, columns)`` float32 counts, NaN where no point was measured.
    x_um, y_um : numpy.ndarray
        ``(columns,)`` and ``(rows,)`` point positions, µm.
    """
    rows, columns = (int(n) for n in run.metadata["start"]["shape"])
    stream = run["primary"]
    counts = np.asarray(stream[f"xrf_{element}"].read(), dtype=np.float64)
    if normalize:
        monitor = np.asarray(stream[normalize].read(), dtype=np.float64)
        counts = counts / np.where(monitor > 0, monitor, np.nan) * np.nanmean(monitor)
    image = np.full(rows * columns, np.nan)
    image[: min(counts.size, image.size)] = counts[: image.size]
    x0, y0 = (float(v) for v in origin_um)
    return (
        image.reshape(rows, columns).astype(np.float32),
        x0 + step_um * np.arange(columns),
        y0 + step_um * np.arange(rows),
    )


class TiledEvaluation:
    """bluesky-adaptive ``EvaluationFunction``: ``(uid, suggestions) -> outcomes`` from tiled.

    Parameters
    ----------
    catalog : tiled.client.container.Container
        The catalog the worker writes runs to.
    """

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog

    def __call__(self, uid: str, suggestions: Sequence[Mapping]) -> list[dict[str, Any]]:
        """Outcomes of run ``uid``.

        Parameters
        ----------
        uid : str
            A coarse map's uid (``suggestions`` empty: a baseline observation, ``_id`` = uid), or
            a rescan's (``suggestions`` = the one proposal it scanned).

        Returns
        -------
        list of dict
            A coarse map: one observation with ``kind="coarse_map"``, ``raw`` and ``restored``
            ``(H, W)`` float32 maps (``restored`` ``None`` when there is none, ``reason`` says
            why), ``x_um`` ``(W,)`` and ``y_um`` ``(H,)`` µm, ``method``, ``derived_uid`` and the
            run's ``sample``, ``element``, ``beam_fwhm_um``, ``step_um``, ``bounds_um``,
            ``dwell_s``. A rescan: ``{"_id", "kind": "rescan", "run_uid", "exit_status",
            "reason", "counts"}`` per suggestion.

        Raises
        ------
        LookupError
            The coarse map's restoration is not in tiled yet (its derived run is open).
        """
        run = self.catalog[uid]
        start = plain_metadata(run.metadata["start"])
        if not suggestions:
            return [self._coarse(run, start)]
        stop = plain_metadata(run.metadata.get("stop") or {})
        counts = float("nan")
        with contextlib.suppress(KeyError, TypeError):  # failed before its first point
            counts = float(np.nansum(run["primary"][f"xrf_{start['element']}"].read()))
        return [
            {
                "_id": suggestion["_id"],
                "kind": RESCAN,
                "run_uid": uid,
                "exit_status": stop.get("exit_status"),
                "reason": stop.get("reason") or "",
                "counts": counts,
            }
            for suggestion in suggestions
        ]

    def _coarse(self, run: Any, start: dict[str, Any]) -> dict[str, Any]:
        observation: dict[str, Any] = {
            "_id": start["uid"],
            "kind": COARSE,
            "sample": start.get("sample"),
            "element": start["element"],
            "beam_fwhm_um": float(start["beam_fwhm_um"]),
            "step_um": float(start["step_um"]),
            "bounds_um": [*start["x_range_um"], *start["y_range_um"]],
            "dwell_s": start.get("dwell_s"),
            "restored": None,
            "method": None,
            "derived_uid": None,
            "reason": "",
        }
        derived = list(derived_runs(self.catalog, start["uid"]).values())
        if derived:
            latest = derived[-1]
            meta = plain_metadata(latest.metadata)
            observation["derived_uid"] = meta["start"]["uid"]
            if not meta.get("stop"):
                raise LookupError(f"the restoration of {start['uid']} is still being written")
            index = _final_index(latest[DERIVED_STREAM]) if DERIVED_STREAM in latest else None
            if index is not None:
                stream = latest[DERIVED_STREAM]
                observation.update(
                    raw=np.asarray(stream["input_map"].read()[index], dtype=np.float32),
                    restored=np.asarray(stream["restored_map"].read()[index], dtype=np.float32),
                    x_um=np.asarray(stream["x_input_um"].read()[index], dtype=np.float64),
                    y_um=np.asarray(stream["y_input_um"].read()[index], dtype=np.float64),
                    method=meta["start"].get("method"),
                )
                if observation["restored"].shape != observation["raw"].shape:
                    observation["restored"] = None
                    observation["reason"] = "the restored map is on another grid"
                return observation
            observation["reason"] = (
                f"no final restoration ({meta['stop'].get('exit_status')}: "
                f"{meta['stop'].get('reason') or 'no reason given'})"
            )
        else:
            observation["reason"] = "no restoration in tiled"
        raw, x_um, y_um = grid_map_from_events(
            run,
            start["element"],
            start.get("normalize"),
            float(start["step_um"]),
            (start["x_range_um"][0], start["y_range_um"][0]),
        )
        observation.update(raw=raw, x_um=x_um, y_um=y_um)
        return observation
