"""Tango-free values of the device's attributes and replies, computed from the component's state.

The ``ASIRP`` device (:mod:`asirp_device.server`) reads and pushes what these functions return:
:func:`result_values` gives every result attribute for a :class:`~asirp_device.requests.
ResultRecord` (or the empty values before the first result), :func:`fetch_header` the header of
a ``FetchResult`` reply (:func:`fetch_reply` the whole reply, see :mod:`asirp_device.wire`),
:func:`parameters_json` the ``parameters_json`` text and :func:`input_value` the
``input_image`` value. Nothing here imports Tango, so tests check the values without a server.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from asirp_device.requests import ResultRecord
from asirp_device.settings import Settings
from asirp_device.wire import encode_result

EMPTY_IMAGE = np.zeros((0, 0), dtype=np.float32)
"""What an image attribute reads before there is an image: read-only float32, 0 x 0."""
EMPTY_IMAGE.flags.writeable = False

METRIC_ATTRIBUTES = ("contrast_std", "sharpness", "noise_sigma", "residual")
"""Metrics that also have their own scalar attribute (all are in ``metrics_json``)."""

MAX_CAUTIONS = 32
"""Most cautions the ``result_cautions`` attribute carries (the engine gives a handful)."""

RESULT_ATTRIBUTES = (
    "result_id",
    "restored_image",
    "psf",
    "method_used",
    "result_cautions",
    "metrics_json",
    *METRIC_ATTRIBUTES,
    "iterations_run",
    "last_duration_ms",
)
"""Attributes that change with every result (each pushes change events, in this order:
``result_id`` first, so a client knows which request the next ``restored_image`` answers)."""


def result_values(record: ResultRecord | None) -> dict[str, Any]:
    """Values of the result attributes for ``record`` (NaN, empty or 0 before any result).

    Parameters
    ----------
    record : ResultRecord or None
        The result, or ``None`` before the first one.

    Returns
    -------
    dict
        One value per name of :data:`RESULT_ATTRIBUTES`: ``result_id`` (int),
        ``restored_image`` and ``psf`` (float32 2-D, empty before a result or without a PSF),
        ``method_used`` (str), ``result_cautions`` (list of str, the engine's cautions),
        ``metrics_json`` (JSON object text with ``request_id``), the
        :data:`METRIC_ATTRIBUTES` (float, NaN when missing), ``iterations_run`` (int, 0 when
        not an int) and ``last_duration_ms`` (float).
    """
    if record is None:
        values: dict[str, Any] = dict.fromkeys(METRIC_ATTRIBUTES, math.nan)
        values.update(
            result_id=0,
            restored_image=EMPTY_IMAGE,
            psf=EMPTY_IMAGE,
            method_used="",
            result_cautions=[],
            metrics_json="{}",
            iterations_run=0,
            last_duration_ms=math.nan,
        )
        return values
    restoration = record.restoration
    metrics = restoration.metrics
    iterations = restoration.params.get("iterations_run", 0)
    psf = restoration.psf
    values = {name: float(metrics.get(name, math.nan)) for name in METRIC_ATTRIBUTES}
    values.update(
        result_id=record.request_id,
        restored_image=restoration.image,
        psf=EMPTY_IMAGE if psf is None else np.asarray(psf, dtype=np.float32),
        method_used=restoration.method,
        result_cautions=list(restoration.cautions())[:MAX_CAUTIONS],
        metrics_json=json.dumps({**metrics, "request_id": record.request_id}, sort_keys=True),
        iterations_run=int(iterations) if isinstance(iterations, int) else 0,
        last_duration_ms=1000.0 * record.duration_s,
    )
    return values


def fetch_header(record: ResultRecord) -> dict[str, Any]:
    """The ``FetchResult`` header for ``record`` (``shape`` and ``dtype`` are added on encoding).

    Returns
    -------
    dict
        ``request_id``, ``method``, ``sequence``, ``iterations_run``, ``duration_ms``,
        ``metrics`` (the engine's metrics as they are), ``source`` (where the input came from:
        for a live result the raw run's uid) and ``derived_uid`` (for a live result, the
        derived run in tiled that holds it; ``None`` otherwise).
    """
    values = result_values(record)
    return {
        "request_id": record.request_id,
        "source": record.source,
        "derived_uid": record.derived_uid,
        "method": values["method_used"],
        "sequence": record.sequence,
        "iterations_run": values["iterations_run"],
        "duration_ms": values["last_duration_ms"],
        "metrics": record.restoration.metrics,
    }


def fetch_reply(record: ResultRecord) -> tuple[str, bytes]:
    """The ``FetchResult`` reply for ``record``: its header and the restored map's bytes."""
    return encode_result(fetch_header(record), record.restoration.image)


def parameters_json(settings: Settings) -> str:
    """The ``parameters_json`` attribute: the method parameters as JSON object text (sorted)."""
    return json.dumps(dict(settings.parameters), sort_keys=True)


def input_value(image: np.ndarray | None) -> np.ndarray:
    """The ``input_image`` attribute: the input map, or :data:`EMPTY_IMAGE` without one."""
    return EMPTY_IMAGE if image is None else image
