"""Request ids and the results kept for them, so each client fetches the result it asked for.

:class:`ResultRecord` is a published result; :class:`RequestBook` hands out request ids and keeps
the latest results (and the reasons of the latest failures) by id, within
:data:`RESULT_CACHE_SIZE` results and :data:`RESULT_CACHE_BYTES` bytes. The book holds no lock:
its owner (:class:`asirp_device.component.RestorationComponent`) calls it under its own.
Nothing here imports Tango.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from asirp.restore import Restoration

RESULT_CACHE_SIZE = 16
"""How many results (the latest ones)
:meth:`asirp_device.component.RestorationComponent.fetch_result` can return."""

RESULT_CACHE_BYTES = 256 * 2**20
"""Most bytes of restored maps kept for
:meth:`asirp_device.component.RestorationComponent.fetch_result` (the latest result is always
kept)."""


class UnknownRequest(LookupError):
    """No such request id, or its result is no longer kept (only the latest ones are)."""


class RequestFailed(RuntimeError):
    """The request ended without a result (the restoration failed or was aborted)."""


@dataclass(frozen=True)
class ResultRecord:
    """A published result.

    Attributes
    ----------
    restoration : asirp.Restoration
        The engine's result (``restoration.image`` is float32 ``(H, W)``, counts).
    sequence : int
        1 for the first result of this component, then 2, 3, ... (the data-ready counter).
    source : str
        Where the input came from: a file path, ``"input_image attribute"``, ``"Submit"``, or
        what a live source called itself.
    duration_s : float
        Wall time from the start of the restoration to its publication, s.
    request_id : int
        The id :meth:`asirp_device.component.RestorationComponent.start` returned for it (a
        live result gets a fresh one);
        :meth:`asirp_device.component.RestorationComponent.fetch_result` finds the record by it.
    derived_uid : str or None
        For a live result: uid of the derived run that holds it in tiled (written by the
        device's live mode); ``None`` for local results, or when nothing was written to tiled.
    """

    restoration: Restoration
    sequence: int
    source: str
    duration_s: float
    request_id: int = 0
    derived_uid: str | None = None


def _first_request_id() -> int:
    """The first request id of a component: the time in ms x 1000.

    Ids then count up by one, so a component built later (a restarted server, ``Init``) does
    not hand out an id that an earlier one gave to a client, unless the earlier one took more
    than 1000 requests a millisecond. The ids stay below 2**53 (exact in JSON) until about 2255.
    """
    return time.time_ns() // 1_000_000 * 1000


def check_request_id(request_id: Any) -> int:
    """Return ``request_id`` as an int if it is an integer, else raise :class:`TypeError`."""
    if isinstance(request_id, bool) or not isinstance(request_id, int | np.integer):
        raise TypeError(f"a request id is an integer, got {request_id!r}")
    return int(request_id)


class RequestBook:
    """Request ids handed out, and the latest results and failures by id (not thread-safe).

    Ids start at :func:`_first_request_id` and count up by one. The owner serialises every
    call (it holds its lock).
    """

    def __init__(self) -> None:
        self._first = self._next = _first_request_id()
        self._results: collections.OrderedDict[int, ResultRecord] = collections.OrderedDict()
        self._failures: collections.OrderedDict[int, str] = collections.OrderedDict()

    def new_id(self) -> int:
        """Hand out the next request id."""
        request_id = self._next
        self._next += 1
        return request_id

    def keep(self, record: ResultRecord) -> None:
        """Keep ``record`` by its request id; drop the oldest beyond the count and byte budgets."""
        self._results[record.request_id] = record
        total = sum(kept.restoration.image.nbytes for kept in self._results.values())
        while len(self._results) > 1 and (
            len(self._results) > RESULT_CACHE_SIZE or total > RESULT_CACHE_BYTES
        ):
            _, dropped = self._results.popitem(last=False)
            total -= dropped.restoration.image.nbytes

    def fail(self, request_id: int, reason: str) -> None:
        """Remember why request ``request_id`` ended without a result (the latest few)."""
        self._failures[request_id] = reason
        while len(self._failures) > RESULT_CACHE_SIZE:
            self._failures.popitem(last=False)

    def find(self, request_id: int) -> ResultRecord | None:
        """The kept result of request ``request_id``, or ``None``."""
        return self._results.get(request_id)

    def missing(self, request_id: int) -> RequestFailed | UnknownRequest:
        """The error that says why request ``request_id`` has no kept result (to raise).

        Returns
        -------
        RequestFailed or UnknownRequest
            :class:`RequestFailed` (with the reason) if it ended without a result,
            :class:`UnknownRequest` if its result is no longer kept or it was never issued.
        """
        failure = self._failures.get(request_id)
        if failure is not None:
            return RequestFailed(f"request {request_id} has no result: {failure}")
        if self._first <= request_id < self._next:
            return UnknownRequest(
                f"the result of request {request_id} is no longer kept (only the latest "
                f"{RESULT_CACHE_SIZE} results are); restore the map again"
            )
        return UnknownRequest(f"there is no request {request_id} (not issued by this device)")
