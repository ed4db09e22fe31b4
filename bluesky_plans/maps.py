"""Where an adaptive plan gets the restored coarse map: the live callback, or the Tango device.

Both providers expose one plan stub, :meth:`restored_map`, that a plan delegates to after
the coarse scan: it never blocks the RunEngine (it polls with ``bps.sleep``), and it never
raises for a failed restoration: the outcome says whether the restored map is usable and, if
not, why, so the plan falls back to the raw map and records it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import bluesky.plan_stubs as bps
import numpy as np

POLL_S = 0.02
"""Polling period of the plan stubs while waiting for a restoration, s."""


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
    """

    raw: np.ndarray
    restored: np.ndarray | None
    method: str | None
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

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
        }


class MapProvider(Protocol):
    """Gives the plan the restored map of a finished coarse run."""

    def restored_map(
        self, run_uid: str, *, pixel_um: tuple[float, float], beam_fwhm_um: float
    ) -> Generator[Any, Any, MapOutcome]:
        """Plan stub returning the coarse run's :class:`MapOutcome`."""


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
    """

    def __init__(self, restorer: Any, timeout_s: float = 120.0):
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.restorer = restorer
        self.timeout_s = float(timeout_s)

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
        return MapOutcome(result.raw_map, result.restored_map, result.method, "", result.metrics)


class TangoMaps:
    """Restored maps from the ASIRP Tango device, fed with the raw map assembled in-process.

    The raw coarse map comes from a :class:`callbacks.LiveRestorer` subscribed to the RunEngine
    (its own restoration is not used: give it a cheap method); the plan writes the map to the
    device's ``input_image``, sets the PSF settings, triggers ``Restore`` through the
    ophyd-async client and reads ``restored_image`` back.

    Parameters
    ----------
    client : asirp_device.client.ASIRPClient
        Connected ophyd-async client of the device.
    assembler : callbacks.LiveRestorer
        Live callback that assembles the raw map.
    timeout_s : float
        Longest wait for the assembled map, s.
    """

    def __init__(self, client: Any, assembler: Any, timeout_s: float = 120.0):
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.client = client
        self.assembler = assembler
        self.timeout_s = float(timeout_s)

    def restored_map(self, run_uid: str, *, pixel_um: tuple[float, float], beam_fwhm_um: float):
        """Plan stub: restore the coarse map on the device (see :class:`MapOutcome`)."""
        result = yield from _wait_for_final(self.assembler, run_uid, self.timeout_s)
        if result is None:
            raise RuntimeError(f"no map of run {run_uid} was assembled")
        raw = np.asarray(result.raw_map, dtype=np.float32)
        measured = np.isfinite(raw)
        filled = np.where(measured, raw, np.nanmean(raw) if measured.any() else 0.0)
        try:
            yield from bps.mv(
                self.client.beam_fwhm_um,
                float(beam_fwhm_um),
                self.client.pixel_um,
                float(np.mean(pixel_um)),
            )
            yield from bps.mv(self.client.input_image, filled.astype(np.float32))
            yield from bps.trigger(self.client, wait=True)
            restored = yield from bps.rd(self.client.restored_image)
            method = yield from bps.rd(self.client.method_used)
        except Exception as error:  # the device refused or failed: fall back to the raw map
            reason = f"device restoration failed: {type(error).__name__}: {error}"
            return MapOutcome(raw, None, None, " ".join(reason.split()))
        restored = np.asarray(restored, dtype=np.float32)
        if restored.shape != raw.shape:
            return MapOutcome(raw, None, None, f"device returned shape {restored.shape}")
        return MapOutcome(raw, restored, str(method), "")
