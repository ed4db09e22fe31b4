"""Live mode of the ASIRP device: restore the maps of a bluesky 0MQ document stream as they come.

:class:`LiveMode` subscribes a :class:`callbacks.LiveRestorer` to the output of a bluesky 0MQ
document proxy (``bluesky-0MQ-proxy``, or :class:`bluesky.callbacks.zmq.Proxy`) through a
:class:`callbacks.dispatcher.SafeRemoteDispatcher` running in its own thread with its own
asyncio loop, and hands every restored map to :meth:`asirp_device.component.RestorationComponent.
publish_result` (``source`` = the raw run's uid), so the device publishes it like the result of
a local ``Restore``. It never imports Tango: the device (:mod:`asirp_device.server`) is a thin
shell over it, and tests drive it directly.

What is published
    Every ``every_rows`` completed rows the leading rows measured so far are restored and
    published (a map of those rows only, ``rows_restored x columns``; ``every_rows = 0``: only
    the final map), and at the end of each run the full map. Failed restorations are not
    published: they show in :attr:`LiveMode.status`, and a failed *final* restoration puts the
    component in ``ALARM`` with the reason (:meth:`~asirp_device.component.RestorationComponent.
    report_failure`; the next published result, live or local, or ``Reset`` clears it).
Settings
    :meth:`LiveMode.start` takes the component's restoration settings as they are then (method or
    ``auto_select``, iterations, parameters, beam FWHM, compute device); changes made while live
    apply from the next :meth:`LiveMode.start`. The pixel size is each scan's own step (from
    its start document's ``shape`` and ``extents``, times ``position_scale_um``), not the
    component's ``pixel_um``. Which reading is mapped is in :class:`LiveOptions` (checked by
    :func:`validate_options`; both live in :mod:`asirp_device.live_options`, imported from here
    too).
Final results by run
    :meth:`LiveMode.result_of` gives the request id of a run's final published restoration
    (the device's ``LiveResultOf``; ``FetchResult`` of that id returns it with ``source`` = the
    run uid and ``derived_uid`` = the derived run that holds it in tiled), so a client reads
    the very restoration that live mode made and stored instead of restoring the map again. The
    latest :data:`~asirp_device.live_runs.MAX_LIVE_RUNS` runs are remembered
    (:class:`~asirp_device.live_runs.LiveRunBook`), across ``StopLive``/``StartLive``; a run
    that is not a map, maps no point, or is still open when live mode ends has no result.
Stopping
    :meth:`LiveMode.stop` ends the dispatcher, then finishes the run in progress (its rows
    measured so far are restored and published; its derived run ends with exit status
    ``abort``), waiting at most ``grace_s`` before cancelling that restoration (then the derived
    run ends ``fail``, and no ``ALARM`` is raised for it). It is a no-op when not live.
Untrusted documents
    Any client may call ``StartLive`` with an address it controls, so documents are data, never
    code: they are read as msgpack (:mod:`callbacks.serialization`; the RunEngine publishes
    with ``Publisher(address, serializer=callbacks.serialization.serializer)``), and messages
    that do not decode or name no event-model document are logged and dropped (live mode goes
    on). Pickle (bluesky's default), whose unpickling runs code chosen by the sender, is only
    read with :attr:`LiveOptions.allow_pickle` (the ``LiveAllowPickle`` property), logged as a
    WARNING when live mode starts. A start document whose map exceeds
    :data:`callbacks.geometry.MAX_MAP_POINTS` points is refused before anything is allocated.
Failures
    Bad documents and failing methods are caught by the restorer (see :mod:`callbacks.live`);
    a dispatcher that dies (a broken socket), or a tiled server that cannot be reached after
    :meth:`LiveMode.start` returned, ends live mode with ``ALARM`` and the reason. Nothing
    raised in live mode reaches the caller of :meth:`LiveMode.start` after it returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from asirp_device.component import RestorationComponent
from asirp_device.live_options import LiveOptions, restorer_arguments, validate_options
from asirp_device.live_runs import MAX_LIVE_RUNS, LiveRun, LiveRunBook, LiveRunFailed, UnknownRun
from callbacks.address import format_address, parse_address  # parse_address: re-exported
from callbacks.geometry import GeometryError, MapTooLarge, ScanGeometry
from callbacks.live import LiveRestorer, LiveResult
from callbacks.mapping import MapSource, SourceError

__all__ = [
    "MAX_LIVE_RUNS",
    "LiveBusy",
    "LiveError",
    "LiveMode",
    "LiveOptions",
    "LiveRun",
    "LiveRunFailed",
    "UnknownRun",
    "parse_address",
    "restorer_arguments",
    "validate_options",
]

_LOG = logging.getLogger(__name__)

WAITING = "waiting for documents"

StatusCallback = Callable[[str], None]


class LiveBusy(RuntimeError):
    """Live mode is running, so the request (start it again, change what it maps) is refused."""


class LiveError(RuntimeError):
    """Live mode could not start (the document subscription or the tiled client failed)."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


class _Session:
    """One StartLive ... StopLive: the dispatcher, its thread, the restorer and the counters."""

    def __init__(
        self,
        address: str,
        restorer: LiveRestorer,
        tiled_uri: str,
        grace_s: float,
        allow_pickle: bool = False,
    ) -> None:
        from callbacks.dispatcher import SafeRemoteDispatcher

        self.address = address
        self.restorer = restorer
        self.tiled_uri = tiled_uri
        self.tiled: Any = None
        self.sink: Any = None  # the TiledSink writing the derived runs, when tiled_uri is set
        self.sink_errors: dict[str, int] = {}  # run uid -> the sink's error count at its start
        self.submitted_before = 0  # restorations submitted before the stop document in hand
        self.grace_s = grace_s
        self.dispatcher = SafeRemoteDispatcher(address, allow_pickle=allow_pickle)
        self.settled = threading.Event()  # subscribed, or ended
        self.stopping = threading.Event()
        self.returned = False  # start() returned: an end from now on is reported (lock)
        self.ended = False  # the thread has wound down (lock)
        self.failure = ""
        self.lock = threading.Lock()
        self.run_uid = ""
        self.map_stream: str | None = None
        self.runs_restored = 0
        self.documents = 0
        self.line = WAITING
        self.token = 0
        self.thread = threading.Thread(target=lambda: None)

    def request_stop(self) -> None:
        """Cancel the dispatcher's polling task from any thread (no-op once its loop closed)."""
        self.stopping.set()
        self.dispatcher.cancel_threadsafe()


class LiveMode:
    """Restore the maps of a bluesky 0MQ document stream and publish them through a component.

    Parameters
    ----------
    component : RestorationComponent
        Gives the restoration settings at :meth:`start` and publishes every restored map.
    options : LiveOptions, optional
        What to map (validated; change it with :meth:`set_options` while not live).

    Threading
    ---------
    Every public method may be called from any thread. Status listeners are called from the
    thread that changed something (the caller's, the dispatcher's, the restorer's worker); like
    the component's listeners they must return quickly.
    """

    def __init__(self, component: RestorationComponent, options: LiveOptions | None = None) -> None:
        self._component = component
        self._options = validate_options(options if options is not None else LiveOptions())
        self._control = threading.Lock()  # serialises start and stop
        self._lock = threading.Lock()  # guards _session and _options (held briefly)
        self._session: _Session | None = None
        self._status_callbacks: list[StatusCallback] = []
        self._runs = LiveRunBook(MAX_LIVE_RUNS)  # outlives sessions: results stay fetchable

    # ------------------------------------------------------------------ listeners and views
    def add_status_callback(self, callback: StatusCallback) -> None:
        """Call ``callback(status)`` when :attr:`status` changes (``""`` when live mode ends)."""
        self._status_callbacks.append(callback)

    def _announce(self) -> None:
        status = self.status
        for callback in list(self._status_callbacks):
            try:
                callback(status)
            except Exception:  # a broken listener must not break live mode
                _LOG.exception("live status listener %r failed", callback)

    @property
    def options(self) -> LiveOptions:
        """What live mode maps."""
        return self._options

    def set_options(self, options: LiveOptions) -> None:
        """Change what live mode maps (refused while live: :meth:`stop` first).

        Raises
        ------
        LiveBusy
            While live.
        TypeError, ValueError
            For invalid options (see :func:`validate_options`).
        """
        checked = validate_options(options)
        with self._lock:
            if self._session is not None:
                raise LiveBusy(
                    f"live mode is running (from {self._session.address}); call StopLive "
                    "before changing what it maps"
                )
            self._options = checked

    def _current(self) -> _Session | None:
        with self._lock:
            return self._session

    @property
    def live(self) -> bool:
        """Whether live mode is running."""
        return self._current() is not None

    @property
    def address(self) -> str:
        """The proxy endpoint ``tcp://HOST:PORT`` while live, else ``""``."""
        session = self._current()
        return "" if session is None else session.address

    @property
    def run_uid(self) -> str:
        """Uid of the map run being restored, or of the last one once it ended; ``""`` if none.

        Only runs of this live session count (``""`` when not live).
        """
        session = self._current()
        return "" if session is None else session.run_uid

    @property
    def runs_restored(self) -> int:
        """Runs of this live session whose final map was restored and published."""
        session = self._current()
        return 0 if session is None else session.runs_restored

    def run(self, run_uid: str) -> LiveRun | None:
        """What live mode knows of raw run ``run_uid`` (the latest runs), or ``None``."""
        return self._runs.get(run_uid)

    def result_of(self, run_uid: str) -> int:
        """Request id of the final live result of raw run ``run_uid`` (no new restoration).

        ``FetchResult`` of that id (:meth:`RestorationComponent.fetch_result`) returns the
        restoration with ``source`` = ``run_uid`` and ``derived_uid`` = the derived run that
        holds it in tiled (``None`` without ``TiledUri``, or if writing it failed). Only the
        latest results are kept by the component: fetch it soon.

        Parameters
        ----------
        run_uid : str
            Uid of the raw run (its start document's ``uid``).

        Returns
        -------
        int
            The request id of its final published restoration.

        Raises
        ------
        NotReady
            While its final restoration has not arrived (ask again).
        LiveRunFailed
            If that restoration failed, or the run is not restored (not a map, no point
            mapped, live mode ended before the run did).
        UnknownRun
            If live mode never saw the run (or no longer remembers it).
        TypeError
            If ``run_uid`` is not a string.
        """
        return self._runs.request_id(run_uid)

    @property
    def documents(self) -> int:
        """Documents received from the proxy in this live session."""
        session = self._current()
        return 0 if session is None else session.documents

    @property
    def status(self) -> str:
        """One line on live mode (``""`` when not live)."""
        session = self._current()
        if session is None:
            return ""
        with session.lock:
            return (
                f"live mode: subscribed to {session.address}; {session.runs_restored} run(s) "
                f"restored, {session.documents} document(s) received; {session.line}"
            )

    def _note(self, session: _Session, line: str, level: int = logging.INFO) -> None:
        with session.lock:
            session.line = line
        _LOG.log(level, "live: %s", line)
        if self._current() is session:
            self._announce()

    # ------------------------------------------------------------------ start and stop
    def start(self, address: str, timeout: float = 2.0) -> str:
        """Subscribe to a 0MQ proxy and restore its map runs until :meth:`stop`.

        Returns once the subscription is set up (about a millisecond without a tiled server,
        the time to connect to it with one), or after ``timeout`` s while the tiled client is
        still connecting (failures after that end live mode with ``ALARM`` and the reason).
        The proxy need not be up yet: 0MQ connects when it comes.

        Parameters
        ----------
        address : str
            ``HOST:PORT`` of the proxy's output (see :func:`parse_address`).
        timeout : float
            Longest wait for the dispatcher thread to set up its subscription, s.

        Returns
        -------
        str
            The endpoint subscribed to, ``tcp://HOST:PORT``.

        Raises
        ------
        LiveBusy
            If live mode is running already.
        ValueError, TypeError
            For a malformed or unresolvable address, or settings that do not fit the method.
        NotReady
            If the options name no field to map.
        LiveError
            If the tiled client or the subscription failed within ``timeout``.
        """
        with self._control:
            current = self._current()
            if current is not None:
                raise LiveBusy(
                    f"live mode is already running (from {current.address}); call StopLive first"
                )
            options = self._options
            endpoint = format_address(*parse_address(address))
            restorer = LiveRestorer(**restorer_arguments(self._component.settings, options))
            try:
                session = _Session(
                    endpoint, restorer, options.tiled_uri, options.grace_s, options.allow_pickle
                )
            except Exception:
                restorer.close(timeout=1.0)
                raise
            session.token = restorer.subscribe(lambda result: self._on_result(session, result))
            session.dispatcher.subscribe(lambda name, doc: self._before(session, name, doc))
            session.dispatcher.subscribe(restorer)
            session.dispatcher.subscribe(lambda name, doc: self._after(session, name, doc))
            session.thread = threading.Thread(
                target=self._serve, args=(session,), name="asirp-live-dispatcher", daemon=True
            )
            with self._lock:
                self._session = session
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
                raise LiveError(f"live mode could not start: {session.failure}")
        _LOG.info("live mode: subscribed to %s", endpoint)
        self._announce()
        return endpoint

    def stop(self, grace_s: float | None = None) -> bool:
        """End live mode; a no-op when not live.

        The dispatcher stops at once; the run in progress is finished (its measured rows are
        restored and published) within ``grace_s``, else that restoration is cancelled.

        Parameters
        ----------
        grace_s : float, optional
            Longest wait for the final restoration of the run in progress, s (default: the
            options' ``grace_s``).

        Returns
        -------
        bool
            Whether live mode was running.
        """
        with self._control:
            session = self._current()
            if session is None:
                return False
            if grace_s is not None:
                session.grace_s = max(0.0, float(grace_s))
            session.request_stop()
            # winding down takes at most about 2 grace_s (wait, then cancel)
            session.thread.join(2.0 * session.grace_s + 2.0)
            if session.thread.is_alive():
                _LOG.warning("live mode: the dispatcher thread has not ended; leaving it behind")
            self._release(session)
        _LOG.info("live mode: stopped (was subscribed to %s)", session.address)
        return True

    def _release(self, session: _Session) -> None:
        with self._lock:
            if self._session is not session:
                return
            self._session = None
        self._announce()

    # ------------------------------------------------------------------ threads
    def _serve(self, session: _Session) -> None:
        """Dispatcher thread: connect to tiled (if any), run the subscription, wind down."""
        dispatcher = session.dispatcher
        try:
            if session.tiled_uri:
                self._connect_tiled(session)
            if not session.stopping.is_set():
                dispatcher.loop.call_soon(session.settled.set)
                dispatcher.start()
        except asyncio.CancelledError:
            pass  # request_stop: how live mode ends
        except BaseException as error:  # a broken socket must not take the device with it
            session.failure = str(error) if isinstance(error, LiveError) else _one_line(error)
            _LOG.error("live mode from %s failed: %s", session.address, session.failure)
        finally:
            if not dispatcher.closed:
                dispatcher.stop()
            self._wind_down(session)
            session.settled.set()

    def _connect_tiled(self, session: _Session) -> None:
        """Write the derived runs to the tiled server of ``session.tiled_uri`` from now on."""
        from callbacks.publish import TiledSink
        from callbacks.tiled_server import connect

        self._note(session, f"connecting to the tiled server {session.tiled_uri}")
        try:
            session.tiled = connect(session.tiled_uri)
            sink = TiledSink(session.tiled)
            session.sink = sink
        except Exception as error:
            raise LiveError(
                f"cannot connect to the tiled server {session.tiled_uri!r} (TiledUri): "
                f"{_one_line(error)}"
            ) from None
        # before the dispatcher starts: no derived run has begun yet
        session.restorer.subscribe_documents(sink)
        self._note(session, WAITING)

    def _wind_down(self, session: _Session) -> None:
        restorer = session.restorer
        stopped = session.stopping.is_set()
        why = session.failure or "the dispatcher stopped"
        reason = (
            "live mode was stopped (StopLive) before the raw run ended"
            if stopped
            else f"live mode ended: {why}"
        )
        try:
            ended = restorer.finish_open_runs(reason)
            if ended:
                self._note(
                    session, f"stopping: finishing run(s) {', '.join(ended)}", logging.WARNING
                )
            if restorer.wait(session.grace_s):
                restorer.close(timeout=session.grace_s)
            else:
                _LOG.warning("live mode: cancelling restorations after %g s", session.grace_s)
                restorer.close(timeout=max(session.grace_s, 1.0), cancel=True)
        except Exception:  # a last guard: winding down must always end
            _LOG.exception("live mode: winding down the restorer failed")
        finally:
            restorer.unsubscribe(session.token)
            _close_tiled(session.tiled)
            # a final restoration that never came (cancelled unheard, a dead worker) is no
            # result: say so instead of "not ready" for ever
            abandoned = self._runs.abandon(f"{reason}; its final restoration never came")
            if abandoned:
                _LOG.warning("live mode: no final result for run(s) %s", ", ".join(abandoned))
        with self._lock:
            session.ended = True
            report = session.returned and not stopped
        if report:
            self._component.report_failure(
                f"live mode from {session.address} ended: {why}; call StartLive again"
            )
            self._release(session)

    def _before(self, session: _Session, name: str, doc: Mapping[str, Any]) -> None:
        """Dispatcher thread, before the restorer: count documents, note descriptors and stops."""
        try:
            with session.lock:
                session.documents += 1
                run_uid = session.run_uid
            if name == "descriptor" and doc.get("run_start") == run_uid:
                if doc.get("name") == session.map_stream:
                    self._check_fields(session, doc)
            elif name == "stop":
                session.submitted_before = session.restorer.stats["submitted"]
                if doc.get("run_start") == run_uid and run_uid:
                    status = doc.get("exit_status", "success")
                    self._note(session, f"run {run_uid} ended ({status}); restoring its map")
        except Exception:
            _LOG.exception("live mode: could not follow a %s document", name)

    def _after(self, session: _Session, name: str, doc: Mapping[str, Any]) -> None:
        """Dispatcher thread, after the restorer: note the runs it maps and those it cannot."""
        if name == "stop":
            self._after_stop(session, doc)
            return
        if name != "start":
            return
        uid = ""
        try:
            uid = str(doc.get("uid", ""))
            if session.restorer.active_run == uid:
                geometry = ScanGeometry.from_start(doc, session.restorer.stream)
                with session.lock:
                    session.run_uid = uid
                    session.map_stream = geometry.stream
                    if session.sink is not None:
                        session.sink_errors[uid] = session.sink.errors
                self._runs.begin(uid)
                rows, cols = geometry.shape
                self._note(session, f"mapping run {uid} ({rows}x{cols} points)")
            else:
                why = _why_not_mapped(session, doc)
                if self._runs.get(uid) is None:  # a repeated start leaves the first one's entry
                    self._runs.failed(uid, f"not restored: {why}")
                self._note(session, f"run {uid} is not restored: {why}")
        except (GeometryError, ValueError, TypeError, KeyError) as error:
            _LOG.warning("live mode: run start not understood: %s", error)
            if uid:
                self._runs.failed(uid, f"its start document was not understood: {error}")

    def _after_stop(self, session: _Session, doc: Mapping[str, Any]) -> None:
        """A run ended: if the restorer asked for no final restoration, it will have no result.

        The restorer submits the final restoration while it handles the stop document, in this
        thread, so an unchanged count of submitted restorations means none is coming (no
        point of the map was recorded).
        """
        uid = str(doc.get("run_start", ""))
        run = self._runs.get(uid)
        if run is None or run.state != "restoring":
            return
        if session.restorer.stats["submitted"] == session.submitted_before:
            source = session.restorer.source.describe()
            self._runs.failed(
                uid,
                f"no point of its map was recorded (mapping {source}: check live_field and "
                "live_normalize); nothing was restored",
            )

    def _check_fields(self, session: _Session, doc: Mapping[str, Any]) -> None:
        source: MapSource = session.restorer.source
        try:
            source.resolve(doc.get("data_keys", {}))
        except SourceError as error:
            self._note(
                session,
                f"run {session.run_uid} is not restored: {' '.join(str(error).split())} "
                "(set live_field / live_normalize)",
            )

    def _on_result(self, session: _Session, result: LiveResult) -> None:
        """Restorer worker thread: publish a restored map, or report its failure."""
        kind = "final" if result.final else "partial"
        label = f"run {result.run_uid}: {kind} restoration {result.sequence}"
        error = result.error or "restoration failed"
        if result.ok and result.restoration is not None:
            restoration = result.restoration
            try:
                record = self._component.publish_result(
                    restoration, result.run_uid, derived_uid=_stored_uid(session, result)
                )
            except (ValueError, TypeError) as failure:
                error = f"not published: {_one_line(failure)}"
            else:
                if result.final:
                    with session.lock:
                        session.runs_restored += 1
                        session.sink_errors.pop(result.run_uid, None)
                    self._runs.restored(result.run_uid, record.request_id, record.derived_uid)
                else:
                    self._runs.partial(result.run_uid)
                height = result.raw_map.shape[0]
                line = (
                    f"{label} ({result.rows_restored} of {height} rows, {restoration.method}, "
                    f"{restoration.elapsed_s:.2f} s) published as result #{record.sequence}"
                )
                if result.final and result.exit_status not in (None, "success"):
                    line += f"; the derived run ended {result.exit_status}"
                self._note(session, line)
                return
        self._note(session, f"{label} failed: {error}")
        if result.final:
            self._runs.failed(result.run_uid, f"its final live restoration failed: {error}")
            with session.lock:
                session.sink_errors.pop(result.run_uid, None)
        if result.final and not session.stopping.is_set():
            self._component.report_failure(
                f"live restoration of run {result.run_uid} failed: {error}; the previous result "
                "is kept (the next live or local result, or Reset, clears this)"
            )


def _stored_uid(session: _Session, result: LiveResult) -> str | None:
    """Uid of the derived run holding ``result`` in tiled, or ``None`` if it is not there.

    ``None`` without a tiled server, before the derived run exists, and when writing to tiled
    failed since the run started (the sink logs and counts its failures instead of raising).
    """
    sink = session.sink
    if sink is None or result.derived_uid is None:
        return None
    with session.lock:
        errors_at_start = session.sink_errors.get(result.run_uid, 0)
    if sink.errors > errors_at_start:
        _LOG.warning(
            "live mode: run %s: writing its derived run %s to tiled failed (%s); not reported "
            "as stored",
            result.run_uid,
            result.derived_uid,
            sink.last_error,
        )
        return None
    return result.derived_uid


def _why_not_mapped(session: _Session, doc: Mapping[str, Any]) -> str:
    """Why the restorer does not map the run of start document ``doc`` (no allocation)."""
    restorer = session.restorer
    try:
        ScanGeometry.from_start(doc, restorer.stream, max_points=restorer.max_map_points)
    except MapTooLarge as error:
        return " ".join(str(error).split())
    except (GeometryError, ValueError, TypeError):
        pass
    return "no 2-D map geometry (shape, extents) in its start document"


def _close_tiled(client: Any) -> None:
    if client is None:
        return
    try:
        client.context.close()
    except Exception:
        _LOG.warning("closing the tiled client failed", exc_info=True)
