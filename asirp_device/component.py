"""The restoration component behind the ASIRP Tango device (it never imports Tango).

:class:`RestorationComponent` holds the settings and the input map, runs :func:`asirp.restore` in a
worker thread with the engine's ``cancel=`` and ``progress=`` hooks, keeps the latest result,
confines file access to a data root, and tells its listeners about every change of state,
progress and result. The Tango device (:mod:`asirp_device.server`) is a thin shell over it, and
tests drive it directly.

States
------
``ON``
    Idle and ready (also after a successful or an aborted restoration).
``RUNNING``
    A restoration is in progress in the worker thread; :meth:`~RestorationComponent.start` is
    refused until it ends.
``ALARM``
    The last restoration failed; the reason is in the status. The previous result is kept; the
    next successful restoration, or :meth:`~RestorationComponent.reset`, returns to ``ON``.

A component that cannot be built (bad defaults, a data root that is not a folder) raises in its
constructor: the device reports that as ``FAULT``.

Threading
---------
Every public method may be called from any thread. Listeners are called with the new state,
progress or result in the order the changes happened, from the thread that made the change (the
caller's for :meth:`~RestorationComponent.start` and :meth:`~RestorationComponent.reset`, the
worker's for progress and the end of a restoration). They must return quickly and must not call
back into anything that waits for the worker: the Tango device only queues the events it will
push. The result of a restoration is published before the state returns to ``ON``, so a client
that sees ``ON`` reads the new result.

Live mode plugs in through :meth:`~RestorationComponent.publish_result`: any source of
:class:`asirp.Restoration` objects (a Bluesky live restorer, for example) hands each one to it
and it is published exactly like the results of :meth:`~RestorationComponent.start`; such a
source reports its failures with :meth:`~RestorationComponent.report_failure` (``ALARM``, which
its next published result clears). :mod:`asirp_device.live` is that source for a bluesky 0MQ
document stream.

Collaborators: the settings and their checks are :mod:`asirp_device.settings`, file access in the
data root is :class:`asirp_device.files.DataFiles`, and request ids with the results kept for
:meth:`~RestorationComponent.fetch_result` are :class:`asirp_device.requests.RequestBook`.
What is left here is one job, the thread-safe state machine behind the device's public surface
(settings, input, start/abort/reset, results, listeners); it is about 700 lines because every
public method documents its errors, which the device turns into Tango reasons.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from asirp.registry import RestorationCancelled, available_methods
from asirp.restore import Restoration, restore
from asirp.safe_files import DataRoot
from asirp_device.files import DataFiles
from asirp_device.requests import RequestBook, ResultRecord, check_request_id
from asirp_device.settings import (
    MAX_SIDE_PX,
    Settings,
    engine_call,
    output_scale,
    parse_parameters,
    validate_flag,
    validate_iterations,
    validate_length_um,
    validate_map,
    validate_method,
    validate_overrides,
    validate_settings,
)

_LOG = logging.getLogger(__name__)

INPUT_ATTRIBUTE_SOURCE = "input_image attribute"
"""The ``source`` recorded for an input written through the Tango attribute."""


class ComponentState(enum.Enum):
    """Operating state of the component (the device maps it to the Tango state of that name)."""

    ON = "ON"
    RUNNING = "RUNNING"
    ALARM = "ALARM"


class RestorationBusy(RuntimeError):
    """A restoration is running, so the request (a new restoration, a reset) is refused."""


class NotReady(RuntimeError):
    """What the request needs is not there yet (no input image, no result to save)."""


StateCallback = Callable[[ComponentState, str], None]
ProgressCallback = Callable[[int], None]
ResultCallback = Callable[[ResultRecord], None]


Task = Callable[[int, Callable[[float], None], threading.Event], str]
"""Work run in the worker slot by :meth:`RestorationComponent.start_task`:
``task(request_id, progress, cancel) -> status line``."""


@dataclass
class _Job:
    image: np.ndarray | None
    source: str
    method: str
    kwargs: dict[str, Any]
    cancel: threading.Event
    started: float
    progress: int = 0
    request_id: int = 0
    task: Task | None = None
    what: str = "restoration"


class RestorationComponent:
    """Settings, input, a worker thread running :func:`asirp.restore`, and change listeners.

    Parameters
    ----------
    settings : Settings, optional
        Initial settings (the device's defaults); every field is validated.
    data_root : str or os.PathLike, optional
        Folder that :meth:`load_image`, :meth:`save_result` and a ``weights`` parameter are
        confined to (an :class:`asirp.safe_files.DataRoot`: files are opened by descriptor,
        ``..`` cannot escape, no symbolic link inside the root is followed). ``None`` disables
        file access.
    overwrite_results : bool
        Let :meth:`save_result` replace an existing file (never the input of the result).
    engine : callable, optional
        The restoration function, :func:`asirp.restore` by default (same signature).

    Raises
    ------
    ValueError, TypeError
        For invalid settings, or a data root that is not an existing folder.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        data_root: str | os.PathLike | None = None,
        overwrite_results: bool = False,
        engine: Callable[..., Restoration] = restore,
    ) -> None:
        settings = settings if settings is not None else Settings()
        self._files = DataFiles(data_root, overwrite_results=overwrite_results)
        self._settings = validate_settings(settings, self._files.pin_weights)
        self._engine = engine
        self._lock = threading.Lock()
        self._notify_lock = threading.RLock()
        self._state = ComponentState.ON
        self._status = "ready: write input_image (or LoadImage) and call Restore"
        self._input: np.ndarray | None = None
        self._input_source = ""
        self._job: _Job | None = None
        self._worker: threading.Thread | None = None
        self._progress = 0
        self._result: ResultRecord | None = None
        self._sequence = 0
        self._requests = RequestBook()
        self._state_callbacks: list[StateCallback] = []
        self._progress_callbacks: list[ProgressCallback] = []
        self._result_callbacks: list[ResultCallback] = []

    # ------------------------------------------------------------------ listeners
    def add_state_callback(self, callback: StateCallback) -> None:
        """Call ``callback(state, status)`` on every change of state or status."""
        self._state_callbacks.append(callback)

    def add_progress_callback(self, callback: ProgressCallback) -> None:
        """Call ``callback(percent)`` (int, 0-100) when the progress changes by 1 % or more."""
        self._progress_callbacks.append(callback)

    def add_result_callback(self, callback: ResultCallback) -> None:
        """Call ``callback(record)`` with every new :class:`ResultRecord`."""
        self._result_callbacks.append(callback)

    def _call(self, callbacks: list[Callable[..., None]], *args: Any) -> None:
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:  # a broken listener must not break the component
                _LOG.exception("listener %r failed", callback)

    # ------------------------------------------------------------------ read-only views
    @property
    def state(self) -> ComponentState:
        """The current :class:`ComponentState`."""
        with self._lock:
            return self._state

    @property
    def status(self) -> str:
        """One line saying what the component is doing or what went wrong."""
        with self._lock:
            return self._status

    @property
    def progress(self) -> int:
        """Progress of the current or last restoration, percent (0-100)."""
        with self._lock:
            return self._progress

    @property
    def settings(self) -> Settings:
        """The settings the next restoration will use."""
        with self._lock:
            return self._settings

    @property
    def input_image(self) -> np.ndarray | None:
        """The input map, read-only float32 ``(H, W)`` (counts), or ``None``."""
        with self._lock:
            return self._input

    @property
    def input_source(self) -> str:
        """Where the input map came from (a path, or ``"input_image attribute"``)."""
        with self._lock:
            return self._input_source

    @property
    def result(self) -> ResultRecord | None:
        """The latest published result, or ``None``."""
        with self._lock:
            return self._result

    @property
    def data_root(self) -> Path | None:
        """The resolved data root, or ``None`` when file access is disabled."""
        return self._files.path

    def require_data_root(self) -> DataRoot:
        """The data root files are confined to.

        Raises
        ------
        asirp.safe_files.DataRootError
            When file access is disabled (no data root).
        """
        return self._files.require_root()

    @property
    def busy(self) -> bool:
        """Whether a restoration is running."""
        with self._lock:
            return self._worker is not None

    @staticmethod
    def available_methods() -> list[str]:
        """The method names the engine offers."""
        return available_methods()

    # ------------------------------------------------------------------ settings
    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._settings = replace(self._settings, **changes)

    def adopt_settings(self, settings: Settings) -> None:
        """Take all of ``settings`` at once (validated together), e.g. those kept by an Init.

        Raises
        ------
        ValueError, TypeError, OSError
            If they do not validate (the current settings stay).
        """
        validated = validate_settings(settings, self._files.pin_weights)
        with self._lock:
            self._settings = validated

    def set_method(self, method: str) -> None:
        """Choose the method used when ``auto_select`` is off (validated against the registry)."""
        self._update(method=validate_method(method))

    def set_auto_select(self, enabled: bool) -> None:
        """Let the engine choose the method (``method="auto"``) or not."""
        self._update(auto_select=validate_flag(enabled))

    def set_iterations(self, iterations: int) -> None:
        """Set the iteration cap of iterative methods (1 to 100000)."""
        self._update(iterations=validate_iterations(iterations))

    def set_beam_fwhm_um(self, fwhm_um: float) -> None:
        """Set the beam FWHM, µm (> 0)."""
        self._update(beam_fwhm_um=validate_length_um(fwhm_um, "beam_fwhm_um"))

    def set_pixel_um(self, pixel_um: float) -> None:
        """Set the scan step (pixel size), µm (> 0)."""
        self._update(pixel_um=validate_length_um(pixel_um, "pixel_um"))

    def set_parameters(self, parameters: Mapping[str, Any] | str) -> None:
        """Set the method's other parameters (a mapping or JSON object text).

        Unless ``auto_select`` is on, they are checked against the current method now (and
        again when a restoration starts, since the method may change in between). With
        ``auto_select`` on, only the selection context among them
        (:data:`~asirp_device.settings.AUTO_CONTEXT_KEYS`: for example
        ``{"budget_ms": 200, "mode": "cheap"}``) reaches the engine, and it is checked when the
        restoration starts (a bad value ends it in ``ALARM``).

        A ``weights`` file is a path in the data root, opened now (see
        :meth:`asirp_device.files.DataFiles.pin_weights`).
        """
        parsed = self._files.pin_weights(parse_parameters(parameters))
        candidate = replace(self.settings, parameters=parsed)
        if not candidate.auto_select:
            engine_call(candidate)
        self._update(parameters=parsed)

    # ------------------------------------------------------------------ input and files
    def set_input(self, image: Any, source: str = INPUT_ATTRIBUTE_SOURCE) -> None:
        """Validate and keep the map to restore next (a copy; the caller's array is untouched)."""
        self._keep_input(validate_map(image), source)

    def _keep_input(self, array: np.ndarray, source: str) -> None:
        with self._lock:
            self._input = array
            self._input_source = source

    def load_image(self, path: str | os.PathLike) -> Path:
        """Read a 2-D map (``.npy``, TIFF, ``file.h5::/dataset``) from the data root as the input.

        The file is opened by descriptor inside the data root and read from that descriptor
        (:mod:`asirp.safe_files`); its declared size is checked before its data are read, and
        HDF5 links or storage in other files are refused (:func:`asirp.io.read_array`).

        Returns
        -------
        pathlib.Path
            The file that was read, inside the (resolved) data root.
        """
        return self._files.load_image(path, self._keep_input)

    def save_result(self, path: str | os.PathLike) -> Path:
        """Write the latest result with its provenance to an HDF5 file inside the data root.

        An existing file is replaced only when the component was made with
        ``overwrite_results=True`` (the ``OverwriteResults`` device property), and the file the
        result was restored from never, even then. The write is atomic and the new file gets
        the usual permissions (``0o666`` less the server's umask).

        Returns
        -------
        pathlib.Path
            The written file, inside the (resolved) data root.

        Raises
        ------
        NotReady
            If there is no result yet.
        asirp.safe_files.OutputExistsError
            If the file exists and overwriting is not allowed.
        asirp.safe_files.ProtectedFileError
            If the file is the input of the result.
        """
        record = self.result
        if record is None:
            raise NotReady("there is no result to save yet: call Restore first")
        return self._files.save_result(path, record.restoration, record.source)

    # ------------------------------------------------------------------ state changes
    def _transition(self, state: ComponentState, status: str) -> None:
        """Set state and status, then tell the listeners (caller holds ``_notify_lock``)."""
        with self._lock:
            self._state, self._status = state, status
        self._call(self._state_callbacks, state, status)

    def _set_progress(self, percent: int) -> None:
        with self._notify_lock:
            with self._lock:
                if percent == self._progress:
                    return
                self._progress = percent
            self._call(self._progress_callbacks, percent)

    def request_settings(self, overrides: Mapping[str, Any] | None = None) -> Settings:
        """The current settings with ``overrides`` (for one request) validated and applied.

        Parameters
        ----------
        overrides : mapping, optional
            Any of ``method``, ``auto_select``, ``iterations``, ``beam_fwhm_um``, ``pixel_um``
            (µm) and ``parameters`` (a mapping or JSON object text; a ``weights`` file in them
            is opened in the data root, as by :meth:`set_parameters`).

        Raises
        ------
        ValueError, TypeError
            For an unknown key or an invalid value.
        """
        # a weights file is opened inside the data root, as for set_parameters
        changes = validate_overrides(overrides, self._files.pin_weights)
        return replace(self.settings, **changes)

    def start(
        self,
        image: Any = None,
        *,
        settings: Mapping[str, Any] | None = None,
        source: str = "Submit",
    ) -> int:
        """Start a restoration in the worker thread and return its request id at once.

        The state is ``RUNNING`` when this returns; it goes back to ``ON`` after the result is
        published, or to ``ALARM`` (reason in the status) if the restoration fails.

        Parameters
        ----------
        image : array_like, optional
            The map to restore, checked like :meth:`set_input`; the input map
            (:attr:`input_image`) is left as it is. ``None`` restores the input map.
        settings : mapping, optional
            Settings for this request only, over the current ones (see
            :meth:`request_settings`); the current settings do not change.
        source : str
            Provenance recorded for ``image`` (the input map keeps its own).

        Returns
        -------
        int
            The request id: the published :class:`ResultRecord` carries it, and
            :meth:`fetch_result` returns that result (and only that one) by it.

        Raises
        ------
        RestorationBusy
            If a restoration is already running.
        NotReady
            If there is no input map (and no ``image``).
        ValueError, TypeError
            If the image or the settings are invalid or do not fit the method (checked before
            anything starts).
        """
        array = None if image is None else validate_map(image)
        chosen = self.request_settings(settings) if settings else None
        with self._notify_lock:
            with self._lock:
                self._refuse_if_busy()
                if array is None and self._input is None:
                    raise NotReady("there is no input image: write input_image or call LoadImage")
                request_settings = chosen if chosen is not None else self._settings
                method, kwargs = engine_call(request_settings)
                scale = output_scale(request_settings)
                job_image = array if array is not None else self._input
                rows, cols = job_image.shape
                if max(rows, cols) * scale > MAX_SIDE_PX:
                    raise ValueError(
                        f"{request_settings.method} would return a {rows * scale}x"
                        f"{cols * scale} px map (scale {scale}); restored_image holds at most "
                        f"{MAX_SIDE_PX} px a side: restore a smaller map or use a smaller scale"
                    )
                request_id = self._requests.new_id()
                job = _Job(
                    image=job_image,
                    source=source if array is not None else self._input_source,
                    method=method,
                    kwargs=kwargs,
                    cancel=threading.Event(),
                    started=time.perf_counter(),
                    request_id=request_id,
                )
                self._job = job
                worker = threading.Thread(
                    target=self._run, args=(job,), name="asirp-restoration", daemon=True
                )
                self._worker = worker
            label = "auto-selected method" if method == "auto" else method
            rows, cols = job.image.shape
            self._transition(
                ComponentState.RUNNING,
                f"restoring a {rows}x{cols} px map with {label} (from {job.source})",
            )
            self._set_progress(0)
        worker.start()
        return request_id

    def _refuse_if_busy(self) -> None:
        """Raise :class:`RestorationBusy` while a job runs (caller holds ``_lock``)."""
        job = self._job
        if job is not None:
            raise RestorationBusy(
                f"a {job.what} is already running ({self._progress} % done); wait for the "
                "state to return to ON, or call Abort"
            )

    def start_task(self, task: Task, *, what: str, status: str) -> int:
        """Run other long work (a tomography reconstruction) in the worker slot; return its id.

        The task takes the place of a restoration: the state is ``RUNNING`` (status
        ``status``) while it runs and a restoration (or another task) is refused meanwhile;
        its progress is the component's. It is called in the worker thread as
        ``task(request_id, progress, cancel)``: ``progress(fraction)`` (0 to 1) reports,
        ``cancel`` is set by :meth:`abort` (the task then raises
        :class:`asirp.registry.RestorationCancelled` at its next step). When it returns its
        status line, the state is ``ON`` with that status; an exception ends it in ``ALARM``
        with the reason in the status (a cancellation: ``ON``). The request id comes from the
        same book as restorations'; :meth:`fetch_result` of it says there is no map.

        Parameters
        ----------
        task : callable
            ``task(request_id, progress, cancel) -> str``.
        what : str
            What it is, for status lines (``"tomography reconstruction"``).
        status : str
            The status line while it runs.

        Returns
        -------
        int
            The request id (also passed to ``task``).

        Raises
        ------
        RestorationBusy
            If a restoration or task is already running.
        """
        with self._notify_lock:
            with self._lock:
                self._refuse_if_busy()
                request_id = self._requests.new_id()
                job = _Job(
                    image=None,
                    source=what,
                    method="",
                    kwargs={},
                    cancel=threading.Event(),
                    started=time.perf_counter(),
                    request_id=request_id,
                    task=task,
                    what=what,
                )
                worker = threading.Thread(
                    target=self._run_task, args=(job,), name="asirp-task", daemon=True
                )
                self._job, self._worker = job, worker
            self._transition(ComponentState.RUNNING, status)
            self._set_progress(0)
        worker.start()
        return request_id

    def _run_task(self, job: _Job) -> None:
        """Worker thread: run a :meth:`start_task` task, then settle the state."""
        assert job.task is not None
        try:
            status = job.task(
                job.request_id, lambda fraction: self._report(job, fraction), job.cancel
            )
        except RestorationCancelled:
            elapsed = time.perf_counter() - job.started
            outcome = (
                ComponentState.ON,
                f"{job.what} aborted at {job.progress} % after {elapsed:.2f} s; nothing written",
            )
            failure = outcome[1]
        except Exception as error:  # every failure is reported, none kills the thread
            _LOG.warning("%s failed", job.what, exc_info=True)
            message = " ".join(str(error).split())
            outcome = (
                ComponentState.ALARM,
                f"{job.what} failed: {type(error).__name__}: {message}; the device is ready "
                "(fix the request and try again, or Reset)",
            )
            failure = outcome[1]
        else:
            self._set_progress(100)
            outcome = (ComponentState.ON, " ".join(str(status).split()))
            failure = f"it was a {job.what}, which makes no restored map: {outcome[1]}"
        with self._notify_lock:
            with self._lock:
                self._requests.fail(job.request_id, failure)
                self._job = None
                self._worker = None
            self._transition(*outcome)

    def _report(self, job: _Job, fraction: float) -> None:
        percent = min(99, max(0, int(100 * fraction)))
        job.progress = percent
        self._set_progress(percent)

    def _run(self, job: _Job) -> None:
        """Worker thread: run the engine, then publish the result or the failure."""
        result: Restoration | None = None
        try:
            result = self._engine(
                job.image,
                job.method,
                progress=lambda fraction: self._report(job, fraction),
                cancel=job.cancel,
                **job.kwargs,
            )
            bad = int(np.count_nonzero(~np.isfinite(result.image)))
            if bad:
                raise ValueError(f"the restoration produced {bad} NaN/Inf value(s)")
        except RestorationCancelled:
            elapsed = time.perf_counter() - job.started
            outcome = (
                ComponentState.ON,
                f"restoration aborted at {job.progress} % after {elapsed:.2f} s; the previous "
                "result is kept",
            )
            result = None
        except Exception as error:  # every engine failure is reported, none kills the thread
            _LOG.warning("restoration failed", exc_info=True)
            message = " ".join(str(error).split())
            outcome = (
                ComponentState.ALARM,
                f"restoration failed: {type(error).__name__}: {message}; the previous result "
                "is kept (fix the input or settings and Restore again, or Reset)",
            )
            result = None
        else:
            outcome = (ComponentState.ON, "")
        with self._notify_lock:
            if result is not None:
                record = self._publish(
                    result, job.source, time.perf_counter() - job.started, job.request_id
                )
                self._set_progress(100)
                outcome = (ComponentState.ON, _describe(record))
            with self._lock:
                if result is None:
                    self._requests.fail(job.request_id, outcome[1])
                self._job = None
                self._worker = None
            self._transition(*outcome)

    def _publish(
        self,
        restoration: Restoration,
        source: str,
        duration_s: float,
        request_id: int | None = None,
        derived_uid: str | None = None,
    ) -> ResultRecord:
        """Record ``restoration`` as the latest result, keep it by request id, tell listeners.

        ``request_id`` is the id of the request it answers; ``None`` (a live result) takes a
        fresh one. ``derived_uid`` is the derived run in tiled that holds a live result.
        """
        restoration.image.flags.writeable = False
        with self._notify_lock:
            with self._lock:
                if request_id is None:
                    request_id = self._requests.new_id()
                self._sequence += 1
                record = ResultRecord(
                    restoration, self._sequence, source, duration_s, request_id, derived_uid
                )
                self._result = record
                self._requests.keep(record)
            self._call(self._result_callbacks, record)
        return record

    def fetch_result(self, request_id: int) -> ResultRecord:
        """The result of request ``request_id``, whichever results came after it.

        Raises
        ------
        NotReady
            While that request is still running.
        RequestFailed
            If it ended without a result (failed or aborted; the message says why).
        UnknownRequest
            If no such request was made, or its result is no longer kept (only the latest
            :data:`asirp_device.requests.RESULT_CACHE_SIZE`, within
            :data:`asirp_device.requests.RESULT_CACHE_BYTES`).
        """
        request_id = check_request_id(request_id)
        with self._lock:
            record = self._requests.find(request_id)
            if record is not None:
                return record
            if self._job is not None and self._job.request_id == request_id:
                raise NotReady(
                    f"request {request_id} is still running ({self._progress} % done); "
                    "fetch it again when it ends"
                )
            error = self._requests.missing(request_id)
        raise error

    def publish_result(
        self, restoration: Restoration, source: str, *, derived_uid: str | None = None
    ) -> ResultRecord:
        """Publish a restoration made elsewhere (live mode) as the latest result.

        Listeners get it exactly like the result of :meth:`start`. Unless a restoration of
        this component is running (its outcome decides), the state becomes ``ON`` (an
        ``ALARM``, a failed restoration, is cleared) and the status names this result.

        Parameters
        ----------
        restoration : asirp.Restoration
            A 2-D result (``restoration.image`` float32 ``(H, W)``).
        source : str
            What produced it (for example the scan's run uid), kept as provenance.
        derived_uid : str, optional
            Uid of the derived run in tiled that holds it (``FetchResult``'s ``derived_uid``).

        Returns
        -------
        ResultRecord
            The published record, with its sequence number.
        """
        validate_map(restoration.image, "the restored image")
        with self._notify_lock:
            record = self._publish(
                restoration, source, float(restoration.elapsed_s), derived_uid=derived_uid
            )
            with self._lock:
                idle = self._job is None
            if idle:  # the status names the newest result (a running restoration's decides)
                self._transition(ComponentState.ON, _describe(record))
        return record

    def report_failure(self, reason: str) -> bool:
        """Enter ``ALARM`` for a restoration that failed elsewhere (live mode).

        Parameters
        ----------
        reason : str
            The status line: what failed and why.

        Returns
        -------
        bool
            Whether the state changed to ``ALARM``; it does not while a restoration of this
            component is running (the outcome of that one decides the state).
        """
        with self._notify_lock:
            with self._lock:
                if self._job is not None:
                    return False
            self._transition(ComponentState.ALARM, " ".join(str(reason).split()))
        return True

    def abort(self) -> bool:
        """Ask the running restoration to stop; return whether one was running.

        It does not wait: the engine stops at its next iteration and the state returns to
        ``ON`` with the previous result kept.
        """
        with self._lock:
            job = self._job
        if job is None:
            return False
        job.cancel.set()
        return True

    def reset(self) -> None:
        """Clear an ``ALARM`` (and the progress) and return to ``ON``; keep input and result.

        Raises
        ------
        RestorationBusy
            While a restoration is running (call :meth:`abort` first).
        """
        with self._notify_lock:
            with self._lock:
                if self._job is not None:
                    raise RestorationBusy(
                        "cannot Reset while a restoration is running; call Abort first"
                    )
                record = self._result
            self._set_progress(0)
            status = _describe(record) if record is not None else "ready after Reset"
            self._transition(ComponentState.ON, status)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running restoration (if any) to end; return whether it has ended."""
        with self._lock:
            worker = self._worker
        if worker is None:
            return True
        worker.join(timeout)
        return not worker.is_alive()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Abort any running restoration and wait up to ``timeout`` s for the worker to end."""
        self.abort()
        self.wait(timeout)


def _describe(record: ResultRecord) -> str:
    """Status line for a result, with the engine's cautions."""
    restoration = record.restoration
    rows, cols = restoration.image.shape[-2:]
    iterations = restoration.params.get("iterations_run")
    run = f" (iterations run: {iterations})" if isinstance(iterations, int) else ""
    reason = restoration.params.get("auto_reason")
    why = f"; auto: {reason}" if reason else ""
    caution = "".join(f"; CAUTION: {note}" for note in restoration.cautions())
    return (
        f"result #{record.sequence}: {rows}x{cols} px restored with {restoration.method}{run} "
        f"in {record.duration_s:.2f} s (from {record.source}){caution}{why}"
    )
