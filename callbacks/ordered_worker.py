"""Run items in one thread, in the order they came, with a bounded backlog: :class:`OrderedWorker`.

The temporal monitor scores every frame of a run against the frames before it (a CUSUM sums
evidence over frames), so frames must neither be reordered nor coalesced, unlike the map
restorer's requests (:class:`callbacks.worker.CoalescingWorker`, where the latest map wins).
What can be bounded is the backlog: an item marked *droppable* (a frame) is refused when the
queue already holds ``max_items`` droppable items or ``max_bytes`` of them, and the caller
counts and logs that. Items that are not droppable (run bookkeeping: start, descriptor,
resource, datum and stop documents) are always queued, so a run is always closed.

Examples
--------
>>> from callbacks.ordered_worker import OrderedWorker
>>> seen = []
>>> worker = OrderedWorker(seen.append, name="frames", max_items=2000)
>>> all(worker.submit(n, droppable=True) for n in range(3))
True
>>> worker.wait_idle(10)
True
>>> seen
[0, 1, 2]
>>> worker.close(10)
True
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_LOG = logging.getLogger(__name__)

T = TypeVar("T")


class OrderedWorker(Generic[T]):
    """One thread running items first in, first out; droppable items are bounded.

    Parameters
    ----------
    run_item : callable
        ``run_item(item)``, called in the worker thread. It should catch its own errors; one
        that escapes is logged and the worker goes on with the next item.
    name : str
        Name of the thread.
    max_items : int
        Most droppable items queued (not counting the one running).
    max_bytes : int
        Most bytes of droppable items queued (as declared by :meth:`submit`).

    Attributes
    ----------
    submitted, refused, completed : int
        Items queued, droppable items refused because the queue was full, items run.
    """

    def __init__(
        self,
        run_item: Callable[[T], None],
        name: str,
        *,
        max_items: int = 2000,
        max_bytes: int = 1 << 30,
    ) -> None:
        if isinstance(max_items, bool) or int(max_items) < 1:
            raise ValueError(f"max_items must be an integer >= 1, got {max_items!r}")
        if isinstance(max_bytes, bool) or int(max_bytes) < 1:
            raise ValueError(f"max_bytes must be an integer >= 1, got {max_bytes!r}")
        self._run_item = run_item
        self.max_items = int(max_items)
        self.max_bytes = int(max_bytes)
        self._cond = threading.Condition()
        # (item, droppable, nbytes): the size is kept so the budget is returned when it runs
        self._queue: collections.deque[tuple[T, bool, int]] = collections.deque()
        self._droppable = 0
        self._bytes = 0
        self._busy = False
        self._closed = False
        self.submitted = 0
        self.refused = 0
        self.completed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T, *, droppable: bool = False, nbytes: int = 0) -> bool:
        """Queue ``item``; return whether it was queued (a droppable one may be refused).

        Parameters
        ----------
        item : object
            Passed to ``run_item``.
        droppable : bool
            Refuse it when the droppable backlog is full (``max_items`` or ``max_bytes``).
        nbytes : int
            Its size, counted against ``max_bytes`` while it waits (droppable items only).

        Raises
        ------
        RuntimeError
            When the worker is closed.
        """
        nbytes = max(int(nbytes), 0) if droppable else 0
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker is closed")
            if droppable and (
                self._droppable >= self.max_items
                or (self._droppable and self._bytes + nbytes > self.max_bytes)
            ):
                self.refused += 1
                return False
            self._queue.append((item, droppable, nbytes))
            if droppable:
                self._droppable += 1
                self._bytes += nbytes
            self.submitted += 1
            self._cond.notify_all()
            return True

    @property
    def backlog(self) -> int:
        """Items waiting (not counting the one running)."""
        with self._cond:
            return len(self._queue)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                item, droppable, nbytes = self._queue.popleft()
                if droppable:
                    self._droppable -= 1
                    self._bytes -= nbytes
                self._busy = True
            try:
                self._run_item(item)
            except Exception:  # the runner catches its own errors; this is a last guard
                _LOG.exception("ordered worker %s: an item failed", self._thread.name)
            finally:
                with self._cond:
                    self._busy = False
                    self.completed += 1
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no item is queued or running; return whether that happened in time."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float | None) -> bool:
        """Run the queued items, then end the thread; return whether it ended in ``timeout``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()
