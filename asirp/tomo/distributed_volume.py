"""Slices reconstructed on dask workers: a band of detector rows per task, raw and restored.

Each detector row is one slice (:func:`asirp.tomo.reconstruct.reconstruct_slice`), so a
volume cuts along the rows: a task gets the sinograms of ``engine.rows_per_task`` rows
``(k, N, C)`` (line integrals ``-log T``), reconstructs them with
:func:`reconstruct_rows_chunk` and writes ``(k, C, C)`` into a resumable zarr store
(:func:`asirp.stacks.process_stack` with ``output_frame=(C, C)``). Where the sinograms come
from:

* the measured volume: :class:`MeasuredSinogramSource`, the workers read the band of raw rows
  of every projection from the scan file and flat/dark-correct it with the client's median
  frames (as :class:`asirp.tomo.distributed.CorrectedProjectionSource` does for whole
  projections); or, inside a data root, the sinograms are sent from the client
  (:class:`asirp.stacks.ArraySource`);
* the restored volume: :class:`StoredSinogramSource`, the workers read the band from the store
  of the restored projections (every chunk of it: the store is chunked by projections, so a
  band of rows touches every chunk; a store chunked by rows would read less).

Same bits as :func:`asirp.tomo.reconstruct.reconstruct` in one process: the same float32
correction and ``-log`` pixel by pixel, and the same per-row reconstruction (single-threaded
FFT and interpolation).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asirp.stacks.errors import StackError
from asirp.stacks.store import ChunkStore
from asirp.tomo.distributed import (
    CorrectedProjectionSource,
    StackEngine,
    read_raw_frames,
    scheduler_name,
)
from asirp.tomo.normalise import flat_dark_correct, minus_log
from asirp.tomo.reconstruct import FILTER, reconstruct_slice

VOLUMES = ("raw", "restored")


def reconstruct_rows_chunk(
    block: np.ndarray, *, angles_rad: list[float], centre_px: float, filter_name: str = FILTER
) -> np.ndarray:
    """Reconstruct the slices of a band of detector rows: the per-chunk function.

    Parameters
    ----------
    block : numpy.ndarray
        ``(k, N, C)`` sinograms (line integrals), one per detector row.
    angles_rad : list of float
        ``N`` angles, radians (JSON: float64 values survive the round trip exactly).
    centre_px : float
        Rotation axis, detector columns.
    filter_name : str
        FBP filter.

    Returns
    -------
    numpy.ndarray
        ``(k, C, C)`` float32 slices, attenuation per pixel.
    """
    sinograms = np.asarray(block)
    angles = np.asarray(angles_rad, dtype=np.float64)
    columns = sinograms.shape[2]
    result = np.empty((sinograms.shape[0], columns, columns), dtype=np.float32)
    for row, sinogram in enumerate(sinograms):
        result[row] = reconstruct_slice(sinogram, angles, centre_px, filter_name=filter_name)
    return result


def _sinograms(transmission: np.ndarray) -> np.ndarray:
    """``(N, k, C)`` transmission into ``(k, N, C)`` float32 line integrals."""
    return np.ascontiguousarray(minus_log(transmission).transpose(1, 0, 2))


@dataclass(frozen=True)
class MeasuredSinogramSlab:
    """Sinograms of detector rows ``start:stop``, read from the scan file in the worker."""

    projections: CorrectedProjectionSource
    start: int
    stop: int

    def read(self) -> np.ndarray:
        """``(stop - start, N, C)`` float32 line integrals of the measured projections."""
        source, band = self.projections, slice(self.start, self.stop)
        raw = read_raw_frames(
            source.path, source.layout, source.layout.frames, source.stamp, (self.start, self.stop)
        )
        corrected = flat_dark_correct(raw, source.flat[None, band], source.dark[None, band])
        return _sinograms(corrected.values)


class MeasuredSinogramSource:
    """The measured sinograms ``(R, N, C)`` of a scan, read and corrected by the workers.

    Parameters
    ----------
    projections : CorrectedProjectionSource
        The scan file, where its projections lie, the median flat and dark and the file's
        stamp.
    """

    def __init__(self, projections: CorrectedProjectionSource) -> None:
        count, rows, columns = projections.shape
        self.projections = projections
        self.shape = (rows, count, columns)
        self.dtype = np.dtype(np.float32).str

    def slab(self, start: int, stop: int) -> MeasuredSinogramSlab:
        """Rows ``start:stop`` (read in the worker)."""
        return MeasuredSinogramSlab(self.projections, start, stop)

    def describe(self) -> dict[str, Any]:
        """The projections' provenance (file, frames, median frames), as sinograms."""
        described = self.projections.describe()
        described["kind"] = "hdf5, flat/dark-corrected and -log sinograms in the worker"
        return described


@dataclass(frozen=True)
class StoredSinogramSlab:
    """Sinograms of detector rows ``start:stop``, read from a store of projections."""

    store: ChunkStore
    start: int
    stop: int

    def read(self) -> np.ndarray:
        """``(stop - start, N, C)`` float32 line integrals of the stored transmission."""
        return _sinograms(self.store.read_rows(self.start, self.stop))


class StoredSinogramSource:
    """The sinograms ``(R, N, C)`` of the transmission in a finished :class:`ChunkStore`.

    Parameters
    ----------
    store : ChunkStore
        The restored projections ``(N, R, C)``; every chunk must be done.

    Raises
    ------
    StackError
        A chunk without its done marker.
    """

    def __init__(self, store: ChunkStore) -> None:
        self.digests = store.marker_digests()
        count, rows, columns = store.shape
        self.store = store
        self.shape = (rows, count, columns)
        self.dtype = np.dtype(np.float32).str

    def slab(self, start: int, stop: int) -> StoredSinogramSlab:
        """Rows ``start:stop`` (read in the worker)."""
        return StoredSinogramSlab(self.store, start, stop)

    def describe(self) -> dict[str, Any]:
        """Provenance: the store's path; its identity is the sha256 of its chunks' digests."""
        digest = hashlib.sha256("\n".join(self.digests).encode()).hexdigest()
        return {
            "kind": "zarr store of projections, -log sinograms in the worker",
            "path": str(self.store.path),
            "identity": {"chunks_sha256": digest, "shape": list(self.store.shape)},
        }


def measured_sinograms(
    measured: np.ndarray, projections: CorrectedProjectionSource | None
) -> MeasuredSinogramSource | Any:
    """The measured sinograms for the workers: read by them, or sent from the client.

    Parameters
    ----------
    measured : numpy.ndarray
        ``(N, R, C)`` float32 line integrals the client computed (sent only when
        ``projections`` is ``None``).
    projections : CorrectedProjectionSource or None
        Where the workers read the scan (``None`` inside a data root).

    Returns
    -------
    MeasuredSinogramSource or asirp.stacks.ArraySource
        ``(R, N, C)`` sinograms.
    """
    if projections is not None:
        return MeasuredSinogramSource(projections)
    from asirp.stacks import ArraySource

    return ArraySource(np.ascontiguousarray(np.asarray(measured).transpose(1, 0, 2)))


def stored_sinograms(
    engine: StackEngine, shape: tuple[int, ...], block_projections: int
) -> StoredSinogramSource:
    """The sinograms of the restored projections in ``engine.store`` (``shape`` ``(N, R, C)``)."""
    count, rows, columns = (int(size) for size in shape)
    return StoredSinogramSource(ChunkStore(engine.store, (count, rows, columns), block_projections))


def volume_store(engine: StackEngine, which: str) -> Path:
    """The store of the ``"raw"`` or ``"restored"`` volume beside ``engine.store``.

    ``SCAN.projections.zarr`` gives ``SCAN.projections.raw_volume.zarr`` and
    ``SCAN.projections.restored_volume.zarr``.
    """
    if which not in VOLUMES:
        raise ValueError(f"which must be one of {VOLUMES}, got {which!r}")
    path = Path(engine.store)
    base = path.name[: -len(".zarr")] if path.name.endswith(".zarr") else path.name
    return path.with_name(f"{base}.{which}_volume.zarr")


def reconstruct_distributed(
    source: Any,
    angles_rad: np.ndarray,
    centre_px: float,
    engine: StackEngine,
    which: str,
    *,
    filter_name: str = FILTER,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Reconstruct every detector row on dask workers into :func:`volume_store`, read it back.

    Parameters
    ----------
    source : MeasuredSinogramSource, StoredSinogramSource or asirp.stacks.ArraySource
        The sinograms ``(R, N, C)``, line integrals.
    angles_rad : numpy.ndarray
        ``(N,)`` angles, radians.
    centre_px : float
        Rotation axis, detector columns.
    engine : StackEngine
        The cluster, the slices per task (``rows_per_task``), and the projections' store
        beside which the volume's is kept.
    which : str
        ``"raw"`` or ``"restored"`` (names the store).
    filter_name : str
        FBP filter.
    progress : callable, optional
        Called with the fraction of chunks done (0 to 1).

    Returns
    -------
    volume : numpy.ndarray
        ``(R, C, C)`` float32, attenuation per pixel (the same bits as
        :func:`asirp.tomo.reconstruct.reconstruct`).
    report : dict
        ``sinograms`` (where they came from), the store, the chunks run and skipped, the
        workers and the wall time.

    Raises
    ------
    asirp.stacks.StackError
        A failed chunk or a store made otherwise.
    """
    from asirp.stacks import ArraySource, process_stack

    rows, count, columns = source.shape
    angles = [float(angle) for angle in np.asarray(angles_rad, dtype=np.float64)]
    if len(angles) != count:
        raise StackError(f"{len(angles)} angles for sinograms of {count} projections")

    def reported(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1))

    store = volume_store(engine, which)
    outcome = process_stack(
        reconstruct_rows_chunk,
        source,
        store,
        chunk_len=int(engine.rows_per_task),
        function_kwargs={
            "angles_rad": angles,
            "centre_px": float(centre_px),
            "filter_name": filter_name,
        },
        scheduler=engine.scheduler,
        n_workers=engine.workers,
        progress=reported,
        output_frame=(columns, columns),
    )
    volume = ChunkStore(store, (rows, columns, columns), int(engine.rows_per_task)).read()
    if isinstance(source, ArraySource):
        where = "sent from the client"
    elif isinstance(source, StoredSinogramSource):
        where = f"read by the workers from {source.store.path}"
    else:
        where = f"read by the workers from {source.projections.path}"
    report = {
        "sinograms": where,
        "store": os.fspath(store),
        "scheduler": scheduler_name(engine),
        "chunks_run": outcome.chunks_run,
        "chunks_skipped": outcome.chunks_skipped,
        "total_chunks": outcome.total_chunks,
        "workers": sorted(set(outcome.workers)),
        "wall_s": outcome.wall_s,
    }
    return volume.astype(np.float32, copy=False), report
