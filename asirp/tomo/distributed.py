"""Tomography projections restored on dask workers, which read and correct them from the file.

:func:`restore_stack_distributed` runs
:func:`~asirp.tomo.restore_projections.restore_transmission_chunk` per block of projections on
dask workers (:func:`asirp.stacks.process_stack`) into a resumable zarr store. Where the
blocks come from:

* **read by the workers** (:class:`CorrectedProjectionSource`): each task opens the scan file
  read-only in its worker, reads only its raw projection frames and flat/dark-corrects them
  with the median flat and median dark that the client computed once (two ``(R, C)`` float32
  frames carried by each task). Nothing of the stack travels from the client.
* **sent from the client** (:class:`asirp.stacks.ArraySource`): the corrected stack travels
  with the tasks through the scheduler. :func:`asirp.tomo.pipeline.run_tomo` uses this inside
  a :class:`asirp.safe_files.DataRoot`, whose input is opened by descriptor in the client: a
  worker, possibly on another machine, cannot use that descriptor, and opening the path again
  would bypass the root's checks.

Same bits either way: the worker calls :func:`~asirp.tomo.normalise.flat_dark_correct` itself,
with the client's median frames as one-frame flat and dark stacks (the median of one frame is
that frame, exactly), so every pixel goes through the same float32 operations as in the
whole-stack correction. The count of clipped pixels is taken from the client's whole-stack
correction, which the client makes anyway for the measured reconstruction and the centre.

A worker reads the file as :func:`asirp.tomo.exchange.read_scan` does (no external links,
virtual datasets or external storage; NaN/Inf refused) and checks before reading that the file
has the size and modification time the client saw and that the dataset still has the shape
and dtype it had: a file changed after planning gives one :class:`asirp.stacks.StackError`.

The reconstruction of both volumes on the workers, by bands of detector rows, is in
:mod:`asirp.tomo.distributed_volume`; :func:`shared_cluster` gives all steps one cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from asirp.stacks.errors import StackError
from asirp.stacks.source import MAX_CHUNK_BYTES, StackSource
from asirp.tomo.normalise import flat_dark_correct
from asirp.tomo.restore_projections import ProjectionPlan, restore_transmission_chunk

BLOCK_PROJECTIONS = 32
"""Projections restored per block: the unit of work of one task (and of the in-process loop)."""

ROWS_PER_TASK = 8
"""Detector rows (slices) reconstructed per task by default."""

SENT_FROM_CLIENT = "sent from the client"
"""``restored_on["projections"]`` when the corrected stack travelled with the tasks."""


@dataclass(frozen=True)
class StackEngine:
    """Where the projections are restored when not in this process: dask workers.

    Attributes
    ----------
    store : str or os.PathLike
        The zarr store of the restored transmission ``STORE.zarr`` (kept: a run that was
        interrupted resumes from its finished chunks when run again with the same plan).
    scheduler : str, optional
        ``"tcp://HOST:PORT"`` of a running dask cluster; default a LocalCluster on 127.0.0.1.
    workers : int, optional
        Worker processes of the LocalCluster (default: :func:`asirp.stacks.process_stack`'s).
    rows_per_task : int
        Detector rows (slices) reconstructed per task (:mod:`asirp.tomo.distributed_volume`;
        the volumes' stores sit beside ``store``).
    """

    store: str | os.PathLike
    scheduler: str | None = None
    workers: int | None = None
    rows_per_task: int = ROWS_PER_TASK

    def __post_init__(self) -> None:
        rows = self.rows_per_task
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows_per_task must be a whole number >= 1, got {rows!r}")


@contextlib.contextmanager
def shared_cluster(engine: StackEngine | None) -> Iterator[StackEngine | None]:
    """The engine with one LocalCluster for all of a run's steps, closed after the block.

    An engine without a scheduler would start a LocalCluster per step (restoration, each
    volume): seconds each. This yields the engine with a
    :class:`asirp.stacks.cluster.SharedLocalCluster`'s ``address`` as its scheduler: one
    cluster (the same workers and threads), started by the first step with chunks to run
    (none when everything is resumed). An engine with a scheduler, or ``None``, is yielded as
    it is.
    """
    if engine is None or engine.scheduler is not None:
        yield engine
        return
    from asirp.stacks.cluster import SharedLocalCluster

    with SharedLocalCluster(engine.workers) as cluster:
        yield dataclasses.replace(engine, scheduler=cluster.address)  # type: ignore[arg-type]


def scheduler_name(engine: StackEngine) -> str:
    """The engine's scheduler for a report: its address, or ``"LocalCluster"``."""
    return engine.scheduler if isinstance(engine.scheduler, str) else "LocalCluster"


@dataclass(frozen=True)
class ProjectionLayout:
    """Where a scan's projections lie in its file.

    Attributes
    ----------
    dataset : str
        The HDF5 dataset holding the projection frames (``/exchange/data``, or NXtomo's
        ``data/data`` holding projections, flats and darks together).
    shape : (int, int, int)
        The dataset's shape ``(M, R, C)``.
    dtype : str
        The dataset's dtype (numpy ``str``, e.g. ``"<u2"``).
    frames : tuple of int
        The dataset's frame of each projection, increasing (``0..N-1`` for Data Exchange, the
        ``image_key == 0`` frames for NXtomo).
    """

    dataset: str
    shape: tuple[int, int, int]
    dtype: str
    frames: tuple[int, ...]


def projection_layout(stream: BinaryIO, metadata: dict[str, Any], count: int) -> ProjectionLayout:
    """The projections' dataset and frames in a scan file that :func:`read_scan` has just read.

    Parameters
    ----------
    stream : binary file object
        The scan file, open (the same one ``read_scan`` read: its data and this layout agree).
    metadata : dict
        :attr:`asirp.tomo.exchange.TomoScan.metadata` (``format`` and ``data``).
    count : int
        The scan's projections ``N``.

    Returns
    -------
    ProjectionLayout

    Raises
    ------
    asirp.io.InputFileError
        The dataset or the image keys are not where ``read_scan`` found them, or do not give
        ``count`` projections.
    """
    import h5py

    from asirp.io import InputFileError, hdf5_dataset

    stream.seek(0)
    with h5py.File(stream, "r") as handle:
        data = hdf5_dataset(handle, str(metadata["data"]), "tomography file")
        if metadata.get("format") == "NXtomo":
            keys_name = posixpath.join(posixpath.dirname(data.name), "image_key")
            keys = np.asarray(hdf5_dataset(handle, keys_name, "tomography file")[()])
            frames = np.flatnonzero(keys == 0)
        else:
            frames = np.arange(min(count, data.shape[0]))
        layout = ProjectionLayout(
            dataset=data.name,
            shape=tuple(int(size) for size in data.shape),  # type: ignore[arg-type]
            dtype=data.dtype.str,
            frames=tuple(int(frame) for frame in frames),
        )
    if len(layout.frames) != count:
        raise InputFileError(
            f"{data.name} holds {len(layout.frames)} projections, the scan read {count}"
        )
    return layout


def median_references(flats: np.ndarray, darks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The median flat and median dark, ``(R, C)`` float32 each, counts.

    Exactly the frames :func:`~asirp.tomo.normalise.flat_dark_correct` computes from the
    stacks; given back to it as one-frame stacks they give the same bits.
    """
    flat = np.ascontiguousarray(np.median(flats, axis=0).astype(np.float32))
    dark = np.ascontiguousarray(np.median(darks, axis=0).astype(np.float32))
    return flat, dark


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(array)
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def read_raw_frames(
    path: str,
    layout: ProjectionLayout,
    frames: tuple[int, ...],
    stamp: tuple[int, int] | None,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Raw frames of the scan file as float32 counts, checked as :func:`read_scan` checks them.

    Parameters
    ----------
    path : str
        The scan file.
    layout : ProjectionLayout
        The dataset, its shape and dtype (checked before reading).
    frames : tuple of int
        The dataset's frames to read, increasing.
    stamp : (int, int) or None
        ``(st_size, st_mtime_ns)`` the file must have; ``None``: not checked.
    rows : (int, int), optional
        Only detector rows ``rows[0]:rows[1]`` (default all).

    Returns
    -------
    numpy.ndarray
        ``(len(frames), rows, C)`` float32 counts.

    Raises
    ------
    StackError
        A missing or unreadable file, a file changed since the client read it, a dataset
        with another shape or dtype, a link or storage out of the file, or NaN/Inf.
    """
    import h5py

    from asirp.io import InputFileError, hdf5_dataset

    name = Path(path).name
    _, height, columns = layout.shape
    band = slice(0, height) if rows is None else slice(int(rows[0]), int(rows[1]))
    count = len(range(*band.indices(height)))
    need = len(frames) * count * columns * max(np.dtype(layout.dtype).itemsize, 4)
    if need > MAX_CHUNK_BYTES:
        raise StackError(f"a chunk of {need} bytes is larger than {MAX_CHUNK_BYTES} bytes")
    try:
        # opened once: the file whose size and mtime are checked is the file read
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            if stamp is not None and (info.st_size, info.st_mtime_ns) != tuple(stamp):
                raise StackError(
                    f"{name} changed after the client read it (size or modification time "
                    "differ); run the reconstruction again"
                )
            with h5py.File(stream, "r") as handle:
                node = hdf5_dataset(handle, layout.dataset, name)
                if tuple(node.shape) != layout.shape or node.dtype.str != layout.dtype:
                    raise StackError(
                        f"{name}::{layout.dataset} is {node.dtype} {tuple(node.shape)}, "
                        f"expected {np.dtype(layout.dtype)} {layout.shape}: the file changed "
                        "after the client read it"
                    )
                first, last = frames[0], frames[-1]
                if last - first + 1 == len(frames):  # contiguous: one slice
                    raw = node[first : last + 1, band]
                else:  # NXtomo frames between flats and darks: increasing indices
                    raw = node[list(frames), band]
    except InputFileError as error:
        raise StackError(str(error)) from None
    except OSError as error:
        raise StackError(f"cannot read {name}: {error}") from None
    # the conversion read_scan makes (float32, overflow to inf caught just below)
    with np.errstate(over="ignore", invalid="ignore"):
        block = np.asarray(raw, dtype=np.float32)
    if not np.isfinite(block).all():
        raise StackError(
            f"{name}::{layout.dataset} holds NaN/Inf in frames {frames[0]} to {frames[-1]}"
        )
    return block


@dataclass(frozen=True)
class CorrectedSlab:
    """Projections ``start:stop`` of a scan, read from the file and corrected in the worker.

    Attributes
    ----------
    path : str
        The scan file, absolute, as the workers see it.
    layout : ProjectionLayout
        The dataset, its shape and dtype (checked before reading).
    frames : tuple of int
        This slab's frames of the dataset, increasing.
    flat, dark : numpy.ndarray
        ``(R, C)`` float32 median flat and median dark, counts.
    stamp : (int, int) or None
        ``(st_size, st_mtime_ns)`` the client saw; ``None``: not checked.
    start, stop : int
        This slab's projections.
    """

    path: str
    layout: ProjectionLayout
    frames: tuple[int, ...]
    flat: np.ndarray
    dark: np.ndarray
    stamp: tuple[int, int] | None
    start: int
    stop: int

    def read(self) -> np.ndarray:
        """Read the raw frames and correct them: ``(stop - start, R, C)`` float32 transmission.

        Raises
        ------
        StackError
            A missing or unreadable file, a file changed since the client read it, a dataset
            with another shape or dtype, a link or storage out of the file, or NaN/Inf.
        """
        block = read_raw_frames(self.path, self.layout, self.frames, self.stamp)
        return flat_dark_correct(block, self.flat[None], self.dark[None]).values


class CorrectedProjectionSource:
    """A scan's flat/dark-corrected projections, read and corrected by each task's worker.

    Parameters
    ----------
    path : str or os.PathLike
        The scan file, as the workers see it (a shared file system on a cluster).
    layout : ProjectionLayout
        Where the projections lie in it (:func:`projection_layout`).
    flat, dark : numpy.ndarray
        ``(R, C)`` median flat and median dark, counts (:func:`median_references`).
    stamp : (int, int), optional
        ``(st_size, st_mtime_ns)`` of the file the client read; each task refuses a file that
        differs.

    Attributes
    ----------
    shape : (int, int, int)
        ``(N, R, C)``, the projections.
    dtype : str
        ``"<f4"``: what a slab gives.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layout: ProjectionLayout,
        flat: np.ndarray,
        dark: np.ndarray,
        stamp: tuple[int, int] | None = None,
    ) -> None:
        frames = np.asarray(layout.frames, dtype=np.int64)
        if frames.size == 0 or np.any(np.diff(frames) <= 0) or frames[0] < 0:
            raise StackError("the projection frames must be increasing indices >= 0")
        if frames[-1] >= layout.shape[0]:
            raise StackError(f"frame {int(frames[-1])} is beyond the dataset's {layout.shape[0]}")
        frame_shape = tuple(layout.shape[1:])
        references = []
        for what, values in (("flat", flat), ("dark", dark)):
            array = np.ascontiguousarray(values, dtype=np.float32)
            if array.shape != frame_shape:
                raise StackError(f"the median {what} is {array.shape}, the frames {frame_shape}")
            references.append(array)
        self.path = str(Path(path).absolute())
        self.layout = layout
        self.flat, self.dark = references
        self.stamp = None if stamp is None else (int(stamp[0]), int(stamp[1]))
        self.shape = (len(layout.frames), *frame_shape)
        self.dtype = np.dtype(np.float32).str

    def slab(self, start: int, stop: int) -> CorrectedSlab:
        """Projections ``start:stop`` (read and corrected in the worker)."""
        return CorrectedSlab(
            self.path,
            self.layout,
            self.layout.frames[start:stop],
            self.flat,
            self.dark,
            self.stamp,
            start,
            stop,
        )

    def describe(self) -> dict[str, Any]:
        """Provenance: the file's (as :meth:`asirp.stacks.StackSource.describe`), the frames.

        The identity (checked on resume) adds the sha256 of the frame list and of the median
        flat and dark to the file's size and first-MiB hash.
        """
        layout = self.layout
        described = StackSource(self.path, layout.dataset, layout.shape, layout.dtype).describe()
        described["kind"] = "hdf5, flat/dark-corrected in the worker"
        described["identity"] = {
            **described["identity"],
            "frames_sha256": _digest(np.asarray(layout.frames, dtype=np.int64)),
            "references_sha256": _digest(self.flat, self.dark),
        }
        return described


def restore_stack_distributed(
    transmission: np.ndarray,
    plan: ProjectionPlan,
    engine: StackEngine,
    *,
    source: CorrectedProjectionSource | None = None,
    block_projections: int = BLOCK_PROJECTIONS,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Restore all projections on dask workers into ``engine.store``, then read them back.

    The same blocks and the same per-projection restoration as
    :func:`asirp.tomo.pipeline.restore_stack`, so the result is the same bits (with the same
    thread count per worker).

    Parameters
    ----------
    transmission : numpy.ndarray
        ``(N, R, C)`` float32 flat/dark-corrected transmission (sent to the workers only when
        ``source`` is ``None``; its shape is the store's either way).
    plan : ProjectionPlan
        The frozen restoration.
    engine : StackEngine
        The store and the cluster.
    source : CorrectedProjectionSource, optional
        The workers read and correct the projections from the file; default: the corrected
        stack is sent from this process (:class:`asirp.stacks.ArraySource`).
    block_projections : int
        Projections per chunk (and per task).
    seed : int
        Seed of methods that use randomness.
    device : str
        ``"cpu"`` (bit-for-bit reproducible), ``"cuda"`` or ``"auto"``.
    progress : callable, optional
        Called with the fraction of chunks done (0 to 1).

    Returns
    -------
    restored : numpy.ndarray
        ``(N, R, C)`` float32 transmission.
    report : dict
        The engine's report (chunks run and skipped, workers, wall time) and ``projections``:
        ``"read by the workers from PATH"`` or :data:`SENT_FROM_CLIENT`.

    Raises
    ------
    asirp.stacks.StackError
        A failed chunk, a store made otherwise, or ``source`` of another shape than
        ``transmission``.
    """
    from asirp.stacks import ArraySource, ChunkStore, process_stack

    shape = tuple(int(size) for size in transmission.shape)
    if source is not None and tuple(source.shape) != shape:
        raise StackError(f"the source holds {source.shape} projections, the scan {shape}")

    def reported(done: int, total: int) -> None:
        if progress is not None:
            progress(done / max(total, 1))

    stack_source: Any = source
    if source is None:
        stack_source = ArraySource(np.ascontiguousarray(transmission, dtype=np.float32))
    outcome = process_stack(
        restore_transmission_chunk,
        stack_source,
        engine.store,
        chunk_len=int(block_projections),
        function_kwargs={
            "method": plan.method,
            "psf_fwhm_px": plan.psf_fwhm_px,
            "params": plan.params,
            "seed": int(seed),
            "device": device,
        },
        scheduler=engine.scheduler,
        n_workers=engine.workers,
        progress=reported,
    )
    restored = ChunkStore(engine.store, shape, int(block_projections)).read()  # type: ignore[arg-type]
    report = {
        "projections": (
            SENT_FROM_CLIENT if source is None else f"read by the workers from {source.path}"
        ),
        "store": os.fspath(engine.store),
        "scheduler": scheduler_name(engine),
        "chunks_run": outcome.chunks_run,
        "chunks_skipped": outcome.chunks_skipped,
        "total_chunks": outcome.total_chunks,
        "workers": sorted(set(outcome.workers)),
        "wall_s": outcome.wall_s,
    }
    return restored.astype(np.float32, copy=False), report
