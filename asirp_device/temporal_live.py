"""Temporal live mode of the ASIRP device: detect phase changes in a diffraction time series.

During a temperature ramp an area detector records powder-diffraction frames.
:class:`TemporalLiveMode` subscribes a :class:`callbacks.temporal.TemporalMonitor` to the
output of a bluesky 0MQ document proxy through a
:class:`callbacks.dispatcher.SafeRemoteDispatcher` running in its own thread with its own
asyncio loop. The monitor integrates each frame to I(q) (pyFAI),
restores it, scores it against the frames before it and raises an alarm when the pattern changes
shape (a peak splits, a new phase appears); this module keeps what a control system shows of
that (:class:`ChangeValues`) and a status line, and tells its listeners when they change. It
never imports Tango: the device (:mod:`asirp_device.server`, commands ``StartTemporalLive`` /
``StopTemporalLive``) is a thin shell over it, and tests drive it directly.

Why separate commands from the map live mode's ``StartLive``
    The two modes analyse different runs (map scans; temperature ramps with an area detector)
    and may run at once, even from the same proxy: an operator starts and stops each one
    without touching the other, and each has its own status line. Neither changes the state.
Which runs are analysed
    Those whose start document has ``asirp_temporal`` metadata (geometry, settings, profile,
    fields: :mod:`callbacks.temporal_config`); settings it does not give are this mode's
    :class:`TemporalOptions` (the device's ``xrd_*`` attributes), taken at
    :meth:`TemporalLiveMode.start`: changes made while live apply from the next start.
What the values mean (:class:`ChangeValues`)
    ``frames``, ``frames_skipped``, ``score``, ``cusum`` and ``alarm`` are those of the
    *current run*, the latest analysed run whose start document arrived; they start again at a
    new analysed run. ``frames`` counts the frames *handled*, analysed or skipped as unusable
    (``frames_skipped`` of them): a plan that waits for the analysis to reach the frames it
    took (``reactive_ramp``'s ``analysis_wait_s``) must not wait for ever behind a NaN frame.
    ``alarm_count`` counts every alarm since :meth:`TemporalLiveMode.start` and never goes down
    while live: a plan reading it through the control system may read it before the device has
    seen its run's start document, so it compares counts, and a per-run count that fell back
    to 0 at that start could hide the first alarm of the run. The ``alarm_*`` values describe
    the latest alarm (of any run of this session; -1/NaN before one).
An alarm is not a failure
    A detected change is what the mode is for: it shows in :attr:`TemporalLiveMode.status` and
    the values, never in the component's state. ``ALARM`` keeps its meaning, a failure: a
    dispatcher that dies (a broken socket) or a tiled server that cannot be reached after
    :meth:`TemporalLiveMode.start` returned ends the mode with ``ALARM`` and the reason
    (:meth:`~asirp_device.component.RestorationComponent.report_failure`).
Untrusted documents
    As in map live mode (:mod:`asirp_device.live`): msgpack only unless
    :attr:`TemporalOptions.allow_pickle`; messages that do not decode are dropped. Frames given
    as file references (``resource``/``datum``, areaDetector HDF5) are read only inside
    :attr:`TemporalOptions.data_root` (the device's ``DataRoot``; none: only inline frames),
    by :mod:`callbacks.frames`' confined handler. A frame that cannot be read, has the wrong
    shape or holds NaN is skipped by the monitor and counted (:attr:`TemporalLiveMode.status`);
    the mode goes on.
Stopping
    :meth:`TemporalLiveMode.stop` ends the dispatcher, then lets the monitor finish the frames it
    holds (at most ``grace_s``) and close the derived runs. A no-op when not live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from asirp_device.component import RestorationComponent
from callbacks.address import format_address, parse_address

__all__ = [
    "ChangeValues",
    "TemporalBusy",
    "TemporalError",
    "TemporalLiveMode",
    "TemporalOptions",
    "validate_temporal_options",
]

_LOG = logging.getLogger(__name__)

WAITING = "waiting for a run with asirp_temporal metadata"
MIN_BINS, MAX_BINS = 32, 16384
"""Range of :attr:`TemporalOptions.n_bins` (bins of I(q))."""
MIN_FALSE_ALARM_INTERVAL = 20.0
"""Smallest :attr:`TemporalOptions.false_alarm_interval_frames` (the CUSUM needs > 10)."""

StatusCallback = Callable[[str], None]
ValuesCallback = Callable[["ChangeValues"], None]


class TemporalBusy(RuntimeError):
    """Temporal live mode is running, so starting it again is refused."""


class TemporalError(RuntimeError):
    """Temporal live mode could not start (the subscription or the tiled client failed)."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


@dataclass(frozen=True)
class TemporalOptions:
    """How temporal live mode analyses the runs that do not say (the device's ``xrd_*``).

    Attributes
    ----------
    n_bins : int
        Bins of the integrated pattern I(q), 32 to 16384.
    restore : bool
        Remove the instrumental broadening from I(q) before scoring. It needs the instrument
        profile, which a run gives in its metadata (``asirp_temporal.profile``): while this is
        true a run without one is not analysed, and the status says so.
    false_alarm_interval_frames : float
        In-control average run length of the CUSUM: frames between false alarms on a sample
        that does not change (>= 20). Larger: fewer false alarms, a later detection.
    data_root : str
        Folder that external frame files (areaDetector HDF5) must lie in; empty: only frames
        inline in the events are analysed.
    tiled_uri : str
        Tiled server that receives each analysed run's derived run (``TILED_API_KEY`` gives
        its key); empty: nothing is written to tiled.
    grace_s : float
        At stop, how long the frames still queued may take to be analysed, s.
    allow_pickle : bool
        Also read pickled documents (runs code chosen by the sender; see
        :mod:`callbacks.dispatcher`). Default: msgpack only.
    """

    n_bins: int = 500
    restore: bool = True
    false_alarm_interval_frames: float = 20_000.0
    data_root: str = ""
    tiled_uri: str = ""
    grace_s: float = 5.0
    allow_pickle: bool = False


def validate_temporal_options(options: TemporalOptions) -> TemporalOptions:
    """Return ``options`` checked and normalised, or raise a clear error.

    Raises
    ------
    TypeError, ValueError
        For ``n_bins`` that is not an integer in [32, 16384], a ``restore`` or
        ``allow_pickle`` that is not a bool, a false-alarm interval that is not a finite
        number >= 20 frames, a negative ``grace_s``, text options that are not strings.
    """
    n_bins = options.n_bins
    if isinstance(n_bins, bool) or not isinstance(n_bins, int):
        raise TypeError(f"n_bins must be an integer, got {n_bins!r}")
    if not MIN_BINS <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins must be between {MIN_BINS} and {MAX_BINS}, got {n_bins}")
    for name in ("restore", "allow_pickle"):
        if not isinstance(getattr(options, name), bool):
            raise TypeError(f"{name} must be a bool, got {getattr(options, name)!r}")
    interval = options.false_alarm_interval_frames
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise TypeError(f"false_alarm_interval_frames must be a number, got {interval!r}")
    if not (math.isfinite(interval) and interval >= MIN_FALSE_ALARM_INTERVAL):
        raise ValueError(
            f"false_alarm_interval_frames must be a finite number >= "
            f"{MIN_FALSE_ALARM_INTERVAL:g} frames, got {interval!r}"
        )
    for name in ("data_root", "tiled_uri"):
        if not isinstance(getattr(options, name), str):
            raise TypeError(f"{name} must be a string, got {getattr(options, name)!r}")
    grace = options.grace_s
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
        raise ValueError(f"grace_s must be >= 0 s, got {grace!r}")
    return replace(
        options,
        false_alarm_interval_frames=float(interval),
        data_root=options.data_root.strip(),
        tiled_uri=options.tiled_uri.strip(),
        grace_s=float(grace),
    )


@dataclass(frozen=True)
class ChangeValues:
    """What temporal live mode shows of the change detection (the device's ``change_*``).

    Attributes
    ----------
    run_uid : str
        Uid of the current run (the latest analysed run); ``""`` before one.
    frames : int
        Frames of the current run handled so far: analysed, or skipped as unusable.
    frames_skipped : int
        Of those, frames skipped (unreadable, wrong shape, NaN pixels, no temperature; the
        monitor logs why). Known when the next frame is analysed.
    score : float
        Per-frame score of the latest analysed frame (about N(0, 1) while nothing changes);
        NaN before the first frame of the run.
    cusum : float
        CUSUM statistic after the latest frame; NaN before the first frame of the run.
    alarm : bool
        Whether an alarm was raised on the current run.
    alarm_count : int
        Alarms raised since temporal live mode started (never decreases while live).
    alarm_frame : int
        Frame index (in its run, from 0) of the latest alarm; -1 before one.
    alarm_time_s : float
        Time of the latest alarm's frame, s since its run's start; NaN before one.
    alarm_temperature_K : float
        Sample temperature of the latest alarm's frame, K; NaN before one or when unknown.
    alarm_json : str
        The latest alarm as a JSON object (``Alarm.as_dict()`` with ``run_uid``: frame, onset,
        q ranges in 1/Å, confidence, score, threshold); ``"{}"`` before one.
    """

    run_uid: str = ""
    frames: int = 0
    frames_skipped: int = 0
    score: float = math.nan
    cusum: float = math.nan
    alarm: bool = False
    alarm_count: int = 0
    alarm_frame: int = -1
    alarm_time_s: float = math.nan
    alarm_temperature_K: float = math.nan
    alarm_json: str = "{}"

    def as_dict(self) -> dict[str, Any]:
        """The values by name (``change_`` + name is the device attribute)."""
        return {name: getattr(self, name) for name in CHANGE_FIELDS}

    def changed(self, other: ChangeValues) -> list[str]:
        """Names of the values that differ from ``other``'s (NaN equals NaN)."""
        return [
            name for name in CHANGE_FIELDS if not _same(getattr(self, name), getattr(other, name))
        ]


CHANGE_FIELDS = (
    "run_uid",
    "frames",
    "frames_skipped",
    "score",
    "cusum",
    "alarm_frame",
    "alarm_time_s",
    "alarm_temperature_K",
    "alarm_json",
    "alarm",
    "alarm_count",
)
"""Fields of :class:`ChangeValues`, in the order the device pushes their events: the alarm's
details before ``alarm`` and ``alarm_count``, so a client that sees the count rise by event
has the details already."""


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclass
class _Session:
    """One StartTemporalLive ... StopTemporalLive: dispatcher, thread, monitor, counters."""

    address: str
    options: TemporalOptions
    dispatcher: Any
    monitor: Any = None
    tiled: Any = None
    settled: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    returned: bool = False  # start() returned: an end from now on is reported (lock)
    ended: bool = False  # the thread has wound down (lock)
    failure: str = ""
    documents: int = 0
    runs: int = 0  # analysed runs started in this session
    run_end: str = ""  # exit status of the current run once its stop document came (lock)
    line: str = WAITING
    thread: threading.Thread = field(default_factory=lambda: threading.Thread(target=print))

    def request_stop(self) -> None:
        """Cancel the dispatcher's polling task from any thread (no-op once its loop closed)."""
        self.stopping.set()
        self.dispatcher.cancel_threadsafe()


class TemporalLiveMode:
    """Analyse the diffraction frames of a bluesky 0MQ document stream for changes of shape.

    Parameters
    ----------
    component : RestorationComponent
        Reports the failures of the mode (``ALARM`` with the reason); nothing else of it is
        used.
    options : TemporalOptions, optional
        How runs are analysed (validated; change it with :meth:`set_options`).

    Threading
    ---------
    Every public method may be called from any thread. Listeners are called from the thread
    that changed something (the caller's, the dispatcher's, the monitor's worker); they must
    return quickly.
    """

    def __init__(
        self, component: RestorationComponent, options: TemporalOptions | None = None
    ) -> None:
        self._component = component
        self._options = validate_temporal_options(options or TemporalOptions())
        self._control = threading.Lock()  # serialises start and stop
        self._lock = threading.Lock()  # guards _session, _options and _values (held briefly)
        self._session: _Session | None = None
        self._values = ChangeValues()
        self._status_callbacks: list[StatusCallback] = []
        self._values_callbacks: list[ValuesCallback] = []

    # ------------------------------------------------------------------ listeners and views
    def add_status_callback(self, callback: StatusCallback) -> None:
        """Call ``callback(status)`` when :attr:`status` changes (``""`` when the mode ends)."""
        self._status_callbacks.append(callback)

    def add_values_callback(self, callback: ValuesCallback) -> None:
        """Call ``callback(values)`` with the new :class:`ChangeValues` whenever they change."""
        self._values_callbacks.append(callback)

    def _call(self, callbacks: list[Callable[[Any], None]], value: Any) -> None:
        for callback in list(callbacks):
            try:
                callback(value)
            except Exception:  # a broken listener must not break the mode
                _LOG.exception("temporal live listener %r failed", callback)

    @property
    def options(self) -> TemporalOptions:
        """How runs are analysed from the next :meth:`start` on."""
        return self._options

    def set_options(self, options: TemporalOptions) -> None:
        """Change the options; allowed while live, they apply from the next :meth:`start`.

        Raises
        ------
        TypeError, ValueError
            For invalid options (see :func:`validate_temporal_options`).
        """
        checked = validate_temporal_options(options)
        with self._lock:
            self._options = checked

    def _current(self) -> _Session | None:
        with self._lock:
            return self._session

    @property
    def live(self) -> bool:
        """Whether temporal live mode is running."""
        return self._current() is not None

    @property
    def address(self) -> str:
        """The proxy endpoint ``tcp://HOST:PORT`` while live, else ``""``."""
        session = self._current()
        return "" if session is None else session.address

    @property
    def documents(self) -> int:
        """Documents received from the proxy in this live session (0 when not live)."""
        session = self._current()
        return 0 if session is None else session.documents

    @property
    def values(self) -> ChangeValues:
        """The change-detection values (kept after :meth:`stop`, cleared at :meth:`start`)."""
        with self._lock:
            return self._values

    @property
    def monitor(self) -> Any:
        """The :class:`callbacks.temporal.TemporalMonitor` of this session, or ``None``."""
        session = self._current()
        return None if session is None else session.monitor

    @property
    def status(self) -> str:
        """One line on temporal live mode (``""`` when not live)."""
        session = self._current()
        if session is None:
            return ""
        values = self.values
        with session.lock:
            head = (
                f"temporal live mode: subscribed to {session.address}; {session.runs} run(s) "
                f"analysed, {session.documents} document(s) received"
            )
            line = session.line
        # messages that did not decode or name no document (SafeRemoteDispatcher drops them)
        dropped = sum(session.dispatcher.dropped.values())
        if dropped:
            head += f", {dropped} message(s) dropped (see the log)"
        if values.alarm_count:
            head += f", {values.alarm_count} change alarm(s)"
        return f"{head}; {line}"

    def _note(self, session: _Session, line: str, level: int = logging.INFO) -> None:
        with session.lock:
            session.line = line
        _LOG.log(level, "temporal live: %s", line)
        if self._current() is session:
            self._call(self._status_callbacks, self.status)

    def _set_values(self, values: ChangeValues) -> None:
        with self._lock:
            if not self._values.changed(values):
                return
            self._values = values
        self._call(self._values_callbacks, values)

    # ------------------------------------------------------------------ start and stop
    def start(self, address: str, timeout: float = 2.0) -> str:
        """Subscribe to a 0MQ proxy and analyse its temporal runs until :meth:`stop`.

        Returns once the subscription is set up (or after ``timeout`` s while the tiled client
        is still connecting; failures after that end the mode with ``ALARM`` and the reason).
        The proxy need not be up yet: 0MQ connects when it comes. The values are cleared.

        Parameters
        ----------
        address : str
            ``HOST:PORT`` of the proxy's output (see :func:`callbacks.address.parse_address`).
        timeout : float
            Longest wait for the dispatcher thread to set up its subscription, s.

        Returns
        -------
        str
            The endpoint subscribed to, ``tcp://HOST:PORT``.

        Raises
        ------
        TemporalBusy
            If temporal live mode is running already.
        ValueError, TypeError
            For a malformed or unresolvable address.
        TemporalError
            If the tiled client, the monitor or the subscription failed within ``timeout``.
        """
        from callbacks.dispatcher import SafeRemoteDispatcher

        with self._control:
            current = self._current()
            if current is not None:
                raise TemporalBusy(
                    f"temporal live mode is already running (from {current.address}); call "
                    "StopTemporalLive first"
                )
            options = self._options
            endpoint = format_address(*parse_address(address))
            session = _Session(
                endpoint,
                options,
                SafeRemoteDispatcher(endpoint, allow_pickle=options.allow_pickle),
            )
            session.dispatcher.subscribe(lambda name, doc: self._before(session, name, doc))
            session.thread = threading.Thread(
                target=self._serve, args=(session,), name="asirp-temporal-dispatcher", daemon=True
            )
            with self._lock:
                self._session = session
                self._values = ChangeValues()
            self._call(self._values_callbacks, ChangeValues())
            session.thread.start()
            session.settled.wait(timeout)
            with self._lock:
                failed = session.ended
                if failed:
                    self._session = None
                else:
                    session.returned = True
            if failed:
                session.thread.join(timeout)
                raise TemporalError(f"temporal live mode could not start: {session.failure}")
        _LOG.info("temporal live mode: subscribed to %s", endpoint)
        self._call(self._status_callbacks, self.status)
        return endpoint

    def stop(self, grace_s: float | None = None) -> bool:
        """End temporal live mode; a no-op when not live.

        Parameters
        ----------
        grace_s : float, optional
            Longest wait for the frames still queued, s (default: the options' ``grace_s``).

        Returns
        -------
        bool
            Whether the mode was running.
        """
        with self._control:
            session = self._current()
            if session is None:
                return False
            if grace_s is not None:
                session.options = replace(session.options, grace_s=max(0.0, float(grace_s)))
            session.request_stop()
            # winding down takes at most about 2 grace_s (wait, then close)
            session.thread.join(2.0 * session.options.grace_s + 5.0)
            if session.thread.is_alive():
                _LOG.warning("temporal live mode: the dispatcher thread has not ended")
            self._release(session)
        _LOG.info("temporal live mode: stopped (was subscribed to %s)", session.address)
        return True

    def _release(self, session: _Session) -> None:
        with self._lock:
            if self._session is not session:
                return
            self._session = None
        self._call(self._status_callbacks, "")

    # ------------------------------------------------------------------ threads
    def _serve(self, session: _Session) -> None:
        """Dispatcher thread: build the monitor (and tiled client), subscribe, wind down."""
        dispatcher = session.dispatcher
        try:
            self._build_monitor(session)
            if not session.stopping.is_set():
                dispatcher.subscribe(session.monitor)
                dispatcher.loop.call_soon(session.settled.set)
                dispatcher.start()
        except asyncio.CancelledError:
            pass  # request_stop: how the mode ends
        except BaseException as error:  # a broken socket must not take the device with it
            session.failure = str(error) if isinstance(error, TemporalError) else _one_line(error)
            _LOG.error("temporal live mode from %s failed: %s", session.address, session.failure)
        finally:
            if not dispatcher.closed:
                dispatcher.stop()
            self._wind_down(session)
            session.settled.set()

    def _build_monitor(self, session: _Session) -> None:
        """The tiled client (if any) and the monitor, from the session's options."""
        options = session.options
        if options.tiled_uri:
            from callbacks.tiled_server import connect

            self._note(session, f"connecting to the tiled server {options.tiled_uri}")
            try:
                session.tiled = connect(options.tiled_uri)
            except Exception as error:
                raise TemporalError(
                    f"cannot connect to the tiled server {options.tiled_uri!r} (TiledUri): "
                    f"{_one_line(error)}"
                ) from None
        try:
            session.monitor = make_monitor(options, session.tiled)
        except Exception as error:
            raise TemporalError(
                f"the temporal monitor could not be built: {_one_line(error)}"
            ) from None
        session.monitor.add_listener(lambda update: self._on_frame(session, update))
        self._note(session, WAITING)

    def _wind_down(self, session: _Session) -> None:
        stopped = session.stopping.is_set()
        why = session.failure or "the dispatcher stopped"
        monitor = session.monitor
        try:
            if monitor is not None:
                reason = (
                    "temporal live mode was stopped (StopTemporalLive) before the raw run ended"
                    if stopped
                    else f"temporal live mode ended: {why}"
                )
                ended = monitor.finish_open_runs(reason)
                if ended:
                    _LOG.warning("temporal live mode: finishing run(s) %s", ", ".join(ended))
                # frames queued past grace_s are skipped (counted "cancelled"), runs still close
                finished = monitor.wait(session.options.grace_s)
                if not finished:
                    _LOG.warning(
                        "temporal live mode: frames still queued after %g s are skipped",
                        session.options.grace_s,
                    )
                monitor.close(timeout=max(session.options.grace_s, 1.0), cancel=not finished)
        except Exception:  # a last guard: winding down must always end
            _LOG.exception("temporal live mode: closing the monitor failed")
        finally:
            _close_tiled(session.tiled)
        with self._lock:
            session.ended = True
            report = session.returned and not stopped
        if report:
            self._component.report_failure(
                f"temporal live mode from {session.address} ended: {why}; call "
                "StartTemporalLive again"
            )
            self._release(session)

    def _before(self, session: _Session, name: str, doc: Mapping[str, Any]) -> None:
        """Dispatcher thread, before the monitor: count documents, follow the analysed runs."""
        try:
            with session.lock:
                session.documents += 1
            if name == "start":
                self._on_start(session, doc)
            elif name == "stop":
                uid = str(doc.get("run_start", ""))
                if uid and uid == self.values.run_uid:
                    with session.lock:
                        session.run_end = str(doc.get("exit_status", "success"))[:32]
                    # frames still queued are analysed after this: each later line says so too
                    self._note(session, self._run_line(session, self.values))
        except Exception:
            _LOG.exception("temporal live mode: could not follow a %s document", name)

    def _on_start(self, session: _Session, doc: Mapping[str, Any]) -> None:
        """A run starts: if the monitor analyses it, it becomes the current run."""
        from callbacks.temporal_config import METADATA_KEY, ConfigError, config_from_start

        uid = str(doc.get("uid", ""))[:128]
        try:
            config = config_from_start(doc, session.monitor.defaults)
        except ConfigError as error:
            # the monitor logs and skips it too; say why here, where the operator looks
            self._note(session, f"run {uid} is not analysed: {' '.join(str(error).split())}")
            return
        if config is None:
            return  # not a temporal run (a map scan, a handshake): nothing to say
        settings = config.settings
        if getattr(settings, "restore", False) and config.profile is None:
            self._note(
                session,
                f"run {uid} is not analysed: restoring I(q) needs an instrument profile "
                f"({METADATA_KEY}.profile); or set xrd_restore false (then StartTemporalLive)",
                logging.WARNING,
            )
            return
        with session.lock:
            session.runs += 1
            session.run_end = ""
        self._set_values(
            replace(
                self.values,
                run_uid=uid,
                frames=0,
                frames_skipped=0,
                score=math.nan,
                cusum=math.nan,
                alarm=False,
            )
        )
        self._note(session, f"analysing run {uid}")

    def _run_line(self, session: _Session, values: ChangeValues) -> str:
        """The status line of the current run: its end, frames, latest alarm, latest score."""
        with session.lock:
            end = session.run_end
        text = f"run {values.run_uid}"
        if end:
            text += f" ended ({end})"
        text += f": {values.frames - values.frames_skipped} frame(s) analysed"
        if values.frames_skipped:
            text += f", {values.frames_skipped} skipped (see the log)"
        if values.alarm:
            text += f"; {_describe_alarm(values)}"
        if math.isfinite(values.score):
            text += f"; latest score {values.score:.2f}, CUSUM {values.cusum:.2f}"
        return text

    def _on_frame(self, session: _Session, update: Any) -> None:
        """Monitor worker thread: a frame was scored; update the values and the status."""
        if self._current() is not session:
            return
        try:
            values = self.values
            if update.run_uid != values.run_uid:
                return  # a frame of an earlier run, scored after the next run started
            score = update.score
            updated = replace(
                values,
                frames=int(update.frames_processed) + int(update.frames_skipped),
                frames_skipped=int(update.frames_skipped),
                score=_number(score.score),
                cusum=_number(score.cusum),
            )
            alarm = update.alarm
            if alarm is not None:
                record = {"run_uid": update.run_uid, **_json_ready(alarm.as_dict())}
                updated = replace(
                    updated,
                    alarm=True,
                    alarm_count=values.alarm_count + 1,
                    alarm_frame=int(alarm.frame_index),
                    alarm_time_s=_number(alarm.time_s),
                    alarm_temperature_K=_number(alarm.temperature_K),
                    alarm_json=json.dumps(record, allow_nan=False),
                )
            self._set_values(updated)
            if alarm is not None:
                self._note(
                    session,
                    f"CHANGE DETECTED in run {update.run_uid}: {_describe_alarm(updated)}",
                    logging.WARNING,
                )
            else:
                self._note(session, self._run_line(session, updated), logging.DEBUG)
        except Exception:
            _LOG.exception("temporal live mode: a frame's score could not be shown")


# ---------------------------------------------------------------------- the monitor
def make_monitor(options: TemporalOptions, tiled: Any = None) -> Any:
    """A :class:`callbacks.temporal.TemporalMonitor` analysing runs with ``options``.

    Runs give their geometry (and profile, fields) in their ``asirp_temporal`` metadata; the
    monitor has no default geometry, so runs without metadata are left alone.

    Parameters
    ----------
    options : TemporalOptions
        Checked options: the default settings, the data root.
    tiled : tiled client, optional
        Receives the derived runs.

    Returns
    -------
    TemporalMonitor
    """
    from asirp.diffraction import TemporalSettings
    from callbacks.temporal import TemporalMonitor

    settings = replace(
        TemporalSettings(),
        n_bins=options.n_bins,
        restore=options.restore,
        false_alarm_interval_frames=options.false_alarm_interval_frames,
    )
    return TemporalMonitor(settings=settings, data_root=options.data_root or None, tiled=tiled)


def _number(value: Any) -> float:
    """``value`` as a float; NaN for ``None``."""
    return math.nan if value is None else float(value)


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _json_ready(value.item())
    return value


def _describe_alarm(values: ChangeValues) -> str:
    temperature = (
        f" at {values.alarm_temperature_K:.2f} K"
        if math.isfinite(values.alarm_temperature_K)
        else ""
    )
    text = f"alarm {values.alarm_count} on frame {values.alarm_frame}{temperature}"
    try:
        record = json.loads(values.alarm_json)
    except ValueError:
        return text
    extra = []
    if record.get("onset_frame_index") is not None:
        extra.append(f"onset frame {record['onset_frame_index']}")
    if record.get("confidence") is not None:
        extra.append(f"confidence {record['confidence']:.2f}")
    ranges = record.get("q_ranges_A") or []
    if ranges:
        extra.append("q " + ", ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in ranges[:3]) + " 1/Å")
    return f"{text} ({'; '.join(extra)})" if extra else text


def _close_tiled(client: Any) -> None:
    if client is None:
        return
    try:
        client.context.close()
    except Exception:
        _LOG.warning("closing the tiled client failed", exc_info=True)
