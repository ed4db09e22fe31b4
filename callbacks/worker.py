"""Run jobs in one thread, the latest job of each key winning: :class:`CoalescingWorker`.

The live restorer submits a restoration request each time a few more rows of a map are done;
when restoring is slower than acquiring, the requests of one run pile up and only the newest
is worth running. The worker keeps at most one pending job per key (a run): a newer job takes
the place of the pending one (it keeps its turn in the queue), except that a final job is never
replaced or dropped, and a job that is not final submitted after its key's final one is ignored.
Keys are served in the order they were first queued.

The worker knows nothing of maps or restorations: a job is any object with a hashable ``key``
and a ``final`` flag (:class:`Job`), and the function given to the worker runs it.

Examples
--------
>>> from dataclasses import dataclass
>>> from callbacks.worker import CoalescingWorker
>>> @dataclass
... class Square:
...     key: str
...     value: int
...     final: bool = False
>>> done = []
>>> worker = CoalescingWorker(lambda job: done.append(job.value**2), name="squares")
>>> worker.submit(Square("a", 3, final=True))
>>> worker.wait_idle(10)
True
>>> done
[9]
>>> worker.close(10)
True
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

_LOG = logging.getLogger(__name__)


class Job(Protocol):
    """What the worker needs of a job: the key it coalesces on, and whether it is final."""

    @property
    def key(self) -> Hashable:
        """Jobs of one key coalesce (a run's uid, for the live restorer)."""
        ...

    @property
    def final(self) -> bool:
        """A final job is never replaced or dropped."""
        ...


J = TypeVar("J", bound=Job)


class CoalescingWorker(Generic[J]):
    """One thread running jobs; at most one pending job per key, the latest one wins.

    A final job is never replaced or dropped; a job that is not final submitted after its
    key's final one is ignored.

    Parameters
    ----------
    run_job : callable
        ``run_job(job)``, called in the worker thread. It should catch its own errors; one
        that escapes is logged and the worker goes on.
    name : str
        Name of the thread.
    what : str
        What the worker is, for the error raised by :meth:`submit` once it is closed.

    Attributes
    ----------
    submitted, coalesced, completed : int
        Jobs submitted; jobs that found a pending job of their key (and replaced it, or were
        ignored after a final one); jobs run.
    """

    def __init__(self, run_job: Callable[[J], None], name: str, what: str = "worker") -> None:
        self._run_job = run_job
        self._what = what
        self._cond = threading.Condition()
        self._pending: collections.OrderedDict[Hashable, J] = collections.OrderedDict()
        self._busy = False
        self._closed = False
        self.submitted = 0
        self.coalesced = 0
        self.completed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: J) -> None:
        """Queue ``job``, in place of its key's pending job unless that one is final.

        Raises
        ------
        RuntimeError
            When the worker is closed.
        """
        key = job.key
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self._what} is closed")
            self.submitted += 1
            queued = self._pending.get(key)
            if queued is not None:
                self.coalesced += 1
                if queued.final and not job.final:
                    return
            self._pending[key] = job  # an existing key keeps its place in the queue
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                _, job = self._pending.popitem(last=False)
                self._busy = True
            try:
                self._run_job(job)
            except Exception:  # the job runner catches its own errors; this is a last guard
                _LOG.exception("%s: the job for %s failed", self._what, job.key)
            finally:
                with self._cond:
                    self._busy = False
                    self.completed += 1
                    self._cond.notify_all()

    @property
    def idle(self) -> bool:
        """Whether no job is pending or running."""
        with self._cond:
            return not self._pending and not self._busy

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no job is pending or running; return whether that happened in time."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float | None) -> bool:
        """Run the pending jobs, then end the thread; return whether it ended within ``timeout``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()
