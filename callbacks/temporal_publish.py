"""Temporal-feedback results as a derived Bluesky run: the schema, and finding them in tiled.

One derived run per analysed raw run, linked to it as the map restorations are
(:mod:`callbacks.publish`): ``parent_uid`` in its start document, so
:func:`callbacks.publish.derived_runs` finds it, and :func:`temporal_runs` finds only these.
Every document is made by ``event_model``'s ``compose_*`` functions, which validate them.

Start document
    ``plan_name`` = ``"asirp_temporal_feedback"``, ``purpose`` = ``"temporal_feedback"``,
    ``parent_uid``, ``parent_scan_id``, ``parent_plan_name``, ``parent_sample`` (those the raw
    run has), ``software`` = ``"asirp"``, ``software_version``, ``versions`` (asirp, numpy,
    pyFAI, h5py, event-model), ``temporal`` (the analysis: ``geometry``, ``settings``,
    ``profile``, ``image_field``, ``temperature_field``, ``stream``, ``source`` =
    ``"metadata"`` or ``"defaults"``) and ``pre_event`` (frames kept before an alarm, raw-frame
    byte cap).
Stream ``axes`` (one event, before the first frame's)
    ``q_A`` ``(n_bins,)`` float64, units ``1/angstrom``: the q axis of every pattern.
Stream ``primary`` (one event per analysed frame, in frame order)
    ``frame_index`` (the analyser's count, from 0), ``raw_seq_num`` (the raw event's
    ``seq_num``), ``time_s`` (s since the raw run's start), ``temperature_K`` (NaN when the run
    has none), ``intensity`` ``(n_bins,)`` float32 integrated I(q) (counts per bin), ``restored``
    ``(n_bins,)`` float32 (only when the analysis restores; NaN for a frame without one),
    ``score`` (about N(0, 1) in control), ``cusum``, ``threshold`` (the CUSUM's; NaN until
    known), ``armed`` (bool: past the warm-up, alarms possible), ``expansion`` (fitted uniform
    q scaling against the reference), ``alarm`` (bool). Array keys carry ``dims`` ``["q"]`` and
    ``q_units``.
Stream ``alarms`` (one event per alarm)
    ``alarm_index`` (from 0), ``frame_index``, ``raw_seq_num``, ``time_s``, ``temperature_K``,
    ``onset_frame_index``, ``onset_time_s``, ``onset_temperature_K`` (NaN when unknown),
    ``q_ranges_A`` ``(MAX_Q_RANGES, 2)`` float64 ``[q_low, q_high]`` rows in 1/Å, the first
    ``n_q_ranges`` used and the rest NaN (tiled appends an event's arrays along one axis, so
    the shape is fixed), ``n_q_ranges``, ``confidence``, ``score``, ``threshold``.
Stream ``pre_event`` (after each alarm: the frames analysed just before it, oldest first)
    ``alarm_index``, ``frame_index``, ``raw_seq_num``, ``time_s``, ``temperature_K``,
    ``intensity``, ``restored`` (when restoring), ``score``, ``cusum``.
Stream ``pre_event_frames`` (only when raw frames are kept: those still held, oldest first)
    ``alarm_index``, ``frame_index``, ``frame`` ``(rows, columns)`` float32 counts.
Stop document
    ``exit_status`` (the raw run's; ``abort`` when the monitor shut down first) and ``reason``;
    ``frames_processed``, ``frames_skipped``, ``skipped`` (counts per reason: ``queue_full``,
    ``unreadable``, ``type``, ``dtype``, ``shape``, ``nonfinite``, ``temperature``,
    ``rejected``, ``error``, ``no_analyzer``), ``alarms``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asirp._version import __version__
from callbacks.publish import derived_runs

Emit = Callable[[str, dict[str, Any]], None]

TEMPORAL_PLAN_NAME = "asirp_temporal_feedback"
"""``plan_name`` of temporal derived runs."""
TEMPORAL_PURPOSE = "temporal_feedback"
"""``purpose`` of temporal derived runs (what :func:`temporal_runs` searches for)."""
MAX_Q_RANGES = 16
"""Rows of the ``q_ranges_A`` field of an alarm (the first ``n_q_ranges`` are used)."""
Q_UNITS = "1/angstrom"


@dataclass(frozen=True)
class BufferedFrame:
    """One analysed frame as the pre-event buffer holds it.

    Attributes
    ----------
    frame_index, raw_seq_num : int
    time_s : float
        s since the raw run's start.
    temperature_K : float
        NaN when unknown.
    intensity : numpy.ndarray
        ``(n_bins,)`` float32.
    restored : numpy.ndarray or None
        ``(n_bins,)`` float32, or ``None`` when the analysis does not restore.
    score, cusum : float
    frame : numpy.ndarray or None
        The raw frame ``(rows, columns)`` float32 when kept, else ``None``.
    """

    frame_index: int
    raw_seq_num: int
    time_s: float
    temperature_K: float
    intensity: np.ndarray
    restored: np.ndarray | None
    score: float
    cusum: float
    frame: np.ndarray | None = None


def versions() -> dict[str, str]:
    """Versions of the software that made a derived run."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"asirp": __version__}
    for package in ("numpy", "pyFAI", "h5py", "event-model"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_to_builtin))


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _scalar(source: str, dtype: str, units: str | None = None) -> dict[str, Any]:
    key: dict[str, Any] = {"source": source, "dtype": dtype, "shape": []}
    if units is not None:
        key["units"] = units
    return key


def _pattern_key(source: str, n_bins: int) -> dict[str, Any]:
    return {
        "source": source,
        "dtype": "array",
        "dtype_numpy": "<f4",
        "shape": [n_bins],
        "dims": ["q"],
        "units": "counts",
        "q_units": Q_UNITS,  # data keys accept extra properties: the axis' units, for readers
    }


def _pattern(values: Any, n_bins: int) -> np.ndarray:
    if values is None:
        return np.full(n_bins, np.nan, dtype=np.float32)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(n_bins)


def q_ranges_array(q_ranges: Sequence[Sequence[float]]) -> tuple[np.ndarray, int]:
    """``(MAX_Q_RANGES, 2)`` float64 rows (NaN past the used ones) and how many are used."""
    out = np.full((MAX_Q_RANGES, 2), np.nan)
    rows = [tuple(float(v) for v in row) for row in list(q_ranges)[:MAX_Q_RANGES]]
    for index, (low, high) in enumerate(rows):
        out[index] = (low, high)
    return out, len(rows)


class TemporalDerivedRun:
    """Compose the documents of one temporal derived run (schema in the module notes).

    Parameters
    ----------
    raw_start : mapping
        The raw run's start document.
    analysis : mapping
        JSON-serialisable description of the analysis (``TemporalConfig.describe()``).
    pre_event : mapping
        ``{"frames": N, "raw_frame_bytes": B}``.
    emit : callable
        ``emit(name, doc)`` receives every document, in order.
    """

    def __init__(
        self,
        raw_start: Mapping[str, Any],
        analysis: Mapping[str, Any],
        pre_event: Mapping[str, Any],
        emit: Emit,
    ) -> None:
        from event_model import compose_run

        self._emit = emit
        self.raw_uid = str(raw_start["uid"])
        metadata: dict[str, Any] = {
            "plan_name": TEMPORAL_PLAN_NAME,
            "purpose": TEMPORAL_PURPOSE,
            "parent_uid": self.raw_uid,
            "software": "asirp",
            "software_version": __version__,
            "versions": versions(),
            "temporal": dict(analysis),
            "pre_event": dict(pre_event),
        }
        for key in ("scan_id", "plan_name", "sample"):
            if key in raw_start:
                metadata[f"parent_{key}"] = raw_start[key]
        self._bundle = compose_run(metadata=_json_safe(metadata))
        self._start_time = float(raw_start.get("time", time.time()))
        self._streams: dict[str, Any] = {}
        self.n_bins: int | None = None
        self.q_A: np.ndarray | None = None
        self.restores: bool | None = None
        self.frame_shape: tuple[int, int] | None = None
        self.closed = False
        self._emit("start", self._bundle.start_doc)

    @property
    def uid(self) -> str:
        """Uid of the derived run."""
        return self._bundle.start_doc["uid"]

    def _event(self, stream: str, data: dict[str, Any]) -> None:
        now = time.time()
        event = self._streams[stream].compose_event(
            data=data, timestamps={key: now for key in data}, time=now
        )
        self._emit("event", event)

    def _descriptor(self, name: str, data_keys: dict[str, dict[str, Any]], hint: str) -> None:
        bundle = self._bundle.compose_descriptor(
            name=name,
            data_keys=data_keys,
            object_keys={"asirp_temporal": list(data_keys)},
            hints={"asirp_temporal": {"fields": [hint]}},
        )
        self._streams[name] = bundle
        self._emit("descriptor", bundle.descriptor_doc)

    def _open_frames(self, q_A: np.ndarray, restores: bool) -> None:
        n_bins = int(q_A.size)
        self.n_bins, self.q_A, self.restores = n_bins, q_A, restores
        source = "asirp:temporal"
        self._descriptor(
            "axes",
            {
                "q_A": {
                    "source": source,
                    "dtype": "array",
                    "dtype_numpy": "<f8",
                    "shape": [n_bins],
                    "dims": ["q"],
                    "units": Q_UNITS,
                }
            },
            "q_A",
        )
        self._event("axes", {"q_A": np.ascontiguousarray(q_A, dtype=np.float64)})
        keys: dict[str, dict[str, Any]] = {
            "frame_index": _scalar(source, "integer"),
            "raw_seq_num": _scalar(f"raw:{self.raw_uid}", "integer"),
            "time_s": _scalar(source, "number", "s"),
            "temperature_K": _scalar(source, "number", "K"),
            "intensity": _pattern_key(source, n_bins),
        }
        if restores:
            keys["restored"] = _pattern_key(source, n_bins)
        keys.update(
            score=_scalar(source, "number"),
            cusum=_scalar(source, "number"),
            threshold=_scalar(source, "number"),
            armed=_scalar(source, "boolean"),
            expansion=_scalar(source, "number"),
            alarm=_scalar(source, "boolean"),
        )
        self._descriptor("primary", keys, "score")

    def add_frame(self, score: Any, raw_seq_num: int) -> None:
        """Publish one analysed frame (a ``FrameScore``) in ``primary``.

        The first call also publishes the ``axes`` stream and the ``primary`` descriptor
        (their shapes come from the first pattern).

        Raises
        ------
        ValueError
            If the frame's q axis differs from the run's first one.
        """
        self._check_open()
        q_A = np.asarray(score.q_A, dtype=np.float64).reshape(-1)
        if self.q_A is None:
            self._open_frames(q_A, score.restored is not None)
        elif q_A.shape != self.q_A.shape or not np.array_equal(q_A, self.q_A):
            raise ValueError("the q axis changed within a run")
        n_bins = self.n_bins
        data: dict[str, Any] = {
            "frame_index": int(score.frame_index),
            "raw_seq_num": int(raw_seq_num),
            "time_s": float(score.time_s),
            "temperature_K": _number(score.temperature_K),
            "intensity": _pattern(score.intensity, n_bins),
        }
        if self.restores:
            data["restored"] = _pattern(score.restored, n_bins)
        data.update(
            score=float(score.score),
            cusum=float(score.cusum),
            threshold=_number(getattr(score, "threshold", None)),
            armed=bool(getattr(score, "armed", True)),
            expansion=_number(getattr(score, "expansion", None)),
            alarm=score.alarm is not None,
        )
        self._event("primary", data)

    def add_alarm(
        self,
        alarm: Any,
        alarm_index: int,
        raw_seq_num: int,
        onset: tuple[float, float] | None = None,
    ) -> None:
        """Publish one alarm (an ``Alarm``) in ``alarms``.

        Parameters
        ----------
        alarm : Alarm
            The core's alarm.
        alarm_index : int
            0 for the run's first alarm.
        raw_seq_num : int
            ``seq_num`` of the raw event of the alarm's frame.
        onset : (float, float), optional
            ``(time_s, temperature_K)`` of the onset frame, when known.
        """
        self._check_open()
        if "alarms" not in self._streams:
            source = "asirp:temporal"
            self._descriptor(
                "alarms",
                {
                    "alarm_index": _scalar(source, "integer"),
                    "frame_index": _scalar(source, "integer"),
                    "raw_seq_num": _scalar(f"raw:{self.raw_uid}", "integer"),
                    "time_s": _scalar(source, "number", "s"),
                    "temperature_K": _scalar(source, "number", "K"),
                    "onset_frame_index": _scalar(source, "integer"),
                    "onset_time_s": _scalar(source, "number", "s"),
                    "onset_temperature_K": _scalar(source, "number", "K"),
                    "q_ranges_A": {
                        "source": source,
                        "dtype": "array",
                        "dtype_numpy": "<f8",
                        "shape": [MAX_Q_RANGES, 2],
                        "dims": ["range", "bound"],
                        "units": Q_UNITS,
                    },
                    "n_q_ranges": _scalar(source, "integer"),
                    "confidence": _scalar(source, "number"),
                    "score": _scalar(source, "number"),
                    "threshold": _scalar(source, "number"),
                },
                "temperature_K",
            )
        ranges, count = q_ranges_array(alarm.q_ranges_A)
        onset_time, onset_temperature = onset if onset is not None else (math.nan, math.nan)
        self._event(
            "alarms",
            {
                "alarm_index": int(alarm_index),
                "frame_index": int(alarm.frame_index),
                "raw_seq_num": int(raw_seq_num),
                "time_s": float(alarm.time_s),
                "temperature_K": _number(alarm.temperature_K),
                "onset_frame_index": int(alarm.onset_frame_index),
                "onset_time_s": _number(onset_time),
                "onset_temperature_K": _number(onset_temperature),
                "q_ranges_A": ranges,
                "n_q_ranges": count,
                "confidence": float(alarm.confidence),
                "score": float(alarm.score),
                "threshold": float(alarm.threshold),
            },
        )

    def add_pre_event(self, alarm_index: int, frames: Sequence[BufferedFrame]) -> None:
        """Publish the frames analysed before alarm ``alarm_index`` (``pre_event`` streams)."""
        self._check_open()
        if not frames or self.n_bins is None:
            return
        source = "asirp:temporal"
        if "pre_event" not in self._streams:
            keys: dict[str, dict[str, Any]] = {
                "alarm_index": _scalar(source, "integer"),
                "frame_index": _scalar(source, "integer"),
                "raw_seq_num": _scalar(f"raw:{self.raw_uid}", "integer"),
                "time_s": _scalar(source, "number", "s"),
                "temperature_K": _scalar(source, "number", "K"),
                "intensity": _pattern_key(source, self.n_bins),
            }
            if self.restores:
                keys["restored"] = _pattern_key(source, self.n_bins)
            keys.update(score=_scalar(source, "number"), cusum=_scalar(source, "number"))
            self._descriptor("pre_event", keys, "score")
        for frame in frames:
            data: dict[str, Any] = {
                "alarm_index": int(alarm_index),
                "frame_index": frame.frame_index,
                "raw_seq_num": frame.raw_seq_num,
                "time_s": frame.time_s,
                "temperature_K": frame.temperature_K,
                "intensity": _pattern(frame.intensity, self.n_bins),
            }
            if self.restores:
                data["restored"] = _pattern(frame.restored, self.n_bins)
            data.update(score=frame.score, cusum=frame.cusum)
            self._event("pre_event", data)
        kept = [frame for frame in frames if frame.frame is not None]
        if not kept:
            return
        shape = kept[0].frame.shape
        if "pre_event_frames" not in self._streams:
            self.frame_shape = tuple(shape)
            self._descriptor(
                "pre_event_frames",
                {
                    "alarm_index": _scalar(source, "integer"),
                    "frame_index": _scalar(source, "integer"),
                    "frame": {
                        "source": source,
                        "dtype": "array",
                        "dtype_numpy": "<f4",
                        "shape": list(shape),
                        "dims": ["row", "column"],
                        "units": "counts",
                    },
                },
                "frame",
            )
        for frame in kept:
            if frame.frame.shape == self.frame_shape:
                self._event(
                    "pre_event_frames",
                    {
                        "alarm_index": int(alarm_index),
                        "frame_index": frame.frame_index,
                        "frame": np.ascontiguousarray(frame.frame, dtype=np.float32),
                    },
                )

    def close(
        self,
        exit_status: str,
        reason: str,
        *,
        frames_processed: int,
        skipped: Mapping[str, int],
        alarms: int,
    ) -> None:
        """Emit the stop document (counts of frames and alarms); a second call does nothing."""
        if self.closed:
            return
        if exit_status not in ("success", "abort", "fail"):
            exit_status, reason = "fail", f"raw run ended with {exit_status!r:.40}"
        stop = dict(self._bundle.compose_stop(exit_status=exit_status, reason=str(reason)))
        stop["frames_processed"] = int(frames_processed)
        stop["frames_skipped"] = int(sum(skipped.values()))
        stop["skipped"] = {str(k): int(v) for k, v in sorted(skipped.items())}
        stop["alarms"] = int(alarms)
        self.closed = True
        self._emit("stop", stop)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"derived run {self.uid} is already closed")


def temporal_runs(client: Any, raw_uid: str) -> Any:
    """The temporal derived runs of a raw run in a tiled catalog.

    Parameters
    ----------
    client : tiled.client.container.Container
        The catalog of runs.
    raw_uid : str
        Uid of the raw run.

    Returns
    -------
    tiled.client.container.Container
        The search result (``parent_uid`` is the raw run and ``purpose`` is temporal feedback).
    """
    from tiled.queries import Key

    return derived_runs(client, raw_uid).search(Key("start.purpose") == TEMPORAL_PURPOSE)
