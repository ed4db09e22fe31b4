"""Long-running commands and their outcome, by request id (no Tango import).

``Restore``, ``Submit`` and ``ReconstructTomo`` return at once with a request id; the work runs
in the component's worker. Following ska-tango-base's long-running-command attributes, the
device shows each command as ``(id, status)`` pairs (``longRunningCommandStatus``), the
progress of the running one as ``(id, percent)`` (``longRunningCommandProgress``) and the
outcome of the latest finished one as ``(id, JSON)`` (``longRunningCommandResult``). This module
keeps that book; the device pushes the three attributes as change events when it changes.

Statuses: ``IN_PROGRESS``, ``COMPLETED``, ``FAILED``, ``ABORTED`` (ska-tango-base's names).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from asirp_device.requests import RequestFailed, ResultRecord, UnknownRequest

IN_PROGRESS, COMPLETED, FAILED, ABORTED = "IN_PROGRESS", "COMPLETED", "FAILED", "ABORTED"

KEPT_COMMANDS = 16
"""Commands the book remembers (the oldest finished ones are dropped first)."""


class LongCommands:
    """Status, progress and outcome of the latest long commands, by request id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: OrderedDict[int, str] = OrderedDict()
        self._progress: tuple[int, int] | None = None
        self._result: tuple[int, str] | None = None

    def begin(self, request_id: int) -> None:
        """Record a command that was accepted (unless its outcome already arrived)."""
        with self._lock:
            self._status.setdefault(int(request_id), IN_PROGRESS)
            while len(self._status) > KEPT_COMMANDS:
                self._status.popitem(last=False)

    def progress(self, percent: int) -> bool:
        """The running command's progress, percent; return whether a command is running."""
        with self._lock:
            running = [key for key, status in self._status.items() if status == IN_PROGRESS]
            if not running:
                return False
            self._progress = (running[-1], int(percent))
            return True

    def settle(self, fetch: Callable[[int], ResultRecord | Mapping[str, Any]]) -> bool:
        """Ask ``fetch`` (the component's ``fetch_result``) how running commands ended.

        Returns whether any command's status changed. ``fetch`` raises the component's
        ``NotReady`` while a command runs (it stays ``IN_PROGRESS``). It returns a
        :class:`ResultRecord` for a restoration, or, for other commands (``ReconstructTomo``),
        their outcome itself: a JSON-serialisable mapping whose ``status`` is ``COMPLETED``,
        ``FAILED`` or ``ABORTED``.
        """
        changed = False
        with self._lock:
            running = [key for key, status in self._status.items() if status == IN_PROGRESS]
        for request_id in running:
            try:
                record = fetch(request_id)
            except RequestFailed as error:
                message = " ".join(str(error).split())
                status = ABORTED if "aborted" in message else FAILED
                outcome = {"status": status, "reason": message}
            except UnknownRequest:
                status, outcome = FAILED, {"status": FAILED, "reason": "no longer kept"}
            except Exception:  # not finished yet (NotReady): ask again at the next change
                continue
            else:
                if isinstance(record, Mapping):
                    outcome = dict(record)
                    status = str(outcome.get("status", FAILED))
                    if status not in (COMPLETED, FAILED, ABORTED):
                        status = outcome["status"] = FAILED
                    self._store(request_id, status, outcome)
                    changed = True
                    continue
                status = COMPLETED
                outcome = {
                    "status": COMPLETED,
                    "method": record.restoration.method,
                    "sequence": record.sequence,
                    "duration_ms": round(record.duration_s * 1000.0, 3),
                }
            self._store(request_id, status, outcome)
            changed = True
        return changed

    def _store(self, request_id: int, status: str, outcome: Mapping[str, Any]) -> None:
        with self._lock:
            self._status[request_id] = status
            self._result = (request_id, json.dumps(outcome, sort_keys=True))
            if status == COMPLETED:
                self._progress = (request_id, 100)

    @property
    def status_pairs(self) -> list[str]:
        """``[id, status, id, status, ...]`` as text, oldest first."""
        with self._lock:
            return [text for key, status in self._status.items() for text in (str(key), status)]

    @property
    def progress_pair(self) -> list[str]:
        """``[id, percent]`` of the running or latest command; empty before one."""
        with self._lock:
            return [] if self._progress is None else [str(v) for v in self._progress]

    @property
    def result_pair(self) -> tuple[str, str]:
        """``(id, JSON outcome)`` of the latest finished command; ``("", "")`` before one."""
        with self._lock:
            if self._result is None:
                return "", ""
            return str(self._result[0]), self._result[1]
