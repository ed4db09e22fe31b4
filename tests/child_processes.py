"""Child processes of the tests (servers, workers): the end of their logs, and a clean stop.

Shared by :mod:`tests.qserver_support` (redis, RE Manager) and :mod:`tests.dask_support`
(scheduler, workers); each child is started with ``start_new_session=True``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

STOP_TIMEOUT_S = 20.0
"""How long a child gets to end after SIGTERM, s, before SIGKILL."""

LOG_TAIL_CHARS = 4000
"""Characters of a child's log shown when something fails."""


def log_tail(path: Path) -> str:
    """The end of a child's log file (``""`` when it has none)."""
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except FileNotFoundError:
        return ""


def stop_process(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Stop a child started with ``start_new_session=True``: terminate, wait, then kill.

    The child's process group (its PID) is killed afterwards as well, so the processes it
    started (the RE Manager's manager and worker, a nanny's worker) never outlive it.

    Returns
    -------
    int
        The child's exit status.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    status = process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return status
