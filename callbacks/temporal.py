"""Temporal feedback from Bluesky documents: :class:`TemporalMonitor`.

During a temperature ramp a powder-diffraction area detector records frames; the monitor
integrates each frame to I(q), scores it against the frames before it and raises an alarm when
the pattern changes shape (a peak splits, a phase appears), with the frame, time and temperature
of the change (the analysis is :class:`asirp.diffraction.TemporalAnalyzer`'s). Subscribe it to
a RunEngine (``RE.subscribe(monitor)``) or to a 0MQ dispatcher
(:class:`callbacks.dispatcher.SafeRemoteDispatcher`, ``asirp live --temporal``).

Which runs
    A run whose start document carries ``asirp_temporal`` metadata, or, when the monitor has a
    default geometry, a run whose frame stream has the default fields (rules and validation in
    :mod:`callbacks.temporal_config`; unusable metadata is logged and the run skipped).
Frames
    Inline in ``event`` and ``event_page`` documents, or files referenced by ``resource`` and
    ``datum`` documents, read by an ``event_model.Filler`` whose only handler reads AD_HDF5
    files inside ``data_root`` (no symbolic link followed, opened by descriptor, size-capped:
    :mod:`callbacks.frames`). Without a ``data_root`` no file is read.
Threads
    The document thread (the RunEngine's) only routes documents and copies inline frames; one
    worker thread (:class:`callbacks.ordered_worker.OrderedWorker`) reads files, analyses
    frames in their order, publishes and calls listeners. Every frame counts for the change
    detector (a CUSUM sums over frames), so frames are never coalesced; past ``max_queue_frames``
    frames (or ``max_queue_bytes``) waiting, a new frame is logged and skipped (``queue_full``).
Failures
    A frame that cannot be read (outside the data root, a symbolic link, vanished, corrupt,
    too large), has the wrong shape, NaN pixels, no usable temperature or is refused by the
    analyser is logged (the first few per run and reason, then every hundredth), counted per
    reason and skipped; later frames are analysed as usual. Nothing raised here reaches the
    RunEngine.
Results
    Each analysed run gets one derived run (schema in :mod:`callbacks.temporal_publish`),
    passed to document subscribers and written to tiled when a client is given. Listeners
    (:meth:`TemporalMonitor.add_listener`) get a :class:`TemporalUpdate` per analysed frame;
    :class:`callbacks.change_signals.ChangeSignals` turns them into ophyd signals a plan reads.
Pre-event buffer
    The last ``pre_event_frames`` analysed frames (their patterns, and their raw frames when
    ``pre_event_frame_bytes`` allows) are kept; on an alarm they are published (streams
    ``pre_event`` and ``pre_event_frames``), so the lead-up to the change is kept.

Examples
--------
>>> from bluesky import RunEngine
>>> import sim
>>> from callbacks.temporal import TemporalMonitor
>>> beamline = sim.make_xrd_beamline("splitting", seed=0)  # doctest: +SKIP
>>> monitor = TemporalMonitor(beamline.geometry)  # doctest: +SKIP
>>> RE = RunEngine({})  # doctest: +SKIP
>>> RE.subscribe(monitor)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from asirp.diffraction import DetectorGeometry
from asirp.safe_files import DataRoot
from callbacks.frames import (
    DEFAULT_RETRY_INTERVALS,
    MAX_FILE_BYTES,
    MAX_FRAME_BYTES,
    FrameError,
    as_frame,
    as_temperature_K,
    frame_filler,
    temperature_conversion,
)
from callbacks.ordered_worker import OrderedWorker
from callbacks.publish import TiledSink
from callbacks.temporal_config import (
    DEFAULT_IMAGE_FIELD,
    DEFAULT_STREAM,
    DEFAULT_TEMPERATURE_FIELD,
    MAX_FRAME_PIXELS,
    ConfigError,
    TemporalConfig,
    TemporalDefaults,
    config_from_start,
    parse_geometry,
    parse_profile,
    parse_settings,
)
from callbacks.temporal_publish import BufferedFrame, Emit, TemporalDerivedRun

__all__ = ["TemporalMonitor", "TemporalUpdate"]

_LOG = logging.getLogger(__name__)

MAX_REMEMBERED_RUNS = 32
MAX_OPEN_RUNS = 16
"""Runs open at once (started, not stopped); past it the oldest is ended (``abort``)."""
LOGGED_PER_REASON = 5
"""Skipped frames logged one by one per run and reason; after that every hundredth."""


@dataclass(frozen=True)
class TemporalUpdate:
    """One analysed frame, as listeners receive it.

    Attributes
    ----------
    run_uid : str
        Uid of the raw run.
    derived_uid : str or None
        Uid of its derived run.
    score : FrameScore
        The analyser's result (pattern, score, CUSUM, ``alarm`` or ``None``).
    raw_seq_num : int
        ``seq_num`` of the raw event of the frame.
    frames_processed : int
        Frames of the run analysed so far, this one included.
    frames_skipped : int
        Frames of the run skipped so far.
    alarm_count : int
        Alarms of the run so far, this frame's included.
    """

    run_uid: str
    derived_uid: str | None
    score: Any
    raw_seq_num: int
    frames_processed: int
    frames_skipped: int
    alarm_count: int

    @property
    def alarm(self) -> Any:
        """The alarm raised at this frame (``Alarm``), or ``None``."""
        return self.score.alarm


Listener = Callable[[TemporalUpdate], None]


class _Run:
    """One raw run being analysed: routing (document thread) and analysis (worker) state."""

    def __init__(self, start: Mapping[str, Any], config: TemporalConfig) -> None:
        self.uid = str(start["uid"])
        self.start = start
        self.config = config
        start_time = start.get("time")
        self.start_time = (
            float(start_time)
            if isinstance(start_time, numbers.Real) and math.isfinite(start_time)
            else None
        )
        # document thread
        self.descriptors: dict[str, tuple[float, float]] = {}  # uid -> temperature conversion
        self.resources: set[str] = set()
        self.matched = False
        # worker thread (counts are also written by the document thread: under the lock)
        self.lock = threading.Lock()
        self.skipped: collections.Counter[str] = collections.Counter()
        self.filler: Any = None
        self.analyzer: Any = None
        self.failed = False
        self.derived: TemporalDerivedRun | None = None
        self.processed = 0
        self.alarms: list[Any] = []
        self.buffer: collections.deque[BufferedFrame] = collections.deque()
        self.buffer_bytes = 0
        self.history: dict[int, tuple[float, float]] = {}  # frame_index -> (time_s, T)
        self.closed = False

    def skip(self, reason: str) -> int:
        with self.lock:
            self.skipped[reason] += 1
            return self.skipped[reason]

    @property
    def frames_skipped(self) -> int:
        with self.lock:
            return sum(self.skipped.values())


class TemporalMonitor:
    """Analyse diffraction frames of temperature ramps live, and publish derived runs.

    Parameters
    ----------
    geometry : DetectorGeometry or mapping, optional
        Default detector geometry: with one, runs without ``asirp_temporal`` metadata whose
        stream has ``image_field`` (and ``temperature_field``) are analysed.
    settings : TemporalSettings or mapping, optional
        Default analysis settings (default: the core's).
    profile : InstrumentProfile or mapping, optional
        Default instrumental profile for the restoration of I(q).
    mask : array_like, optional
        Pixels to leave out ``(rows, columns)`` bool (true: masked), for detectors of its shape.
    image_field, temperature_field, stream : str
        Default event field of the frames, of the temperature (``None``: none), and stream.
    data_root : path or DataRoot, optional
        Folder frame files must lie in (without one, external frames are not read).
    root_map : mapping, optional
        ``{resource root: local folder}`` for a data root mounted elsewhere here.
    tiled : tiled client, optional
        Writable tiled catalog for the derived runs.
    tiled_batch_size : int
        Events buffered per tiled write (1: each when it comes, so alarms appear at once).
    pre_event_frames : int
        Frames kept before an alarm (0: none).
    pre_event_frame_bytes : int
        Raw frames kept with them, at most this many bytes (0: patterns only).
    max_queue_frames, max_queue_bytes : int
        Most frames (and bytes of inline frames) waiting for the worker; more are skipped.
    max_file_bytes, max_frame_bytes : int
        Largest frame file opened and frame read, bytes (:mod:`callbacks.frames`).
    max_frame_pixels : int
        Largest detector a start document may ask for, pixels.
    retry_intervals : sequence of float
        Waits, s, before further attempts at a frame file that is not there yet.
    analyzer_factory : callable, optional
        ``factory(config) -> analyzer`` with ``process(frame, *, time_s, temperature_K)``
        (default: :class:`asirp.diffraction.TemporalAnalyzer` of the config, with ``mask``).
    """

    def __init__(
        self,
        geometry: DetectorGeometry | Mapping[str, Any] | None = None,
        settings: Any = None,
        *,
        profile: Any = None,
        mask: Any = None,
        image_field: str = DEFAULT_IMAGE_FIELD,
        temperature_field: str | None = DEFAULT_TEMPERATURE_FIELD,
        stream: str = DEFAULT_STREAM,
        data_root: str | Any = None,
        root_map: Mapping[str, str] | None = None,
        tiled: Any = None,
        tiled_batch_size: int = 1,
        pre_event_frames: int = 20,
        pre_event_frame_bytes: int = 0,
        max_queue_frames: int = 2000,
        max_queue_bytes: int = 1 << 30,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_frame_pixels: int = MAX_FRAME_PIXELS,
        retry_intervals: Sequence[float] = DEFAULT_RETRY_INTERVALS,
        analyzer_factory: Callable[[TemporalConfig], Any] | None = None,
    ) -> None:
        if isinstance(geometry, Mapping):
            geometry = parse_geometry(geometry)
        if isinstance(settings, Mapping):
            settings = parse_settings(settings)
        if isinstance(profile, Mapping):
            profile = parse_profile(profile)
        self.defaults = TemporalDefaults(
            geometry=geometry,
            settings=settings,
            profile=profile,
            image_field=image_field,
            temperature_field=temperature_field,
            stream=stream,
            max_frame_pixels=max_frame_pixels,
        )
        self.mask = None if mask is None else np.asarray(mask, dtype=bool)
        self.data_root = (
            None
            if data_root is None
            else data_root
            if isinstance(data_root, DataRoot)
            else DataRoot(data_root)
        )
        self.root_map = dict(root_map or {})
        for name, value in (("pre_event_frames", pre_event_frames),):
            if isinstance(value, bool) or int(value) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if isinstance(pre_event_frame_bytes, bool) or int(pre_event_frame_bytes) < 0:
            raise ValueError(f"pre_event_frame_bytes must be >= 0, got {pre_event_frame_bytes!r}")
        self.pre_event_frames = int(pre_event_frames)
        self.pre_event_frame_bytes = int(pre_event_frame_bytes)
        self.max_file_bytes = int(max_file_bytes)
        self.max_frame_bytes = int(max_frame_bytes)
        self.retry_intervals = tuple(float(t) for t in retry_intervals)
        self.tiled = TiledSink(tiled, batch_size=tiled_batch_size) if tiled is not None else None
        self._analyzer_factory = analyzer_factory or self._default_analyzer

        # document thread
        self._routes: dict[str, _Run] = {}
        self._descriptor_runs: dict[str, _Run] = {}
        self._resource_runs: dict[str, _Run] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "start": self._on_start,
            "descriptor": self._on_descriptor,
            "resource": self._on_resource,
            "datum": self._on_datum,
            "datum_page": self._on_datum_page,
            "event": self._on_event,
            "event_page": self._on_event_page,
            "stop": self._on_stop,
        }
        # shared
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._tokens = itertools.count(1)
        self._listeners: dict[int, Listener] = {}
        self._doc_listeners: dict[int, Emit] = {}
        self._latest: TemporalUpdate | None = None
        self._latest_by_run: collections.OrderedDict[str, TemporalUpdate] = (
            collections.OrderedDict()
        )
        self._alarms_by_run: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self._derived_by_run: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._worker: OrderedWorker[tuple[str, _Run, Any]] = OrderedWorker(
            self._run_item,
            name="asirp-temporal",
            max_items=max_queue_frames,
            max_bytes=max_queue_bytes,
        )

    # -- the document entry point (the RunEngine's thread) ------------------------------------
    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Take one Bluesky document; never raises (problems are logged and skipped)."""
        try:
            handler = self._handlers.get(name)
            if handler is not None:
                handler(doc)
        except Exception:
            _LOG.exception("temporal monitor: skipped a bad %s document", name)

    def _on_start(self, doc: dict[str, Any]) -> None:
        uid = doc["uid"]
        if not isinstance(uid, str):
            raise TypeError(f"a start document's uid must be a string, got {uid!r:.40}")
        if uid in self._seen:
            _LOG.warning("temporal monitor: ignored a second start document for run %s", uid)
            return
        self._seen[uid] = None
        while len(self._seen) > 1000:
            self._seen.popitem(last=False)
        try:
            config = config_from_start(doc, self.defaults)
        except ConfigError as error:
            _LOG.error("run %s: not analysed: %s", uid, error)
            return
        if config is None:
            return
        if len(self._routes) >= MAX_OPEN_RUNS:
            # runs whose stop never came (a crashed RunEngine) must not pile up without end
            oldest = next(iter(self._routes.values()))
            _LOG.error("run %s: no stop after %d newer runs; ended", oldest.uid, MAX_OPEN_RUNS)
            self._end(oldest, "abort", f"no stop document before {MAX_OPEN_RUNS} newer runs")
        run = _Run(doc, config)
        self._routes[uid] = run
        self._worker.submit(("start", run, None))

    def _on_descriptor(self, doc: dict[str, Any]) -> None:
        run = self._routes.get(doc["run_start"])
        if run is None or doc.get("name") != run.config.stream:
            return
        config = run.config
        keys = doc["data_keys"]
        wanted = [config.image_field]
        if config.temperature_field is not None:
            wanted.append(config.temperature_field)
        missing = [field for field in wanted if field not in keys]
        if missing:
            log = _LOG.warning if config.source == "metadata" else _LOG.debug
            log("run %s: stream %r has no field %s; not analysed", run.uid, config.stream, missing)
            return
        conversion = (1.0, 0.0)
        if config.temperature_field is not None:
            try:
                conversion = temperature_conversion(keys[config.temperature_field].get("units"))
            except ValueError as error:
                _LOG.error("run %s: not analysed: %s", run.uid, error)
                return
        if keys[config.image_field].get("external") and self.data_root is None:
            _LOG.error(
                "run %s: frames of %r are in files and no data root is configured; not analysed",
                run.uid,
                config.image_field,
            )
            return
        run.descriptors[doc["uid"]] = conversion
        run.matched = True
        self._descriptor_runs[doc["uid"]] = run
        self._worker.submit(("descriptor", run, doc))

    def _on_resource(self, doc: dict[str, Any]) -> None:
        run = self._routes.get(doc.get("run_start"))
        if run is None and "run_start" not in doc and len(self._routes) == 1:
            run = next(iter(self._routes.values()))  # older resources name no run: the open one
        if run is None:
            return
        run.resources.add(doc["uid"])
        self._resource_runs[doc["uid"]] = run
        self._worker.submit(("resource", run, doc))

    def _on_datum(self, doc: dict[str, Any]) -> None:
        run = self._resource_runs.get(doc["resource"])
        if run is not None:
            self._worker.submit(("datum", run, doc))

    def _on_datum_page(self, doc: dict[str, Any]) -> None:
        run = self._resource_runs.get(doc["resource"])
        if run is not None:
            self._worker.submit(("datum_page", run, doc))

    def _on_event(self, doc: dict[str, Any]) -> None:
        run = self._descriptor_runs.get(doc["descriptor"])
        if run is not None:
            self._queue_frame(run, doc)

    def _on_event_page(self, doc: dict[str, Any]) -> None:
        run = self._descriptor_runs.get(doc["descriptor"])
        if run is None:
            return
        from event_model import unpack_event_page

        for event in unpack_event_page(doc):
            self._queue_frame(run, event)

    def _queue_frame(self, run: _Run, doc: Mapping[str, Any]) -> None:
        data = dict(doc["data"])
        value = data.get(run.config.image_field)
        nbytes = 0
        if isinstance(value, np.ndarray):
            # the only copy on this thread: the device may reuse its buffer for the next frame
            value = data[run.config.image_field] = value.copy()
            nbytes = value.nbytes
        event = {
            "uid": doc.get("uid"),
            "descriptor": doc["descriptor"],
            "seq_num": doc.get("seq_num"),
            "time": doc.get("time"),
            "data": data,
            "filled": dict(doc.get("filled") or {}),
        }
        if not self._worker.submit(("frame", run, event), droppable=True, nbytes=nbytes):
            count = run.skip("queue_full")
            if count <= LOGGED_PER_REASON or count % 100 == 0:
                _LOG.error(
                    "run %s: frame seq_num %s skipped: %d frames already wait for analysis "
                    "(%d skipped so far for this reason)",
                    run.uid,
                    doc.get("seq_num"),
                    self._worker.max_items,
                    count,
                )

    def _on_stop(self, doc: dict[str, Any]) -> None:
        run = self._routes.pop(doc["run_start"], None)
        if run is None:
            return
        self._drop_routes(run)
        self._worker.submit(("stop", run, doc))

    def _end(self, run: _Run, exit_status: str, reason: str) -> None:
        """Close an open run without its stop document (shutdown, or a stop that never came)."""
        self._routes.pop(run.uid, None)
        self._drop_routes(run)
        self._worker.submit(("stop", run, {"exit_status": exit_status, "reason": reason}))

    def _drop_routes(self, run: _Run) -> None:
        for uid in run.descriptors:
            self._descriptor_runs.pop(uid, None)
        for uid in run.resources:
            self._resource_runs.pop(uid, None)

    # -- the worker thread --------------------------------------------------------------------
    def _run_item(self, item: tuple[str, _Run, Any]) -> None:
        kind, run, payload = item
        try:
            if kind == "frame":
                self._analyse(run, payload)
            elif kind == "start":
                run.filler = frame_filler(
                    self.data_root,
                    root_map=self.root_map,
                    max_file_bytes=self.max_file_bytes,
                    max_frame_bytes=self.max_frame_bytes,
                    retry_intervals=self.retry_intervals,
                )
            elif kind == "descriptor":
                run.filler.descriptor(payload)
                self._open(run)
            elif kind in ("resource", "datum", "datum_page"):
                getattr(run.filler, kind)(payload)
            elif kind == "stop":
                self._close(run, payload)
        except Exception:
            _LOG.exception("run %s: the temporal monitor failed on a %s", run.uid, kind)

    def _default_analyzer(self, config: TemporalConfig) -> Any:
        from asirp.diffraction import TemporalAnalyzer

        mask = self.mask
        if mask is not None and mask.shape != config.geometry.shape_px:
            _LOG.warning(
                "the mask %s does not fit the %s detector; not used",
                mask.shape,
                config.geometry.shape_px,
            )
            mask = None
        return TemporalAnalyzer(config.geometry, config.settings, profile=config.profile, mask=mask)

    def _open(self, run: _Run) -> None:
        """Build the run's analyser and open its derived run (at its first matching descriptor)."""
        if run.analyzer is not None or run.failed:
            return
        try:
            run.analyzer = self._analyzer_factory(run.config)
        except Exception as error:
            run.failed = True
            _LOG.error(
                "run %s: not analysed: the analyser cannot be built: %s: %s",
                run.uid,
                type(error).__name__,
                error,
            )
            return
        analysis = run.config.describe()
        settings = getattr(run.analyzer, "settings", None)
        if analysis["settings"] is None and hasattr(settings, "as_dict"):
            analysis["settings"] = settings.as_dict()  # the defaults that apply, on record
        try:
            run.derived = TemporalDerivedRun(
                run.start,
                analysis,
                {"frames": self.pre_event_frames, "raw_frame_bytes": self.pre_event_frame_bytes},
                self._emit_derived,
            )
        except Exception:
            _LOG.exception("run %s: opening the derived run failed", run.uid)
            return
        with self._lock:
            self._derived_by_run[run.uid] = run.derived.uid
            self._trim(self._derived_by_run)
        _LOG.info("run %s: temporal analysis, derived run %s", run.uid, run.derived.uid)

    def _skip(self, run: _Run, event: Mapping[str, Any], reason: str, message: str) -> None:
        count = run.skip(reason)
        if count <= LOGGED_PER_REASON or count % 100 == 0:
            _LOG.warning(
                "run %s: frame seq_num %s skipped (%s, %d so far): %s",
                run.uid,
                event.get("seq_num"),
                reason,
                count,
                message,
            )

    def _analyse(self, run: _Run, event: dict[str, Any]) -> None:
        if run.analyzer is None:
            self._skip(run, event, "no_analyzer", "the run has no analyser")
            return
        if self._cancel.is_set():
            self._skip(run, event, "cancelled", "the monitor is shutting down")
            return
        config = run.config
        try:
            filled = run.filler.fill_event(event, inplace=True)
        except Exception as error:
            self._skip(run, event, "unreadable", _cause(error))
            return
        data = filled["data"]
        try:
            frame = as_frame(data.get(config.image_field), config.geometry.shape_px)
            temperature = None
            if config.temperature_field is not None:
                conversion = run.descriptors.get(event["descriptor"], (1.0, 0.0))
                temperature = as_temperature_K(data.get(config.temperature_field), conversion)
        except FrameError as error:
            self._skip(run, event, error.reason, str(error))
            return
        event_time = event.get("time")
        if (
            isinstance(event_time, bool)
            or not isinstance(event_time, numbers.Real)
            or not math.isfinite(event_time)
        ):
            self._skip(run, event, "time", f"the event time {event_time!r:.40} is not a number")
            return
        time_s = float(event_time) - (run.start_time or 0.0)
        try:
            score = run.analyzer.process(frame, time_s=time_s, temperature_K=temperature)
        except (ValueError, TypeError) as error:  # the analyser's "bad frame": state unchanged
            self._skip(run, event, "rejected", f"the analyser refused it: {error}")
            return
        except Exception as error:
            _LOG.exception("run %s: the analysis of seq_num %s failed", run.uid, event["seq_num"])
            self._skip(run, event, "error", f"{type(error).__name__}: {error}")
            return
        self._record(run, event, frame, score)

    def _record(self, run: _Run, event: Mapping[str, Any], frame: np.ndarray, score: Any) -> None:
        seq_num = event.get("seq_num")
        if isinstance(seq_num, bool) or not isinstance(seq_num, numbers.Integral):
            seq_num = -1  # an untrusted event without a usable seq_num is still analysed
        seq_num = int(seq_num)
        run.processed += 1
        temperature = math.nan if score.temperature_K is None else float(score.temperature_K)
        run.history[int(score.frame_index)] = (float(score.time_s), temperature)
        alarm = score.alarm
        derived = run.derived
        if derived is not None:
            try:
                derived.add_frame(score, seq_num)
                if alarm is not None:
                    onset = run.history.get(int(alarm.onset_frame_index))
                    derived.add_alarm(alarm, len(run.alarms), seq_num, onset)
                    derived.add_pre_event(len(run.alarms), list(run.buffer))
            except Exception:
                _LOG.exception("run %s: publishing frame %s failed", run.uid, score.frame_index)
        if alarm is not None:
            run.alarms.append(alarm)
            _LOG.warning(
                "run %s: ALARM at frame %d (seq_num %d, t = %.1f s, T = %.1f K): onset at "
                "frame %d, q ranges %s 1/Å, confidence %.3g",
                run.uid,
                alarm.frame_index,
                seq_num,
                alarm.time_s,
                temperature,
                alarm.onset_frame_index,
                [tuple(round(float(v), 4) for v in r) for r in alarm.q_ranges_A],
                alarm.confidence,
            )
        self._buffer(run, score, seq_num, frame, temperature)
        update = TemporalUpdate(
            run_uid=run.uid,
            derived_uid=None if derived is None else derived.uid,
            score=score,
            raw_seq_num=seq_num,
            frames_processed=run.processed,
            frames_skipped=run.frames_skipped,
            alarm_count=len(run.alarms),
        )
        with self._lock:
            self._latest = update
            self._latest_by_run[run.uid] = update
            self._latest_by_run.move_to_end(run.uid)
            self._trim(self._latest_by_run)
            self._alarms_by_run[run.uid] = list(run.alarms)
            self._alarms_by_run.move_to_end(run.uid)
            self._trim(self._alarms_by_run)
            listeners = list(self._listeners.values())
        for listener in listeners:
            try:
                listener(update)
            except Exception:
                _LOG.exception("temporal monitor listener %r failed", listener)

    def _buffer(
        self, run: _Run, score: Any, seq_num: int, frame: np.ndarray, temperature: float
    ) -> None:
        if self.pre_event_frames == 0:
            return
        keep_frame = 0 < frame.nbytes <= self.pre_event_frame_bytes
        run.buffer.append(
            BufferedFrame(
                frame_index=int(score.frame_index),
                raw_seq_num=seq_num,
                time_s=float(score.time_s),
                temperature_K=temperature,
                intensity=np.asarray(score.intensity, dtype=np.float32),
                restored=None
                if score.restored is None
                else np.asarray(score.restored, dtype=np.float32),
                score=float(score.score),
                cusum=float(score.cusum),
                frame=frame if keep_frame else None,
            )
        )
        run.buffer_bytes += frame.nbytes if keep_frame else 0
        while len(run.buffer) > self.pre_event_frames:
            oldest = run.buffer.popleft()
            run.buffer_bytes -= 0 if oldest.frame is None else oldest.frame.nbytes
        # over the byte cap: the oldest raw frames go first (their patterns stay)
        index = 0
        while run.buffer_bytes > self.pre_event_frame_bytes and index < len(run.buffer):
            held = run.buffer[index]
            if held.frame is not None:
                run.buffer_bytes -= held.frame.nbytes
                run.buffer[index] = replace(held, frame=None)
            index += 1

    def _close(self, run: _Run, stop: Mapping[str, Any]) -> None:
        if run.closed:
            return
        run.closed = True
        with run.lock:
            skipped = dict(run.skipped)
        if run.derived is not None:
            exit_status = stop.get("exit_status", "success")
            reason = stop.get("reason", "")
            try:
                run.derived.close(
                    exit_status if isinstance(exit_status, str) else "fail",
                    reason if isinstance(reason, str) else "",
                    frames_processed=run.processed,
                    skipped=skipped,
                    alarms=len(run.alarms),
                )
            except Exception:
                _LOG.exception("run %s: closing the derived run failed", run.uid)
        if run.matched:
            _LOG.info(
                "run %s: %d frame(s) analysed, %d skipped%s, %d alarm(s)",
                run.uid,
                run.processed,
                sum(skipped.values()),
                f" {skipped}" if skipped else "",
                len(run.alarms),
            )
        if run.filler is not None:
            run.filler.close()
        run.buffer.clear()
        run.history.clear()

    def _emit_derived(self, name: str, doc: dict[str, Any]) -> None:
        if self.tiled is not None:
            self.tiled(name, doc)
        with self._lock:
            listeners = list(self._doc_listeners.values())
        for listener in listeners:
            try:
                listener(name, doc)
            except Exception:
                _LOG.exception("derived-document subscriber %r failed", listener)

    @staticmethod
    def _trim(remembered: collections.OrderedDict) -> None:
        while len(remembered) > MAX_REMEMBERED_RUNS:
            remembered.popitem(last=False)

    # -- public API ------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> int:
        """Call ``listener(update)`` with a :class:`TemporalUpdate` per analysed frame.

        Listeners run in the worker thread, after the frame is published, and should return
        quickly. Returns a token for :meth:`remove_listener`.
        """
        with self._lock:
            token = next(self._tokens)
            self._listeners[token] = listener
        return token

    def subscribe_documents(self, callback: Emit) -> int:
        """Call ``callback(name, doc)`` with every document of the derived runs; return a token."""
        with self._lock:
            token = next(self._tokens)
            self._doc_listeners[token] = callback
        return token

    def remove_listener(self, token: int) -> None:
        """Remove a listener or document subscriber."""
        with self._lock:
            self._listeners.pop(token, None)
            self._doc_listeners.pop(token, None)

    unsubscribe = remove_listener

    def latest(self, run_uid: str | None = None) -> TemporalUpdate | None:
        """The latest update of a raw run (default: of any run); the last 32 runs are kept."""
        with self._lock:
            return self._latest if run_uid is None else self._latest_by_run.get(run_uid)

    def alarms(self, run_uid: str | None = None) -> list[Any]:
        """The alarms (``Alarm``) of a raw run (default: the run of the latest update)."""
        with self._lock:
            if run_uid is None:
                run_uid = None if self._latest is None else self._latest.run_uid
            return list(self._alarms_by_run.get(run_uid, ()))

    def derived_uid(self, run_uid: str) -> str | None:
        """Uid of the derived run of a raw run (``None`` if it has none, or is forgotten)."""
        with self._lock:
            return self._derived_by_run.get(run_uid)

    @property
    def stats(self) -> dict[str, int]:
        """Worker items queued, frames refused because the queue was full, items run."""
        worker = self._worker
        return {
            "submitted": worker.submitted,
            "refused": worker.refused,
            "completed": worker.completed,
            "backlog": worker.backlog,
        }

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued document and frame is handled; return whether it is."""
        return self._worker.wait_idle(timeout)

    def finish_open_runs(self, reason: str) -> list[str]:
        """End the runs still open (no stop document yet); their derived runs end ``abort``.

        Used when the process shuts down in the middle of a run. Returns the raw runs' uids.
        """
        runs = list(self._routes.values())
        for run in runs:
            self._end(run, "abort", reason)
        return [run.uid for run in runs]

    def close(self, timeout: float | None = None, *, cancel: bool = False) -> bool:
        """Handle what is queued and stop the worker; return whether it ended in ``timeout``.

        Parameters
        ----------
        timeout : float, optional
            Longest wait, s.
        cancel : bool
            Skip the frames still queued (counted as ``cancelled``); runs are still closed.
        """
        if cancel:
            self._cancel.set()
        return self._worker.close(timeout)


def _cause(error: BaseException) -> str:
    """The error and its causes on one line (event_model wraps the handler's error)."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text = " ".join(str(current).split())
        parts.append(f"{type(current).__name__}: {text[:300]}")
        current = current.__cause__ or current.__context__
    return " <- ".join(reversed(parts)) if len(parts) > 1 else parts[0]
