"""One thread budget for the engine: torch, numba and BLAS together use at most N threads.

A control-room machine runs the RunEngine, the Tango device server and tiled beside ASIRP. The
engine computes in three thread pools: torch's intra-op pool (OpenMP), the compiled kernels'
pool (numba, on its own OpenMP runtime) and the BLAS pool (OpenBLAS, through numpy and scipy).
Left alone, each sizes itself to every core, and OpenMP threads spin for a while after each
parallel region, waiting for the next one. On a quiet machine that is fast. When other processes
want the same cores, the spinning threads of one pool take the time slices that the other pool's
threads (or the RunEngine) need, and every barrier waits for a thread that was descheduled: the
1024² Richardson-Lucy call became 6.5 to 14 times slower with two busy processes beside it, where
scikit-image's single thread became 3 times slower (issue 21, ``bench/bench_deconvolution.py``).

The budget
----------
``N`` is ``ASIRP_NUM_THREADS`` when set (a positive integer; ``asirp --threads N`` sets it for a
command and the servers it starts), else the cores this process may use (its CPU affinity, and a
container's CPU quota when one is set). :func:`apply_thread_budget` sets torch's intra-op pool
and the BLAS pools (threadpoolctl) to ``N``; the compiled kernels use as many threads as torch,
never more than ``N`` (:func:`kernel_threads`). The pools run one after another, never nested, so
at most ``N`` threads compute at any time. :func:`asirp.restore` applies the budget on its first
call; a later ``torch.set_num_threads`` by the caller is respected (below ``N``).

Idle kernel threads sleep
-------------------------
The compiled kernels' OpenMP pool is started with ``OMP_WAIT_POLICY=PASSIVE`` (unless the
environment sets a policy): between two restorations its threads sleep instead of spinning on
cores the RunEngine needs (:func:`kernel_pool_wait_policy`; the variable is set only while
numba starts its pool, so torch and child processes do not inherit it). torch's own pool keeps
its default, a short spin: a sleeping torch pool paid a wake-up per operation, which made a
256² call two and a half times slower on this project's virtual machine. Under contention both
pools shrink to the free cores anyway (:func:`compute_threads`), down to no worker at all.

A fixed count, for replays
--------------------------
Adapting to the free cores makes the thread count depend on what else runs, and torch's and the
kernels' reductions add in a different order on a different number of threads: the last bits
of a result change with the load. :func:`fixed_threads` pins the count (torch, the kernels and
BLAS) for a block, whatever the load; ``asirp replay`` runs a recorded restoration under the
count its provenance recorded (:mod:`asirp.replay`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import threading
from collections.abc import Iterator

THREADS_VARIABLE = "ASIRP_NUM_THREADS"
"""Environment variable holding the thread budget."""

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
"""OpenMP settings of the kernels' pool unless already set (see the module notes)."""

_lock = threading.Lock()
_applied: int | None = None
_fixed = contextvars.ContextVar[int | None]("asirp_fixed_threads", default=None)
"""Threads of torch and the kernels pinned by :func:`fixed_threads` in this thread, or None."""
_fixed_blas = contextvars.ContextVar[int | None]("asirp_fixed_blas_threads", default=None)
"""Threads of the BLAS pools pinned by :func:`fixed_threads` in this thread, or None."""


@contextlib.contextmanager
def kernel_pool_wait_policy() -> Iterator[None]:
    """Set :data:`WAIT_POLICY` in the environment for the block, where it is not set already.

    Wrap the first launch of numba's thread pool in it (OpenMP reads the variable when its
    runtime starts); the environment is as before afterwards.
    """
    added = [name for name in WAIT_POLICY if name not in os.environ]
    for name in added:
        os.environ[name] = WAIT_POLICY[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _cgroup_cpu_limit() -> int | None:
    """Whole CPUs of the cgroup v2 quota (``cpu.max``), rounded up; None without a quota."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as file:
            quota, period = file.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a container's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    return max(1, min(cores, quota) if quota is not None else cores)


def parse_thread_count(value: str | int, source: str = THREADS_VARIABLE) -> int:
    """A thread count as a positive integer; ``ValueError`` naming ``source`` otherwise."""
    try:
        count = int(str(value).strip())
    except ValueError:
        raise ValueError(
            f"{source} must be a positive whole number of threads, got {value!r}"
        ) from None
    if count < 1 or count > 4096:
        raise ValueError(f"{source} must be between 1 and 4096 threads, got {count}")
    return count


def thread_budget() -> int:
    """``N``: ``ASIRP_NUM_THREADS`` when set, else :func:`available_cores`.

    Raises
    ------
    ValueError
        When ``ASIRP_NUM_THREADS`` is set but is not a whole number from 1 to 4096.
    """
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    return parse_thread_count(value) if value else available_cores()


def apply_thread_budget(threads: int | None = None) -> int:
    """Size torch's intra-op pool and the BLAS pools to the budget; return it.

    Parameters
    ----------
    threads : int, optional
        The budget; default :func:`thread_budget`. Giving it also stores it in
        ``ASIRP_NUM_THREADS``, so processes started later (a device server, a worker) keep it.

    Returns
    -------
    int
        The budget now in force.
    """
    global _applied
    import torch
    from threadpoolctl import threadpool_limits

    count = thread_budget() if threads is None else parse_thread_count(threads, "threads")
    explicit = threads is not None or bool(os.environ.get(THREADS_VARIABLE, "").strip())
    if threads is not None:
        os.environ[THREADS_VARIABLE] = str(count)
    with _lock:
        # An explicit budget is set as given; the default only lowers torch's own choice, so
        # that a caller's earlier torch.set_num_threads(1) still holds.
        torch.set_num_threads(count if explicit else min(count, torch.get_num_threads()))
        threadpool_limits(limits=count, user_api="blas")  # global: not used as a context
        _applied = count
    return count


def ensure_thread_budget() -> int:
    """Apply the budget once per process (cheap afterwards); return it."""
    if _applied is not None:
        return _applied
    return apply_thread_budget()


_loadavg: int | None = None
"""An open descriptor of ``/proc/loadavg`` (read with ``pread``: 2 µs, where an ``open`` costs
tens of µs on some virtual machines)."""


def _read_runnable() -> int | None:
    """The runnable-thread count of ``/proc/loadavg`` (its fourth field), or None."""
    global _loadavg
    for _ in range(2):  # a descriptor closed behind our back (a daemonising parent) is reopened
        try:
            if _loadavg is None:
                _loadavg = os.open("/proc/loadavg", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            return int(os.pread(_loadavg, 128, 0).split()[3].split(b"/")[0])
        except OSError:
            _loadavg = None
        except (ValueError, IndexError):
            return None
    return None


def _own_runnable_threads() -> int:
    """Runnable threads of this process besides the calling one (``/proc/self/task``).

    Idle OpenMP workers of this process spin for a while after their last parallel region when
    the wait policy could not be set (torch imported before asirp): they would count as other
    work, though they stop as soon as this process's next region starts.
    """
    caller = threading.get_native_id()
    count = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for name in tasks:
        if not name.isdigit() or int(name) == caller:
            continue
        try:
            with open(f"/proc/self/task/{name}/stat", "rb") as file:
                fields = file.read()
        except OSError:  # the thread ended meanwhile
            continue
        if fields[fields.rfind(b")") + 2 : fields.rfind(b")") + 3] == b"R":
            count += 1
    return count


def other_runnable_threads() -> int | None:
    """Threads of other processes that want a core now; None if unknown.

    The fourth field of ``/proc/loadavg`` counts the runnable threads of the machine (the
    reader included) at the moment it is read; two reads, the larger kept, so that a busy
    process caught between two time slices still counts. This process's own runnable threads
    are left out (read only when the count says some other thread runs).
    """
    counts = [_read_runnable(), _read_runnable()]
    if None in counts:
        return None
    others = max(0, max(counts) - 1)
    if others:
        others = max(0, others - _own_runnable_threads())
    return others


def free_cores() -> int | None:
    """Cores of the machine not wanted by other runnable threads right now; None if unknown."""
    others = other_runnable_threads()
    if others is None:
        return None
    return max(0, (os.cpu_count() or 1) - others)


@contextlib.contextmanager
def compute_threads() -> Iterator[int]:
    """Run a computation on the budget's threads, or fewer when other work holds the cores.

    The count is torch's current one (the budget, or a caller's own lower
    ``torch.set_num_threads``), cut to the cores that other runnable threads leave free at this
    moment, and at least 1 (inside :func:`fixed_threads`: its count, uncut); torch's count is
    put back afterwards. A parallel region ends at a
    barrier that waits for its slowest thread; when another process holds that thread's core,
    every region waits for a scheduler time slice, and a restoration of a small map, made of
    thousands of short regions, became 30 times slower beside one busy process (issue 21). One
    thread that keeps its core loses only the share the other processes take. The compiled
    kernels follow torch's count (:func:`kernel_threads`).

    Yields
    ------
    int
        The thread count of the computation.
    """
    import torch

    budget = ensure_thread_budget()
    current = torch.get_num_threads()
    fixed = _fixed.get()
    if fixed is not None:  # pinned by fixed_threads: the same count whatever the load
        count = fixed
    else:
        count = min(current, budget)
        free = free_cores()
        if free is not None:
            count = max(1, min(count, free))
    if count != current:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if count != current:
            torch.set_num_threads(current)


def kernel_threads() -> int:
    """Threads for the compiled kernels: torch's count, within the budget and numba's pool.

    Inside :func:`fixed_threads`, its count (within numba's pool only).
    """
    import numba
    import torch

    fixed = _fixed.get()
    if fixed is not None:
        return max(1, min(fixed, numba.config.NUMBA_NUM_THREADS))
    budget = _applied if _applied is not None else ensure_thread_budget()
    return max(1, min(torch.get_num_threads(), budget, numba.config.NUMBA_NUM_THREADS))


def pinned_threads() -> int | None:
    """The count :func:`fixed_threads` pins in this thread, or None outside it."""
    return _fixed.get()


def blas_threads() -> int | None:
    """Threads of the BLAS pools: the budget applied (or pinned), None before any restoration."""
    return _fixed_blas.get() or _applied


@contextlib.contextmanager
def fixed_threads(count: int, blas: int | None = None) -> Iterator[int]:
    """Compute on exactly ``count`` threads inside the block, whatever the load.

    torch's intra-op pool and the compiled kernels use ``count`` threads (the kernels at most
    numba's pool, ``NUMBA_NUM_THREADS``); :func:`compute_threads` no longer cuts it to the free
    cores. The BLAS pools use ``blas`` threads (default ``count``). Everything is put back
    afterwards. The pin holds in the calling thread (a context variable): a restoration
    started from another thread is not pinned.

    Parameters
    ----------
    count : int
        Threads of torch and the kernels, 1 to 4096. It may exceed the budget and the cores
        (a replay of a result made on a larger machine): slower, but the same arithmetic.
    blas : int, optional
        Threads of the BLAS pools (OpenBLAS through numpy and scipy).

    Yields
    ------
    int
        ``count``.

    Raises
    ------
    ValueError
        If a count is not a whole number from 1 to 4096.
    """
    import torch
    from threadpoolctl import threadpool_limits

    count = parse_thread_count(count, "threads")
    blas_count = count if blas is None else parse_thread_count(blas, "blas threads")
    ensure_thread_budget()
    previous = torch.get_num_threads()
    token, blas_token = _fixed.set(count), _fixed_blas.set(blas_count)
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=blas_count, user_api="blas"):
            yield count
    finally:
        torch.set_num_threads(previous)
        _fixed.reset(token)
        _fixed_blas.reset(blas_token)
