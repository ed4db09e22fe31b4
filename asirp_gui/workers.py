"""Long work off the GUI thread: one function in a Python thread, reported back by Qt signals.

The GUI thread never waits on a file read, a restoration or a device call: it starts a
:class:`TaskWorker` and gets ``finished_ok(result)`` or ``failed(message)`` (a one-line message,
never a traceback), ``progress(fraction)`` and then ``finished()`` in its own thread, through
queued signals (the worker object lives in the GUI thread; the signals are emitted from the
task's thread). Cancelling sets a :class:`threading.Event` that :func:`asirp.restore` checks
between iterations.

A plain :class:`threading.Thread` runs the task, not a ``QThread``: a cancelled torch
restoration inside a ``QThread`` crashed the process on exit (PyQt5 5.15, torch CPU).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal


def one_line(error: BaseException) -> str:
    """``error`` as one line for an operator: its type and message."""
    text = " ".join(str(error).split()) or "no details"
    return f"{type(error).__name__}: {text}"


class TaskWorker(QObject):
    """Run ``task(progress, cancel)`` in a thread.

    Parameters
    ----------
    task : callable
        ``task(progress, cancel) -> result``: ``progress(fraction)`` takes 0..1 and ``cancel``
        is a :class:`threading.Event` set when the operator cancels.
    """

    progress = Signal(float)
    finished_ok = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, task: Callable[[Callable[[float], None], threading.Event], Any]) -> None:
        super().__init__()
        self._task = task
        self.cancel_event = threading.Event()
        self._ended = threading.Event()  # set before the outcome is emitted
        self._thread = threading.Thread(target=self._run, daemon=True, name="asirp-gui-task")

    def start(self) -> None:
        """Start the task."""
        self._thread.start()

    def isRunning(self) -> bool:
        """Whether the task has started and its outcome is not yet known (QThread's name)."""
        return self._thread.ident is not None and not self._ended.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the task to end (``timeout_s`` s at most); True when it has ended."""
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        """Ask the task to stop (it ends with ``failed`` when it honours the request)."""
        self.cancel_event.set()

    def _run(self) -> None:
        try:
            result = self._task(self._report, self.cancel_event)
        except Exception as error:  # every failure becomes a message in the panel
            self._ended.set()
            self.failed.emit(one_line(error))
        else:
            self._ended.set()
            self.finished_ok.emit(result)
        self.finished.emit()

    def _report(self, fraction: float) -> None:
        self.progress.emit(float(fraction))


def start_task(
    workers: list[TaskWorker],
    task: Callable[[], Any],
    done: Callable[[Any], None] | None,
    failed: Callable[[str], None],
) -> TaskWorker:
    """Run ``task()`` in a :class:`TaskWorker` that stays in ``workers`` until it is reported.

    ``done(result)`` or ``failed(message)`` runs in the GUI thread; the worker leaves
    ``workers`` only after that slot ran, so ``bool(workers)`` is false only once the outcome is
    shown (what a tab's ``busy()`` reports).
    """

    def wrapped(progress: Callable[[float], None], cancel: threading.Event) -> Any:
        return task()

    worker = TaskWorker(wrapped)
    worker.failed.connect(failed)
    if done is not None:
        worker.finished_ok.connect(done)
    worker.finished.connect(lambda: workers.remove(worker))
    workers.append(worker)
    worker.start()
    return worker
