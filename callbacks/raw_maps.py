"""The raw maps of a RunEngine's map runs, assembled in-process without restoring: :class:`RawMaps`.

When the restoration is done elsewhere (the ASIRP Tango device's live mode), the process that
runs the plan still wants each run's raw map: as the map a plan falls back to when the remote
restoration fails or times out, and to show next to the restored one. :class:`RawMaps` is a
RunEngine subscriber that keeps one :class:`~callbacks.assembler.MapAssembler` per map run (an
``event_model.RunRouter`` makes them) and nothing else: no restoration, no derived run, no
thread. It maps what the device maps when given the same field and monitor (``LiveField`` and
``LiveNormalize``), so its map is the one the device restored.

Examples
--------
>>> from bluesky import RunEngine
>>> from bluesky.plans import grid_scan
>>> import sim
>>> from callbacks.raw_maps import RawMaps
>>> bl = sim.make_beamline(sample="ag300", beam_fwhm_um=50.0, seed=0)
>>> maps = RawMaps("xrf_Cu", normalize="i0")
>>> RE = RunEngine({})
>>> token = RE.subscribe(maps)
>>> uid, = RE(grid_scan(bl.detectors, bl.y, -100, 100, 5, bl.x, -100, 100, 6))
>>> maps.raw_map(uid).shape, maps.finished(uid)
((5, 6), True)
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from event_model import RunRouter

from callbacks.assembler import MapAssembler
from callbacks.geometry import MAX_MAP_POINTS, GeometryError
from callbacks.mapping import MapSource

_LOG = logging.getLogger(__name__)

MAX_REMEMBERED_MAPS = 32
"""How many runs' maps (the latest) :class:`RawMaps` keeps by default."""


class RawMaps:
    """Assemble the raw map of every map run a RunEngine produces (no restoration).

    Subscribe it to the RunEngine (``RE.subscribe(raw_maps)``); documents are handled in the
    RunEngine's thread as they are emitted, so once a scan plan returns, its map is complete.

    Parameters
    ----------
    field : str or sequence of str, optional
        Event field(s) to map (several are summed). Or give ``element`` or ``spectrum``.
    element : str, optional
        Map the stream's element-ROI field ``<detector>_<element>`` (e.g. ``"Se"``).
    spectrum : str, optional
        Spectrum field to channel-add over ``channels``.
    channels : (int, int), optional
        Channel range ``start:stop`` of ``spectrum``.
    normalize : str, optional
        Flux-monitor field to normalise by (``value * mean(i0) / i0``), e.g. ``"i0"``.
    stream : str, optional
        Event stream of the map (default: from the start document's hints, else primary).
    max_map_points : int
        Largest map assembled, in points; larger runs are skipped before any allocation.
    keep : int
        Most runs remembered (the latest).

    Attributes
    ----------
    source : MapSource
        What is mapped.
    """

    def __init__(
        self,
        field: str | Sequence[str] | None = None,
        *,
        element: str | None = None,
        spectrum: str | None = None,
        channels: tuple[int, int] | None = None,
        normalize: str | None = None,
        stream: str | None = None,
        max_map_points: int = MAX_MAP_POINTS,
        keep: int = MAX_REMEMBERED_MAPS,
    ) -> None:
        self.source = MapSource(
            field=tuple(field) if field is not None and not isinstance(field, str) else field,
            element=element,
            spectrum=spectrum,
            channels=channels,
            normalize=normalize,
        )
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        self.stream = stream
        self.max_map_points = int(max_map_points)
        self._keep = keep
        self._maps: collections.OrderedDict[str, MapAssembler] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._router = RunRouter([self._factory])

    def _factory(self, name: str, start: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        try:
            assembler = MapAssembler(
                start, self.source, stream=self.stream, max_map_points=self.max_map_points
            )
        except (GeometryError, ValueError, TypeError) as error:  # not a map: nothing to keep
            _LOG.debug("run %s: no raw map: %s", start.get("uid"), error)
            return [], []
        with self._lock:
            self._maps[assembler.uid] = assembler
            while len(self._maps) > self._keep:
                self._maps.popitem(last=False)
        return [assembler], []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Take one Bluesky document; never raises (a bad document is logged and skipped)."""
        try:
            self._router(name, doc)
        except Exception:
            _LOG.exception("raw maps: skipped a bad %s document", name)

    def _assembler(self, run_uid: str) -> MapAssembler | None:
        with self._lock:
            return self._maps.get(run_uid)

    def raw_map(self, run_uid: str) -> np.ndarray | None:
        """The map of run ``run_uid`` so far, ``(H, W)`` float32, NaN where unmeasured.

        ``None`` for a run not seen (or forgotten), not a map, or before its map stream's
        descriptor.
        """
        assembler = self._assembler(run_uid)
        return None if assembler is None else assembler.raw_map

    def finished(self, run_uid: str) -> bool:
        """Whether run ``run_uid`` has ended (its stop document was seen)."""
        assembler = self._assembler(run_uid)
        return assembler is not None and assembler.finished
