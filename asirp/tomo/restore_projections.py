"""Restoring tomography projections: decide the method once, then restore blocks alike.

Where the restoration acts: on **transmission** (flat/dark-corrected intensity), before
``-log``. The detector blur (scintillator, optics) spreads *light*, so the measured frame is
``h * (F e^{-P})``: a convolution of the transmitted intensity, not of the line integrals
``P``. Deconvolving ``-log`` data would invert a blur that is not there (``-log`` of a blurred
exponential is not a blurred ``P``) and bias edges; on transmission the forward model is exact
up to the slowly varying flat ``F`` (nearly constant over the PSF's few pixels), and the
positivity that Richardson-Lucy keeps is the physical one (``T > 0``).

Which blur: along the detector row only, a 1-D Gaussian PSF ``(1, w)``. Each slice is
reconstructed from one detector row, so the horizontal blur is what degrades a slice; the
vertical blur mixes neighbouring slices and cannot be undone from scans only a few rows high
(the tooth has 2). A projection ``(R, C)`` is restored as a 2-D image with that ``(1, w)`` PSF,
i.e. row by row; the engine needs at least :data:`asirp.validation.MIN_SIDE_PX` rows, so
shorter projections get their edge row repeated (which, with a ``(1, w)`` PSF, changes no row's
result) and the copies are dropped afterwards. The global size limits stay as they are.

Consistency over the stack: :func:`plan_restoration` runs the method once on a representative
image (the sinogram of the middle detector row, at most :data:`PLAN_ANGLES` evenly spaced
angles: every angle's detector row, with the same ``(1, w)`` PSF) and *freezes* what the data
decided there: the method ``"auto"`` chose (modality ``"tomo_projection"``), the iterations a
discrepancy rule ran (then ``stop="fixed"``), a regularisation weight. :func:`restore_block`
then applies exactly that to every block, so all projections get the same restoration and a
block's result does not depend on how the stack was cut into blocks (no per-block stopping
rule or noise estimate).

:func:`restore_block` is a plain function of picklable arguments (no globals), for a dask
worker, Prefect or EWOKS task.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from asirp.psf import FWHM_PER_SIGMA
from asirp.registry import available_methods, get_method
from asirp.restore import restore
from asirp.validation import MIN_SIDE_PX

NO_RESTORATION = "none"
"""The method name for "reconstruct the projections as measured"."""
PLAN_ANGLES = 256
"""The representative sinogram has at most this many angles."""
MODALITY = "tomo_projection"


@dataclass(frozen=True)
class ProjectionPlan:
    """The restoration applied to every block of a scan.

    Attributes
    ----------
    method : str
        A registered method, or :data:`NO_RESTORATION`.
    params : dict
        The method's parameters, frozen (JSON-serialisable).
    psf_fwhm_px : float or None
        FWHM of the 1-D Gaussian row PSF, detector pixels.
    reason : str
        Why this method and these parameters (the selector's reason for ``"auto"``).
    requested : str
        The method asked for (``"auto"`` or a name).
    cautions : list of str
        What the engine said about the planning run.
    """

    method: str
    params: dict[str, Any]
    psf_fwhm_px: float | None
    reason: str
    requested: str
    cautions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return asdict(self)


def row_psf(fwhm_px: float) -> np.ndarray:
    """A normalised 1-D Gaussian PSF along the row, ``(1, w)`` float32, ``w`` odd (±3 sigma).

    Raises
    ------
    ValueError
        For a FWHM that is not finite and > 0.
    """
    if not (math.isfinite(float(fwhm_px)) and fwhm_px > 0):
        raise ValueError(f"the PSF FWHM must be > 0 px, got {fwhm_px!r}")
    sigma = float(fwhm_px) / FWHM_PER_SIGMA
    radius = max(1, math.ceil(3.0 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)[None, :]


def psf_fwhm_in_px(
    psf_fwhm_px: float | None, psf_fwhm_um: float | None, pixel_um: float | None
) -> float | None:
    """The row PSF FWHM in pixels from one of the two ways of giving it.

    Raises
    ------
    ValueError
        Both given, µm without a pixel size, or a size that is not finite and > 0.
    """
    if psf_fwhm_px is not None and psf_fwhm_um is not None:
        raise ValueError("give the PSF FWHM in px or in µm, not both")
    if psf_fwhm_um is not None:
        if pixel_um is None:
            raise ValueError(
                "the PSF FWHM in µm needs the pixel size: give --pixel-um (the file has none)"
            )
        if not (math.isfinite(float(pixel_um)) and pixel_um > 0):
            raise ValueError(f"the pixel size must be > 0 µm, got {pixel_um!r}")
        fwhm = float(psf_fwhm_um) / float(pixel_um)
    elif psf_fwhm_px is not None:
        fwhm = float(psf_fwhm_px)
    else:
        return None
    if not (math.isfinite(fwhm) and fwhm > 0):
        raise ValueError(f"the PSF FWHM must be > 0, got {fwhm:g} px")
    return fwhm


def plan_restoration(
    transmission: np.ndarray,
    *,
    method: str = "auto",
    psf_fwhm_px: float | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> ProjectionPlan:
    """Decide, once for the whole scan, the restoration every block gets.

    Parameters
    ----------
    transmission : numpy.ndarray
        ``(N, R, C)`` flat/dark-corrected transmission (N >= 4 angles).
    method : str
        ``"auto"``, :data:`NO_RESTORATION` or a registered method.
    psf_fwhm_px : float, optional
        Row PSF FWHM, px. Without it, ``"auto"`` restores nothing (it needs the PSF) and a
        method that needs one raises.
    params : dict, optional
        The method's parameters (or the selection context for ``"auto"``: ``budget_ms``, ...).
    seed : int
        Seed of the planning run.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns
    -------
    ProjectionPlan

    Raises
    ------
    ValueError
        An unknown method, a method that needs a PSF without one, a super-resolution method
        (a projection must keep its detector grid), or bad parameters.
    """
    given = dict(params or {})
    if method == NO_RESTORATION:
        return ProjectionPlan(NO_RESTORATION, {}, psf_fwhm_px, "asked for", method)
    if method != "auto":
        spec = get_method(method)  # ValueError for an unknown name
        if spec.scale != 1:
            raise ValueError(
                f"method {method!r} changes the pixel grid (scale {spec.scale}); projections "
                "must keep the detector's columns for the reconstruction"
            )
        if spec.needs_psf and psf_fwhm_px is None:
            raise ValueError(f"method {method!r} needs the PSF: give its FWHM (px or µm)")
    elif psf_fwhm_px is None:
        return ProjectionPlan(
            NO_RESTORATION,
            {},
            None,
            "no PSF given: auto needs the detector PSF, so the projections are not restored",
            method,
        )
    else:
        given.setdefault("modality", MODALITY)
        given.setdefault("scale", 1)
    sinogram = representative_sinogram(transmission)
    psf = row_psf(psf_fwhm_px) if psf_fwhm_px is not None else None
    result = restore(sinogram, method, psf=psf, seed=seed, device=device, **given)
    if result.method not in available_methods():  # auto judged the input best
        return ProjectionPlan(
            NO_RESTORATION,
            {},
            psf_fwhm_px,
            str(result.params.get("auto_reason", "no restoration chosen")),
            method,
            result.cautions(),
        )
    frozen = _freeze(result.method, result.params)
    reason = str(result.params.get("auto_reason", "asked for"))
    return ProjectionPlan(result.method, frozen, psf_fwhm_px, reason, method, result.cautions())


def representative_sinogram(transmission: np.ndarray) -> np.ndarray:
    """The middle detector row's sinogram, at most :data:`PLAN_ANGLES` evenly spaced angles.

    Returns
    -------
    numpy.ndarray
        ``(n, C)`` float32.
    """
    count = transmission.shape[0]
    if count < MIN_SIDE_PX:
        raise ValueError(f"{count} projections are too few to restore (at least {MIN_SIDE_PX})")
    angles = np.unique(np.linspace(0, count - 1, min(count, PLAN_ANGLES)).round().astype(int))
    return np.ascontiguousarray(transmission[angles, transmission.shape[1] // 2, :])


def _freeze(method: str, found: dict[str, Any]) -> dict[str, Any]:
    """The method's parameters as they ran, with data-driven choices fixed."""
    names = [parameter.name for parameter in get_method(method).parameters]
    frozen = {name: found[name] for name in names if name in found}
    if "stop" in frozen and "iterations_run" in found:
        frozen["stop"] = "fixed"
        frozen["iterations"] = max(1, int(found["iterations_run"]))
    if frozen.get("weight") is None and "weight_used" in found:
        frozen["weight"] = float(found["weight_used"])
    return frozen


def restore_block(
    block: np.ndarray,
    *,
    method: str,
    psf_fwhm_px: float | None = None,
    params: dict[str, Any],
    psf_fwhm_um: float | None = None,
    pixel_um: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Restore a block of transmission projections with a frozen plan.

    A plain function of its arguments (picklable), deterministic: the same block gives the
    same bits, and a stack restored in one block or in several gives the same bits (each
    projection is restored on its own, with fixed parameters).

    Parameters
    ----------
    block : numpy.ndarray
        ``(n, R, C)`` transmission (float, > 0).
    method : str
        :attr:`ProjectionPlan.method`.
    psf_fwhm_px : float or None
        :attr:`ProjectionPlan.psf_fwhm_px` (row PSF FWHM, px).
    params : dict
        :attr:`ProjectionPlan.params`.
    psf_fwhm_um, pixel_um : float, optional
        The row PSF FWHM in µm with the pixel size in µm, instead of ``psf_fwhm_px``.
    seed : int
        Seed for methods that use randomness.
    device : str
        ``"cpu"`` (default: bit-for-bit reproducible), ``"cuda"`` or ``"auto"``.

    Returns
    -------
    restored : numpy.ndarray
        ``(n, R, C)`` float32 transmission.
    report : dict
        ``method``, ``projections``, ``elapsed_s``, ``cautions`` (list of str), ``changed``.
    """
    started = time.perf_counter()
    values = np.asarray(block, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"a block must be (projections, rows, columns), got {values.shape}")
    report: dict[str, Any] = {"method": method, "projections": int(values.shape[0])}
    if method == NO_RESTORATION or values.shape[0] == 0:
        report.update(elapsed_s=0.0, cautions=[], changed=False)
        return values.copy(), report
    psf_fwhm_px = psf_fwhm_in_px(psf_fwhm_px, psf_fwhm_um, pixel_um)
    if psf_fwhm_px is None and get_method(method).needs_psf:
        raise ValueError(f"method {method!r} needs the PSF FWHM")
    rows = values.shape[1]
    padded = values
    if rows < MIN_SIDE_PX:  # repeat the last row: with a (1, w) PSF rows do not interact
        padded = np.concatenate([values, np.repeat(values[:, -1:], MIN_SIDE_PX - rows, axis=1)], 1)
    psf = row_psf(psf_fwhm_px) if psf_fwhm_px is not None else None
    result = restore(padded, method, psf=psf, seed=seed, device=device, **params)
    restored = np.ascontiguousarray(result.image[:, :rows], dtype=np.float32)
    report.update(
        elapsed_s=time.perf_counter() - started,
        cautions=result.cautions(),
        changed=bool(result.metrics.get("changed", True)),
    )
    return restored, report


def restore_transmission_chunk(
    block: np.ndarray,
    *,
    method: str,
    psf_fwhm_px: float | None,
    params: dict[str, Any],
    seed: int = 0,
    device: str = "cpu",
) -> np.ndarray:
    """:func:`restore_block` without its report: the per-chunk function of a stack engine.

    :func:`asirp.stacks.process_stack` (dask workers) or a Prefect/EWOKS task calls it with a
    frozen :class:`ProjectionPlan`'s ``method``, ``psf_fwhm_px`` and ``params`` (JSON-safe).

    Returns
    -------
    numpy.ndarray
        ``(n, R, C)`` float32 restored transmission.
    """
    restored, _ = restore_block(
        block, method=method, psf_fwhm_px=psf_fwhm_px, params=params, seed=seed, device=device
    )
    return restored
