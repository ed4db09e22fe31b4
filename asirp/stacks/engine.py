"""Apply a per-chunk function to a stack, on dask.distributed or in this process.

:func:`process_stack` submits one task per chunk not yet done (:mod:`asirp.stacks.store`) to a
dask.distributed cluster: a :class:`distributed.LocalCluster` of worker processes on
127.0.0.1 (dashboard off), or the scheduler at ``"tcp://HOST:PORT"`` (a SLURM or other
cluster). A task reads its chunk where it runs, calls ``function(block, **function_kwargs)``,
checks the result (shape, dtype, finite) and writes the chunk then its marker. Tasks are
submitted with ``retries=``: a task that raised is run again; a task whose worker died is
rescheduled on another worker by the scheduler itself (up to distributed's
``distributed.scheduler.allowed-failures`` deaths, then ``KilledWorker``).

:func:`process_stack_local` runs the same chunks through the same task in this process: the
reference that a distributed result equals bit for bit. That holds because every task computes
under :func:`asirp.threads.fixed_threads` with ``threads_per_worker`` threads (torch, the
kernels and BLAS), wherever and beside whatever it runs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asirp.stacks.cluster import check_scheduler, connect, local_workers
from asirp.stacks.errors import StackError
from asirp.stacks.source import Slab, Source
from asirp.stacks.store import ChunkStore

DEFAULT_RETRIES = 2
"""Reruns of a task that raised (a worker's death is counted separately by the scheduler)."""

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ChunkResult:
    """What one task did: its chunk, duration (s), where it ran and the chunk's sha256."""

    index: int
    duration_s: float
    worker: str
    sha256: str


@dataclass
class StackReport:
    """The outcome of :func:`process_stack` or :func:`process_stack_local`.

    Attributes
    ----------
    output : str
        The store's path.
    total_chunks : int
        Chunks of the stack.
    chunks_run : int
        Chunks computed by this call.
    chunks_skipped : int
        Chunks already done (their marker existed) and left alone.
    wall_s : float
        Wall time of the call, s (cluster start-up included).
    durations_s : dict of int to float
        Duration of each chunk run by this call, s, by chunk index.
    workers : list of str
        Addresses of the workers that ran chunks (``"local"`` in this process).
    """

    output: str
    total_chunks: int
    chunks_run: int
    chunks_skipped: int
    wall_s: float
    durations_s: dict[int, float] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)


def function_name(function: Callable[..., Any]) -> str:
    """``module.qualname`` of a plain module-level function; StackError otherwise."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not callable(function) or not module or not qualname or "<" in qualname:
        raise StackError(
            "the chunk function must be a plain function defined at module level "
            f"(importable by the workers), got {function!r}"
        )
    return f"{module}.{qualname}"


def _kwargs_json(function_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(function_kwargs or {})
    try:
        return json.loads(json.dumps(kwargs, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError):
        raise StackError("function_kwargs must be JSON values (numbers, strings, lists)") from None


def _current_worker() -> str:
    """The address of the dask worker running this, or ``"local"``."""
    if "distributed" not in sys.modules:
        return "local"
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:  # not inside a worker
        return "local"


def run_chunk(
    function: Callable[..., np.ndarray],
    function_kwargs: dict[str, Any],
    slab: Slab,
    store: ChunkStore,
    index: int,
    dtype: str,
    threads: int,
) -> ChunkResult:
    """One task: read a chunk, apply ``function``, check its result, write chunk and marker.

    Raises
    ------
    StackError
        When the result has another shape, a dtype that does not cast safely to ``dtype``, or
        values that are not finite.
    """
    from asirp.threads import fixed_threads

    began = time.perf_counter()
    with fixed_threads(threads):
        block = slab.read()
        result = np.asarray(function(block, **function_kwargs))
    expected = (slab.stop - slab.start, *store.shape[1:])
    where = f"chunk {index} (images {slab.start} to {slab.stop - 1})"
    if result.shape != expected:
        raise StackError(f"{where}: the function returned shape {result.shape}, not {expected}")
    if not np.can_cast(result.dtype, np.dtype(dtype), casting="safe"):
        raise StackError(f"{where}: the function returned {result.dtype}, not {np.dtype(dtype)}")
    result = result.astype(np.dtype(dtype), copy=False)
    if result.dtype.kind == "f" and not np.isfinite(result).all():
        raise StackError(f"{where}: the function returned NaN or infinite values")
    duration = time.perf_counter() - began
    digest = store.write_chunk(index, result, duration)
    return ChunkResult(index, duration, _current_worker(), digest)


@dataclass
class _Plan:
    store: ChunkStore
    todo: list[int]
    skipped: int
    kwargs: dict[str, Any]
    dtype: str


def _plan(
    function: Callable[..., Any],
    source: Source,
    output: Any,
    *,
    chunk_len: int,
    function_kwargs: dict[str, Any] | None,
    output_dtype: Any,
    threads: int,
    resume: bool,
    overwrite: bool,
    output_frame: tuple[int, int] | None = None,
) -> _Plan:
    """Check the arguments, create or reopen the store, list the chunks still to run."""
    from asirp.provenance import library_versions

    name = function_name(function)
    kwargs = _kwargs_json(function_kwargs)
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, int) or chunk_len < 1:
        raise StackError(f"chunk_len must be a positive whole number, got {chunk_len!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise StackError(f"threads_per_worker must be a positive whole number, got {threads!r}")
    dtype = np.dtype(output_dtype)
    if dtype.kind not in "biuf":
        raise StackError(f"output_dtype must be a real numeric dtype, got {output_dtype!r}")
    shape = tuple(source.shape)
    if output_frame is not None:
        try:
            frame = tuple(int(size) for size in output_frame)
        except (TypeError, ValueError):
            raise StackError(f"output_frame must be 2 sizes, got {output_frame!r}") from None
        if len(frame) != 2 or min(frame) < 1:
            raise StackError(f"output_frame must be 2 positive sizes, got {output_frame!r}")
        shape = (shape[0], *frame)
    described = source.describe()
    identity = {
        "function": name,
        "function_kwargs": kwargs,
        "shape": list(source.shape),
        "input_dtype": source.dtype,
        "dtype": dtype.str,
        "chunk_len": chunk_len,
        "threads": threads,  # the thread count changes a result's last bits
        "source": described.get("identity"),
    }
    if output_frame is not None:  # only then: stores made before keep their identity
        identity["output_shape"] = list(shape)
    versions = dict(library_versions())
    for library in ("zarr", "dask", "distributed"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[library] = importlib.metadata.version(library)
    store = ChunkStore.prepare(
        output,
        shape=shape,  # type: ignore[arg-type]
        dtype=dtype.str,
        chunk_len=chunk_len,
        identity=identity,
        provenance={"source": described, "versions": versions},
        resume=resume,
        overwrite=overwrite,
    )
    done = store.done_chunks()
    todo = [index for index in range(len(store.bounds())) if index not in done]
    return _Plan(store, todo, len(done), kwargs, dtype.str)


def _report(plan: _Plan, results: list[ChunkResult], began: float) -> StackReport:
    return StackReport(
        output=str(plan.store.path),
        total_chunks=len(plan.store.bounds()),
        chunks_run=len(results),
        chunks_skipped=plan.skipped,
        wall_s=time.perf_counter() - began,
        durations_s={result.index: result.duration_s for result in results},
        workers=sorted({result.worker for result in results}),
    )


def process_stack_local(
    function: Callable[..., np.ndarray],
    source: Source,
    output: Any,
    *,
    chunk_len: int,
    function_kwargs: dict[str, Any] | None = None,
    threads_per_worker: int = 1,
    resume: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    output_dtype: Any = "float32",
    output_frame: tuple[int, int] | None = None,
) -> StackReport:
    """Run every chunk in this process, one after another (no dask): the reference.

    Same arguments as :func:`process_stack` without the cluster's; ``threads_per_worker`` is
    the thread count each chunk is computed with.
    """
    began = time.perf_counter()
    plan = _plan(
        function,
        source,
        output,
        chunk_len=chunk_len,
        function_kwargs=function_kwargs,
        output_dtype=output_dtype,
        output_frame=output_frame,
        threads=threads_per_worker,
        resume=resume,
        overwrite=overwrite,
    )
    total = len(plan.store.bounds())
    results: list[ChunkResult] = []
    if progress is not None:
        progress(plan.skipped, total)
    for index in plan.todo:
        start, stop = plan.store.bounds()[index]
        results.append(
            run_chunk(
                function,
                plan.kwargs,
                source.slab(start, stop),
                plan.store,
                index,
                plan.dtype,
                threads_per_worker,
            )
        )
        if progress is not None:
            progress(plan.skipped + len(results), total)
    return _report(plan, results, began)


def _terminal_bar(futures: list[Any], address: str) -> None:
    """Show distributed's text progress bar in a background thread, when stdout is a terminal."""
    if not sys.stdout.isatty():
        return

    def show() -> None:
        from distributed.diagnostics.progressbar import TextProgressBar

        with contextlib.suppress(Exception):  # a bar must never break the run
            TextProgressBar(futures, scheduler=address, complete=True)

    threading.Thread(target=show, name="asirp-stack-progress", daemon=True).start()


def process_stack(
    function: Callable[..., np.ndarray],
    source: Source,
    output: Any,
    *,
    chunk_len: int,
    function_kwargs: dict[str, Any] | None = None,
    scheduler: str | Callable[[], str] | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    resume: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    output_dtype: Any = "float32",
    retries: int = DEFAULT_RETRIES,
    output_frame: tuple[int, int] | None = None,
) -> StackReport:
    """Apply ``function`` to a stack chunk by chunk on dask.distributed, into a zarr store.

    Parameters
    ----------
    function : callable
        ``function(block, **function_kwargs) -> array`` with ``block`` ``(k, R, C)`` and a
        result of the same shape (or ``(k, *output_frame)``); a plain module-level function
        the workers can import.
    source : ArraySource or StackSource
        The input stack ``(n, R, C)``.
    output : str or os.PathLike
        The store, ``OUTPUT.zarr``.
    chunk_len : int
        Images per chunk (and per task).
    function_kwargs : dict, optional
        JSON-safe keywords of ``function`` (recorded in the store).
    scheduler : str or callable, optional
        ``"tcp://HOST:PORT"`` of a running cluster, or a function giving that address called
        only when there are chunks to run (:class:`asirp.stacks.cluster.SharedLocalCluster`'s
        ``address``: one local cluster for several calls, started only if needed); default a
        LocalCluster on 127.0.0.1, closed at the end.
    n_workers : int, optional
        Worker processes of the LocalCluster (default 2, fewer on a smaller machine); with
        ``threads_per_worker`` at most the cores.
    threads_per_worker : int
        Threads each chunk is computed with (torch, the kernels, BLAS).
    resume : bool
        Keep the chunks an earlier run of the same job finished.
    overwrite : bool
        Replace an existing store made otherwise.
    progress : callable, optional
        ``progress(done, total)`` in chunks, after each chunk (skipped ones count as done).
        On a terminal distributed's text progress bar is shown as well.
    output_dtype : numpy dtype-like
        The store's dtype (the function's results must cast to it safely).
    retries : int
        Reruns of a task that raised.
    output_frame : (int, int), optional
        The shape of one result image when it differs from the input's ``(R, C)`` (e.g. a
        reconstructed slice ``(C, C)`` from a sinogram ``(N, C)``); the store is then
        ``(n, *output_frame)`` and the function returns ``(k, *output_frame)``.

    Returns
    -------
    StackReport

    Raises
    ------
    StackError
        Bad arguments, a store that does not fit, or a chunk whose result is wrong or whose
        task kept failing (the first such error; the other tasks are cancelled).
    """
    began = time.perf_counter()
    if not callable(scheduler):  # before the store is made: a wrong call leaves nothing behind
        check_scheduler(scheduler)
    if scheduler is None:
        local_workers(n_workers, threads_per_worker)
    plan = _plan(
        function,
        source,
        output,
        chunk_len=chunk_len,
        function_kwargs=function_kwargs,
        output_dtype=output_dtype,
        output_frame=output_frame,
        threads=threads_per_worker,
        resume=resume,
        overwrite=overwrite,
    )
    total = len(plan.store.bounds())
    if progress is not None:
        progress(plan.skipped, total)
    results: list[ChunkResult] = []
    if not plan.todo:
        return _report(plan, results, began)
    from distributed import as_completed

    run = uuid.uuid4().hex[:12]  # keys unique per run: a dead client's tasks never collide
    address = scheduler() if callable(scheduler) else scheduler
    with connect(address, n_workers, threads_per_worker) as client:
        futures = []
        for index in plan.todo:
            start, stop = plan.store.bounds()[index]
            futures.append(
                client.submit(
                    run_chunk,
                    function,
                    plan.kwargs,
                    source.slab(start, stop),
                    plan.store,
                    index,
                    plan.dtype,
                    threads_per_worker,
                    key=f"asirp-stack-{run}-{index}",
                    retries=retries,
                    pure=False,
                )
            )
        _terminal_bar(futures, client.scheduler.address)
        try:
            for future in as_completed(futures):
                results.append(future.result())
                if progress is not None:
                    progress(plan.skipped + len(results), total)
        except StackError:
            client.cancel(futures)
            raise
        except Exception as error:
            client.cancel(futures)
            message = str(error).splitlines()[0] if str(error) else ""
            raise StackError(f"a chunk failed: {type(error).__name__}: {message}") from None
    missing = set(range(total)) - plan.store.done_chunks()
    if missing:  # every task returned, so a missing marker means the store was changed meanwhile
        raise StackError(f"chunks {sorted(missing)} have no done marker after the run")
    return _report(plan, results, began)
