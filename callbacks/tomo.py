"""Live tomography from Bluesky documents: :class:`LiveTomoReconstruction`.

Subscribe it to a RunEngine (``RE.subscribe(live)``) or a 0MQ dispatcher. It acts on runs whose
start document carries ``md["tomo"]`` (as :func:`bluesky_plans.tomo.tomo_scan` writes it; other
runs are ignored) and collects, from the events of three streams, the dark frames, the flat
frames and the projections with their rotation angles.

At the run's stop document, in one worker thread (:class:`~callbacks.worker.CoalescingWorker`;
the RunEngine's thread only copies frames), it

1. writes the raw scan as Data Exchange HDF5, ``<output_dir>/<uid8>_raw.h5``
   (:func:`asirp.tomo.exchange_write.write_exchange`), and
2. reconstructs it with :func:`asirp.tomo.pipeline.run_tomo` into
   ``<output_dir>/<uid8>_recon.nxs`` (raw and restored volumes),

where ``uid8`` is the first 8 characters of the run's uid. Existing files are never replaced.

Metadata (``md["tomo"]``, untrusted)
    ``projections_stream`` (default ``"primary"``), ``flats_stream`` (``"flats"``),
    ``darks_stream`` (``"darks"``), ``image_field`` (required), ``angle_field`` (required),
    ``angle_units`` (``"deg"`` or ``"rad"``; the angle's data key ``units`` wins),
    ``pixel_um`` and ``psf_fwhm_um`` (optional, µm), ``num_projections``, ``n_flats``,
    ``n_darks`` (optional, for the size check before the first frame). The callback's own
    ``pixel_um`` and ``psf_fwhm_um`` override the document's.
Sizes
    Frames are float32 copies; a run whose frames (those announced, then those received) would
    exceed ``max_stack_bytes`` is refused before they are kept, and its frames are dropped.
Failures
    A malformed run (unusable ``md["tomo"]``, a missing field, a frame of another shape, NaN,
    a missing stream, too few projections, a run that did not succeed) is one clear recorded
    error: the first problem of a run is logged and kept, the rest of the run is ignored.
    Writing or reconstruction errors are caught in the worker. Every failure is logged,
    appended to :attr:`LiveTomoReconstruction.failures` and kept in the run's
    :class:`TomoOutcome`; nothing raised here reaches the RunEngine, so the scan completes.
Waiting
    :meth:`LiveTomoReconstruction.wait` blocks until a run's outcome is known and returns it
    (its ``raw_path``, ``recon_path`` and :class:`~asirp.tomo.pipeline.TomoResult`).

Examples
--------
>>> from bluesky import RunEngine
>>> from bluesky_plans.tomo import tomo_scan
>>> from callbacks.tomo import LiveTomoReconstruction
>>> from sim.tomo_devices import make_tomo_beamline
>>> bl = make_tomo_beamline(shape=(4, 64), seed=0)  # doctest: +SKIP
>>> live = LiveTomoReconstruction("/data/recon", method="richardson_lucy")  # doctest: +SKIP
>>> RE = RunEngine({})  # doctest: +SKIP
>>> RE.subscribe(live)  # doctest: +SKIP
>>> RE(tomo_scan(bl.detector, bl.rotation, bl.shutter, sample=bl.sample))  # doctest: +SKIP
>>> live.wait(120).recon_path  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import logging
import math
import numbers
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from event_model import DocumentRouter, unpack_event_page

from asirp.tomo.exchange import TomoScan
from asirp.tomo.exchange_write import write_exchange
from asirp.tomo.pipeline import TomoResult, run_tomo
from callbacks.worker import CoalescingWorker

__all__ = ["LiveTomoReconstruction", "TomoFailure", "TomoOutcome"]

_LOG = logging.getLogger(__name__)

MD_KEY = "tomo"
"""Start-document key of the scan's description."""
DEFAULT_MAX_STACK_BYTES = 4 << 30
"""Default most bytes of float32 frames kept for one run (4 GiB)."""
MAX_OPEN_RUNS = 4
"""Runs collected at once (started, not stopped); past it the oldest is given up."""
MAX_REMEMBERED = 64
"""Outcomes kept (the oldest are forgotten)."""
ROLES = ("darks", "flats", "projections")
_UID = re.compile(r"[0-9A-Za-z_-]{8,}")
_DEGREES = ("deg", "degree", "degrees")
_RADIANS = ("rad", "radian", "radians")


class TomoDocumentError(ValueError):
    """A run's documents cannot make a tomography scan (one sentence)."""


@dataclass(frozen=True)
class TomoFailure:
    """One failed run.

    Attributes
    ----------
    run_uid : str
        The raw run.
    stage : str
        ``"documents"`` (malformed or unusable run), ``"raw file"`` or ``"reconstruction"``.
    message : str
        What went wrong, in one sentence.
    """

    run_uid: str
    stage: str
    message: str


@dataclass
class TomoOutcome:
    """What became of one tomography run.

    Attributes
    ----------
    run_uid : str
        The raw run.
    exit_status : str
        The raw run's exit status (``""`` when it never stopped).
    raw_path : pathlib.Path or None
        The Data Exchange file written, if any.
    recon_path : pathlib.Path or None
        The reconstruction written, if any.
    result : TomoResult or None
        :func:`asirp.tomo.pipeline.run_tomo`'s result (volumes, centre, cautions).
    failure : TomoFailure or None
        Why there is no reconstruction.
    """

    run_uid: str
    exit_status: str
    raw_path: Path | None = None
    recon_path: Path | None = None
    result: TomoResult | None = None
    failure: TomoFailure | None = None

    @property
    def ok(self) -> bool:
        """Whether the reconstruction was written."""
        return self.failure is None and self.recon_path is not None


@dataclass(frozen=True)
class _Config:
    """A run's ``md["tomo"]``, checked."""

    streams: dict[str, str]  # stream name -> role
    image_field: str
    angle_field: str
    angle_units: str
    pixel_um: float | None
    psf_fwhm_um: float | None
    expected_frames: int


@dataclass
class _Run:
    """One tomography run being collected (document thread only)."""

    uid: str
    tag: str
    config: _Config
    descriptors: dict[str, str] = field(default_factory=dict)  # descriptor uid -> role
    frames: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {role: [] for role in ROLES}
    )
    angles: list[float] = field(default_factory=list)
    angle_radians: bool = False
    frame_shape: tuple[int, int] | None = None
    nbytes: int = 0
    error: str | None = None


@dataclass
class _Job:
    """A collected run for the worker: its frames, where to write, how to reconstruct."""

    run: _Run
    exit_status: str
    raw_path: Path
    recon_path: Path
    final: bool = True

    @property
    def key(self) -> str:
        return self.run.uid


def _positive(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TomoDocumentError(f"{what} must be a number of µm, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise TomoDocumentError(f"{what} must be > 0 µm, got {value!r}")
    return number


def _text(tomo: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = tomo.get(key, default)
    if not isinstance(value, str) or not value:
        raise TomoDocumentError(f'md["tomo"]["{key}"] must be a non-empty string, got {value!r}')
    return value


def _units(value: Any, where: str) -> str:
    units = str(value).strip().lower()
    if units in _DEGREES:
        return "deg"
    if units in _RADIANS:
        return "rad"
    raise TomoDocumentError(f"{where} must be degrees or radians, got {value!r}")


def _config(tomo: Any) -> _Config:
    """Check a start document's ``md["tomo"]``."""
    if not isinstance(tomo, Mapping):
        raise TomoDocumentError(f'md["tomo"] must be a mapping, got {type(tomo).__name__}')
    streams = {
        _text(tomo, "darks_stream", "darks"): "darks",
        _text(tomo, "flats_stream", "flats"): "flats",
        _text(tomo, "projections_stream", "primary"): "projections",
    }
    if len(streams) != 3:
        raise TomoDocumentError('md["tomo"] names one stream for two kinds of frames')
    expected = 0
    for key in ("num_projections", "n_flats", "n_darks"):
        count = tomo.get(key, 0)
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise TomoDocumentError(f'md["tomo"]["{key}"] must be an integer >= 0, got {count!r}')
        expected += int(count)
    return _Config(
        streams=streams,
        image_field=_text(tomo, "image_field"),
        angle_field=_text(tomo, "angle_field"),
        angle_units=_units(tomo.get("angle_units", "deg"), 'md["tomo"]["angle_units"]'),
        pixel_um=_positive(tomo.get("pixel_um"), 'md["tomo"]["pixel_um"]'),
        psf_fwhm_um=_positive(tomo.get("psf_fwhm_um"), 'md["tomo"]["psf_fwhm_um"]'),
        expected_frames=expected,
    )


def _frame_shape(data_key: Any, field_name: str) -> tuple[int, int]:
    """``(rows, columns)`` from an image's data key (``[rows, cols]`` or ``[1, rows, cols]``)."""
    shape = data_key.get("shape") if isinstance(data_key, Mapping) else None
    if isinstance(shape, list | tuple) and len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 2
        or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in shape)
        or min(shape) < 1
    ):
        raise TomoDocumentError(
            f"data key {field_name} must describe a 2-D image (shape [rows, columns]), "
            f"got shape {shape!r}"
        )
    return int(shape[0]), int(shape[1])


class LiveTomoReconstruction(DocumentRouter):
    """Collect tomography runs from Bluesky documents; write and reconstruct each at its stop.

    Parameters
    ----------
    output_dir : str or os.PathLike
        Existing folder of the raw (``<uid8>_raw.h5``) and reconstruction
        (``<uid8>_recon.nxs``) files.
    method : str
        Restoration of the projections (:func:`asirp.tomo.pipeline.run_tomo`): ``"auto"``,
        ``"none"`` or a registered method.
    params : mapping, optional
        The method's parameters.
    psf_fwhm_um, pixel_um : float, optional
        Detector PSF FWHM and pixel, µm (default: the start document's ``md["tomo"]``).
    centre : float, optional
        Rotation axis, detector columns (default: found).
    seed : int
        Seed of methods that use randomness.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    max_stack_bytes : int
        Most bytes of float32 frames kept for one run.

    Attributes
    ----------
    failures : list of TomoFailure
        Every failed run, in order.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        method: str = "auto",
        params: Mapping[str, Any] | None = None,
        psf_fwhm_um: float | None = None,
        pixel_um: float | None = None,
        centre: float | None = None,
        seed: int = 0,
        device: str = "cpu",
        max_stack_bytes: int = DEFAULT_MAX_STACK_BYTES,
    ) -> None:
        super().__init__()
        folder = Path(output_dir)
        if not folder.is_dir():
            raise ValueError(f"output_dir {folder} is not an existing folder")
        if isinstance(max_stack_bytes, bool) or int(max_stack_bytes) < 1:
            raise ValueError(f"max_stack_bytes must be an integer >= 1, got {max_stack_bytes!r}")
        if not isinstance(method, str) or not method:
            raise ValueError(f"method must be a method name, got {method!r}")
        try:
            self.psf_fwhm_um = _positive(psf_fwhm_um, "psf_fwhm_um")
            self.pixel_um = _positive(pixel_um, "pixel_um")
        except TomoDocumentError as error:
            raise ValueError(str(error)) from None
        self.output_dir = folder
        self.method = method
        self.params = dict(params or {})
        self.centre = centre
        self.seed = int(seed)
        self.device = device
        self.max_stack_bytes = int(max_stack_bytes)
        self.failures: list[TomoFailure] = []
        self._runs: collections.OrderedDict[str, _Run] = collections.OrderedDict()
        self._descriptor_run: dict[str, str] = {}
        self._outcomes: collections.OrderedDict[str, TomoOutcome] = collections.OrderedDict()
        self._last_run: str | None = None
        self._cond = threading.Condition()
        self._worker: CoalescingWorker[_Job] = CoalescingWorker(
            self._run_job, name="asirp-live-tomo", what="tomography worker"
        )

    # -- documents (the RunEngine's thread) --------------------------------------------------
    def __call__(self, name: str, doc: dict[str, Any], validate: bool = False) -> None:  # type: ignore[override]
        """Take one Bluesky document; never raises (problems are logged and recorded)."""
        try:
            super().__call__(name, doc, validate)
        except Exception as error:  # a bad document must never reach the RunEngine
            try:
                uid = self._run_of(name, doc)
                run = self._runs.get(uid) if isinstance(uid, str) else None
            except TypeError:  # an unhashable uid or descriptor: no run of ours
                run = None
            if run is not None:
                self._spoil(run, f"{name} document: {type(error).__name__}: {error}")
            else:
                _LOG.warning("live tomography: skipped a bad %s document (%s)", name, error)

    def _run_of(self, name: str, doc: Any) -> str | None:
        if not isinstance(doc, Mapping):
            return None
        if name in ("descriptor", "stop"):
            return doc.get("run_start")
        if name in ("event", "event_page"):
            return self._descriptor_run.get(doc.get("descriptor"))
        return doc.get("uid") if name == "start" else None

    def start(self, doc: dict[str, Any]) -> None:
        """Open a run when its start document describes a tomography scan."""
        if MD_KEY not in doc:
            return None
        uid = str(doc["uid"])
        with self._cond:
            self._last_run = uid
        try:
            config = _config(doc[MD_KEY])
            if not _UID.fullmatch(uid):
                raise TomoDocumentError(f"run uid {uid!r} cannot name files")
        except TomoDocumentError as error:
            self._record(TomoFailure(uid, "documents", str(error)), exit_status="")
            return None
        if config.expected_frames:
            _LOG.info("live tomography: run %s announced %d frames", uid, config.expected_frames)
        while len(self._runs) >= MAX_OPEN_RUNS:
            oldest = next(iter(self._runs.values()))
            self._spoil(oldest, f"more than {MAX_OPEN_RUNS} runs open; gave up the oldest")
            self._close(oldest.uid, "")
        self._runs[uid] = _Run(uid, uid[:8], config)
        return None

    def descriptor(self, doc: dict[str, Any]) -> None:
        """Note which kind of frames a stream holds, and check its image before any event."""
        run = self._runs.get(doc["run_start"])
        if run is None:
            return None
        self._descriptor_run[doc["uid"]] = run.uid
        role = run.config.streams.get(doc.get("name", "primary"))
        if role is None or run.error is not None:
            return None  # another stream (baseline, monitors): not frames of the scan
        keys = doc["data_keys"]
        config = run.config
        if config.image_field not in keys:
            raise TomoDocumentError(
                f"stream {doc.get('name')!r} has no image field {config.image_field!r}"
            )
        shape = _frame_shape(keys[config.image_field], config.image_field)
        if run.frame_shape is None:
            run.frame_shape = shape
            needed = config.expected_frames * shape[0] * shape[1] * 4
            if needed > self.max_stack_bytes:
                raise TomoDocumentError(
                    f"{config.expected_frames} frames of {shape} px need {needed} bytes, over "
                    f"the limit of {self.max_stack_bytes} bytes"
                )
        elif shape != run.frame_shape:
            raise TomoDocumentError(
                f"stream {doc.get('name')!r} has {shape} px frames, another stream "
                f"{run.frame_shape} px"
            )
        if role == "projections":
            if config.angle_field not in keys:
                raise TomoDocumentError(
                    f"stream {doc.get('name')!r} has no angle field {config.angle_field!r}"
                )
            units = keys[config.angle_field].get("units")
            unit = config.angle_units if not units else _units(units, config.angle_field)
            run.angle_radians = unit == "rad"
        run.descriptors[doc["uid"]] = role
        return None

    def event_page(self, doc: dict[str, Any]) -> None:
        """Take each event of the page."""
        for event in unpack_event_page(doc):
            self.event(event)
        return None

    def event(self, doc: dict[str, Any]) -> None:
        """Keep a float32 copy of the event's frame (and its angle, for a projection)."""
        uid = self._descriptor_run.get(doc["descriptor"])
        run = self._runs.get(uid) if uid is not None else None
        if run is None or run.error is not None:
            return None
        role = run.descriptors.get(doc["descriptor"])
        if role is None:
            return None
        config = run.config
        data = doc["data"]
        if config.image_field not in data:
            raise TomoDocumentError(f"an event of {role} has no {config.image_field!r}")
        if doc.get("filled", {}).get(config.image_field) is False:
            raise TomoDocumentError(
                f"{config.image_field!r} is an external reference; only inline frames are read"
            )
        raw = np.asarray(data[config.image_field])
        if raw.shape != run.frame_shape:
            raise TomoDocumentError(
                f"a frame of {role} (event {doc.get('seq_num')}) is {raw.shape}, the descriptor "
                f"said {run.frame_shape}"
            )
        if raw.dtype.kind not in "iuf":
            raise TomoDocumentError(f"a frame of {role} holds {raw.dtype}, not numbers")
        if run.nbytes + raw.size * 4 > self.max_stack_bytes:
            raise TomoDocumentError(
                f"the frames exceed the limit of {self.max_stack_bytes} bytes; frames dropped"
            )
        frame = np.array(raw, dtype=np.float32)  # a copy: the detector may reuse its buffer
        if not np.all(np.isfinite(frame)):
            raise TomoDocumentError(f"a frame of {role} (event {doc.get('seq_num')}) holds NaN/Inf")
        if role == "projections":
            angle = data.get(config.angle_field)
            if isinstance(angle, bool) or not isinstance(angle, numbers.Real):
                raise TomoDocumentError(
                    f"projection event {doc.get('seq_num')} has no numeric angle "
                    f"{config.angle_field!r}"
                )
            if not math.isfinite(float(angle)):
                raise TomoDocumentError(f"projection event {doc.get('seq_num')} angle is NaN/Inf")
            run.angles.append(float(angle))
        run.frames[role].append(frame)
        run.nbytes += frame.nbytes
        return None

    def stop(self, doc: dict[str, Any]) -> None:
        """Hand a complete run to the worker; record why otherwise."""
        uid = doc["run_start"]
        run = self._runs.get(uid)
        if run is None:
            return None
        exit_status = str(doc.get("exit_status", ""))
        if run.error is None:
            counts = {role: len(frames) for role, frames in run.frames.items()}
            stream_of = {role: name for name, role in run.config.streams.items()}
            if exit_status != "success":
                self._spoil(
                    run, f"the run ended with exit status {exit_status!r}: not reconstructed"
                )
            elif counts["projections"] < 2:
                self._spoil(
                    run,
                    f"{counts['projections']} projection(s) in stream "
                    f"{stream_of['projections']!r}; reconstructing needs at least 2",
                )
            else:
                for role in ("flats", "darks"):
                    if not counts[role]:
                        self._spoil(run, f"no {role} (stream {stream_of[role]!r})")
                        break
        self._close(uid, exit_status)
        return None

    def _spoil(self, run: _Run, message: str) -> None:
        """Record the run's first problem; drop its frames (nothing more is kept)."""
        if run.error is None:
            run.error = message
            _LOG.error("live tomography: run %s: %s", run.uid, message)
        run.frames = {role: [] for role in ROLES}
        run.nbytes = 0

    def _close(self, uid: str, exit_status: str) -> None:
        run = self._runs.pop(uid)
        for descriptor in [d for d, owner in self._descriptor_run.items() if owner == uid]:
            del self._descriptor_run[descriptor]
        if run.error is not None:
            self._record(TomoFailure(uid, "documents", run.error), exit_status=exit_status)
            return
        raw, recon = self.paths(uid)
        try:
            self._worker.submit(_Job(run, exit_status, raw, recon))
        except RuntimeError as error:  # closed: the run is still accounted for
            self._record(TomoFailure(uid, "reconstruction", str(error)), exit_status=exit_status)

    # -- the worker thread --------------------------------------------------------------------
    def _run_job(self, job: _Job) -> None:
        run, config = job.run, job.run.config
        outcome = TomoOutcome(run.uid, job.exit_status)
        stage = "raw file"
        try:
            angles = np.asarray(run.angles, dtype=np.float64)
            scan = TomoScan(
                projections=np.stack(run.frames["projections"]),
                flats=np.stack(run.frames["flats"]),
                darks=np.stack(run.frames["darks"]),
                angles_rad=angles if run.angle_radians else np.deg2rad(angles),
                pixel_um=self.pixel_um if self.pixel_um is not None else config.pixel_um,
            )
            run.frames = {role: [] for role in ROLES}  # the stacks are the only copy now
            write_exchange(
                job.raw_path,
                scan,
                title=f"asirp live tomography, run {run.uid}",
                notes={"run_uid": run.uid, "psf_fwhm_um": config.psf_fwhm_um},
            )
            outcome.raw_path = job.raw_path
            del scan
            stage = "reconstruction"
            psf = self.psf_fwhm_um if self.psf_fwhm_um is not None else config.psf_fwhm_um
            outcome.result = run_tomo(
                job.raw_path,
                job.recon_path,
                method=self.method,
                psf_fwhm_um=psf,
                pixel_um=self.pixel_um if self.pixel_um is not None else config.pixel_um,
                centre=self.centre,
                params=self.params or None,
                seed=self.seed,
                device=self.device,
            )
            outcome.recon_path = job.recon_path
            _LOG.info(
                "live tomography: run %s reconstructed (%s) in %.2f s: %s",
                run.uid,
                outcome.result.plan.method,
                outcome.result.elapsed_s,
                job.recon_path,
            )
        except Exception as error:  # a failed reconstruction never reaches the RunEngine
            message = f"{type(error).__name__}: {' '.join(str(error).split())}"
            outcome.failure = TomoFailure(run.uid, stage, message)
            _LOG.error("live tomography: run %s: %s failed: %s", run.uid, stage, message)
        self._store(outcome)

    # -- outcomes -----------------------------------------------------------------------------
    def _record(self, failure: TomoFailure, *, exit_status: str) -> None:
        _LOG.error("live tomography: run %s: %s", failure.run_uid, failure.message)
        self._store(TomoOutcome(failure.run_uid, exit_status, failure=failure))

    def _store(self, outcome: TomoOutcome) -> None:
        with self._cond:
            if outcome.failure is not None:
                self.failures.append(outcome.failure)
            self._outcomes[outcome.run_uid] = outcome
            while len(self._outcomes) > MAX_REMEMBERED:
                self._outcomes.popitem(last=False)
            self._cond.notify_all()

    def paths(self, run_uid: str) -> tuple[Path, Path]:
        """Where a run's raw scan and reconstruction go: ``(<uid8>_raw.h5, <uid8>_recon.nxs)``."""
        tag = run_uid[:8]
        return self.output_dir / f"{tag}_raw.h5", self.output_dir / f"{tag}_recon.nxs"

    def outcome(self, run_uid: str) -> TomoOutcome | None:
        """A run's outcome, or ``None`` while it is unknown."""
        with self._cond:
            return self._outcomes.get(run_uid)

    def wait(self, timeout: float | None = None, run_uid: str | None = None) -> TomoOutcome:
        """Wait for a run's outcome (default: the last tomography run started) and return it.

        Raises
        ------
        LookupError
            No tomography run was seen (and no ``run_uid`` given).
        TimeoutError
            The outcome is not known within ``timeout`` seconds.
        """
        with self._cond:
            uid = run_uid if run_uid is not None else self._last_run
            if uid is None:
                raise LookupError("no tomography run seen yet")
            if not self._cond.wait_for(lambda: uid in self._outcomes, timeout):
                raise TimeoutError(f"run {uid}: no outcome within {timeout} s")
            return self._outcomes[uid]

    def close(self, timeout: float | None = None) -> bool:
        """Finish the queued reconstructions and stop the worker; whether it ended in time."""
        return self._worker.close(timeout)
