"""A real dask scheduler and workers for tests, each a child process on 127.0.0.1.

:func:`dask_cluster` starts ``dask scheduler --host 127.0.0.1 --port PORT --no-dashboard`` at
a free port (its metrics server on a free loopback port too) and ``n_workers`` ``dask worker
tcp://127.0.0.1:PORT --nthreads 1 --no-dashboard --host 127.0.0.1 --no-nanny`` (each in its
own session, its output in a log file), waits until a client sees all workers, and yields a
:class:`DaskCluster` (the address and the worker processes: without a nanny a worker's PID is
the worker itself, so a test may kill it). Everything is stopped by PID however the block ends
(terminate, wait, kill, then the child's process group). The children get the repository on
``PYTHONPATH`` so the workers can import functions defined in ``tests/``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.asirp_device.conftest import free_port
from tests.child_processes import log_tail, stop_process

REPOSITORY = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
"""Scheduler and workers start within this (a worker imports distributed: seconds)."""


def dask_script() -> str:
    """The ``dask`` command of this interpreter's environment."""
    return str(Path(sysconfig.get_path("scripts")) / "dask")


def child_environment() -> dict[str, str]:
    """This environment with the repository first on ``PYTHONPATH`` and one thread per worker."""
    environment = dict(os.environ)
    paths = [str(REPOSITORY), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    environment["ASIRP_NUM_THREADS"] = "1"
    return environment


@dataclass
class DaskCluster:
    """A running scheduler and its workers (child processes of the test)."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_text(self) -> str:
        """The tail of every child's log, for a failure report."""
        return "\n".join(f"--- {path.name} ---\n{log_tail(path)}" for path in self.logs)


def _start(argv: list[str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPOSITORY,
            env=child_environment(),
            start_new_session=True,
        )


def wait_for_workers(address: str, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Return when ``count`` workers are connected to the scheduler at ``address``."""
    from distributed import Client

    with Client(address, timeout=f"{timeout_s}s") as client:
        client.wait_for_workers(count, timeout=timeout_s)


@contextlib.contextmanager
def dask_cluster(folder: Path, n_workers: int = 2) -> Iterator[DaskCluster]:
    """A dask scheduler and ``n_workers`` single-thread workers on 127.0.0.1 for this block.

    Parameters
    ----------
    folder : pathlib.Path
        A folder of the test for the children's logs.
    n_workers : int
        Workers to start and wait for.

    Yields
    ------
    DaskCluster
    """
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler_log = folder / f"dask-scheduler-{port}.log"
    cluster = DaskCluster(
        address,
        _start(
            [
                *(dask_script(), "scheduler", "--host", "127.0.0.1", "--port", str(port)),
                "--no-dashboard",
                # its HTTP server (metrics) runs anyway: a free loopback port, not 8787
                *("--dashboard-address", "127.0.0.1:0"),
            ],
            scheduler_log,
        ),
        logs=[scheduler_log],
    )
    try:
        for number in range(n_workers):
            log = folder / f"dask-worker-{port}-{number}.log"
            cluster.logs.append(log)
            cluster.workers.append(
                _start(
                    # no nanny: the child's PID is the worker itself, so a test can kill it
                    [
                        *(dask_script(), "worker", address, "--nthreads", "1"),
                        *("--no-dashboard", "--host", "127.0.0.1", "--no-nanny"),
                    ],
                    log,
                )
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while cluster.scheduler.poll() is None:  # the scheduler must listen before a client
            try:
                wait_for_workers(address, n_workers, max(1.0, deadline - time.monotonic()))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if cluster.scheduler.poll() is not None:
            raise RuntimeError("the dask scheduler exited")
        yield cluster
    except BaseException:
        print(cluster.log_text(), file=sys.stderr)
        raise
    finally:
        for process in [*cluster.workers, cluster.scheduler]:
            stop_process(process)
