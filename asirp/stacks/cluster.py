"""The dask.distributed clients of :func:`asirp.stacks.process_stack`.

:func:`local_cluster` makes a :class:`distributed.LocalCluster` of worker processes on
127.0.0.1: one task at a time per worker (its compute threads are pinned per task by
:func:`asirp.threads.fixed_threads`), the thread variables of each worker set to the same count
so no pool sizes itself to every core, workers x threads at most the cores, no dashboard, and
the scheduler's HTTP server (metrics, health: it starts even without a dashboard) on a free
loopback port instead of 8787. :func:`connect` opens a client on one of them or on a running
scheduler's address.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from asirp.stacks.errors import StackError

DEFAULT_WORKERS = 2
"""Worker processes of a local cluster when ``n_workers`` is not given (on this machine)."""


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StackError(f"{name} must be a positive whole number, got {value!r}")
    return value


def local_workers(n_workers: int | None, threads_per_worker: int) -> int:
    """Worker processes of a local cluster: ``n_workers``, or the default that fits the cores.

    Raises
    ------
    StackError
        When a count is not a positive whole number, or workers x threads exceed the cores
        this process may use (:func:`asirp.threads.available_cores`).
    """
    from asirp.threads import available_cores

    threads = _positive(threads_per_worker, "threads_per_worker")
    cores = available_cores()
    if n_workers is None:
        n_workers = max(1, min(DEFAULT_WORKERS, cores // threads))
    workers = _positive(n_workers, "n_workers")
    if workers * threads > cores:
        raise StackError(
            f"{workers} workers x {threads} threads exceed the {cores} cores of this machine"
        )
    return workers


def check_scheduler(scheduler: Any) -> None:
    """Refuse a ``scheduler`` that is not None nor an address ``tcp://HOST:PORT``."""
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise StackError(f"scheduler must be an address tcp://HOST:PORT, got {scheduler!r}")


@contextlib.contextmanager
def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1) -> Iterator[Any]:
    """A LocalCluster on 127.0.0.1 for the block, closed afterwards.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes; default :data:`DEFAULT_WORKERS`, fewer when the cores are fewer.
    threads_per_worker : int
        Compute threads of each worker.

    Yields
    ------
    distributed.LocalCluster

    Raises
    ------
    StackError
        When workers x threads exceed the cores this process may use.
    """
    from distributed import LocalCluster

    from asirp.threads import THREADS_VARIABLE

    workers = local_workers(n_workers, threads_per_worker)
    budget = str(threads_per_worker)
    environment = {
        THREADS_VARIABLE: budget,
        "OMP_NUM_THREADS": budget,
        "MKL_NUM_THREADS": budget,
        "OPENBLAS_NUM_THREADS": budget,
    }
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        env=environment,
    )
    try:
        yield cluster
    finally:
        cluster.close()


class SharedLocalCluster:
    """One :func:`local_cluster` for several :func:`asirp.stacks.process_stack` calls, lazily.

    Pass :meth:`address` as their ``scheduler``: the cluster starts at the first call that has
    chunks to run (a fully resumed job starts none) and serves the later ones; :meth:`close`
    (or the ``with`` block's end) closes it.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (as :func:`local_cluster`).
    threads_per_worker : int
        Compute threads of each worker.
    """

    def __init__(self, n_workers: int | None = None, threads_per_worker: int = 1) -> None:
        local_workers(n_workers, threads_per_worker)  # refuse a bad count now, not mid-run
        self._arguments = (n_workers, threads_per_worker)
        self._stack = contextlib.ExitStack()
        self._address: str | None = None

    def address(self) -> str:
        """The scheduler's address, starting the cluster on the first call."""
        if self._address is None:
            cluster = self._stack.enter_context(local_cluster(*self._arguments))
            self._address = str(cluster.scheduler_address)
        return self._address

    @property
    def started(self) -> bool:
        """Whether a cluster was started."""
        return self._address is not None

    def close(self) -> None:
        """Close the cluster if one was started."""
        self._stack.close()
        self._address = None

    def __enter__(self) -> SharedLocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def connect(scheduler: str | None, n_workers: int | None, threads: int) -> Iterator[Any]:
    """A Client on the scheduler at ``scheduler``, or on a :func:`local_cluster` made here."""
    from distributed import Client

    if scheduler is None:
        with local_cluster(n_workers, threads) as cluster:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        return
    check_scheduler(scheduler)
    try:
        client = Client(scheduler, timeout="30s")
    except OSError as error:
        raise StackError(f"cannot reach the dask scheduler at {scheduler}: {error}") from None
    try:
        yield client
    finally:
        client.close()
