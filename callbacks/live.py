"""Live restoration of maps from Bluesky documents: :class:`LiveRestorer`.

Subscribe a :class:`LiveRestorer` to a RunEngine (``RE.subscribe(restorer)``) or to a 0MQ
:class:`bluesky.callbacks.zmq.RemoteDispatcher`. Documents are routed per run by an
``event_model.RunRouter``, so interleaved runs and several streams are handled; for each run
whose start document describes a 2-D map (see :class:`~callbacks.geometry.ScanGeometry`), the
configured reading (see :class:`~callbacks.mapping.MapSource`) of its map stream is placed on
the pixel grid as ``event`` and ``event_page`` documents arrive.

Restoration
    Every ``every_rows`` completed rows (or ``every_s`` seconds) the partial map is restored, and
    the full map at ``stop``, in one worker thread: the document thread (the RunEngine's) only
    copies the map (about 1 ms for 512 x 512) and never waits. When restoration is slower than
    acquisition, requests coalesce: each run has at most one pending request and a newer one
    replaces it (the latest map wins); the final request is never replaced or dropped.
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
Routing
    The ``RunRouter`` creates one mapper per run and routes start, descriptor and stop
    documents; ``event`` and ``event_page`` documents then go straight to the mapper of their
    descriptor (the RunRouter's own path copies pages through its ``Filler`` and packs every
    event into a page, about 40 times the cost of mapping a point). External data
    (Resource/Datum) is therefore not filled: a mapped field that holds a datum reference is
    unreadable, and those points are skipped.
Publication
    Each raw run gets one derived run (see :mod:`callbacks.publish`), written to tiled when a
    client is given and passed to document subscribers.

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
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from event_model import DocumentRouter, RunRouter

from asirp.psf import beam_sigma_px, gaussian_psf
from asirp.registry import get_method
from asirp.restore import Restoration, restore
from asirp.validation import MIN_SIDE_PX
from callbacks.geometry import MAX_MAP_POINTS, GeometryError, MapTooLarge, ScanGeometry
from callbacks.mapping import LiveMap, MapSource, ResolvedSource, SourceError, fill_unmeasured
from callbacks.publish import DerivedRun, Emit, TiledSink

_LOG = logging.getLogger(__name__)

PUBLISH_MODES = ("final", "all")
MAX_WARNINGS_PER_REASON = 3
"""Skipped points of one run logged individually per reason; the rest are counted."""
MAX_REMEMBERED_RUNS = 32


@dataclass(frozen=True)
class LiveResult:
    """One restoration of a live map (partial or final), as listeners receive it.

    Attributes
    ----------
    run_uid : str
        Uid of the raw run.
    sequence : int
        1 for the run's first restoration, then 2, 3, ...
    final : bool
        Whether this is the restoration of the finished map.
    raw_map : numpy.ndarray
        ``(H, W)`` float32 map that went in: normalised counts, NaN where not measured.
    restored_map : numpy.ndarray or None
        ``(H * s, W * s)`` float32 restored counts (``s``: the method's scale, 1 for
        deconvolution), NaN for rows not restored yet; ``None`` when the restoration failed.
    restoration : asirp.Restoration or None
        The engine's result for the restored rows (method, params, PSF, metrics, timing).
    rows_restored : int
        Leading rows of ``raw_map`` that were restored.
    points_measured, points_expected : int
        Pixels measured when the map was taken, and in the full map.
    error : str or None
        ``"ExceptionType: message"`` when the restoration failed.
    exit_status : str or None
        For final results: the derived run's exit status (``success``, ``abort``, ``fail``).
    derived_uid : str or None
        Uid of the derived run this result was published in (``None`` if not published).
    time : float
        Unix time the result was ready, s.
    """

    run_uid: str
    sequence: int
    final: bool
    raw_map: np.ndarray
    restored_map: np.ndarray | None
    restoration: Restoration | None
    rows_restored: int
    points_measured: int
    points_expected: int
    error: str | None = None
    exit_status: str | None = None
    derived_uid: str | None = None
    time: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the restoration succeeded."""
        return self.error is None and self.restoration is not None

    @property
    def method(self) -> str | None:
        """The method that ran (``None`` if it failed)."""
        return None if self.restoration is None else self.restoration.method

    @property
    def metrics(self) -> dict[str, float]:
        """Image-quality figures of the restoration (empty if it failed)."""
        return {} if self.restoration is None else dict(self.restoration.metrics)

    @property
    def progress(self) -> float:
        """Fraction of the map measured when the map was taken (0 to 1)."""
        return self.points_measured / self.points_expected if self.points_expected else 0.0


Listener = Callable[[LiveResult], None]


@dataclass
class _Job:
    run: _RunState
    image: np.ndarray
    rows: int
    points: int
    final: bool
    exit_status: str = "success"
    reason: str = ""


class _CoalescingWorker:
    """One thread running jobs; at most one pending job per run, the latest one wins.

    A final job is never replaced or dropped; an intermediate job submitted after the run's
    final one is ignored.
    """

    def __init__(self, run_job: Callable[[_Job], None], name: str) -> None:
        self._run_job = run_job
        self._cond = threading.Condition()
        self._pending: collections.OrderedDict[str, _Job] = collections.OrderedDict()
        self._busy = False
        self._closed = False
        self.submitted = 0
        self.coalesced = 0
        self.completed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        key = job.run.uid
        with self._cond:
            if self._closed:
                raise RuntimeError("the restoration worker is closed")
            self.submitted += 1
            queued = self._pending.get(key)
            if queued is not None:
                self.coalesced += 1
                if queued.final and not job.final:
                    return
            self._pending[key] = job  # an existing key keeps its place in the queue
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                _, job = self._pending.popitem(last=False)
                self._busy = True
            try:
                self._run_job(job)
            except Exception:  # the job runner catches its own errors; this is a last guard
                _LOG.exception("live restoration job for run %s failed", job.run.uid)
            finally:
                with self._cond:
                    self._busy = False
                    self.completed += 1
                    self._cond.notify_all()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._busy

    def wait_idle(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float | None) -> bool:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()


class _RunState(DocumentRouter):
    """Documents of one raw run: the live map, its restoration requests and its derived run."""

    def __init__(self, owner: LiveRestorer, start: Mapping[str, Any], geometry: ScanGeometry):
        super().__init__()
        self.owner = owner
        self.start_doc = start
        self.uid: str = start["uid"]
        self.geometry = geometry
        self.map: LiveMap | None = None
        self.source: ResolvedSource | None = None
        self.descriptors: set[str] = set()
        self.skipped: collections.Counter[str] = collections.Counter()
        self.sequence = 0
        self.finished = False
        self.derived: DerivedRun | None = None
        self._requested_rows = 0
        self._last_request = time.monotonic()
        self._fields = geometry.position_fields
        self._use_positions = all(self._fields)
        fwhm = owner.beam_fwhm_um if owner.beam_fwhm_um is not None else start.get("beam_fwhm_um")
        self.beam_fwhm_um = fwhm
        self.pixel_um = geometry.pixel_um(owner.position_scale_um)
        self.min_rows = owner._min_rows_for(self)

    # -- documents --------------------------------------------------------------------------
    def start(self, doc: dict[str, Any]) -> None:
        return None  # everything was read when the run was created (see _factory)

    def descriptor(self, doc: dict[str, Any]) -> None:
        if doc.get("name") != self.geometry.stream or self.finished:
            return
        try:
            source = self.owner.source.resolve(doc.get("data_keys", {}))
        except SourceError as error:
            _LOG.warning("run %s, stream %r: not mapped: %s", self.uid, doc.get("name"), error)
            return
        if self._use_positions and not all(f in doc.get("data_keys", {}) for f in self._fields):
            _LOG.warning(
                "run %s: position fields %s not in stream %r; placing points by sequence number",
                self.uid,
                self._fields,
                doc.get("name"),
            )
            self._use_positions = False
        self.source = source
        if self.map is None:
            self.map = LiveMap(self.geometry, normalized=source.normalize is not None)
        self.descriptors.add(doc["uid"])
        self.owner._route_events(doc["uid"], self)

    def event(self, doc: dict[str, Any]) -> None:
        live_map, source = self.map, self.source
        if live_map is None or source is None or self.finished:
            return
        data = doc["data"]
        value = source.value(data)
        if not math.isfinite(value):
            self._skip("NaN or unreadable reading", doc.get("seq_num"))
            return
        flux = math.nan
        if source.normalize is not None:
            try:
                flux = float(data[source.normalize])
            except (KeyError, TypeError, ValueError):
                flux = math.nan
            if not (flux > 0 and math.isfinite(flux)):
                self._skip("zero, negative or NaN monitor reading", doc.get("seq_num"))
                return
        if self._use_positions:
            try:
                slow = float(data[self._fields[0]])
                fast = float(data[self._fields[1]])
            except (KeyError, TypeError, ValueError):
                self._skip("missing position", doc.get("seq_num"))
                return
            pixel = self.geometry.index_from_position(slow, fast)
            if pixel is None:
                self._skip("position outside the map", doc.get("seq_num"), f" ({slow:g}, {fast:g})")
                return
            row, col = pixel
        else:
            rows, cols, valid = self.geometry.indices_from_sequence(np.array([doc["seq_num"]]))
            if not valid[0]:
                self._skip("sequence number beyond the map", doc.get("seq_num"))
                return
            row, col = int(rows[0]), int(cols[0])
        live_map.add(row, col, value, flux)
        self._maybe_request()

    def event_page(self, doc: dict[str, Any]) -> None:
        live_map, source = self.map, self.source
        if live_map is None or source is None or self.finished:
            return
        data = doc["data"]
        seq = np.asarray(doc["seq_num"], dtype=np.int64)
        n = seq.size
        values = source.values(data, n)
        ok = np.isfinite(values)
        self._skip_many("NaN or unreadable reading", ~ok, seq)
        flux = None
        if source.normalize is not None:
            try:
                flux = np.asarray(data[source.normalize], dtype=np.float64).reshape(n)
            except (KeyError, TypeError, ValueError):
                flux = np.full(n, np.nan)
            good_flux = np.isfinite(flux) & (flux > 0)
            self._skip_many("zero, negative or NaN monitor reading", ok & ~good_flux, seq)
            ok &= good_flux
        rows = cols = None
        if self._use_positions:
            try:
                slow = np.asarray(data[self._fields[0]], dtype=np.float64).reshape(n)
                fast = np.asarray(data[self._fields[1]], dtype=np.float64).reshape(n)
            except (KeyError, TypeError, ValueError):
                self._skip_many("missing position", ok, seq)
                return
            rows, cols, inside = self.geometry.indices_from_positions(slow, fast)
            self._skip_many("position outside the map", ok & ~inside, seq)
        else:
            rows, cols, inside = self.geometry.indices_from_sequence(seq)
            self._skip_many("sequence number beyond the map", ok & ~inside, seq)
        ok &= inside
        if ok.any():
            live_map.add_many(rows[ok], cols[ok], values[ok], None if flux is None else flux[ok])
            self._maybe_request()

    def stop(self, doc: dict[str, Any]) -> None:
        if self.finished:
            return
        status = doc.get("exit_status", "success")
        if status == "success":
            self.finish("success", "")
        else:
            reason = doc.get("reason") or ""
            self.finish(
                "abort",
                f"the raw run ended with exit status {status!r}"
                + (f" ({reason})" if reason else ""),
            )

    # -- helpers ----------------------------------------------------------------------------
    def finish(self, exit_status: str, reason: str) -> None:
        """Request the final restoration (once) and stop mapping this run."""
        if self.finished:
            return
        self.finished = True
        self.owner._forget_run(self)
        for why, count in sorted(self.skipped.items()):
            _LOG.warning("run %s: skipped %d point(s): %s", self.uid, count, why)
        live_map = self.map
        if live_map is None or live_map.points == 0:
            _LOG.warning(
                "run %s: no point of the map was recorded (source %s); no restoration",
                self.uid,
                self.owner.source.describe(),
            )
            return
        # A finished scan restores every row it reached; a cut-short one its complete rows.
        rows = live_map.rows_started if exit_status == "success" else live_map.rows_done
        if exit_status != "success":
            reason = f"{reason}; restored the {rows} complete row(s) of {self.geometry.shape[0]}"
        self._submit(rows, final=True, exit_status=exit_status, reason=reason)

    def _maybe_request(self) -> None:
        live_map = self.map
        done = live_map.rows_done
        if done < self.min_rows or done <= self._requested_rows or done >= live_map.shape[0]:
            return  # too few rows, nothing new, or the whole map: the final request will come
        owner = self.owner
        due = owner.every_rows is not None and done - self._requested_rows >= owner.every_rows
        if not due and owner.every_s is not None:
            due = time.monotonic() - self._last_request >= owner.every_s
        if due:
            self._submit(done, final=False)

    def _submit(self, rows: int, *, final: bool, exit_status: str = "success", reason: str = ""):
        live_map = self.map
        self._requested_rows = rows
        self._last_request = time.monotonic()
        job = _Job(self, live_map.image(), rows, live_map.points, final, exit_status, reason)
        self.owner._worker.submit(job)

    def _skip(self, why: str, seq_num: Any, detail: str = "") -> None:
        self.skipped[why] += 1
        if self.skipped[why] <= MAX_WARNINGS_PER_REASON:
            _LOG.warning("run %s: skipped point seq_num=%s: %s%s", self.uid, seq_num, why, detail)

    def _skip_many(self, why: str, mask: np.ndarray, seq: np.ndarray) -> None:
        count = int(mask.sum())
        if count:
            self._skip(why, seq[mask][0] if count == 1 else f"{seq[mask][0]}.. ({count})")
            self.skipped[why] += count - 1


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

        self._router = RunRouter([self._factory])
        self._runs: dict[str, _RunState] = {}
        self._descriptor_routes: dict[str, _RunState | None] = {}
        self._run_of_descriptor: dict[str, str] = {}
        self._known_runs: set[str] = set()
        self._active: _RunState | None = None
        self._unknown_logged = 0
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._listeners: dict[int, Listener] = {}
        self._doc_listeners: dict[int, Emit] = {}
        self._tokens = itertools.count(1)
        self._latest: LiveResult | None = None
        self._latest_by_run: collections.OrderedDict[str, LiveResult] = collections.OrderedDict()
        self._worker = _CoalescingWorker(self._run_job, name="asirp-live-restore")

    # -- the document entry point ------------------------------------------------------------
    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Take one Bluesky document; never raises (problems are logged and skipped)."""
        try:
            if name in ("event", "event_page"):
                # Fast path to the run's mapper: the RunRouter would pass each page through
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
            run = _RunState(self, start, geometry)
        except MapTooLarge as error:
            _LOG.error("run %s: not restored live: %s", start.get("uid"), error)
            return [], []
        except (GeometryError, ValueError, TypeError) as error:
            _LOG.warning("run %s: not restored live: %s", start.get("uid"), error)
            return [], []
        with self._lock:
            self._runs[run.uid] = run
            self._active = run
        return [run], []

    def _route_events(self, descriptor_uid: str, run: _RunState) -> None:
        self._descriptor_routes[descriptor_uid] = run

    def _drop_run_routes(self, run_uid: str) -> None:
        self._known_runs.discard(run_uid)
        for uid in [d for d, r in self._run_of_descriptor.items() if r == run_uid]:
            self._descriptor_routes.pop(uid, None)
            self._run_of_descriptor.pop(uid, None)

    def _forget_run(self, run: _RunState) -> None:
        with self._lock:
            self._runs.pop(run.uid, None)

    def _min_rows_for(self, run: _RunState) -> int:
        if self.min_rows is not None:
            return self.min_rows
        height = MIN_SIDE_PX
        try:
            # cropped just beyond the map (a kernel taller than the map still means no partial
            # restoration): a start document with a tiny step and a wide beam must not
            # allocate a huge kernel here
            limit = (run.geometry.shape[0] + 2, run.geometry.shape[1] + 2)
            if self.psf is not None:
                height = self.psf.shape[0]
            elif self.psf_sigma_px is not None:
                height = gaussian_psf(self.psf_sigma_px, max_shape=limit).shape[0]
            elif run.beam_fwhm_um is not None:
                sigma = beam_sigma_px(run.beam_fwhm_um, run.pixel_um)
                height = gaussian_psf(sigma, max_shape=limit).shape[0]
        except (TypeError, ValueError):
            pass
        return max(MIN_SIDE_PX, int(height))

    # -- restoration (worker thread) -----------------------------------------------------------
    def _psf_kwargs(self, run: _RunState) -> dict[str, Any]:
        if self.psf is not None:
            return {"psf": self.psf}
        if self.psf_sigma_px is not None:
            return {"psf_sigma_px": self.psf_sigma_px}
        if run.beam_fwhm_um is not None:
            return {"beam_fwhm_um": run.beam_fwhm_um, "pixel_um": run.pixel_um}
        return {}

    def _planned_psf(self, run: _RunState) -> dict[str, Any]:
        kwargs = self._psf_kwargs(run)
        if "psf" in kwargs:
            return {"source": "array", "shape": list(self.psf.shape)}
        if "psf_sigma_px" in kwargs:
            return {"source": "gaussian", "model": "gaussian", "sigma_px": kwargs["psf_sigma_px"]}
        if "beam_fwhm_um" in kwargs:
            return {
                "source": "beam",
                "model": "gaussian",
                "beam_fwhm_um": kwargs["beam_fwhm_um"],
                "pixel_um": list(run.pixel_um),
            }
        return {"source": None}

    def _restore(self, job: _Job) -> LiveResult:
        run = job.run
        run.sequence += 1
        base = {
            "run_uid": run.uid,
            "sequence": run.sequence,
            "final": job.final,
            "raw_map": job.image,
            "rows_restored": job.rows,
            "points_measured": job.points,
            "points_expected": run.geometry.n_points,
        }
        try:
            if job.rows < MIN_SIDE_PX:
                raise ValueError(
                    f"only {job.rows} row(s) measured; restoring needs at least {MIN_SIDE_PX}"
                )
            block, _ = fill_unmeasured(job.image[: job.rows])
            params = dict(self.params)
            if self.method == "auto":  # quick choices while the scan runs, a careful one at the end
                params.setdefault("mode", "thorough" if job.final else "cheap")
            restoration = restore(
                block,
                self.method,
                device=self.device,
                cancel=self._cancel,
                seed=self.seed,
                **self._psf_kwargs(run),
                **params,
            )
        except Exception as error:  # a failing method must never reach the RunEngine
            message = f"{type(error).__name__}: {' '.join(str(error).split())}"
            _LOG.error(
                "run %s: %s restoration %d failed: %s",
                run.uid,
                "final" if job.final else "partial",
                run.sequence,
                message,
            )
            return LiveResult(**base, restored_map=None, restoration=None, error=message)
        _LOG.info(
            "run %s: %s restoration %d: %s on %d row(s) in %.2f s",
            run.uid,
            "final" if job.final else "partial",
            run.sequence,
            restoration.method,
            job.rows,
            restoration.elapsed_s,
        )
        scale = restoration.image.shape[0] // job.rows
        height, width = run.geometry.shape
        full = np.full((height * scale, width * scale), np.nan, dtype=np.float32)
        full[: restoration.image.shape[0], : restoration.image.shape[1]] = restoration.image
        return LiveResult(**base, restored_map=full, restoration=restoration)

    def _run_job(self, job: _Job) -> None:
        run = job.run
        result = self._restore(job)
        if run.derived is None:
            run.derived = DerivedRun(
                run.start_doc,
                {
                    "method_requested": self.method,
                    "parameters_requested": self.params,
                    "psf": self._planned_psf(run),
                    "map": {
                        "source": self.source.describe(),
                        "geometry": run.geometry.as_dict(),
                        "pixel_um": list(run.pixel_um),
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
        if run is not None and run.map is not None and not run.finished:
            return run.map.image()
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
        if run is None or run.map is None:
            return 0.0
        return run.map.progress

    @property
    def active_run(self) -> str | None:
        """Uid of the run being mapped (``None`` between runs)."""
        with self._lock:
            run = self._active
        return None if run is None or run.finished else run.uid

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
            run.finish("abort", reason)
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
