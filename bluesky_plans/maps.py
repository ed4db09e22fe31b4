"""Where an adaptive plan gets the restored coarse map: the live callback, or the Tango device.

Both providers expose one plan stub, :meth:`restored_map`, that a plan delegates to after
the coarse scan: it never blocks the RunEngine (it polls with ``bps.sleep``), and it never
raises for a failed restoration: the outcome says whether the restored map is usable and, if
not, why, so the plan falls back to the raw map and records it.

One restoration per decision
    Neither provider restores anything itself: the map a decision is made on is the final
    restoration that live restoration (in-process, or the device's live mode) made while the
    coarse scan ran, the very one it stored as the coarse run's derived run in tiled
    (:attr:`MapOutcome.derived_uid`). :meth:`record_regions` then writes, in that derived run's
    metadata (key :data:`REGIONS_KEY`), which regions the decision produced.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import bluesky.plan_stubs as bps
import numpy as np

_LOG = logging.getLogger(__name__)

POLL_S = 0.02
"""Polling period of the plan stubs while waiting for an in-process restoration, s."""

DEVICE_POLL_S = 0.05
"""Polling period while waiting for the device's live result, s (each poll is a Tango call)."""

REGIONS_KEY = "asirp_regions"
"""Metadata key of a derived run that lists the regions its restored map produced."""


@dataclass(frozen=True)
class MapOutcome:
    """The coarse map a plan works on.

    Attributes
    ----------
    raw : numpy.ndarray
        ``(H, W)`` float32 raw (normalised) map, NaN where unmeasured.
    restored : numpy.ndarray or None
        ``(H, W)`` float32 restored map, ``None`` when restoration failed or timed out.
    method : str or None
        Method that produced ``restored``.
    reason : str
        Empty when restored; otherwise why the raw map is used.
    metrics : dict
        The restoration's figures.
    derived_uid : str or None
        Uid of the derived run that holds ``restored``: the coarse run's stored restoration,
        in tiled when the restoration's producer writes there (the device reports ``None``
        when it wrote nothing to tiled). ``None`` when nothing was restored.
    """

    raw: np.ndarray
    restored: np.ndarray | None
    method: str | None
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    derived_uid: str | None = None

    @property
    def ok(self) -> bool:
        """Whether a restored map is available."""
        return self.restored is not None

    @property
    def image(self) -> np.ndarray:
        """The map to detect regions on: restored if available, else raw."""
        return self.raw if self.restored is None else self.restored

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for start documents."""
        return {
            "map_used": "restored" if self.ok else "raw",
            "method": self.method,
            "fallback_reason": self.reason or None,
            "derived_uid": self.derived_uid,
        }


class MapProvider(Protocol):
    """Gives the plan the restored map of a finished coarse run."""

    def restored_map(
        self, run_uid: str, *, pixel_um: tuple[float, float], beam_fwhm_um: float
    ) -> Generator[Any, Any, MapOutcome]:
        """Plan stub returning the coarse run's :class:`MapOutcome`."""

    def record_regions(self, outcome: MapOutcome, regions: list[dict]) -> None:
        """Record in the outcome's derived run which regions it produced."""


def record_regions(tiled: Any, outcome: MapOutcome, regions: list[dict]) -> None:
    """Write ``regions`` into the metadata of the derived run that holds ``outcome.restored``.

    The derived run's node gets the key :data:`REGIONS_KEY` (a list of region dicts) through
    tiled's ``node.update_metadata`` (a ``dict.update``: its ``start`` and ``stop`` documents
    stay). A plain call, not a plan stub: one short request to tiled, made between the coarse
    map's decision and the fine scans.

    Parameters
    ----------
    tiled : tiled client or None
        The catalog of runs that holds the derived run; ``None``: nothing is recorded.
    outcome : MapOutcome
        The coarse map the regions were chosen on.
    regions : list of dict
        The regions, JSON-ready (``RegionOfInterest.as_dict()``); an empty list records that
        the map produced none.

    Notes
    -----
    Never raises: without a tiled client or a derived run (the raw map was used, or nothing
    was stored) it logs why and returns, and a failed write is logged as a warning; the scan
    goes on either way.
    """
    if tiled is None:
        _LOG.info("regions not recorded in tiled: the map provider was given no tiled client")
        return
    if outcome.derived_uid is None:
        why = outcome.reason or "the restored map was not stored in tiled"
        _LOG.info("regions not recorded in tiled: no derived run (%s)", why)
        return
    entries = [dict(region) for region in regions]
    try:
        tiled[outcome.derived_uid].update_metadata({REGIONS_KEY: entries})
    except Exception as error:  # tiled down, run missing: the decision stands without it
        _LOG.warning(
            "recording %d region(s) in derived run %s failed: %s: %s",
            len(entries),
            outcome.derived_uid,
            type(error).__name__,
            error,
        )
    else:
        _LOG.info("recorded %d region(s) in derived run %s", len(entries), outcome.derived_uid)


def _wait_for_final(restorer: Any, run_uid: str, timeout_s: float):
    """Plan stub: poll the restorer until the run's final result exists (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = restorer.latest_for(run_uid)
        if result is not None and result.final:
            return result
        if time.monotonic() > deadline:
            return result
        yield from bps.sleep(POLL_S)


class LiveMaps:
    """Restored maps from an in-process :class:`callbacks.LiveRestorer`.

    The restorer must be subscribed to the RunEngine that runs the plan (it restores while the
    coarse scan runs, in its own thread).

    Parameters
    ----------
    restorer : callbacks.LiveRestorer
        The live callback.
    timeout_s : float
        Longest wait for the final restoration after the coarse scan ends, s.
    tiled : tiled client, optional
        The catalog the restorer writes its derived runs to, for :meth:`record_regions`.
    """

    def __init__(self, restorer: Any, timeout_s: float = 120.0, *, tiled: Any = None):
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.restorer = restorer
        self.timeout_s = float(timeout_s)
        self.tiled = tiled

    def restored_map(self, run_uid: str, *, pixel_um: tuple[float, float], beam_fwhm_um: float):
        """Plan stub: the restorer's final result of ``run_uid`` (see :class:`MapOutcome`)."""
        result = yield from _wait_for_final(self.restorer, run_uid, self.timeout_s)
        if result is None:
            raw = self.restorer.raw_map
            if raw is None:
                raise RuntimeError(f"the live restorer saw no map of run {run_uid}")
            return MapOutcome(np.asarray(raw), None, None, "no restoration arrived in time")
        if not result.final:
            return MapOutcome(result.raw_map, None, None, "final restoration timed out")
        if not result.ok:
            return MapOutcome(result.raw_map, None, None, f"restoration failed: {result.error}")
        return MapOutcome(
            result.raw_map,
            result.restored_map,
            result.method,
            "",
            result.metrics,
            derived_uid=result.derived_uid,
        )

    def record_regions(self, outcome: MapOutcome, regions: list[dict]) -> None:
        """Record in the outcome's derived run which regions it produced.

        See :func:`record_regions`: a no-op, logged, without ``tiled`` or a derived run.
        """
        record_regions(self.tiled, outcome, regions)


class TangoMaps:
    """The coarse map that the ASIRP Tango device's live mode restored (and stored) while it ran.

    No restoration is made here or requested: the device's live mode (``StartLive`` on the
    proxy the RunEngine publishes to, with ``TiledUri`` set) restores every map run of the
    document stream and writes its derived run to tiled; this provider polls
    ``LiveResultOf(run_uid)`` (with ``bps.sleep`` in between: the RunEngine is never blocked)
    and fetches that final result (``FetchResult``, decoded with :mod:`asirp_device.wire`,
    through :meth:`asirp_device.client.ASIRPClient.live_result`). So the map a decision is made
    on is the one stored in tiled (:attr:`MapOutcome.derived_uid`).

    The raw map (:attr:`MapOutcome.raw`, the fallback) is assembled in-process, without
    restoring, by ``raw_maps`` (a :class:`callbacks.raw_maps.RawMaps` subscribed to the
    RunEngine) from the same documents; give it the device's ``live_field`` and
    ``live_normalize`` so it maps what the device restored. It is there even when the device
    is not: a failed restoration, a run the device never saw, a device that does not answer or
    a result that does not come within ``timeout_s`` give the raw map with the reason, and the
    scan goes on.

    Parameters
    ----------
    client : asirp_device.client.ASIRPClient
        Connected ophyd-async client of the device (its live mode running).
    raw_maps : callbacks.raw_maps.RawMaps
        Anything with ``raw_map(run_uid) -> (H, W) float32 array or None``, subscribed to the
        RunEngine that runs the plan.
    timeout_s : float
        Longest wait for the device's final live result after the coarse scan ends, s.
    tiled : tiled client, optional
        The catalog the device writes its derived runs to (its ``TiledUri``), for
        :meth:`record_regions`.
    unknown_s : float
        Longest wait for the device to have seen the run at all (0MQ delivery is quick: a run
        still unknown after this long was not published to the device's proxy), s.

    Notes
    -----
    The plan's ``pixel_um`` and ``beam_fwhm_um`` are not sent: live mode restores each scan
    with its own step and the device's ``beam_fwhm_um`` as of ``StartLive`` (set it, or the
    ``DefaultBeamFwhmUm`` property, to the beam before starting live mode).
    """

    def __init__(
        self,
        client: Any,
        raw_maps: Any,
        timeout_s: float = 120.0,
        *,
        tiled: Any = None,
        unknown_s: float = 10.0,
    ):
        for name, value in (("timeout_s", timeout_s), ("unknown_s", unknown_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        self.client = client
        self.raw_maps = raw_maps
        self.timeout_s = float(timeout_s)
        self.unknown_s = float(unknown_s)
        self.tiled = tiled

    def restored_map(self, run_uid: str, *, pixel_um: tuple[float, float], beam_fwhm_um: float):
        """Plan stub: the device's final live result of ``run_uid`` (see :class:`MapOutcome`).

        Raises
        ------
        RuntimeError
            If ``raw_maps`` has no map of the run (it is not subscribed to this RunEngine, or
            the run is not a map of its field): a wiring error, not a device failure.
        """
        raw_map = self.raw_maps.raw_map(run_uid)
        if raw_map is None:
            raise RuntimeError(
                f"no raw map of run {run_uid} was assembled in-process (subscribe the raw "
                "maps to the RunEngine, with the device's live field)"
            )
        raw = np.asarray(raw_map, dtype=np.float32)
        reply = yield from self._final_reply(run_uid)
        if isinstance(reply, str):
            return MapOutcome(raw, None, None, reply)
        header = reply.header
        restored = np.asarray(reply.image, dtype=np.float32)
        if header.get("source") != run_uid:
            why = f"the device's result is of {header.get('source')!r}, not run {run_uid}"
            return MapOutcome(raw, None, None, why)
        if restored.shape != raw.shape:
            return MapOutcome(raw, None, None, f"device returned shape {restored.shape}")
        return MapOutcome(
            raw,
            restored,
            str(header.get("method")),
            "",
            dict(header.get("metrics") or {}),
            derived_uid=header.get("derived_uid"),
        )

    def _final_reply(self, run_uid: str):
        """Plan stub: poll the device until the run's final result is there; else why not."""
        deadline = time.monotonic() + self.timeout_s
        unknown_since: float | None = None
        while True:
            reply = yield from _call(lambda: self.client.live_result(run_uid))
            if reply.ready:
                return reply
            now = time.monotonic()
            if reply.state not in ("pending", "unknown"):
                return f"device live result of run {run_uid}: {reply.reason}"
            if reply.state == "unknown":
                unknown_since = now if unknown_since is None else unknown_since
                if now - unknown_since > self.unknown_s:
                    return (
                        f"the device's live mode did not see run {run_uid} within "
                        f"{self.unknown_s:g} s (is it live on this RunEngine's proxy?): "
                        f"{reply.reason}"
                    )
            else:
                unknown_since = None
            if now > deadline:
                return (
                    f"no final live result of run {run_uid} from the device within "
                    f"{self.timeout_s:g} s: {reply.reason}"
                )
            yield from bps.sleep(DEVICE_POLL_S)

    def record_regions(self, outcome: MapOutcome, regions: list[dict]) -> None:
        """Record in the outcome's derived run (the device wrote it) which regions it produced.

        See :func:`record_regions`: a no-op, logged, without ``tiled`` or a derived run.
        """
        record_regions(self.tiled, outcome, regions)


@dataclass(frozen=True)
class _Failed:
    """A device call that raised, in the shape of a ``LiveReply`` (never ready)."""

    reason: str
    state: str = "error"
    ready: bool = False


def _call(factory: Callable[[], Any]):
    """Plan stub: await ``factory()`` on the RunEngine's loop; its value, or a :class:`_Failed`."""
    (task,) = yield from bps.wait_for([factory])
    try:
        return task.result()
    except Exception as error:  # live_result does not raise; a broken client might
        return _Failed(f"{type(error).__name__}: {' '.join(str(error).split())}")
