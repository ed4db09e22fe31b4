"""Which raw runs live mode has seen, and which published result is each one's final restoration.

:class:`LiveRunBook` remembers, for the latest :data:`MAX_LIVE_RUNS` raw runs that reached live
mode, whether their final restoration is still to come, was published (with its request id and
the derived run that holds it in tiled) or failed (with the reason). The device's
``LiveResultOf(run_uid)`` asks it through :meth:`LiveRunBook.request_id`, so a client gets *the*
restoration live mode made of a run (``FetchResult`` of that id) instead of restoring the map
again. Nothing here imports Tango; the book has its own lock (live mode writes it from its
dispatcher and restorer threads, the device reads it from request threads).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, replace
from typing import Literal

from asirp_device.component import NotReady

MAX_LIVE_RUNS = 64
"""How many raw runs (the latest) :class:`LiveRunBook` remembers."""

RunState = Literal["restoring", "restored", "failed"]


class UnknownRun(LookupError):
    """Live mode never saw this run (or it is older than the latest :data:`MAX_LIVE_RUNS`)."""


class LiveRunFailed(RuntimeError):
    """The run's final live restoration failed, or the run was not restored (the reason says)."""


@dataclass(frozen=True)
class LiveRun:
    """What live mode knows of one raw run.

    Attributes
    ----------
    run_uid : str
        Uid of the raw run (its start document's ``uid``).
    state : {"restoring", "restored", "failed"}
        Its final restoration is still to come, was published, or failed.
    partial_results : int
        Partial restorations published so far.
    request_id : int or None
        Request id of the published final result (``FetchResult``'s argument).
    derived_uid : str or None
        Derived run in tiled that holds the final result (``None``: not written to tiled).
    reason : str
        Why it failed (empty otherwise).
    """

    run_uid: str
    state: RunState = "restoring"
    partial_results: int = 0
    request_id: int | None = None
    derived_uid: str | None = None
    reason: str = ""


class LiveRunBook:
    """The latest raw runs seen by live mode and where each one's final result is (thread-safe).

    Parameters
    ----------
    size : int
        Most runs remembered; the oldest is forgotten first.
    """

    def __init__(self, size: int = MAX_LIVE_RUNS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        self._size = size
        self._runs: collections.OrderedDict[str, LiveRun] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)

    def _put(self, run: LiveRun) -> None:
        """Keep ``run`` as the newest entry and forget the oldest beyond the size (lock held)."""
        self._runs[run.run_uid] = run
        self._runs.move_to_end(run.run_uid)
        while len(self._runs) > self._size:
            self._runs.popitem(last=False)

    def begin(self, run_uid: str) -> None:
        """A map run started: its final restoration is to come."""
        with self._lock:
            self._put(LiveRun(run_uid))

    def partial(self, run_uid: str) -> None:
        """A partial restoration of ``run_uid`` was published (counted; unknown runs ignored)."""
        with self._lock:
            run = self._runs.get(run_uid)
            if run is not None and run.state == "restoring":
                self._runs[run_uid] = replace(run, partial_results=run.partial_results + 1)

    def restored(self, run_uid: str, request_id: int, derived_uid: str | None) -> None:
        """The final restoration of ``run_uid`` was published as request ``request_id``."""
        with self._lock:
            run = self._runs.get(run_uid, LiveRun(run_uid))
            self._put(
                replace(run, state="restored", request_id=request_id, derived_uid=derived_uid)
            )

    def failed(self, run_uid: str, reason: str) -> None:
        """``run_uid`` has no final live result, because of ``reason`` (one line)."""
        with self._lock:
            run = self._runs.get(run_uid, LiveRun(run_uid))
            self._put(replace(run, state="failed", reason=" ".join(str(reason).split())))

    def abandon(self, reason: str) -> list[str]:
        """Mark every run still ``restoring`` as failed (live mode ended); return their uids."""
        with self._lock:
            pending = [uid for uid, run in self._runs.items() if run.state == "restoring"]
            for uid in pending:
                self._runs[uid] = replace(self._runs[uid], state="failed", reason=reason)
        return pending

    def get(self, run_uid: str) -> LiveRun | None:
        """What is known of ``run_uid``, or ``None``."""
        with self._lock:
            return self._runs.get(run_uid)

    def request_id(self, run_uid: str) -> int:
        """Request id of the final live result of ``run_uid`` (``FetchResult``'s argument).

        Parameters
        ----------
        run_uid : str
            Uid of the raw run.

        Returns
        -------
        int
            The request id of its published final restoration.

        Raises
        ------
        TypeError
            If ``run_uid`` is not a string.
        NotReady
            While its final restoration has not arrived (ask again).
        LiveRunFailed
            If it failed or the run is not restored (not a map, no point mapped, live mode
            ended first).
        UnknownRun
            If live mode never saw it, or it is no longer remembered.
        """
        if not isinstance(run_uid, str):
            raise TypeError(f"a run uid is a string, got {run_uid!r}")
        run = self.get(run_uid.strip())
        if run is None:
            raise UnknownRun(
                f"live mode has not seen run {run_uid!r} (only runs published to the proxy it "
                f"reads, since the device started, are known; the latest {self._size} are kept)"
            )
        if run.state == "failed":
            raise LiveRunFailed(f"run {run.run_uid} has no live result: {run.reason}")
        if run.state == "restoring" or run.request_id is None:
            raise NotReady(
                f"the final live restoration of run {run.run_uid} has not arrived yet "
                f"({run.partial_results} partial result(s) published); ask again"
            )
        return run.request_id
