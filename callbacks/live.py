"""Live restoration of maps from Bluesky documents: :class:`LiveRestorer`.

Subscribe a :class:`LiveRestorer` to a RunEngine (``RE.subscribe(restorer)``) or to a 0MQ
:class:`bluesky.callbacks.zmq.RemoteDispatcher`. Documents are routed per run by an
``event_model.RunRouter``, so interleaved runs and several streams are handled; for each run
whose start document describes a 2-D map (see :class:`~callbacks.geometry.ScanGeometry`), a
:class:`~callbacks.assembler.MapAssembler` places the configured reading (see
:class:`~callbacks.mapping.MapSource`) of its map stream on the pixel grid as ``event`` and
``event_page`` documents arrive.

Restoration
    Every ``every_rows`` completed rows (or ``every_s`` seconds) the partial map is restored, and
    the full map at ``stop``, in one worker thread (:class:`~callbacks.worker.CoalescingWorker`):
    the document thread (the RunEngine's) only copies the map (about 1 ms for 512 x 512) and
    never waits. When restoration is slower than acquisition, requests coalesce: each run has at
    most one pending request and a newer one replaces it (the latest map wins); the final
    request is never replaced or dropped.
Masking
    A partial map is restored on its leading rows that are done (complete, or passed by the
    scan); rows not yet measured are not invented: they are NaN in ``restored_map`` and are
    left out of the restoration (so the restoration's lower edge is a free boundary, handled by
    the methods' ``boundary`` rule). Isolated unmeasured pixels inside those rows (skipped
    points) are filled with the mean of the measured pixels of the block before restoring.
Failures
    A restoration that raises is caught in the worker and logged; the result carries the error,
    listeners hear about it, and the derived run's stop document says ``fail`` with the reason
    when the final restoration fails. Bad documents (no ``shape``, NaN readings, events of an
    unknown descriptor, positions outside the map) are logged and skipped; nothing raised here
    reaches the RunEngine. Documents are untrusted input: a start document whose map has more
    than ``max_map_points`` points (default :data:`callbacks.geometry.MAX_MAP_POINTS`) is
    refused with a logged error before anything is allocated for it, and its run is skipped.
    Everything is logged to this module's logger, the assemblers' skipped points included.
Routing
    The ``RunRouter`` creates one assembler per run and routes start, descriptor and stop
    documents; ``event`` and ``event_page`` documents then go straight to the assembler of
    their descriptor (the RunRouter's own path copies pages through its ``Filler`` and packs
    every event into a page, about 40 times the cost of mapping a point). External data
    (Resource/Datum) is therefore not filled: a mapped field that holds a datum reference is
    unreadable, and those points are skipped.
Publication
    Each raw run gets one derived run (see :mod:`callbacks.publish`), written to tiled when a
    client is given and passed to document subscribers. Listeners get each
    :class:`~callbacks.result.LiveResult`.

Examples
--------
>>> from bluesky import RunEngine
>>> from bluesky.plans import grid_scan
>>> import sim
>>> from callbacks import LiveRestorer
>>> bl = sim.make_beamline(sample="ag300", beam_fwhm_um=50.0, seed=0)
>>> restorer = LiveRestorer("xrf_Cu", "richardson_lucy", normalize="i0", beam_fwhm_um=50.0)
>>> RE = RunEngine({})
>>> token = RE.subscribe(restorer)
>>> uid, = RE(grid_scan(bl.detectors, bl.y, -100, 100, 21, bl.x, -100, 100, 21))
>>> restorer.wait(60)
True
>>> restorer.latest.restored_map.shape
(21, 21)
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from event_model import RunRouter

from asirp.registry import get_method
from asirp.validation import MIN_SIDE_PX
from callbacks.assembler import MapAssembler
from callbacks.geometry import MAX_MAP_POINTS, GeometryError, MapTooLarge, ScanGeometry
from callbacks.jobs import Job, RestorationSpec, RunJobs
from callbacks.mapping import MapSource
from callbacks.publish import DerivedRun, Emit, TiledSink
from callbacks.result import Listener, LiveResult
from callbacks.worker import CoalescingWorker

__all__ = ["LiveRestorer", "LiveResult"]

_LOG = logging.getLogger(__name__)

PUBLISH_MODES = ("final", "all")
MAX_REMEMBERED_RUNS = 32


class LiveRestorer:
    """Restore maps live from Bluesky documents, and publish derived runs.

    Parameters
    ----------
    field : str or sequence of str, optional
        Event field(s) to map (several are summed). Or give ``element`` or ``spectrum``.
    method : str
        Restoration method (``asirp.available_methods()`` or ``"auto"``). With ``"auto"`` the
        selector runs in its ``"cheap"`` mode for partial maps and its ``"thorough"`` mode for
        the final map of a run, unless ``params`` sets ``mode``.
    params : mapping, optional
        The method's parameters (validated now, for a named method).
    element : str, optional
        Map the stream's element-ROI field ``<detector>_<element>`` (e.g. ``"Cu"``).
    spectrum : str, optional
        Spectrum field to channel-add over ``channels``.
    channels : (int, int), optional
        Channel range ``start:stop`` of ``spectrum``.
    normalize : str, optional
        Flux-monitor field to normalise by (e.g. ``"i0"``).
    stream : str, optional
        Event stream of the map (default: from the start document's hints, else primary).
    beam_fwhm_um : float or (float, float), optional
        Beam FWHM, µm, (vertical, horizontal) if anisotropic; default: the start document's
        ``beam_fwhm_um``. With the scan step from the start document's extents and shape
        this gives the Gaussian PSF.
    psf_sigma_px : float or (float, float), optional
        Gaussian PSF sigma in pixels instead of the beam.
    psf : array_like, optional
        PSF array ``(h, w)`` instead of the beam.
    position_scale_um : float
        µm per motor unit (1 for µm stages, 1000 for mm stages).
    every_rows : int or None
        Restore the partial map each time this many more rows are done (None: never).
    every_s : float or None
        ... or when this many seconds have passed since the last request and rows were added.
    min_rows : int, optional
        Fewest rows for a partial restoration (default: the PSF's height, at least
        ``asirp.validation.MIN_SIDE_PX``).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    tiled : tiled client, optional
        Writable tiled catalog for the derived runs (``None``: not written; document
        subscribers still get them).
    publish : {"final", "all"}
        Publish only the final restoration of each run, or every partial one too.
    seed : int
        Seed for methods that use randomness.
    max_map_points : int
        Largest map restored, in points; a run whose start document describes a larger one is
        skipped (logged error) before its map is allocated.

    Attributes
    ----------
    source : MapSource
        What is mapped.
    """

    def __init__(
        self,
        field: str | Sequence[str] | None = None,
        method: str = "auto",
        params: Mapping[str, Any] | None = None,
        *,
        element: str | None = None,
        spectrum: str | None = None,
        channels: tuple[int, int] | None = None,
        normalize: str | None = None,
        stream: str | None = None,
        beam_fwhm_um: float | Sequence[float] | None = None,
        psf_sigma_px: float | Sequence[float] | None = None,
        psf: Any = None,
        position_scale_um: float = 1.0,
        every_rows: int | None = 8,
        every_s: float | None = None,
        min_rows: int | None = None,
        device: str = "auto",
        tiled: Any = None,
        publish: str = "final",
        seed: int = 0,
        max_map_points: int = MAX_MAP_POINTS,
    ) -> None:
        self.source = MapSource(
            field=tuple(field) if field is not None and not isinstance(field, str) else field,
            element=element,
            spectrum=spectrum,
            channels=channels,
            normalize=normalize,
        )
        if not isinstance(method, str):
            raise TypeError(f"method must be a string, got {method!r}")
        self.params = dict(params or {})
        if method != "auto":
            get_method(method).resolve_params(self.params)  # unknown names, ranges: raise now
        self.method = method
        if sum(x is not None for x in (beam_fwhm_um, psf_sigma_px, psf)) > 1:
            raise ValueError("give one PSF description: beam_fwhm_um, psf_sigma_px or psf")
        self.beam_fwhm_um = beam_fwhm_um
        self.psf_sigma_px = psf_sigma_px
        self.psf = None if psf is None else np.asarray(psf, dtype=np.float32)
        if not (isinstance(position_scale_um, int | float) and position_scale_um > 0):
            raise ValueError(f"position_scale_um must be > 0, got {position_scale_um!r}")
        self.position_scale_um = float(position_scale_um)
        if every_rows is not None and (isinstance(every_rows, bool) or int(every_rows) < 1):
            raise ValueError(f"every_rows must be an integer >= 1 or None, got {every_rows!r}")
        if every_s is not None and not every_s > 0:
            raise ValueError(f"every_s must be > 0 s or None, got {every_s!r}")
        if min_rows is not None and int(min_rows) < MIN_SIDE_PX:
            raise ValueError(f"min_rows must be >= {MIN_SIDE_PX}, got {min_rows!r}")
        if publish not in PUBLISH_MODES:
            raise ValueError(f"publish must be one of {PUBLISH_MODES}, got {publish!r}")
        self.every_rows = None if every_rows is None else int(every_rows)
        self.every_s = every_s
        self.min_rows = None if min_rows is None else int(min_rows)
        self.stream = stream
        self.device = device
        self.publish = publish
        self.seed = int(seed)
        if isinstance(max_map_points, bool) or int(max_map_points) < 1:
            raise ValueError(f"max_map_points must be an integer >= 1, got {max_map_points!r}")
        self.max_map_points = int(max_map_points)
        self.tiled = TiledSink(tiled) if tiled is not None else None
        self._spec = RestorationSpec(
            method=self.method,
            params=self.params,
            device=self.device,
            seed=self.seed,
            psf=self.psf,
            psf_sigma_px=self.psf_sigma_px,
            min_rows=self.min_rows,
        )

        self._router = RunRouter([self._factory])
        self._runs: dict[str, RunJobs] = {}
        self._descriptor_routes: dict[str, MapAssembler | None] = {}
        self._run_of_descriptor: dict[str, str] = {}
        self._known_runs: set[str] = set()
        self._active: RunJobs | None = None
        self._unknown_logged = 0
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._listeners: dict[int, Listener] = {}
        self._doc_listeners: dict[int, Emit] = {}
        self._tokens = itertools.count(1)
        self._latest: LiveResult | None = None
        self._latest_by_run: collections.OrderedDict[str, LiveResult] = collections.OrderedDict()
        self._worker: CoalescingWorker[Job] = CoalescingWorker(
            self._run_job, name="asirp-live-restore", what="restoration worker"
        )

    # -- the document entry point ------------------------------------------------------------
    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Take one Bluesky document; never raises (problems are logged and skipped)."""
        try:
            if name in ("event", "event_page"):
                # Fast path to the run's assembler: the RunRouter would pass each page through
                # its Filler (a copy) and pack each event into a page first (about 40 times
                # the cost of mapping the point; see bench/bench_live.py).
                route = self._descriptor_routes.get(doc["descriptor"], False)
                if route is False:
                    self._unknown(name, doc)
                elif route is not None:
                    getattr(route, name)(doc)
                return
            if name == "start":
                if doc["uid"] in self._known_runs:
                    _LOG.warning("ignored a second start document for run %s", doc["uid"])
                    return
                self._known_runs.add(doc["uid"])
            elif name == "descriptor":
                if doc["run_start"] not in self._known_runs:
                    self._unknown(name, doc)
                    return
                self._descriptor_routes[doc["uid"]] = None
                self._run_of_descriptor[doc["uid"]] = doc["run_start"]
            elif name == "stop" and doc["run_start"] not in self._known_runs:
                self._unknown(name, doc)
                return
            self._router(name, doc)
            if name == "stop":
                self._drop_run_routes(doc["run_start"])
        except Exception:
            _LOG.exception("live restorer: skipped a bad %s document", name)

    def _unknown(self, name: str, doc: Mapping[str, Any]) -> None:
        self._unknown_logged += 1
        if self._unknown_logged <= 10 or self._unknown_logged % 1000 == 0:
            _LOG.warning(
                "live restorer: skipped %s document(s) for an unknown %s (%d so far)",
                name,
                "run" if name in ("descriptor", "stop") else "descriptor",
                self._unknown_logged,
            )

    def _factory(self, name: str, start: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        try:
            geometry = ScanGeometry.from_start(start, self.stream, max_points=self.max_map_points)
            beam = self.beam_fwhm_um if self.beam_fwhm_um is not None else start.get("beam_fwhm_um")
            pixel_um = geometry.pixel_um(self.position_scale_um)
            run = RunJobs(
                start,
                geometry,
                self.source,
                beam_fwhm_um=beam,
                pixel_um=pixel_um,
                min_rows=self._spec.min_rows_for(geometry, beam, pixel_um),
                every_rows=self.every_rows,
                every_s=self.every_s,
                submit=self._worker.submit,
                route_events=self._route_events,
                forget=self._forget_run,
            )
        except MapTooLarge as error:
            _LOG.error("run %s: not restored live: %s", start.get("uid"), error)
            return [], []
        except (GeometryError, ValueError, TypeError) as error:
            _LOG.warning("run %s: not restored live: %s", start.get("uid"), error)
            return [], []
        with self._lock:
            self._runs[run.uid] = run
            self._active = run
        return [run.assembler], []

    def _route_events(self, descriptor_uid: str, assembler: MapAssembler) -> None:
        self._descriptor_routes[descriptor_uid] = assembler

    def _drop_run_routes(self, run_uid: str) -> None:
        self._known_runs.discard(run_uid)
        for uid in [d for d, r in self._run_of_descriptor.items() if r == run_uid]:
            self._descriptor_routes.pop(uid, None)
            self._run_of_descriptor.pop(uid, None)

    def _forget_run(self, run_uid: str) -> None:
        with self._lock:
            self._runs.pop(run_uid, None)

    # -- restoration (worker thread) -----------------------------------------------------------
    def _run_job(self, job: Job) -> None:
        run = job.run
        result = self._spec.restore(job, self._cancel)
        if run.derived is None:
            run.derived = DerivedRun(
                run.start_doc,
                {
                    "method_requested": self.method,
                    "parameters_requested": self.params,
                    "psf": self._spec.planned_psf(run.beam_fwhm_um, run.pixel_um),
                    "map": {
                        "source": self.source.describe(),
                        "geometry": run.geometry.as_dict(),
                        "pixel_um": list(run.pixel_um),
                        # µm per motor unit: the derived run's map coordinates are in µm
                        "position_scale_um": self.position_scale_um,
                        "masking": "leading rows that are done are restored; rows not yet "
                        "measured are NaN and left out; unmeasured pixels inside them take "
                        "the mean of the measured ones",
                    },
                    "live": {
                        "every_rows": self.every_rows,
                        "every_s": self.every_s,
                        "min_rows": run.min_rows,
                        "publish": self.publish,
                    },
                },
                self._emit_derived,
            )
        derived = run.derived
        exit_status = None
        try:
            if result.ok and (job.final or self.publish == "all"):
                derived.add(result)
            elif not result.ok:
                derived.count_failure()
            if job.final:
                if result.ok:
                    exit_status, reason = job.exit_status, job.reason
                else:
                    exit_status, reason = "fail", result.error or "restoration failed"
                derived.close(exit_status, reason, result)
        except Exception:
            _LOG.exception("run %s: publishing the derived run failed", run.uid)
        result = replace(result, exit_status=exit_status, derived_uid=derived.uid, time=time.time())
        with self._lock:
            self._latest = result
            self._latest_by_run[run.uid] = result
            self._latest_by_run.move_to_end(run.uid)
            while len(self._latest_by_run) > MAX_REMEMBERED_RUNS:
                self._latest_by_run.popitem(last=False)
            listeners = list(self._listeners.values())
        for listener in listeners:
            try:
                listener(result)
            except Exception:
                _LOG.exception("live restorer listener %r failed", listener)

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

    # -- public API ------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> int:
        """Call ``listener(result)`` with every :class:`LiveResult`; return a token.

        Listeners run in the worker thread, after the result is published; they should return
        quickly (queue the result for a GUI thread, push a Tango event, ...).
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

    def unsubscribe(self, token: int) -> None:
        """Remove a listener or document subscriber."""
        with self._lock:
            self._listeners.pop(token, None)
            self._doc_listeners.pop(token, None)

    @property
    def latest(self) -> LiveResult | None:
        """The most recent result (any run), or ``None``."""
        with self._lock:
            return self._latest

    def latest_for(self, run_uid: str) -> LiveResult | None:
        """The most recent result of one raw run (the last 32 runs are remembered)."""
        with self._lock:
            return self._latest_by_run.get(run_uid)

    @property
    def raw_map(self) -> np.ndarray | None:
        """The current run's map so far ``(H, W)`` float32 (NaN: unmeasured), or the last one's."""
        with self._lock:
            run = self._active
        if run is not None and run.assembler.map is not None and not run.assembler.finished:
            return run.assembler.map.image()
        latest = self.latest
        return None if latest is None else latest.raw_map

    @property
    def restored_map(self) -> np.ndarray | None:
        """The latest restored map ``(H * s, W * s)`` float32, or ``None``."""
        latest = self.latest
        return None if latest is None else latest.restored_map

    @property
    def method_used(self) -> str | None:
        """The method that ran for the latest result (``auto`` resolved); ``None`` if it failed."""
        latest = self.latest
        return None if latest is None else latest.method

    @property
    def metrics(self) -> dict[str, float]:
        """Image-quality figures of the latest result (empty before one, or if it failed)."""
        latest = self.latest
        return {} if latest is None else latest.metrics

    @property
    def progress(self) -> float:
        """Fraction of the current (or last) run's map measured, 0 to 1."""
        with self._lock:
            run = self._active
        if run is None or run.assembler.map is None:
            return 0.0
        return run.assembler.map.progress

    @property
    def active_run(self) -> str | None:
        """Uid of the run being mapped (``None`` between runs)."""
        with self._lock:
            run = self._active
        return None if run is None or run.assembler.finished else run.uid

    @property
    def stats(self) -> dict[str, int]:
        """Restoration requests submitted, coalesced (superseded) and completed."""
        worker = self._worker
        return {
            "submitted": worker.submitted,
            "coalesced": worker.coalesced,
            "completed": worker.completed,
        }

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every requested restoration is done; return whether it is."""
        return self._worker.wait_idle(timeout)

    def finish_open_runs(self, reason: str) -> list[str]:
        """End the runs still open (no stop document yet): restore what was measured.

        Their derived runs end with exit status ``abort`` and ``reason`` (``fail`` if the
        restoration fails). Used when the process shuts down in the middle of a scan.

        Returns
        -------
        list of str
            Uids of the raw runs ended.
        """
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.assembler.finish("abort", reason)
            self._drop_run_routes(run.uid)
        return [run.uid for run in runs]

    def close(self, timeout: float | None = None, *, cancel: bool = False) -> bool:
        """Finish the queued restorations and stop the worker.

        Parameters
        ----------
        timeout : float, optional
            Longest wait, s.
        cancel : bool
            Stop a running restoration at its next iteration (it is published as failed with
            ``RestorationCancelled``); queued ones still run unless cancelled too.

        Returns
        -------
        bool
            Whether the worker ended within ``timeout``.
        """
        if cancel:
            self._cancel.set()
        return self._worker.close(timeout)
