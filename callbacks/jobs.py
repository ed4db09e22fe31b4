"""Restoration jobs of the live restorer: when a run asks for one, and how one is carried out.

:class:`RunJobs` is the live restorer's side of one raw run. It owns the run's
:class:`~callbacks.assembler.MapAssembler` and is its hooks: as rows are done it asks for a
partial restoration (every ``every_rows`` rows or ``every_s`` seconds, once ``min_rows`` rows
are done and before the last row), and when the run ends it asks for the final one (every row
reached by a scan that succeeded, the complete rows of one cut short). Each request is a
:class:`Job`: a copy of the map and the number of leading rows to restore, handed to the
restorer's :class:`~callbacks.worker.CoalescingWorker`.

:class:`RestorationSpec` holds how the restorer restores (method, parameters, PSF description,
device, seed) and turns one job into a :class:`~callbacks.result.LiveResult` in the worker
thread: the done rows are restored (holes filled with the mean of the measured pixels), and the
rows not yet measured are NaN. When the map's readings are counts, the job carries their counts
gain (:func:`map_counts_gain`: 1, or the flux factor of a normalised map), so that the
discrepancy rule works at the true Poisson noise level instead of one estimated from the map.
A failing method gives a result that carries its error; nothing is raised. The engine's cautions
(:meth:`asirp.Restoration.cautions`) are logged: warnings for a final map.

Everything here logs to the ``callbacks.live`` logger, as the restorer does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.psf import beam_sigma_px, gaussian_psf
from asirp.restore import restore
from asirp.validation import MIN_SIDE_PX
from callbacks.assembler import MapAssembler
from callbacks.geometry import ScanGeometry
from callbacks.mapping import LiveMap, MapSource, fill_unmeasured
from callbacks.publish import DerivedRun
from callbacks.result import LiveResult

_LOG = logging.getLogger("callbacks.live")  # one logger for everything a LiveRestorer reports

Beam = float | Sequence[float] | None
"""A beam FWHM in µm: one value, (vertical, horizontal), or unknown."""


@dataclass
class Job:
    """A restoration request: a copy of one run's map and how many rows to restore.

    Attributes
    ----------
    run : RunJobs
        The run it belongs to.
    image : numpy.ndarray
        ``(H, W)`` float32 copy of the map when the request was made (NaN: unmeasured).
    rows : int
        Leading rows to restore.
    points : int
        Points measured when the request was made.
    final : bool
        Whether this is the run's final request (never replaced or dropped by the worker).
    exit_status, reason : str
        For a final request: the derived run's exit status if the restoration succeeds, and
        why.
    counts_gain : float or None
        Detector counts per Poisson event of the restored rows (:func:`map_counts_gain`), for
        the discrepancy rule; ``None``: not counts, :func:`asirp.restore` estimates it.
    """

    run: RunJobs
    image: np.ndarray
    rows: int
    points: int
    final: bool
    exit_status: str = "success"
    reason: str = ""
    counts_gain: float | None = None

    @property
    def key(self) -> str:
        """Requests of one run coalesce: the run's uid."""
        return self.run.uid


class RunJobs:
    """One raw run in the live restorer: its map assembler, when to restore, its derived run.

    It is the assembler's :class:`~callbacks.assembler.AssemblerHooks`, and talks to the
    restorer only through the three callables it is given.

    Parameters
    ----------
    start : mapping
        The raw run's start document.
    geometry : ScanGeometry
        Its map geometry.
    source : MapSource
        What is mapped.
    beam_fwhm_um : float or (float, float) or None
        Beam FWHM for the PSF, µm (the restorer's, else the start document's).
    pixel_um : (float, float)
        Scan step, µm.
    min_rows : int
        Fewest rows for a partial restoration.
    every_rows : int or None
        Request a partial restoration each time this many more rows are done.
    every_s : float or None
        ... or when this many seconds have passed since the last request.
    submit : callable
        ``submit(job)``: queue a :class:`Job` (the restorer's worker).
    route_events : callable
        ``route_events(descriptor_uid, assembler)``: send that descriptor's events straight to
        the assembler.
    forget : callable
        ``forget(run_uid)``: the run is no longer open.

    Attributes
    ----------
    assembler : MapAssembler
        The run's map.
    sequence : int
        Restorations done so far (numbered from 1).
    derived : DerivedRun or None
        The derived run, once the first restoration is done.
    """

    def __init__(
        self,
        start: Mapping[str, Any],
        geometry: ScanGeometry,
        source: MapSource,
        *,
        beam_fwhm_um: Beam,
        pixel_um: tuple[float, float],
        min_rows: int,
        every_rows: int | None,
        every_s: float | None,
        submit: Callable[[Job], None],
        route_events: Callable[[str, MapAssembler], None],
        forget: Callable[[str], None],
    ) -> None:
        self.uid: str = start["uid"]
        self.start_doc = start
        self.geometry = geometry
        self.source = source
        self.beam_fwhm_um = beam_fwhm_um
        self.pixel_um = pixel_um
        self.min_rows = min_rows
        self.every_rows = every_rows
        self.every_s = every_s
        self.sequence = 0
        self.derived: DerivedRun | None = None
        self._submit_job = submit
        self._route_events = route_events
        self._forget = forget
        self._requested_rows = 0
        self._last_request = time.monotonic()
        self.assembler = MapAssembler(start, source, geometry=geometry, hooks=self, logger=_LOG)

    # -- AssemblerHooks -----------------------------------------------------------------------
    def descriptor_accepted(self, assembler: MapAssembler, descriptor_uid: str) -> None:
        """Route the descriptor's events straight to the assembler."""
        self._route_events(descriptor_uid, assembler)

    def points_added(self, assembler: MapAssembler) -> None:
        """Request a partial restoration when enough new rows are done (or time passed)."""
        live_map = assembler.map
        done = live_map.rows_done
        if done < self.min_rows or done <= self._requested_rows or done >= live_map.shape[0]:
            return  # too few rows, nothing new, or the whole map: the final request will come
        due = self.every_rows is not None and done - self._requested_rows >= self.every_rows
        if not due and self.every_s is not None:
            due = time.monotonic() - self._last_request >= self.every_s
        if due:
            self._submit(done, final=False)

    def finished(self, assembler: MapAssembler, exit_status: str, reason: str) -> None:
        """Request the final restoration: every row reached, or the complete ones."""
        self._forget(self.uid)
        live_map = assembler.map
        if live_map is None or live_map.points == 0:
            _LOG.warning(
                "run %s: no point of the map was recorded (source %s); no restoration",
                self.uid,
                self.source.describe(),
            )
            return
        # A finished scan restores every row it reached; a cut-short one its complete rows.
        rows = live_map.rows_started if exit_status == "success" else live_map.rows_done
        if exit_status != "success":
            reason = f"{reason}; restored the {rows} complete row(s) of {self.geometry.shape[0]}"
        self._submit(rows, final=True, exit_status=exit_status, reason=reason)

    def _submit(
        self, rows: int, *, final: bool, exit_status: str = "success", reason: str = ""
    ) -> None:
        live_map = self.assembler.map
        self._requested_rows = rows
        self._last_request = time.monotonic()
        job = Job(
            self,
            live_map.image(),
            rows,
            live_map.points,
            final,
            exit_status,
            reason,
            counts_gain=map_counts_gain(live_map, rows),
        )
        self._submit_job(job)


def map_counts_gain(live_map: LiveMap, rows: int) -> float | None:
    """Detector counts per Poisson event in the leading ``rows`` of a live map, if it is counts.

    The map is its readings times ``mean(flux) / flux`` (:meth:`~callbacks.mapping.LiveMap.image`;
    no flux: times 1), so when the readings are counts (non-negative integers) each pixel holds
    ``mean(flux) / flux`` detector counts per event, and their mean over the measured pixels is
    the gain of the discrepancy rule. Known here exactly; estimated from the map's noise by
    :func:`asirp.restore` it is unreliable on small coarse maps (their hotspots change from one
    pixel to the next and pass for noise), which stopped Richardson-Lucy after one iteration.
    The map's holes, filled with the mean before restoring, no longer look like counts; this
    gain still holds for the measured pixels.

    Parameters
    ----------
    live_map : LiveMap
        The run's map.
    rows : int
        Leading rows to be restored.

    Returns
    -------
    float or None
        The gain (> 0), or ``None`` when the readings are not counts or the monitor reads zero,
        negative or non-finite values (then :func:`asirp.restore` estimates it).
    """
    # Runs in the document thread: whole-array passes, no copies of the measured pixels.
    readings, measured = live_map.values[:rows], live_map.measured[:rows]
    if not measured.any():
        return None
    with np.errstate(invalid="ignore"):  # unmeasured pixels are NaN: they never decide
        counts = not (np.any(readings < 0) or np.any((readings != np.floor(readings)) & measured))
    if not counts:
        return None
    if live_map.flux is None:
        return 1.0
    flux = live_map.flux
    with np.errstate(invalid="ignore", divide="ignore"):
        if np.any((~(flux > 0) | ~np.isfinite(flux)) & live_map.measured):
            return None  # a monitor that read zero, negative or nothing: no exact gain
        mean_flux = float(np.mean(flux, where=live_map.measured))
        return float(np.mean(mean_flux / flux[:rows], where=measured))


@dataclass(frozen=True)
class RestorationSpec:
    """How the live restorer restores a job.

    Attributes
    ----------
    method : str
        Restoration method, or ``"auto"`` (``"cheap"`` mode for partial maps, ``"thorough"``
        for final ones unless ``params`` sets ``mode``).
    params : mapping
        The method's parameters.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed : int
        Seed for methods that use randomness.
    psf : numpy.ndarray or None
        PSF array, if given instead of the beam.
    psf_sigma_px : float or (float, float) or None
        Gaussian PSF sigma in pixels, if given instead of the beam.
    min_rows : int or None
        Fewest rows for a partial restoration (``None``: the PSF's height, see
        :meth:`min_rows_for`).
    """

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0
    psf: np.ndarray | None = None
    psf_sigma_px: float | Sequence[float] | None = None
    min_rows: int | None = None

    def min_rows_for(
        self, geometry: ScanGeometry, beam_fwhm_um: Beam, pixel_um: tuple[float, float]
    ) -> int:
        """Fewest rows for a partial restoration of a run: ``min_rows``, else the PSF's height.

        Never below ``asirp.validation.MIN_SIDE_PX``; a PSF that cannot be made counts as the
        smallest.
        """
        if self.min_rows is not None:
            return self.min_rows
        height = MIN_SIDE_PX
        try:
            # cropped just beyond the map (a kernel taller than the map still means no partial
            # restoration): a start document with a tiny step and a wide beam must not
            # allocate a huge kernel here
            limit = (geometry.shape[0] + 2, geometry.shape[1] + 2)
            if self.psf is not None:
                height = self.psf.shape[0]
            elif self.psf_sigma_px is not None:
                height = gaussian_psf(self.psf_sigma_px, max_shape=limit).shape[0]
            elif beam_fwhm_um is not None:
                sigma = beam_sigma_px(beam_fwhm_um, pixel_um)
                height = gaussian_psf(sigma, max_shape=limit).shape[0]
        except (TypeError, ValueError):
            pass
        return max(MIN_SIDE_PX, int(height))

    def psf_kwargs(self, beam_fwhm_um: Beam, pixel_um: tuple[float, float]) -> dict[str, Any]:
        """The PSF keywords of :func:`asirp.restore` for a run (empty: the method's default)."""
        if self.psf is not None:
            return {"psf": self.psf}
        if self.psf_sigma_px is not None:
            return {"psf_sigma_px": self.psf_sigma_px}
        if beam_fwhm_um is not None:
            return {"beam_fwhm_um": beam_fwhm_um, "pixel_um": pixel_um}
        return {}

    def planned_psf(self, beam_fwhm_um: Beam, pixel_um: tuple[float, float]) -> dict[str, Any]:
        """The PSF description of a run's derived run (``psf`` of its provenance)."""
        kwargs = self.psf_kwargs(beam_fwhm_um, pixel_um)
        if "psf" in kwargs:
            return {"source": "array", "shape": list(self.psf.shape)}
        if "psf_sigma_px" in kwargs:
            return {"source": "gaussian", "model": "gaussian", "sigma_px": kwargs["psf_sigma_px"]}
        if "beam_fwhm_um" in kwargs:
            return {
                "source": "beam",
                "model": "gaussian",
                "beam_fwhm_um": kwargs["beam_fwhm_um"],
                "pixel_um": list(pixel_um),
            }
        return {"source": None}

    def restore(self, job: Job, cancel: threading.Event) -> LiveResult:
        """Restore a job's done rows; count it in its run's ``sequence``. Never raises.

        Parameters
        ----------
        job : Job
            The request.
        cancel : threading.Event
            Set to stop the restoration at its next iteration.

        Returns
        -------
        LiveResult
            Not yet published (no ``exit_status``, ``derived_uid`` or ``time``); it carries
            the error when the restoration failed.
        """
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
                cancel=cancel,
                seed=self.seed,
                counts_gain=job.counts_gain,
                **self.psf_kwargs(run.beam_fwhm_um, run.pixel_um),
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
        for note in restoration.cautions():  # a final map that was not restored must be heard
            _LOG.log(
                logging.WARNING if job.final else logging.INFO,
                "run %s: caution on restoration %d: %s",
                run.uid,
                run.sequence,
                note,
            )
        scale = restoration.image.shape[0] // job.rows
        height, width = run.geometry.shape
        full = np.full((height * scale, width * scale), np.nan, dtype=np.float32)
        full[: restoration.image.shape[0], : restoration.image.shape[1]] = restoration.image
        return LiveResult(**base, restored_map=full, restoration=restoration)
