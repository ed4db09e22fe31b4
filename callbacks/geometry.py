"""Scan geometry from a Bluesky start document: map shape, extents, snaking, position → pixel.

Grid scans (``bluesky.plans.grid_scan`` and relatives) record the map in their start document
as ``shape`` ``(rows, columns)``, ``extents`` ``((first, last), (first, last))`` (the motor
positions of the first and last pixel centre along each axis, in motor units) and ``snaking``
``(False, True)``; ``hints["dimensions"]`` names the event fields that hold each axis' position.
Fly maps (``sim.fly_map`` and beamline fly plans) record the same keys, with each line's bin
centres as the fast axis.

Pixel convention: axis 0 (rows) is the slow (outer) axis and axis 1 (columns) the fast one, in
the order of the start document. Pixel ``(0, 0)`` is at ``(extents[0][0], extents[1][0])``:
the first line scanned is row 0 and columns follow the fast axis from its first extent. For the
usual scan with increasing extents, row 0 is at the smallest slow position and column 0 at the
smallest fast position.

Size limit: a start document is untrusted input (it may come from any publisher of a 0MQ
proxy), and each live map costs about 20 bytes per point in the callback (values, monitor,
flags, copies for the worker). :meth:`ScanGeometry.from_start` therefore refuses maps of more
than :data:`MAX_MAP_POINTS` points (4096 x 4096) before anything is allocated; raise the limit
with its ``max_points`` keyword (``LiveRestorer(max_map_points=...)``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

POSITION_TOLERANCE = 0.5
"""A position may lie this many steps outside the extents and still map to the edge pixel
(rounding to the nearest pixel already absorbs jitter of up to half a step inside)."""

MAX_MAP_POINTS = 4096 * 4096
"""Largest live map, in points, that :meth:`ScanGeometry.from_start` accepts by default (about
340 MB in a live restorer); larger maps are refused with :class:`MapTooLarge`."""


class GeometryError(ValueError):
    """A start document does not describe a 2-D map that can be assembled live."""


class MapTooLarge(GeometryError):
    """A start document describes a map above the size limit (:data:`MAX_MAP_POINTS`)."""


def check_map_size(shape: Sequence[int], max_points: int = MAX_MAP_POINTS) -> None:
    """Refuse a map of more than ``max_points`` points, before anything is allocated for it.

    Parameters
    ----------
    shape : (int, int)
        Map shape ``(rows, columns)``.
    max_points : int
        Largest accepted number of points.

    Raises
    ------
    MapTooLarge
        If ``rows * columns > max_points``.
    """
    rows, cols = (int(n) for n in shape)
    if rows * cols > max_points:
        raise MapTooLarge(
            f"the map of {rows} x {cols} = {rows * cols} points is larger than the live-map "
            f"limit of {max_points} points; refused before allocating it (raise the limit with "
            "LiveRestorer(max_map_points=...) / ScanGeometry.from_start(max_points=...), default "
            "callbacks.geometry.MAX_MAP_POINTS)"
        )


def _pair_of_numbers(value: Any, what: str) -> tuple[float, float]:
    try:
        first, last = (float(v) for v in value)
    except (TypeError, ValueError):
        raise GeometryError(f"{what} must be a pair of numbers, got {value!r}") from None
    if not (math.isfinite(first) and math.isfinite(last)):
        raise GeometryError(f"{what} must be finite, got {value!r}")
    return first, last


@dataclass(frozen=True)
class ScanGeometry:
    """Where each point of a 2-D scan lands on the map.

    Attributes
    ----------
    shape : (int, int)
        Map shape ``(rows, columns)`` = (slow, fast) number of points.
    extents : ((float, float), (float, float))
        Position of the first and last pixel centre along each axis, motor units.
    snaking : (bool, bool)
        Whether the fast axis reverses on every other line (``snaking[1]``).
    position_fields : (str or None, str or None)
        Event fields holding the slow and fast positions (``None``: unknown; points are then
        placed by their sequence number).
    stream : str
        Name of the event stream that carries the map (``"primary"`` for step scans).
    fly : bool
        Whether the start document describes a fly scan (one event page per line).
    """

    shape: tuple[int, int]
    extents: tuple[tuple[float, float], tuple[float, float]]
    snaking: tuple[bool, bool] = (False, False)
    position_fields: tuple[str | None, str | None] = (None, None)
    stream: str = "primary"
    fly: bool = False

    def __post_init__(self) -> None:
        rows, cols = self.shape
        if rows < 1 or cols < 1:
            raise GeometryError(f"shape must be positive, got {self.shape}")

    @property
    def n_points(self) -> int:
        """Number of points of the full map."""
        return self.shape[0] * self.shape[1]

    @property
    def step(self) -> tuple[float, float]:
        """Signed step between pixel centres along (rows, columns), motor units (0 for 1 px)."""
        steps = []
        for (first, last), n in zip(self.extents, self.shape, strict=True):
            steps.append((last - first) / (n - 1) if n > 1 else 0.0)
        return steps[0], steps[1]

    def pixel_um(self, position_scale_um: float = 1.0) -> tuple[float, float]:
        """Pixel size (scan step) ``(between lines, along a line)`` in µm.

        Parameters
        ----------
        position_scale_um : float
            µm per motor unit (1 for motors in µm, 1000 for motors in mm).

        Raises
        ------
        GeometryError
            If no axis has a non-zero step (a single point, or equal extents).
        """
        step_y, step_x = (abs(s) * position_scale_um for s in self.step)
        if step_y == 0 and step_x == 0:
            raise GeometryError(
                f"cannot find the scan step: extents {self.extents} with shape {self.shape}"
            )
        # A single line (or column) has no step along that axis: take the other one.
        return (step_y or step_x), (step_x or step_y)

    @classmethod
    def from_start(
        cls,
        start: Mapping[str, Any],
        stream: str | None = None,
        *,
        max_points: int = MAX_MAP_POINTS,
    ) -> ScanGeometry:
        """Read the geometry of a 2-D map from a run's start document.

        Parameters
        ----------
        start : mapping
            The RunStart document.
        stream : str, optional
            Event stream to map; default: the stream named in ``hints["dimensions"]``, else
            ``"primary"``.
        max_points : int
            Largest map accepted, in points (default :data:`MAX_MAP_POINTS`).

        Returns
        -------
        ScanGeometry

        Raises
        ------
        MapTooLarge
            If the map has more than ``max_points`` points.
        GeometryError
            If ``shape`` or ``extents`` is missing or not 2-D, or values are not finite.
        """
        shape = start.get("shape")
        if shape is None:
            raise GeometryError(
                "the start document has no 'shape' (not a grid or fly map; use grid_scan or "
                "give shape/extents/snaking in the plan's md)"
            )
        try:
            dims = [int(n) for n in shape]
        except (TypeError, ValueError):
            raise GeometryError(f"'shape' must be a list of integers, got {shape!r}") from None
        if len(dims) != 2:
            raise GeometryError(f"live maps need a 2-D scan; 'shape' is {list(shape)!r}")
        if min(dims) < 1:
            raise GeometryError(f"'shape' must be positive, got {list(shape)!r}")
        check_map_size(dims, max_points)
        extents = start.get("extents")
        if extents is None:
            raise GeometryError("the start document has 'shape' but no 'extents'")
        if not isinstance(extents, Sequence) or isinstance(extents, str) or len(extents) != 2:
            raise GeometryError(f"'extents' must hold two (first, last) pairs, got {extents!r}")
        pairs = (
            _pair_of_numbers(extents[0], "'extents'[0]"),
            _pair_of_numbers(extents[1], "'extents'[1]"),
        )
        snaking_doc = start.get("snaking") or (False, False)
        try:
            snake_slow, snake_fast = (bool(s) for s in snaking_doc)
        except (TypeError, ValueError):
            raise GeometryError(f"'snaking' must be two booleans, got {snaking_doc!r}") from None
        fields, hinted_stream = _position_fields(start)
        return cls(
            shape=(dims[0], dims[1]),
            extents=pairs,
            snaking=(snake_slow, snake_fast),
            position_fields=fields,
            stream=stream or hinted_stream or "primary",
            fly="fly" in start or start.get("plan_name") == "fly_map",
        )

    def indices_from_positions(
        self, slow: np.ndarray, fast: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels of points from their positions.

        Parameters
        ----------
        slow, fast : numpy.ndarray
            Positions ``(n,)``, motor units.

        Returns
        -------
        rows, cols : numpy.ndarray
            ``(n,)`` int64 pixel indices (meaningful where ``valid``).
        valid : numpy.ndarray
            ``(n,)`` bool: finite positions within the map (half a step of tolerance).
        """
        indices = []
        valid = np.ones(np.shape(slow), dtype=bool)
        for positions, (first, _), step, n in zip(
            (slow, fast), self.extents, self.step, self.shape, strict=True
        ):
            values = np.asarray(positions, dtype=np.float64)
            finite = np.isfinite(values)
            if step == 0:
                index = np.zeros(values.shape, dtype=np.int64)
                valid &= finite
            else:
                scaled = np.where(finite, (values - first) / step, -1.0)
                index = np.rint(scaled).astype(np.int64)
                inside = (scaled >= -POSITION_TOLERANCE) & (scaled <= n - 1 + POSITION_TOLERANCE)
                valid &= finite & inside
                index = np.clip(index, 0, n - 1)
            indices.append(index)
        return indices[0], indices[1], valid

    @functools.cached_property
    def _axes(self) -> tuple[tuple[float, float, int], tuple[float, float, int]]:
        """(first position, step, size) per axis, for the scalar path."""
        (first_y, _), (first_x, _) = self.extents
        step_y, step_x = self.step
        return (first_y, step_y, self.shape[0]), (first_x, step_x, self.shape[1])

    def index_from_position(self, slow: float, fast: float) -> tuple[int, int] | None:
        """Pixel ``(row, column)`` of one point, or ``None`` if outside the map (scalar path)."""
        (first_y, step_y, n_y), (first_x, step_x, n_x) = self._axes
        row = _index(slow, first_y, step_y, n_y)
        if row < 0:
            return None
        col = _index(fast, first_x, step_x, n_x)
        if col < 0:
            return None
        return row, col

    def indices_from_sequence(
        self, seq_num: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels of points from their 1-based sequence numbers (scan order, snaking).

        Used when the events carry no positions.

        Parameters
        ----------
        seq_num : numpy.ndarray
            ``(n,)`` sequence numbers, 1 for the first point.

        Returns
        -------
        rows, cols : numpy.ndarray
            ``(n,)`` int64 pixel indices.
        valid : numpy.ndarray
            ``(n,)`` bool: within the map's number of points.
        """
        order = np.asarray(seq_num, dtype=np.int64) - 1
        valid = (order >= 0) & (order < self.n_points)
        order = np.clip(order, 0, self.n_points - 1)
        rows, cols = np.divmod(order, self.shape[1])
        if self.snaking[1]:
            odd = rows % 2 == 1
            cols = np.where(odd, self.shape[1] - 1 - cols, cols)
        return rows, cols, valid

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (for provenance)."""
        return {
            "shape": list(self.shape),
            "extents": [list(pair) for pair in self.extents],
            "snaking": list(self.snaking),
            "position_fields": list(self.position_fields),
            "stream": self.stream,
            "fly": self.fly,
            "axes": "rows = slow (outer) axis, columns = fast axis; pixel (0, 0) at the first "
            "extents",
        }


def _index(value: float, first: float, step: float, n: int) -> int:
    """Pixel index of a position along one axis, or -1 if outside (or not finite)."""
    if value != value or value in (math.inf, -math.inf):
        return -1
    if step == 0:
        return 0
    scaled = (value - first) / step
    if not -POSITION_TOLERANCE <= scaled <= n - 1 + POSITION_TOLERANCE:
        return -1
    return min(n - 1, max(0, round(scaled)))


def _position_fields(start: Mapping[str, Any]) -> tuple[tuple[str | None, str | None], str | None]:
    """Event fields of the (slow, fast) positions and the stream, from hints or motor names."""
    dimensions = (start.get("hints") or {}).get("dimensions")
    try:
        if dimensions and len(dimensions) == 2:
            names = []
            streams = set()
            for fields, stream in dimensions:
                if isinstance(fields, str) or not fields:
                    raise TypeError
                names.append(str(fields[0]))
                streams.add(str(stream))
            return (names[0], names[1]), streams.pop() if len(streams) == 1 else None
    except (TypeError, ValueError):
        pass
    motors = start.get("motors")
    if isinstance(motors, Sequence) and not isinstance(motors, str) and len(motors) == 2:
        return (str(motors[0]), str(motors[1])), None
    return (None, None), None
