"""The map of one raw run, assembled from its Bluesky documents: :class:`MapAssembler`.

A :class:`MapAssembler` reads the map geometry from a run's start document (see
:class:`~callbacks.geometry.ScanGeometry`), finds the configured reading (see
:class:`~callbacks.mapping.MapSource`) in the descriptor of the map stream, and places each
point of that stream's ``event`` and ``event_page`` documents on the pixel grid of a
:class:`~callbacks.mapping.LiveMap`. It restores nothing: the live restorer
(:class:`~callbacks.live.LiveRestorer`) makes one per run and listens to it through
:class:`AssemblerHooks`; on its own it turns a run's documents into its raw map.

Placement
    Points go where their position fields (``hints["dimensions"]``, else ``motors``) say; when
    the map stream has no such fields, by their sequence number in scan order (snaking
    followed).
Bad points
    A NaN or unreadable reading, a zero, negative or NaN monitor reading, a missing position,
    a position outside the map or a sequence number beyond it: the point is skipped and the
    reason counted (the first :data:`MAX_WARNINGS_PER_REASON` of each reason are logged one by
    one, the counts when the run ends). Nothing is raised for a bad point.
External data
    Resource/Datum documents are not filled: a mapped field that holds a datum reference is
    unreadable, and those points are skipped.

Examples
--------
The assembler alone, on the documents of a 2 x 3 map whose points carry no positions (so they
are placed by sequence number):

>>> from event_model import compose_run
>>> from callbacks.assembler import MapAssembler
>>> from callbacks.mapping import MapSource
>>> run = compose_run(metadata={"shape": [2, 3], "extents": [[0, 1], [0, 2]]})
>>> det = {"det": {"source": "sim", "dtype": "number", "shape": []}}
>>> stream = run.compose_descriptor(name="primary", data_keys=det)
>>> documents = [("start", run.start_doc), ("descriptor", stream.descriptor_doc)]
>>> documents += [
...     ("event", stream.compose_event(data={"det": 10.0 * n}, timestamps={"det": 0.0}))
...     for n in range(1, 6)
... ]
>>> documents.append(("stop", run.compose_stop()))
>>> assembler = MapAssembler(run.start_doc, MapSource("det"))
>>> for name, doc in documents:
...     _ = assembler(name, doc)
>>> assembler.raw_map
array([[10., 20., 30.],
       [40., 50., nan]], dtype=float32)
>>> assembler.finished, assembler.progress
(True, 0.8333333333333334)
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from event_model import DocumentRouter

from callbacks.geometry import MAX_MAP_POINTS, ScanGeometry
from callbacks.mapping import LiveMap, MapSource, ResolvedSource, SourceError

_LOG = logging.getLogger(__name__)

MAX_WARNINGS_PER_REASON = 3
"""Skipped points of one run logged individually per reason; the rest are counted."""


class AssemblerHooks(Protocol):
    """What a :class:`MapAssembler` tells its owner (the live restorer's run, for one).

    Every method is called in the thread that feeds the documents.
    """

    def descriptor_accepted(self, assembler: MapAssembler, descriptor_uid: str) -> None:
        """The events of this descriptor are mapped: send them straight to ``assembler``."""
        ...

    def points_added(self, assembler: MapAssembler) -> None:
        """Points were placed on ``assembler.map`` (called after each event or page)."""
        ...

    def finished(self, assembler: MapAssembler, exit_status: str, reason: str) -> None:
        """The run ended (its stop document, or :meth:`MapAssembler.finish`); called once.

        ``exit_status`` is ``"success"`` for a raw run that ended in success, else ``"abort"``
        with the ``reason``.
        """
        ...


class MapAssembler(DocumentRouter):
    """The live map of one raw run, filled from its documents.

    Call it with ``(name, doc)`` for each document of the run (as a RunEngine subscriber or an
    ``event_model.RunRouter`` callback does), or call its ``descriptor``, ``event``,
    ``event_page`` and ``stop`` methods directly.

    Parameters
    ----------
    start : mapping
        The run's start document (its map geometry is read here).
    source : MapSource
        What is mapped from each event.
    geometry : ScanGeometry, optional
        The map geometry, when already read from ``start``.
    stream : str, optional
        Event stream of the map (default: from the start document's hints, else primary);
        only used when ``geometry`` is not given.
    max_map_points : int
        Largest map accepted, in points; only used when ``geometry`` is not given.
    hooks : AssemblerHooks, optional
        Told when a descriptor is accepted, points are added and the run ends.
    logger : logging.Logger, optional
        Where skipped points are logged (default: this module's logger).

    Raises
    ------
    callbacks.geometry.GeometryError
        If ``start`` describes no 2-D map (``MapTooLarge`` if it is larger than
        ``max_map_points``).

    Attributes
    ----------
    uid : str
        Uid of the run.
    start_doc : mapping
        Its start document.
    geometry : ScanGeometry
        Where each point lands.
    map : LiveMap or None
        The map so far (``None`` until the map stream's descriptor arrives).
    source : ResolvedSource or None
        The map source, resolved against the map stream's data keys.
    descriptors : set of str
        Uids of the descriptors mapped.
    skipped : collections.Counter
        Points skipped, by reason.
    finished : bool
        Whether the run ended (no more points are added).
    """

    def __init__(
        self,
        start: Mapping[str, Any],
        source: MapSource,
        *,
        geometry: ScanGeometry | None = None,
        stream: str | None = None,
        max_map_points: int = MAX_MAP_POINTS,
        hooks: AssemblerHooks | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__()
        if geometry is None:
            geometry = ScanGeometry.from_start(start, stream, max_points=max_map_points)
        self.start_doc = start
        self.uid: str = start["uid"]
        self.geometry = geometry
        self.map_source = source
        self.map: LiveMap | None = None
        self.source: ResolvedSource | None = None
        self.descriptors: set[str] = set()
        self.skipped: collections.Counter[str] = collections.Counter()
        self.finished = False
        self._hooks = hooks
        self._log = _LOG if logger is None else logger
        self._fields = geometry.position_fields
        self._use_positions = all(self._fields)

    @property
    def raw_map(self) -> np.ndarray | None:
        """The map so far ``(H, W)`` float32 (NaN: unmeasured); ``None`` before its descriptor."""
        return None if self.map is None else self.map.image()

    @property
    def progress(self) -> float:
        """Fraction of the map measured, 0 to 1."""
        return 0.0 if self.map is None else self.map.progress

    # -- documents --------------------------------------------------------------------------
    def start(self, doc: dict[str, Any]) -> None:
        """Nothing to do: the start document was read when the assembler was made."""
        return None

    def descriptor(self, doc: dict[str, Any]) -> None:
        """Map the events of this descriptor if it is the map stream's and has the source."""
        if doc.get("name") != self.geometry.stream or self.finished:
            return
        try:
            source = self.map_source.resolve(doc.get("data_keys", {}))
        except SourceError as error:
            self._log.warning("run %s, stream %r: not mapped: %s", self.uid, doc.get("name"), error)
            return
        if self._use_positions and not all(f in doc.get("data_keys", {}) for f in self._fields):
            self._log.warning(
                "run %s: position fields %s not in stream %r; placing points by sequence number",
                self.uid,
                self._fields,
                doc.get("name"),
            )
            self._use_positions = False
        self.source = source
        if self.map is None:
            self.map = LiveMap(self.geometry, normalized=source.normalize is not None)
        self.descriptors.add(doc["uid"])
        if self._hooks is not None:
            self._hooks.descriptor_accepted(self, doc["uid"])

    def event(self, doc: dict[str, Any]) -> None:
        """Place one point (events of descriptors not mapped are ignored)."""
        live_map, source = self.map, self.source
        if live_map is None or source is None or self.finished:
            return
        data = doc["data"]
        value = source.value(data)
        if not math.isfinite(value):
            self._skip("NaN or unreadable reading", doc.get("seq_num"))
            return
        flux = math.nan
        if source.normalize is not None:
            try:
                flux = float(data[source.normalize])
            except (KeyError, TypeError, ValueError):
                flux = math.nan
            if not (flux > 0 and math.isfinite(flux)):
                self._skip("zero, negative or NaN monitor reading", doc.get("seq_num"))
                return
        if self._use_positions:
            try:
                slow = float(data[self._fields[0]])
                fast = float(data[self._fields[1]])
            except (KeyError, TypeError, ValueError):
                self._skip("missing position", doc.get("seq_num"))
                return
            pixel = self.geometry.index_from_position(slow, fast)
            if pixel is None:
                self._skip("position outside the map", doc.get("seq_num"), f" ({slow:g}, {fast:g})")
                return
            row, col = pixel
        else:
            rows, cols, valid = self.geometry.indices_from_sequence(np.array([doc["seq_num"]]))
            if not valid[0]:
                self._skip("sequence number beyond the map", doc.get("seq_num"))
                return
            row, col = int(rows[0]), int(cols[0])
        live_map.add(row, col, value, flux)
        if self._hooks is not None:
            self._hooks.points_added(self)

    def event_page(self, doc: dict[str, Any]) -> None:
        """Place a page of points (pages of descriptors not mapped are ignored)."""
        live_map, source = self.map, self.source
        if live_map is None or source is None or self.finished:
            return
        data = doc["data"]
        seq = np.asarray(doc["seq_num"], dtype=np.int64)
        n = seq.size
        values = source.values(data, n)
        ok = np.isfinite(values)
        self._skip_many("NaN or unreadable reading", ~ok, seq)
        flux = None
        if source.normalize is not None:
            try:
                flux = np.asarray(data[source.normalize], dtype=np.float64).reshape(n)
            except (KeyError, TypeError, ValueError):
                flux = np.full(n, np.nan)
            good_flux = np.isfinite(flux) & (flux > 0)
            self._skip_many("zero, negative or NaN monitor reading", ok & ~good_flux, seq)
            ok &= good_flux
        rows = cols = None
        if self._use_positions:
            try:
                slow = np.asarray(data[self._fields[0]], dtype=np.float64).reshape(n)
                fast = np.asarray(data[self._fields[1]], dtype=np.float64).reshape(n)
            except (KeyError, TypeError, ValueError):
                self._skip_many("missing position", ok, seq)
                return
            rows, cols, inside = self.geometry.indices_from_positions(slow, fast)
            self._skip_many("position outside the map", ok & ~inside, seq)
        else:
            rows, cols, inside = self.geometry.indices_from_sequence(seq)
            self._skip_many("sequence number beyond the map", ok & ~inside, seq)
        ok &= inside
        if ok.any():
            live_map.add_many(rows[ok], cols[ok], values[ok], None if flux is None else flux[ok])
            if self._hooks is not None:
                self._hooks.points_added(self)

    def stop(self, doc: dict[str, Any]) -> None:
        """End the run: :meth:`finish` with ``success``, or ``abort`` and the raw run's status."""
        if self.finished:
            return
        status = doc.get("exit_status", "success")
        if status == "success":
            self.finish("success", "")
        else:
            reason = doc.get("reason") or ""
            self.finish(
                "abort",
                f"the raw run ended with exit status {status!r}"
                + (f" ({reason})" if reason else ""),
            )

    # -- helpers ----------------------------------------------------------------------------
    def finish(self, exit_status: str, reason: str) -> None:
        """Stop mapping this run (once): log the skipped points and tell the hooks.

        Parameters
        ----------
        exit_status : str
            ``"success"`` for a run that ended in success, else ``"abort"``.
        reason : str
            Why the run ended, for an ``"abort"``.
        """
        if self.finished:
            return
        self.finished = True
        for why, count in sorted(self.skipped.items()):
            self._log.warning("run %s: skipped %d point(s): %s", self.uid, count, why)
        if self._hooks is not None:
            self._hooks.finished(self, exit_status, reason)

    def _skip(self, why: str, seq_num: Any, detail: str = "") -> None:
        self.skipped[why] += 1
        if self.skipped[why] <= MAX_WARNINGS_PER_REASON:
            self._log.warning(
                "run %s: skipped point seq_num=%s: %s%s", self.uid, seq_num, why, detail
            )

    def _skip_many(self, why: str, mask: np.ndarray, seq: np.ndarray) -> None:
        count = int(mask.sum())
        if count:
            self._skip(why, seq[mask][0] if count == 1 else f"{seq[mask][0]}.. ({count})")
            self.skipped[why] += count - 1
