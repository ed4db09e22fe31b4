"""One tomography run in one process: read, correct, restore, find the centre, reconstruct, write.

:func:`run_tomo` chains :mod:`~asirp.tomo.exchange`, :mod:`~asirp.tomo.normalise`,
:mod:`~asirp.tomo.restore_projections`, :mod:`~asirp.tomo.centre`,
:mod:`~asirp.tomo.reconstruct` and :mod:`~asirp.tomo.volume`. The projections are restored in
blocks through :func:`~asirp.tomo.restore_projections.restore_block` with one plan for the
whole scan, in this process or on dask workers (:mod:`~asirp.tomo.distributed`). Both
reconstructions, from the measured and from the restored projections, are written, so the
improvement can be judged; the centre is found once, on the measured projections, and used for
both.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from asirp._version import __version__
from asirp.io import InputFileError, open_input_file
from asirp.provenance import library_versions
from asirp.safe_files import (
    DataRoot,
    DataRootError,
    OutputExistsError,
    ProtectedFileError,
    file_identity,
)
from asirp.tomo.centre import find_centre
from asirp.tomo.distributed import (
    BLOCK_PROJECTIONS,
    CorrectedProjectionSource,
    ProjectionLayout,
    StackEngine,
    median_references,
    projection_layout,
    restore_stack_distributed,
    shared_cluster,
)
from asirp.tomo.distributed_volume import (
    measured_sinograms,
    reconstruct_distributed,
    stored_sinograms,
)
from asirp.tomo.exchange import read_scan
from asirp.tomo.normalise import flat_dark_correct, minus_log
from asirp.tomo.reconstruct import FILTER, reconstruct
from asirp.tomo.restore_projections import (
    NO_RESTORATION,
    ProjectionPlan,
    plan_restoration,
    psf_fwhm_in_px,
    restore_block,
)
from asirp.tomo.volume import RAW, RESTORED, write_volumes


@dataclass
class TomoResult:
    """What :func:`run_tomo` made.

    Attributes
    ----------
    output : pathlib.Path
        The written NeXus file.
    raw : numpy.ndarray
        ``(Z, C, C)`` float32 reconstruction from the measured projections, attenuation per px.
    restored : numpy.ndarray or None
        The same from the restored projections (``None`` when nothing was restored).
    centre_px : float
        Rotation axis used, detector columns.
    centre_source : str
        ``"given"`` or ``"found"`` (mirror cross-correlation).
    plan : ProjectionPlan
        The restoration every block got.
    cautions : list of str
        What not to trust, in sentences.
    elapsed_s : float
        Wall time, s.
    """

    output: Path
    raw: np.ndarray
    restored: np.ndarray | None
    centre_px: float
    centre_source: str
    plan: ProjectionPlan
    cautions: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def _stream_sha256(stream: BinaryIO) -> str:
    """SHA-256 of an open file's bytes from its start (hex), read in 1 MiB pieces."""
    digest = hashlib.sha256()
    stream.seek(0)
    for piece in iter(lambda: stream.read(1 << 20), b""):
        digest.update(piece)
    return digest.hexdigest()


@contextlib.contextmanager
def _open_input(
    input_path: str | os.PathLike, data_root: DataRoot | None
) -> Iterator[tuple[BinaryIO, str]]:
    """The input file open for reading, and its name for messages (resolved in a root).

    Raises
    ------
    asirp.io.InputFileError
        A missing file, a folder or not a regular file (one sentence).
    asirp.safe_files.DataRootError
        With a root: the path leaves it or goes through a symbolic link.
    """
    if data_root is None:
        name = os.fspath(input_path)
        stream = open_input_file(input_path, "tomography file")
    else:
        name = str(data_root.resolve(input_path))
        try:
            stream = data_root.open_stream(input_path)
        except DataRootError:
            raise
        except (OSError, ValueError) as error:  # missing, a folder, a FIFO: one sentence
            raise InputFileError(f"tomography file: {error}") from None
    with stream:
        yield stream, name


def restore_stack(
    transmission: np.ndarray,
    plan: ProjectionPlan,
    *,
    block_projections: int = BLOCK_PROJECTIONS,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Restore all projections block by block with one plan.

    Returns
    -------
    restored : numpy.ndarray
        ``(N, R, C)`` float32 transmission.
    cautions : list of str
        The blocks' cautions, each sentence once.
    """
    restored = np.empty_like(transmission, dtype=np.float32)
    cautions: list[str] = []
    count = transmission.shape[0]
    for start in range(0, count, block_projections):
        stop = min(count, start + block_projections)
        restored[start:stop], report = restore_block(
            transmission[start:stop],
            method=plan.method,
            psf_fwhm_px=plan.psf_fwhm_px,
            params=plan.params,
            seed=seed,
            device=device,
        )
        cautions.extend(note for note in report["cautions"] if note not in cautions)
        if progress is not None:
            progress(stop / count)
    return restored, cautions


def _projection_layout(
    stream: BinaryIO, metadata: dict[str, Any], count: int
) -> ProjectionLayout | None:
    """Where the workers find the projections; ``None`` (send them instead) if not found."""
    try:
        return projection_layout(stream, metadata, count)
    except InputFileError:  # e.g. NXtomo keys behind a soft link: the client's copy still works
        return None


def run_tomo(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    method: str = "auto",
    psf_fwhm_px: float | None = None,
    psf_fwhm_um: float | None = None,
    pixel_um: float | None = None,
    centre: float | None = None,
    params: dict[str, Any] | None = None,
    block_projections: int = BLOCK_PROJECTIONS,
    seed: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
    progress: Callable[[float], None] | None = None,
    engine: StackEngine | None = None,
    data_root: DataRoot | None = None,
) -> TomoResult:
    """Reconstruct a scan from measured and from restored projections, and write both.

    Parameters
    ----------
    input_path : str or os.PathLike
        Data Exchange or NXtomo HDF5 (:func:`asirp.tomo.exchange.read_scan`).
    output_path : str or os.PathLike
        The NeXus file to write (:mod:`asirp.tomo.volume`).
    method : str
        ``"auto"`` (the selector, modality ``"tomo_projection"``; nothing restored without a
        PSF), ``"none"``, or a registered method.
    psf_fwhm_px, psf_fwhm_um : float, optional
        Detector PSF FWHM along the row, px or µm (µm needs the pixel size).
    pixel_um : float, optional
        Detector pixel, µm (default: the file's, if it has one).
    centre : float, optional
        Rotation axis, detector columns (default: found by mirror cross-correlation).
    params : dict, optional
        The method's parameters (or the selection context for ``"auto"``).
    block_projections : int
        Projections per restoration block.
    seed : int
        Seed of methods that use randomness.
    device : str
        ``"cpu"`` (reproducible bit for bit), ``"cuda"`` or ``"auto"``.
    overwrite : bool
        Replace an existing output (never the input).
    progress : callable, optional
        Called with the fraction done (0 to 1).
    engine : StackEngine, optional
        Restore the projections on dask workers into a resumable zarr store (same bits as
        in this process); default: in this process. Without ``data_root`` the workers read
        the raw projections from ``input_path`` themselves and flat/dark-correct them
        (:class:`asirp.tomo.distributed.CorrectedProjectionSource`; the path must be one the
        workers see). With ``data_root`` the corrected stack is sent from this process with
        the tasks instead: the input is opened by descriptor here, which a worker (possibly
        on another machine) cannot use. The output's ``restored_on`` record says which.
    data_root : asirp.safe_files.DataRoot, optional
        Confine both files to this folder (the Tango device's): ``input_path`` and
        ``output_path`` are then relative to it (or absolute inside it), the input is opened
        by descriptor through the root and the output written by the root's atomic write;
        ``..`` above the root and symbolic links inside it are refused.

    Returns
    -------
    TomoResult

    Raises
    ------
    ValueError
        Bad input file, bad options (:class:`asirp.safe_files.DataRootError`: a path outside
        ``data_root`` or through a link in it).
    asirp.safe_files.OutputExistsError
        An existing output without ``overwrite``, or the output is the input
        (:class:`~asirp.safe_files.ProtectedFileError`); a ``FileExistsError``.
    """
    hint = "use --overwrite to replace it" if data_root is None else "pass overwrite=True"
    started = time.perf_counter()
    report = progress if progress is not None else (lambda fraction: None)
    if isinstance(block_projections, bool) or int(block_projections) < 1:
        raise ValueError(f"block_projections must be >= 1, got {block_projections!r}")
    output = Path(output_path) if data_root is None else data_root.resolve(output_path)
    # the input is opened once, by descriptor: its identity, digest and data are of one file
    with _open_input(input_path, data_root) as (stream, input_name):
        info = os.fstat(stream.fileno())
        source = (info.st_dev, info.st_ino)
        target = file_identity(output) if data_root is None else data_root.identity(output_path)
        if target is not None and target == source:
            raise ProtectedFileError(f"output {output} is the input; choose another path")
        if target is not None and not overwrite:  # refuse before the work
            raise OutputExistsError(f"output {output} already exists; {hint}")
        digest = _stream_sha256(stream)
        stream.seek(0)
        scan = read_scan(stream, name=input_name)
        layout = None
        if engine is not None and data_root is None:  # the workers read this very file
            layout = _projection_layout(stream, scan.metadata, scan.projections.shape[0])
    pixel = float(pixel_um) if pixel_um is not None else scan.pixel_um
    if pixel is not None and not (math.isfinite(pixel) and pixel > 0):
        raise ValueError(f"the pixel size must be > 0 µm, got {pixel_um!r}")
    fwhm = psf_fwhm_in_px(psf_fwhm_px, psf_fwhm_um, pixel)
    report(0.05)
    corrected = flat_dark_correct(scan.projections, scan.flats, scan.darks)
    cautions = [note for note in (corrected.caution(),) if note]
    measured = minus_log(corrected.values)
    if centre is None:
        centre_px, centre_source = find_centre(measured, scan.angles_rad), "found"
    else:
        centre_px, centre_source = float(centre), "given"
        if not (0.0 <= centre_px <= measured.shape[2] - 1):
            raise ValueError(
                f"the centre {centre_px:g} px is off the detector (0 to {measured.shape[2] - 1})"
            )
    plan = plan_restoration(
        corrected.values, method=method, psf_fwhm_px=fwhm, params=params, seed=seed, device=device
    )
    cautions.extend(plan.cautions)
    report(0.15)
    workers_read = None  # the workers read the projections from the file (no data root)
    if engine is not None and layout is not None:
        flat, dark = median_references(scan.flats, scan.darks)
        stamp = (info.st_size, info.st_mtime_ns)
        workers_read = CorrectedProjectionSource(input_name, layout, flat, dark, stamp)
    reconstructed_on: dict[str, Any] = {}
    volumes: dict[str, np.ndarray] = {}
    restored_volume = None
    distributed_run: dict[str, Any] = {}
    # without a scheduler, one LocalCluster serves the restoration and both volumes
    with shared_cluster(engine) as engine:
        if engine is None:
            raw = reconstruct(measured, scan.angles_rad, centre_px)
        else:
            raw, reconstructed_on["raw"] = reconstruct_distributed(
                measured_sinograms(measured, workers_read),
                scan.angles_rad,
                centre_px,
                engine,
                "raw",
                progress=lambda fraction: report(0.15 + 0.25 * fraction),
            )
        report(0.4)
        volumes[RAW] = raw
        if plan.method != NO_RESTORATION:
            if engine is None:
                restored, notes = restore_stack(
                    corrected.values,
                    plan,
                    block_projections=int(block_projections),
                    seed=seed,
                    device=device,
                    progress=lambda fraction: report(0.4 + 0.3 * fraction),
                )
                cautions.extend(note for note in notes if note not in cautions)
                restored_volume = reconstruct(minus_log(restored), scan.angles_rad, centre_px)
            else:
                restored, distributed_run = restore_stack_distributed(
                    corrected.values,
                    plan,
                    engine,
                    source=workers_read,
                    block_projections=int(block_projections),
                    seed=seed,
                    device=device,
                    progress=lambda fraction: report(0.4 + 0.3 * fraction),
                )
                if workers_read is None:
                    distributed_run["projections_why"] = (
                        "the input is confined to a data root and opened by descriptor here"
                        if data_root is not None
                        else "the projections' frames could not be located for the workers"
                    )
                restored_volume, reconstructed_on["restored"] = reconstruct_distributed(
                    stored_sinograms(engine, restored.shape, int(block_projections)),
                    scan.angles_rad,
                    centre_px,
                    engine,
                    "restored",
                    progress=lambda fraction: report(0.7 + 0.25 * fraction),
                )
            volumes[RESTORED] = restored_volume
    report(0.95)
    skimage_version = importlib.metadata.version("scikit-image")
    fields = {
        "input_path": input_name,
        "input_sha256": digest,
        "input_format": scan.metadata.get("format", ""),
        "method": plan.method,
        "method_requested": method,
        "centre_px": centre_px,
        "centre_source": centre_source,
        "psf_fwhm_px": fwhm,
        "reconstruction": f"filtered back-projection (scikit-image iradon, {FILTER} filter)",
        "restoration_reason": plan.reason,
        "elapsed_s": time.perf_counter() - started,
    }
    write_volumes(
        output,
        volumes,
        pixel_um=pixel,
        fields=fields,
        notes={
            "parameters": plan.params,
            "plan": plan.to_dict(),
            "scan": {
                **scan.metadata,
                "projections": list(scan.projections.shape),
                "flats": int(scan.flats.shape[0]),
                "darks": int(scan.darks.shape[0]),
                "pixel_um": pixel,
                "clipped_pixels": corrected.clipped,
            },
            "run": {
                "seed": seed,
                "device": device,
                "block_projections": int(block_projections),
                "asirp": __version__,
                "restored_on": distributed_run if engine is not None else "this process",
                "reconstructed_on": reconstructed_on if engine is not None else "this process",
            },
            "versions": {**library_versions(), "scikit-image": skimage_version},
            "cautions": cautions,
        },
        overwrite=overwrite,
        protect=[source],
        root=data_root,
        hint=hint,
    )
    report(1.0)
    return TomoResult(
        output=output,
        raw=raw,
        restored=restored_volume,
        centre_px=centre_px,
        centre_source=centre_source,
        plan=plan,
        cautions=cautions,
        elapsed_s=time.perf_counter() - started,
    )
